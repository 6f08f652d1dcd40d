"""Shared test set-up: 2 host CPU devices for real data-parallel sharding, shared fixtures, and readers of
TensorBoard event files for the loop-level tests."""

import contextlib
import fcntl
import hashlib
import io
import os
import pathlib
import sys
import tempfile

# Must be set before JAX initialises its backends: every test sees 2 CPU devices, so batches are really split
# over a mesh (one device per core of the 2-core CI machine; with 8 the tiny test steps ran ~1.7x slower).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Many tests (and the subprocesses some start) compile the same tiny programs: share compiled executables.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "visioncore_jax_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

WORKER_MEMORY = 6 * 2**30


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker more than the cores. A worker waits on subprocesses, checkpoint threads and file I/O
    part of the time: with one worker per core the 2-core machine's cores were 85% busy over the suite, with 3
    workers 96% (BENCHMARKS.md, "Test suite time"). A worker holds up to ~4 GB (compiled programs, TensorFlow),
    and a multi-process test starts two more processes: at most one worker per WORKER_MEMORY of RAM."""
    del config
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min((os.cpu_count() or 1) + 1, memory // WORKER_MEMORY))


# The embedded datasets' generators and how they are prepared: a change to any of these files prepares them anew.
DATASET_SOURCES = ("embedded.py", "embedded_clips.py", "embedded_masks.py", "sources.py")


def prepared_datasets_dir() -> pathlib.Path:
    """Where the suite keeps the embedded datasets it prepared, kept across test runs like the compilation cache:
    a directory under the temp dir named by a hash of `DATASET_SOURCES` and the TFDS and NumPy versions (the
    bytes the generators write), so that code which would write other bytes never reads a stale copy."""
    import numpy as np
    import tensorflow_datasets as tfds

    data = pathlib.Path(__file__).resolve().parent.parent / "visioncore_jax" / "data"
    digest = hashlib.sha256(f"{tfds.__version__} {np.__version__}".encode())
    for name in DATASET_SOURCES:
        digest.update((data / name).read_bytes())
    return pathlib.Path(tempfile.gettempdir()) / f"visioncore_jax_tfds_{digest.hexdigest()[:16]}"


@pytest.fixture(autouse=True)
def fresh_module_rng(request):
    """A test module's `RNG` starts again from seed 0 in each test: a test draws the same numbers whichever tests
    ran before it in its xdist worker."""
    import numpy as np

    if hasattr(request.module, "RNG"):
        request.module.RNG = np.random.default_rng(0)


@pytest.fixture(scope="session")
def prepare_tfds():
    """`prepare_tfds(*names)`: the suite's TFDS data dir (`prepared_datasets_dir`) with those embedded datasets
    (`DATASETS` names) prepared. Shared by the xdist workers and by later test runs; each dataset is prepared
    once, by the first process to take the lock, and only when a test asks for it (preparing `embedded_shapes`
    alone takes ~11 s, during which every worker that needs it waits)."""
    from visioncore_jax.data import DATASETS, tfds_builder

    root = prepared_datasets_dir()
    root.mkdir(exist_ok=True)
    path = str(root / "tensorflow_datasets")

    def prepare(*names: str) -> str:
        with open(root / "tensorflow_datasets.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for name in names:
                tfds_builder(DATASETS[name].tfds_name, path)
        return path

    return prepare


@pytest.fixture(scope="session")
def tfds_data_dir(prepare_tfds):
    """The shared TFDS data dir with the embedded shapes prepared (what most tests train on)."""
    return prepare_tfds("embedded_shapes")


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag written to `workdir`'s event files, as (step, value) pairs in step order."""
    accumulator = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()["tensors"]:
        values = [(event.step, tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]
        if all(value.ndim == 0 and value.dtype.kind in "fiu" for _, value in values):
            series[tag] = [(step, float(value)) for step, value in values]
    return series


def read_texts(workdir: str, tag: str) -> list[str]:
    """The text summaries written under `tag`."""
    accumulator = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return [tf.make_ndarray(e.tensor_proto).item().decode() for e in accumulator.Tensors(tag)]


def main_in_process(argv: list[str]) -> tuple[int, str, str]:
    """`python main.py *argv` in this process (`main.cli()`, flags parsed as on the command line, `SystemExit`
    caught): (exit status, stdout, stderr). Saves a subprocess's start (importing TensorFlow and JAX, ~8 s) and
    its tracing where a test needs the command's behaviour but not a separate process."""
    import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["main.py", *argv])
        try:
            main.cli()
            code = 0
        except SystemExit as exit_:  # absl's app.run exits with main's return value: None is status 0
            code = 0 if exit_.code is None else exit_.code
        finally:  # forget this run's flags, including the `--config.*` overrides the config flag defined
            flags.FLAGS.unparse_flags()
            for name in [name for name in flags.FLAGS if name.startswith("config.")]:
                delattr(flags.FLAGS, name)
    return code, stdout.getvalue(), stderr.getvalue()


def init_variables(model, inputs, seed: int = 0, **kwargs) -> dict:
    """`model.init(PRNGKey(seed), inputs, **kwargs)` as one program compiled for a single run, as the train state's
    initialisation is (`partitioning.compile_run_once`): op by op, a ResNet's init dispatches ~1,000 small programs;
    jitted with the default options it takes 14-17 s to compile on 2 busy cores."""
    import functools

    import jax

    from visioncore_jax.train import partitioning

    init = jax.jit(functools.partial(model.init, **kwargs))
    rng = jax.random.PRNGKey(seed)
    return partitioning.compile_run_once(init, rng, inputs)(rng, inputs)
