r"""Trains a vision model from a config file; every config field can be overridden by a flag.

  python main.py --workdir=workdirs/default --config=configs/default.py
  python main.py --workdir=workdirs/c100 --config=configs/cifar100_mc.py --config.optimizer.learning_rate=1e-3

The workdir is the TensorBoard logdir; re-running the same command resumes from its latest checkpoint.
"""

import logging as py_logging

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from visioncore_jax.train import train_and_evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for TensorBoard events, checkpoints and diagnostics.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host; launch.sh sets this).")
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(py_logging.Filter):
    """Drops INFO chatter of orbax and TFDS (one line per array written); warnings and errors pass."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
        return record.levelno >= py_logging.WARNING or not noisy


def main(argv):
    """Parses flags and runs training (the builders validate the config before any work starts)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.distributed:
        jax.distributed.initialize()
    logging.get_absl_handler().addFilter(_QuietLibraries())
    logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
