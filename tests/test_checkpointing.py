"""Checkpoint fallback on real orbax checkpoints: a damaged newest checkpoint is moved aside to
`corrupt-<step>` and the one before it restored; a different model is a clear error and nothing is moved."""

import glob
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visioncore_jax.train import checkpointing
from visioncore_jax.train.state import TrainState


def tiny_state(step: int, width: int = 3) -> TrainState:
    """A train state with Adam moments whose parameters encode `step`."""
    params = {"dense": {"kernel": jnp.full((2, width), float(step)), "bias": jnp.zeros((width,))}}
    tx = optax.adam(1e-3)
    return TrainState(step=jnp.int32(step), params=params, batch_stats={}, opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(0), lr_scale=jnp.float32(1.0), apply_fn=None, tx=tx)


@pytest.fixture
def workdir(tmp_path):
    """A workdir with checkpoints at steps 2, 4 and 6 (each with its loop state and log window)."""
    with checkpointing.create_manager(str(tmp_path), max_to_keep=5) as manager:
        for step in (2, 4, 6):
            checkpointing.save(manager, tiny_state(step), {"step": step},
                               window={"loss_total": np.float32(step / 10), "count": np.int32(step)})
    return str(tmp_path)


def restore(workdir, width=3):
    with checkpointing.create_manager(workdir, max_to_keep=5) as manager:
        state, restored = checkpointing.restore_latest(manager, tiny_state(0, width))
        return state, restored, manager.all_steps()


def checkpoint_dirs(workdir):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(workdir, "checkpoints", "*")))


def test_restores_the_newest_with_loop_state_and_window(workdir):
    state, restored, _ = restore(workdir)
    assert int(state.step) == 6 and float(state.params["dense"]["kernel"][0, 0]) == 6.0
    assert restored.loop == {"step": 6} and restored.step == 6
    assert float(restored.window["loss_total"]) == np.float32(0.6) and int(restored.window["count"]) == 6


def truncate_arrays(step_dir):
    files = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
             if os.path.isfile(p)]
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def remove_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


@pytest.mark.parametrize("damage", [truncate_arrays, remove_metadata])
def test_damaged_newest_checkpoint_is_moved_aside_and_the_previous_restored(workdir, damage, caplog):
    damage(os.path.join(workdir, "checkpoints", "6"))
    with caplog.at_level(logging.WARNING):
        state, restored, steps = restore(workdir)
    assert int(state.step) == 4 and float(state.params["dense"]["kernel"][0, 0]) == 4.0
    assert restored.loop == {"step": 4} and int(restored.window["count"]) == 4
    assert steps == [2, 4]
    assert checkpoint_dirs(workdir) == ["2", "4", "corrupt-6"]
    (warning,) = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert "step 6" in warning and "corrupt-6" in warning
    # A new manager (the next run) does not list the moved checkpoint either.
    assert restore(workdir)[2] == [2, 4]


def test_leftover_tmp_dir_is_ignored_and_removed(workdir):
    os.makedirs(os.path.join(workdir, "checkpoints", "8.orbax-checkpoint-tmp-1764110000"))
    state, _, steps = restore(workdir)
    assert int(state.step) == 6 and steps == [2, 4, 6]
    assert checkpoint_dirs(workdir) == ["2", "4", "6"]


def test_no_readable_checkpoint_is_one_clear_error(workdir):
    for step in (2, 4, 6):
        remove_metadata(os.path.join(workdir, "checkpoints", str(step)))
    with pytest.raises(checkpointing.NoReadableCheckpointError, match=r"steps \[6, 4, 2\] are damaged"):
        restore(workdir)
    assert checkpoint_dirs(workdir) == ["corrupt-2", "corrupt-4", "corrupt-6"]


def test_other_model_is_an_error_and_moves_nothing(workdir):
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match="another model or optimizer"):
        restore(workdir, width=4)
    assert checkpoint_dirs(workdir) == ["2", "4", "6"]


def test_restore_before_a_step_skips_newer_checkpoints(workdir):
    with checkpointing.create_manager(workdir, max_to_keep=5) as manager:
        state, restored = checkpointing.restore_latest(manager, tiny_state(0), before=5)
    assert int(state.step) == 4 and restored.loop == {"step": 4}


def test_callbacks_into_a_closed_event_loop_are_dropped_and_other_unraisables_kept(monkeypatch):
    """After a failed restore, TensorStore reads still in flight post to orbax's closed asyncio loop: Python would
    print a traceback for each. Making a checkpoint manager installs a hook that drops exactly those."""
    import sys
    import types

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpointing._silence_closed_loop_callbacks()
    checkpointing._silence_closed_loop_callbacks()  # installed once, however many managers

    def unraisable(error):
        return types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None, err_msg=None,
                                     object=None)

    for error in (RuntimeError("Event loop is closed"), RuntimeError("something else"),
                  ValueError("Event loop is closed")):
        sys.unraisablehook(unraisable(error))
    assert [(s.exc_type, str(s.exc_value)) for s in seen] == [
        (RuntimeError, "something else"), (ValueError, "Event loop is closed")]
