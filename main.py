r"""Trains a vision model from a config file; every config field can be overridden by a flag.

  python main.py --workdir=workdirs/default --config=configs/default.py
  python main.py --workdir=workdirs/c100 --config=configs/cifar100_mc.py --config.optimizer.learning_rate=1e-3
  python main.py --mode=preflight --workdir=workdirs/default --config=configs/default.py
  python main.py --mode=lr_find --workdir=workdirs/default --config=configs/default.py
  python main.py --mode=diagnose --workdir=workdirs/default
  python main.py --mode=repair --workdir=workdirs/default

The workdir is the TensorBoard logdir; re-running the same command resumes from its latest checkpoint.
"""

import logging as py_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from visioncore_jax import diagnostics
from visioncore_jax.tools import lr_find, preflight, repair
from visioncore_jax.train import train_and_evaluate
from visioncore_jax.train.experiment import build_experiment

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for TensorBoard events, checkpoints and diagnostics.")
flags.DEFINE_enum("mode", "train", ["train", "preflight", "diagnose", "lr_find", "repair"],
                  "train; preflight: run the preflight checks (exit 1 on FAIL); diagnose: analyze the records in "
                  "--workdir (finished or running; no --config needed); lr_find: LR range test; repair: short "
                  "trials of the findings' fixes on --workdir's config, and the command with the verified fix.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host; launch.sh sets this).")
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.mark_flags_as_required(["workdir"])


class _QuietLibraries(py_logging.Filter):
    """Drops INFO chatter of orbax and TFDS (one line per array written); warnings and errors pass."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
        return record.levelno >= py_logging.WARNING or not noisy


def main(argv):
    """Parses flags and runs the mode (the builders validate the config before any work starts)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.distributed:
        jax.distributed.initialize()
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if FLAGS.mode == "diagnose":
        print(diagnostics.format_findings(diagnostics.analyze(FLAGS.workdir)))
        return
    if FLAGS.mode == "repair":
        print(repair.format_repair(repair.repair(FLAGS.workdir)))
        return
    if FLAGS.config is None:
        raise app.UsageError(f"--mode={FLAGS.mode} needs --config=configs/<experiment>.py.")
    logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
    experiment = build_experiment(FLAGS.config)
    if FLAGS.mode == "train":
        if FLAGS.config.preflight:
            preflight.require_preflight(experiment, FLAGS.workdir)
        train_and_evaluate(FLAGS.config, FLAGS.workdir, experiment=experiment)
        repair.auto_repair(FLAGS.config, FLAGS.workdir)
        return
    if FLAGS.mode == "preflight":
        results = preflight.run_preflight(experiment, FLAGS.workdir)
        print(preflight.format_results(results))
        sys.exit(1 if any(r.status == "FAIL" for r in results) else 0)
    result = lr_find.lr_range_test(experiment)
    path, png = lr_find.write_lr_find(result, os.path.join(FLAGS.workdir, "diagnostics"),
                                      FLAGS.config.optimizer.learning_rate)
    print(f"Suggested learning rate: {result.suggestion:.3g} (configured {FLAGS.config.optimizer.learning_rate:g}; "
          f"{len(result.losses)} steps{', stopped at divergence' if result.stopped_early else ''}). "
          f"Plot: {png}, data: {path}")


if __name__ == "__main__":
    app.run(main)
