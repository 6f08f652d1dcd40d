r"""Trains a vision model from a config file; every config field can be overridden by a flag.

  python main.py --workdir=workdirs/default --config=configs/default.py
  python main.py --workdir=workdirs/c100 --config=configs/cifar100_mc.py --config.optimizer.learning_rate=1e-3
  python main.py --mode=preflight --workdir=workdirs/default --config=configs/default.py
  python main.py --mode=lr_find --workdir=workdirs/default --config=configs/default.py
  python main.py --mode=diagnose --workdir=workdirs/default
  python main.py --mode=eval --workdir=workdirs/default --config=configs/default.py [--checkpoint=latest|--step=N]
  python main.py --mode=repair --workdir=workdirs/default
  python main.py --mode=repair --workdir=workdirs/default --config=configs/workdir.py:workdirs/default \
      --config.diagnostics.repair_steps=200

The workdir is the TensorBoard logdir; re-running the same command resumes from its latest checkpoint.

Bad input (a flag typo, a bad value, an invalid config, an unusable workdir or dataset) is one line on stderr,
`main.py: error: ...`, before any data is read or anything compiled, and exit status 2; `--verbosity=1` adds the
traceback.
"""

import functools
import logging as py_logging
import os
import re
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from visioncore_jax import diagnostics
from visioncore_jax.errors import InputError
from visioncore_jax.tools import evaluate, lr_find, preflight, repair
from visioncore_jax.train import train_and_evaluate
from visioncore_jax.train.experiment import build_experiment
from visioncore_jax.train.validation import check_workdir, validate_config

# Importing visioncore_jax (above) added its XLA:CPU speed flags to XLA_FLAGS; JAX reads them when it creates
# its backend, at the first computation in main(), so they apply here.
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for TensorBoard events, checkpoints and diagnostics.")
flags.DEFINE_enum("mode", "train", ["train", "preflight", "diagnose", "lr_find", "eval", "repair"],
                  "train; preflight: run the preflight checks (exit 1 on FAIL); diagnose: analyze the records in "
                  "--workdir (finished or running; no --config needed); lr_find: LR range test; eval: evaluate a "
                  "checkpoint of --workdir on the eval split (--checkpoint, --step); repair: short trials of the "
                  "findings' fixes on --workdir's config, and the command with the verified fix.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "--mode=eval: which checkpoint (unless --step).")
flags.DEFINE_integer("step", -1, "--mode=eval: evaluate the checkpoint of this step (-1: --checkpoint).")
flags.DEFINE_bool("distributed", False, "Join a multi-host run with jax.distributed.initialize(): the coordinator "
                  "from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, else detected (SLURM, Cloud "
                  "TPU). launch.sh sets this.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.mark_flags_as_required(["workdir"])


BAD_INPUT_EXIT_CODE = 2  # flag and config errors, as argparse and absl usage errors


def _exit_bad_input(message: str, argv) -> None:
    """Prints `main.py: error: <message>` as one line (after the traceback with --verbosity >= 1) and exits 2."""
    verbosity = FLAGS.verbosity if FLAGS.is_parsed() else max(
        [int(m.group(2)) for m in map(re.compile(r"--?(v|verbosity)=(-?\d+)$").match, argv) if m] or [0])
    if verbosity >= 1:
        traceback.print_exc()
    print(f"main.py: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(BAD_INPUT_EXIT_CODE)


def _flag_error_message(error: Exception, argv) -> str:
    """One line for a failed flag parse; a mistyped config field gets the field ml_collections suggests."""
    root = error
    while root.__context__ is not None:
        root = root.__context__
    if isinstance(root, KeyError) and isinstance(error, (KeyError, AttributeError)):
        key = str(root.args[0])
        flag = next((arg.split("=")[0] for arg in argv if arg.startswith("--config.")
                     and key in arg.split("=")[0].split(".")), f"--config...{key}")
        suggestion = re.search(r'Did you mean "(\w+)"', str(error))
        if suggestion:
            return f"unknown flag {flag}; did you mean {flag.rsplit('.', 1)[0]}.{suggestion.group(1)}?"
        return f"unknown flag {flag}: {flag.rsplit('.', 1)[0][2:]} has no field {key!r}."
    config = next((arg.split("=", 1)[1] for arg in reversed(argv) if arg.startswith("--config=")), None)
    if isinstance(error, OSError) and config and not os.path.isfile(config.split(":")[0]):
        return f"--config={config} is not a file; use e.g. --config=configs/default.py."
    return str(error)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every parse error (unknown or mistyped flag, bad value, config file that does
    not load) one line and exit status 2."""
    try:
        remaining = FLAGS(argv)
        if FLAGS.config is not None:  # a config file that failed to load raises only when first read
            FLAGS.config.to_dict()
        return remaining
    except (flags.Error, KeyError, AttributeError, OSError, ValueError, TypeError) as error:
        _exit_bad_input(_flag_error_message(error, argv), argv)


def _one_line_errors(run):
    """Turns an InputError or usage error raised by `run(argv)` into one line and exit status 2."""

    @functools.wraps(run)
    def wrapper(argv):
        try:
            return run(argv)
        except (InputError, app.UsageError) as error:
            _exit_bad_input(str(error), argv)

    return wrapper


def _check_inputs(config, workdir: str) -> None:
    """Validates the config and the workdir before anything is read, built or compiled."""
    validate_config(config)
    check_workdir(workdir)


class _QuietLibraries(py_logging.Filter):
    """Drops INFO chatter of orbax and TFDS (one line per array written); warnings and errors pass."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
        return record.levelno >= py_logging.WARNING or not noisy


def initialize_distributed() -> None:
    """Connects this process to the others of a multi-host run. JAX 0.10 reads only the coordinator address
    from the environment, so the process count and id are passed explicitly; without JAX_COORDINATOR_ADDRESS,
    JAX detects the cluster itself (SLURM via srun, Cloud TPU pods, Open MPI, Kubernetes)."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    kwargs = {}
    if address:
        missing = [name for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not os.environ.get(name)]
        if missing:
            raise app.UsageError(f"JAX_COORDINATOR_ADDRESS={address} is set but {' and '.join(missing)} "
                                 "not: set the number of processes and this process's id (0-based) too.")
        kwargs = {"coordinator_address": address, "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                  "process_id": int(os.environ["JAX_PROCESS_ID"])}
    # Cross-process collectives of the CPU backend (the JAX 0.10 default, set explicitly: without it a CPU
    # multi-process run cannot all-reduce).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


# JAX's persistent compilation cache, on by default: a restart (a resume, --mode=eval or repair, a rerun with
# another LR, schedule, clip norm or weight decay) reads the compiled train step instead of compiling it again
# (configs/default.py's 2-step run: 22.3 s -> 14.0 s on 2 CPU cores; BENCHMARKS.md, "Start-up"). Capped, since
# it lives in the home directory; JAX evicts the least recently used entries beyond the cap.
COMPILATION_CACHE_SUBDIR = os.path.join(".cache", "visioncore_jax", "jax_compilation_cache")
COMPILATION_CACHE_MAX_BYTES = 2 * 2**30


def compilation_cache_settings(configured_dir: str | None, environ: dict, home: str) -> dict:
    """The JAX config updates that turn its persistent compilation cache on under `home` (see
    `COMPILATION_CACHE_SUBDIR`): none when a dir is already configured (`configured_dir`, from
    JAX_COMPILATION_CACHE_DIR or code); the size cap unless JAX_COMPILATION_CACHE_MAX_SIZE is set.
    JAX_ENABLE_COMPILATION_CACHE=false turns the cache off whatever the dir."""
    if configured_dir:
        return {}
    settings = {"jax_compilation_cache_dir": os.path.join(home, COMPILATION_CACHE_SUBDIR)}
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ:
        settings["jax_compilation_cache_max_size"] = COMPILATION_CACHE_MAX_BYTES
    return settings


def enable_compilation_cache(configured_dir: str | None, environ: dict, home: str) -> None:
    """Applies `compilation_cache_settings` to this process's JAX config (before anything compiles); a default
    dir that cannot be created leaves the cache off, with one warning (JAX would warn at every program)."""
    settings = compilation_cache_settings(configured_dir, environ, home)
    if "jax_compilation_cache_dir" in settings:
        try:
            os.makedirs(settings["jax_compilation_cache_dir"], exist_ok=True)
        except OSError as error:
            logging.warning("No persistent compilation cache (%s); set JAX_COMPILATION_CACHE_DIR to a writable "
                            "directory to keep compiled programs across runs.", error)
            return
    for name, value in settings.items():
        jax.config.update(name, value)


def main(argv):
    """Parses flags and runs the mode (the builders validate the config before any work starts)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    enable_compilation_cache(jax.config.jax_compilation_cache_dir, os.environ, os.path.expanduser("~"))
    if FLAGS.distributed:
        initialize_distributed()
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if FLAGS.mode == "diagnose":
        if FLAGS.config is not None:
            raise app.UsageError("--mode=diagnose analyzes the records in --workdir with the config they were "
                                 "written with; leave --config out.")
        print(diagnostics.format_findings(diagnostics.analyze(FLAGS.workdir)))
        return
    if FLAGS.mode == "repair":
        settings = {}
        if FLAGS.config is not None:
            validate_config(FLAGS.config)
            settings = repair.repair_settings(FLAGS.config, FLAGS.workdir)
        print(repair.format_repair(repair.repair(FLAGS.workdir, settings)))
        return
    if FLAGS.config is None:
        raise app.UsageError(f"--mode={FLAGS.mode} needs --config=configs/<experiment>.py.")
    _check_inputs(FLAGS.config, FLAGS.workdir)
    logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
    if FLAGS.mode == "eval":
        print(evaluate.format_table(evaluate.evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint,
                                                              FLAGS.step)))
        return
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


def cli() -> None:
    """The command line: `python main.py --workdir=... --config=...`."""
    app.run(_one_line_errors(main), flags_parser=_parse_flags)


if __name__ == "__main__":
    cli()
