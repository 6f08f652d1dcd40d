r"""Start-up cost of a run: compiling and running the state initialisation with XLA:CPU's default optimisation
and with `partitioning.RUN_ONCE_CPU_OPTIONS` (what training uses), alternating in one process; the number
of XLA compilations and the wall time of a whole 6-step run of configs/test.py (4 checkpoints); and with
`--restart_config`, the wall time of `python main.py` (a 2-step run) without JAX's persistent compilation cache,
with main.py's default cache empty, and with it filled by that run, alternating in fresh processes.

  python -m benchmarks.startup --models=default,cifar100_mc --rounds=3
  python -m benchmarks.startup --models= --restart_config=configs/default.py --rounds=3
"""

import importlib
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import jax
from absl import app, flags

from visioncore_jax.models import build_model
from visioncore_jax.optim import build_optimizer
from visioncore_jax.train import partitioning, train_and_evaluate
from visioncore_jax.train.experiment import build_experiment
from visioncore_jax.train.state import create_train_state

flags.DEFINE_list("models", ["default", "cifar100_mc"], "Config modules whose state initialisation is timed.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds per variant.")
flags.DEFINE_string("data_dir", "", "TFDS data dir of the embedded dataset for the whole-run measurement.")
flags.DEFINE_string("restart_config", "", "Config file of the restart measurement ('' skips it).")
FLAGS = flags.FLAGS
VARIANTS = {"default": None, "run-once": partitioning.RUN_ONCE_CPU_OPTIONS}


def _init_function(name: str):
    """The jitted state initialisation of config module `name` (offline: shapes only, no dataset read)."""
    config = importlib.import_module(f"configs.{name}").get_config()
    num_classes = 100 if name.startswith("cifar100") else 10
    tx, _ = build_optimizer(config, steps_per_epoch=10, total_steps=100)
    example = {"color": jax.numpy.zeros((1, 32, 32, 3)), "brightness": jax.numpy.zeros((1, 32, 32, 1))}
    return partitioning.jit_replicated(create_train_state, partitioning.make_mesh(), model=build_model(
        config, num_classes), tx=tx, example_inputs=example, seed=0)


def _time_init(init, options) -> tuple[float, float]:
    """(compile seconds, run seconds) of `init` compiled with `options` (the compilation cache is off)."""
    start = time.perf_counter()
    compiled = init.lower().compile(options)
    compiled_at = time.perf_counter()
    jax.block_until_ready(compiled())
    return compiled_at - start, time.perf_counter() - compiled_at


class _CompileCounter(logging.Handler):
    """Counts JAX's 'Finished XLA compilation' log lines."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        self.count += "Finished XLA compilation" in record.getMessage()


def _whole_run(data_dir: str) -> tuple[int, float]:
    """(XLA compilations, seconds) of a 6-step run of configs/test.py with 4 checkpoints, from scratch."""
    config = importlib.import_module("configs.test").get_config()
    config.data.data_dir = data_dir
    config.diagnostics.report = False
    build_experiment(config)  # prepares the embedded dataset outside the timing
    counter = _CompileCounter()
    logging.getLogger("jax").addHandler(counter)
    jax.config.update("jax_log_compiles", True)
    workdir = tempfile.mkdtemp()
    start = time.perf_counter()
    try:
        train_and_evaluate(config, workdir)
    finally:
        jax.config.update("jax_log_compiles", False)
        logging.getLogger("jax").removeHandler(counter)
        shutil.rmtree(workdir, ignore_errors=True)
    return counter.count, time.perf_counter() - start


RESTART_VARIANTS = ("cache off", "cache empty", "cache filled")


def _restart_seconds(config_path: str, data_dir: str, home: str, variant: str) -> float:
    """Wall seconds of `python main.py` running `config_path` for 2 steps in a fresh process whose home is `home`,
    with JAX's persistent compilation cache as `variant` says (main.py's default dir under `home`, or off)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("JAX_COMPILATION_CACHE")}
    env["HOME"] = home
    if variant == "cache off":
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    overrides = ["--config.training.num_epochs=-1", "--config.training.num_train_steps=2",
                 "--config.schedule.warmup_epochs=0", "--config.diagnostics.report=False"]
    if data_dir:
        overrides.append(f"--config.data.data_dir={data_dir}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "main.py", f"--workdir={tempfile.mkdtemp()}", f"--config={config_path}",
                    *overrides], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv):
    del argv
    if FLAGS.restart_config:
        seconds = {variant: [] for variant in RESTART_VARIANTS}
        for _ in range(FLAGS.rounds):
            home = tempfile.mkdtemp()  # an empty cache each round: "cache empty" fills it, "cache filled" reads it
            for variant in RESTART_VARIANTS:
                seconds[variant].append(_restart_seconds(FLAGS.restart_config, FLAGS.data_dir, home, variant))
        for variant, values in seconds.items():
            print(f"{FLAGS.restart_config}, 2 steps, {variant:12s}: median {statistics.median(values):5.1f} s  "
                  f"{[round(v, 1) for v in values]}")
        return
    jax.config.update("jax_enable_compilation_cache", False)
    print(f"{jax.devices()[0].platform}, {jax.device_count()} device(s), jax {jax.__version__}")
    for name in FLAGS.models:
        init = _init_function(name)
        times = {variant: [] for variant in VARIANTS}
        for _ in range(FLAGS.rounds):
            for variant, options in VARIANTS.items():
                times[variant].append(_time_init(init, options))
        for variant, pairs in times.items():
            print(f"{name:12s} init {variant:9s} compile {statistics.median(p[0] for p in pairs):6.2f} s   "
                  f"run {statistics.median(p[1] for p in pairs):6.3f} s")
    compilations, seconds = _whole_run(FLAGS.data_dir or tempfile.mkdtemp())
    print(f"configs/test.py, 6 steps, 4 checkpoints: {compilations} XLA compilations, {seconds:.1f} s")


if __name__ == "__main__":
    app.run(main)
