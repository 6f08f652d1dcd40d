"""Numerics rules: non-finite losses or gradients that persisted (a divergence), and isolated non-finite batches
that the NaN-skip guard absorbed."""

import numpy as np

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import evidence as ev
from visioncore_jax.diagnostics.rules.rule import Rule
from visioncore_jax.diagnostics.schema import RunRecords

FAMILY = "numerics"


def nonfinite(run: RunRecords) -> list[Finding]:
    """Loss or gradients became NaN/Inf and stayed so (or most steps were skipped, or the run rolled back)."""
    if not run.train:
        return []
    state = ev.nonfinite_state(run)
    if not ev.diverged(state):
        return []
    # Rolled back to a checkpoint (with a smaller LR) and finished finite: the guard worked.
    recovered = not ev.diverged({**state, "rollbacks": 0})
    where = (f", first at step {state['first_nonfinite_step']} in {state['first_nonfinite_module']}"
             if state["first_nonfinite_step"] is not None else "")
    clip = () if run.train[-1].grad_clip_norm > 0 else (ev.override("optimizer.grad_clip_norm", 1.0),)
    return [Finding(
        "nonfinite", "warning" if recovered else "error",
        f"Training diverged: {state['skipped_steps']} steps ({state['skipped_share']:.0%}) skipped for non-finite "
        f"gradients{where}" + (f"; {state['rollbacks']} rollbacks" if state["rollbacks"] else "")
        + f"; final loss {state['final_loss']:.4g}.",
        "The loss or gradients overflowed to NaN/Inf and kept doing so: the NaN-skip guard threw those steps away "
        "(or rolled back to a checkpoint with a smaller LR), and the model stopped learning. No LR finding explains "
        "it (the loss did not climb first), so look at the data (NaN inputs) and numerically unsafe operations in "
        "the model or loss, starting at the module named.",
        state, ("--mode=preflight",) + clip, steps=ev.steps_of(run.train), module=state["first_nonfinite_module"])]


def nan_skips(run: RunRecords) -> list[Finding]:
    """Some steps skipped by the NaN-skip guard (or non-finite gradients seen), the run recovered."""
    if not run.train:
        return []
    state = ev.nonfinite_state(run)
    if (state["skipped_steps"] == 0 and not state["nonfinite_entries"] > 0) or ev.diverged(state):
        return []
    skipped_in = [r.step for r in run.train if r.scalar("skipped").max > 0]
    clip = () if run.train[-1].grad_clip_norm > 0 else (ev.override("optimizer.grad_clip_norm", 1.0),)
    return [Finding(
        "nan_skips", "warning",
        f"{state['skipped_steps']} steps were skipped for non-finite gradients (first at step "
        f"{state['first_nonfinite_step']}, in {state['first_nonfinite_module']}); training recovered.",
        "A few batches produced NaN/Inf gradients; the guard kept the parameters, so the run continued. Isolated "
        "skips usually come from bad inputs (NaN pixels, corrupt images) or rare overflow; run the preflight "
        "checks on the data.",
        {**state, "records_with_skips": skipped_in,
         "nonfinite_entries": ev.finite_stat(np.sum, ev.scalar_series(run.train, "nonfinite_grads", "max"))},
        ("--mode=preflight",) + clip, steps=ev.steps_of(run.train), module=state["first_nonfinite_module"])]


RULES = (
    Rule("nonfinite", nonfinite, FAMILY, "symptom", ("nan_skips", "dead_units", "one_class_collapse", "chance_level",
                                                     "saturated_gates")),
    Rule("nan_skips", nan_skips, FAMILY, "cause"),
)
