"""Orbax checkpoints under `workdir/checkpoints/<step>/`: async saves, the latest N and the best one kept.

A checkpoint that cannot be read (a truncated array file, a missing metadata file) is moved aside to
`checkpoints/corrupt-<step>` with a warning naming it and why, and the run resumes from the one before it.
A checkpoint that is readable but written by another model or optimizer set-up is an error and stays put.
"""

import dataclasses
import glob
import logging
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from visioncore_jax.train.state import TrainState

BEST_METRIC = "eval_accuracy"
CORRUPT_PREFIX = "corrupt-"


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint that cannot be restored into the configured model and optimizer."""


class NoReadableCheckpointError(RuntimeError):
    """Every checkpoint in the workdir is damaged (each was moved aside)."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """What a checkpoint holds besides the state: the loop's JSON state and the host-side log window
    (numpy arrays: the partial train-metrics window and diagnostics aggregate), None for older checkpoints."""

    step: int
    loop: dict
    window: dict | None


def latest_saved_step(workdir: str) -> int:
    """The step of the newest finished checkpoint in `workdir` (0 when there is none), read from the directory
    names alone."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    return max(ocp.path.step.checkpoint_steps(directory), default=0) if os.path.isdir(directory) else 0


def _closed_loop_callback(unraisable) -> bool:
    """Whether an unraisable exception is a callback posted to an asyncio loop that has closed."""
    return unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"


def _silence_closed_loop_callbacks() -> None:
    """Drops the `RuntimeError('Event loop is closed')` of TensorStore reads that finish after orbax's restore of
    a damaged checkpoint failed and closed its asyncio loop: Python prints each as a traceback (234 for one
    truncated checkpoint of the test model), around the one warning that says what happened. Hand-written: orbax
    leaves those reads running. Every other unraisable exception reaches the hook installed before."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable):
        if not _closed_loop_callback(unraisable):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    sys.unraisablehook = hook


def create_manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
    """A manager that keeps the `max_to_keep` latest checkpoints plus the best by `eval_accuracy`. Leftover
    `*.orbax-checkpoint-tmp*` directories of saves cut short are logged and removed (orbax never lists them)."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    leftovers = sorted(glob.glob(os.path.join(directory, "*.orbax-checkpoint-tmp*")))
    if leftovers and jax.process_index() == 0:
        logging.warning("Removing %d unfinished checkpoint save(s) of an interrupted run: %s", len(leftovers),
                        ", ".join(os.path.basename(p) for p in leftovers))
    _silence_closed_loop_callbacks()  # every restore through this manager (training, eval) may fail mid-read
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=max_to_keep),
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                    reverse=False,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        ),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
        create=True,
    )
    # Handlers named up front so that `item_metadata` can read a checkpoint's array metadata before a restore.
    handlers = {"state": ocp.StandardCheckpointHandler(), "loop": ocp.JsonCheckpointHandler(),
                "window": ocp.StandardCheckpointHandler()}
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, state: TrainState, loop_state: dict, metrics: dict | None = None,
         window: dict | None = None) -> None:
    """Starts an async save of `state`, the loop's JSON `loop_state` and the host-side `window` (a pytree of
    numpy arrays, e.g. the partial log window) at the state's step; `metrics` (with `eval_accuracy`) rank the
    best checkpoint."""
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    arrays = state.checkpoint_items()
    if jax.process_count() == 1:
        # Host copies: orbax reads a replicated device array through a slice op, which compiles once per array
        # shape (~100 compiles, ~2 s at the first save of a small ResNet). Several processes must save the
        # global arrays themselves.
        arrays = jax.device_get(arrays)
    items = {"state": ocp.args.StandardSave(arrays), "loop": ocp.args.JsonSave(loop_state)}
    if window is not None:
        items["window"] = ocp.args.StandardSave(window)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def _signature(tree) -> dict[str, tuple]:
    """`{'/'-joined path: (shape, dtype)}` of every array leaf: what must match for a restore into `tree`."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    name = lambda k: getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))  # noqa: E731 dict/seq/attr keys
    return {"/".join(str(name(k)) for k in path):
            (tuple(leaf.shape), np.dtype(leaf.dtype).name) for path, leaf in leaves}


def _differences(saved: dict[str, tuple], expected: dict[str, tuple]) -> str:
    """The first few arrays that are only in the checkpoint, only in the model, or of another shape / dtype."""
    only_saved = sorted(set(saved) - set(expected))
    only_expected = sorted(set(expected) - set(saved))
    changed = sorted(k for k in set(saved) & set(expected) if saved[k] != expected[k])
    parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
             for label, keys in (("only in the checkpoint", only_saved), ("only in the model", only_expected),
                                 ("other shape or dtype", changed)) if keys]
    return "; ".join(parts)


def _restore_step(manager: ocp.CheckpointManager, step: int, target) -> tuple[dict, dict, dict | None]:
    """Restores checkpoint `step` into `target`'s shapes and shardings. Raises IncompatibleCheckpointError
    when its metadata is readable and describes other arrays; any other failure propagates (a damaged
    checkpoint)."""
    saved = manager.item_metadata(step)["state"]
    saved_tree = saved.tree if hasattr(saved, "tree") else saved
    if saved_tree is None:
        raise FileNotFoundError("its array metadata (state/_METADATA) is missing")
    saved_signature, expected = _signature(saved_tree), _signature(target)
    if sorted(saved_signature.values()) != sorted(expected.values()) or set(saved_signature) != set(expected):
        raise IncompatibleCheckpointError(
            f"Cannot resume from the checkpoint at step {step} in {manager.directory}: it was written by another "
            f"model or optimizer set-up ({_differences(saved_signature, expected)}). Use a new --workdir for a "
            "different configuration, or rerun with the configuration that wrote it.")
    items = {"state": ocp.args.StandardRestore(target), "loop": ocp.args.JsonRestore()}
    has_window = os.path.isdir(os.path.join(str(manager.directory), str(step), "window"))
    if has_window:
        items["window"] = ocp.args.StandardRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["loop"]), (restored["window"] if has_window else None)


def _move_aside(manager: ocp.CheckpointManager, step: int, error: Exception) -> None:
    """Moves the unreadable checkpoint `step` to `checkpoints/corrupt-<step>` (process 0; never deleted)."""
    directory = str(manager.directory)
    target = os.path.join(directory, f"{CORRUPT_PREFIX}{step}")
    if jax.process_index() == 0:
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(directory, f"{CORRUPT_PREFIX}{step}.{suffix}")
        os.rename(os.path.join(directory, str(step)), target)
    logging.warning("The checkpoint at step %d in %s is unreadable (%s: %s); moved it to %s and trying the one "
                    "before it.", step, directory, type(error).__name__, str(error).splitlines()[0][:300], target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
    manager.reload()


def restore_latest(manager: ocp.CheckpointManager, state: TrainState,
                   before: int | None = None) -> tuple[TrainState, Restored | None]:
    """Returns `(state, restored)` from the newest readable checkpoint (at a step <= `before` when given),
    restored into the shardings of `state`, or `(state, None)` when the workdir has none.

    An unreadable checkpoint is moved aside to `checkpoints/corrupt-<step>` with a warning, and the one before
    it is tried. Raises IncompatibleCheckpointError when the newest readable one was written by another model or
    optimizer set-up, and NoReadableCheckpointError when there were checkpoints but none could be read.
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.checkpoint_items())
    moved = []
    while True:
        steps = [s for s in manager.all_steps() if before is None or s <= before]
        if not steps:
            break
        step = max(steps)
        try:
            items, loop, window = _restore_step(manager, step, target)
        except IncompatibleCheckpointError:
            raise
        except Exception as error:  # noqa: BLE001 - orbax raises bare Exceptions for unreadable array files
            _move_aside(manager, step, error)
            moved.append(step)
            continue
        logging.info("Resumed from the checkpoint at step %d in %s.", step, manager.directory)
        return state.replace(**items), Restored(step, loop, window)
    if moved:
        raise NoReadableCheckpointError(
            f"No readable checkpoint in {manager.directory}: the ones at steps {moved} are damaged and were moved "
            f"to {CORRUPT_PREFIX}<step>. Start over in a new --workdir (or move them back to retry).")
    return state, None
