"""The training loop's stability features end to end: NaN-skip counts, rollback with an LR cut, and every
schedule's LR logged per step."""

import dataclasses

import jax
import numpy as np
import pytest

from configs import test as test_config
from tests.conftest import read_scalars, read_texts
from tests.fault_zoo import PlainCNN, zoo_config
from tests.test_train import assert_same_logs
from visioncore_jax.data.pipeline import InputPipeline
from visioncore_jax.diagnostics import analyzer
from visioncore_jax.optim import build_schedule
from visioncore_jax.train import train_and_evaluate


@pytest.fixture
def config(tfds_data_dir):
    config = test_config.get_config()
    config.data.data_dir = tfds_data_dir
    config.training.update(num_train_steps=12, log_every_steps=2, checkpoint_every_steps=2)
    return config


@dataclasses.dataclass
class Poison:
    """Replaces the color input of the batches at `indices` of the training stream by NaN (first pass only)."""

    indices: set
    once: bool = False
    poisoned: list = dataclasses.field(default_factory=list)

    def install(self, monkeypatch):
        original = InputPipeline.train_batches

        def train_batches(pipeline, global_batch_size, start_step=0):
            for index, batch in enumerate(original(pipeline, global_batch_size, start_step), start=start_step):
                if index in self.indices and not (self.once and index in self.poisoned):
                    self.poisoned.append(index)
                    batch = {**batch, "color": np.full_like(batch["color"], np.nan)}
                yield batch

        monkeypatch.setattr(InputPipeline, "train_batches", train_batches)


@pytest.mark.slow
def test_nan_batches_are_skipped_and_counted(config, tmp_path, monkeypatch):
    Poison({2, 5, 9}).install(monkeypatch)
    state = train_and_evaluate(config, str(tmp_path))
    scalars = read_scalars(str(tmp_path))
    assert scalars["train_skipped_steps"][-1] == (12, 3.0)
    assert int(state.step) == 12
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(jax.device_get(state.params)))
    assert np.isfinite(scalars["eval_loss"][-1][1])


@pytest.mark.slow
def test_divergence_rolls_back_cuts_the_lr_and_finishes(config, tmp_path, monkeypatch):
    config.nan_recovery.update(max_consecutive_skips=4, lr_factor=0.5)
    poison = Poison(set(range(3, 9)), once=True)  # steps 4..9 diverge on the first pass
    poison.install(monkeypatch)
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 12 and float(state.lr_scale) == 0.5
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(jax.device_get(state.params)))
    scalars = read_scalars(str(tmp_path))
    # Steps 4-8 were skipped: the checkpoints at 4 and 6 fall inside the streak, the one at 2 is before it. The
    # diverged steps' events are gone: every step is logged once, and the rollback at the step it returned to.
    assert scalars["train_rollbacks"] == [(2, 1.0)]
    (event,) = read_texts(str(tmp_path), "events")
    assert "at step 8; rolled back to step 2" in event and "multiplied the LR by 0.5" in event
    for tag, series in scalars.items():
        steps = [step for step, _ in series]
        assert steps == sorted(set(steps)), (tag, steps)
    # The LR logged after the rollback is the schedule's times the cut.
    schedule = build_schedule(config, 12_000 // 32, 12)
    step, logged = scalars["train_learning_rate"][-1]
    np.testing.assert_allclose(logged, 0.5 * float(schedule(step - 1)), rtol=1e-5)


@pytest.mark.slow
def test_too_many_rollbacks_stop_with_advice(config, tmp_path, monkeypatch):
    config.nan_recovery.update(max_consecutive_skips=2, max_rollbacks=1)
    Poison(set(range(2, 12))).install(monkeypatch)  # diverges on every pass
    with pytest.raises(RuntimeError, match="after 1 rollbacks"):
        train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onecycle", "cosine_restarts"])  # all six: test_optim.py
def test_every_schedule_logs_the_lr_used_at_each_step(config, tmp_path, name):
    config.schedule.update(name=name, warmup_epochs=-1, warmup_steps=2, cycle_epochs=-1, cycle_steps=3)
    config.training.update(num_train_steps=6, log_every_steps=1)
    train_and_evaluate(config, str(tmp_path))
    schedule = build_schedule(config, 12_000 // 32, 6)
    logged = read_scalars(str(tmp_path))["train_learning_rate"]
    assert [step for step, _ in logged] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([lr for _, lr in logged], [float(schedule(s - 1)) for s, _ in logged], rtol=1e-5)


@pytest.mark.slow
def test_plateau_cuts_the_lr_and_early_stopping_ends_the_run(config, tmp_path):
    config.training.update(num_train_steps=12, eval_every_epochs=2 / 375)  # an eval every 2 steps
    # Thresholds no run can meet: after the first eval, every eval counts as "not improved".
    # Factor 0.3 is not exact in float32 (the state's copy of the scale is 0.30000001).
    config.plateau.update(enabled=True, metric="eval_loss", patience=0, factor=0.3, threshold=10.0, cooldown=1)
    config.early_stopping.update(enabled=True, metric="eval_accuracy", patience=2, min_delta=10.0)
    state = train_and_evaluate(config, str(tmp_path))
    # Evals at steps 2 (best), 4 (cut to 0.3, 1 bad), 6 (cooldown, 2 bad), 8 (cut to 0.09, 3 bad > 2: stop).
    assert int(state.step) == 8 and float(state.lr_scale) == pytest.approx(0.09)
    schedule = build_schedule(config, 12_000 // 32, 12)
    step, logged = read_scalars(str(tmp_path))["train_learning_rate"][-1]
    assert step == 8
    np.testing.assert_allclose(logged, 0.3 * float(schedule(7)), rtol=1e-5)  # the cut at step 4 applied
    # The records (written before each eval's controls act, so the last cut is in none) hold one event per cut:
    # none at the cooldown eval of step 6.
    cuts = [(e.step, e.lr_scale) for r in analyzer.load_records(str(tmp_path)).train for e in r.events]
    assert cuts == [(4, pytest.approx(0.3))]


class Crash(Exception):
    """Stands in for a killed process: raised by the input pipeline at a given step."""


@pytest.mark.slow
def test_crashed_run_resumes_to_the_same_logs(tfds_data_dir, tmp_path, monkeypatch):
    """Log windows (3 steps), checkpoints (every 5) and diagnostics periods (8 steps) out of step: a crash in
    step 14 resumes from the checkpoint at 10, inside a log window and a diagnostics period, and every scalar
    and record equals those of an uninterrupted run."""
    config = zoo_config(tfds_data_dir, steps=16, eval_every=8)
    config.training.update(log_every_steps=3, checkpoint_every_steps=5)
    model = PlainCNN(depth=2, width=8)
    train_and_evaluate(config, str(tmp_path / "reference"), model=model)
    original = InputPipeline.train_batches

    def crashing(pipeline, global_batch_size, start_step=0):
        for index, batch in enumerate(original(pipeline, global_batch_size, start_step), start=start_step):
            if index == 13:
                raise Crash
            yield batch

    monkeypatch.setattr(InputPipeline, "train_batches", crashing)
    with pytest.raises(Crash):
        train_and_evaluate(config, str(tmp_path / "resumed"), model=model)
    monkeypatch.setattr(InputPipeline, "train_batches", original)
    train_and_evaluate(config, str(tmp_path / "resumed"), model=model)
    assert_same_logs(str(tmp_path / "reference"), str(tmp_path / "resumed"))
