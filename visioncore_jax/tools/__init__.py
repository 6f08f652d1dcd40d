"""Tools that drive training from outside: preflight, LR range test, repair, conversion, evaluation."""
