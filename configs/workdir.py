r"""The config of an earlier run, read from its `config.json`: rerun it (into a new workdir) with overrides.

  python main.py --workdir=workdirs/run2 --config=configs/workdir.py:workdirs/run1 \
      --config.optimizer.learning_rate=1e-3

`python main.py --mode=repair` prints such a command with its verified fix.
"""

from visioncore_jax.tools.overrides import load_run_config


def get_config(workdir: str):
    """Returns the config saved in `workdir/config.json`."""
    return load_run_config(workdir)
