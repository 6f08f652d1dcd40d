"""The one exception type for bad user input (flags, config, workdir, data), imported by every layer.

`main.py` prints an `InputError` as one line (no traceback unless `--verbosity=1`) and exits with status 2; any
other exception is a bug or an environment failure and keeps its traceback. A ValueError subclass, so callers
that catch ValueError keep working.
"""


class InputError(ValueError):
    """Bad user input; the message is one line that says what is wrong and what to change."""
