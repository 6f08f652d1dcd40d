"""Data parallelism with `jax.jit` over a one-axis device mesh (pmap is in maintenance mode).

The state is replicated, batches are split along their leading axis over the `data` axis. Under jit, BatchNorm
statistics are computed over the whole global batch, so an 8-device step equals a 1-device step.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `data` over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the `data` mesh axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def jit_train_step(step_fn: Callable, mesh: Mesh) -> Callable:
    """Jits `step_fn(state, metrics, statistics, batch, regularization) -> (state, metrics, statistics)`;
    donates the state, metrics and statistics buffers."""
    return jax.jit(
        step_fn,
        in_shardings=(replicated(mesh), replicated(mesh), replicated(mesh), data_sharded(mesh), replicated(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh), replicated(mesh)),
        donate_argnums=(0, 1, 2),
    )


def jit_eval_step(step_fn: Callable, mesh: Mesh) -> Callable:
    """Jits `step_fn(state, metrics, batch) -> metrics`; donates the metrics buffers."""
    return jax.jit(
        step_fn,
        in_shardings=(replicated(mesh), replicated(mesh), data_sharded(mesh)),
        out_shardings=replicated(mesh),
        donate_argnums=(1,),
    )


def jit_predict_step(step_fn: Callable, mesh: Mesh) -> Callable:
    """Jits `step_fn(state, batch) -> per-example predictions`, gathered onto every device (one process reads
    them all)."""
    return jax.jit(step_fn, in_shardings=(replicated(mesh), data_sharded(mesh)), out_shardings=replicated(mesh))


def jit_replicated(fn: Callable, mesh: Mesh, **static) -> Callable:
    """Jits a function of no device inputs (e.g. state initialisation) with replicated outputs."""
    return jax.jit(functools.partial(fn, **static), out_shardings=replicated(mesh))


# A program that runs once (state initialisation) compiles with LLVM's optimisations off on CPU: the threefry
# hashes of the default model's initialisers take 5.4 s to optimise and 0.01 s to run; unoptimised, 1.4 s and
# 0.08 s (quiet 2-core CPU; BENCHMARKS.md, "Start-up"). Other backends keep their defaults.
RUN_ONCE_CPU_OPTIONS = {"xla_backend_optimization_level": 0}


def compile_run_once(jitted: Callable, *args) -> Callable:
    """`jitted` compiled for `args` for a single call: quickly rather than to run fast (on CPU)."""
    options = RUN_ONCE_CPU_OPTIONS if jax.default_backend() == "cpu" else None
    return jitted.lower(*args).compile(options)


def put_hyperparams(values: dict[str, float], mesh: Mesh) -> dict[str, jax.Array]:
    """A train step's runtime hyperparameters as float32 scalars replicated over `mesh`."""
    return jax.device_put({name: np.float32(value) for name, value in values.items()}, replicated(mesh))
