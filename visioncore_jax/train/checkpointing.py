"""Orbax checkpoints under `workdir/checkpoints/<step>/`: async saves, the latest N and the best one kept."""

import logging
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from visioncore_jax.train.state import TrainState

BEST_METRIC = "eval_accuracy"


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint that cannot be restored into the configured model and optimizer."""


def create_manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
    """A manager that keeps the `max_to_keep` latest checkpoints plus the best by `eval_accuracy`."""
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
        create=True,
    )
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def save(manager: ocp.CheckpointManager, state: TrainState, loop_state: dict, metrics: dict | None = None) -> None:
    """Starts an async save of `state` and the loop's JSON `loop_state` at the state's step; `metrics` (with
    `eval_accuracy`) rank the best checkpoint."""
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    args = ocp.args.Composite(state=ocp.args.StandardSave(state.checkpoint_items()),
                              loop=ocp.args.JsonSave(loop_state))
    manager.save(step, args=args, metrics=metrics)


def restore_latest(manager: ocp.CheckpointManager, state: TrainState) -> tuple[TrainState, dict | None]:
    """Returns `(state, loop_state)` restored from the latest checkpoint (same shardings as `state`), or
    `(state, None)` when there is none.

    Raises IncompatibleCheckpointError, saying what to do, when the checkpoint was written by another model or
    optimizer set-up, or cannot be read.
    """
    step = manager.latest_step()
    if step is None:
        return state, None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.checkpoint_items())
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                  loop=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError, FileNotFoundError, OSError) as error:
        raise IncompatibleCheckpointError(
            f"Cannot resume from the checkpoint at step {step} in {manager.directory}: it does not match the "
            f"configured model/optimizer or is unreadable ({type(error).__name__}: {str(error)[:300]}). "
            "Use a new --workdir for a different configuration; for a damaged checkpoint delete "
            f"{os.path.join(str(manager.directory), str(step))} to resume from an earlier one."
        ) from error
    logging.info("Resumed from the checkpoint at step %d in %s.", step, manager.directory)
    return state.replace(**restored["state"]), dict(restored["loop"])
