"""Plateau LR, early stopping, rollback decisions, progressive regularization, per-module LR multipliers and
gradient accumulation: values, not shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import test as test_config
from visioncore_jax.optim import build_optimizer, optimizer_hyperparams
from visioncore_jax.optim.regularization import regularization_at
from visioncore_jax.train.controls import (
    EarlyStoppingState,
    PlateauState,
    check_rollback_budget,
    early_stopping_update,
    metric_mode,
    needs_rollback,
    plateau_update,
)


def scales(values, **plateau):
    config = test_config.get_config()
    config.plateau.update(enabled=True, **plateau)
    state, out = PlateauState(), []
    for value in values:
        state = plateau_update(state, value, config.plateau)
        out.append(state.scale)
    return out


def test_plateau_on_a_max_metric_cuts_only_when_it_stops_rising():
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert scales(rising, metric="eval_accuracy", patience=1, factor=0.5) == [1.0] * 6
    stalled = [0.1, 0.2, 0.3, 0.3, 0.3, 0.29, 0.28, 0.4]
    assert scales(stalled, metric="eval_accuracy", patience=1, factor=0.5) == [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25]
    # The same sequence read as a loss (min): it "improves" whenever it falls.
    assert scales([0.5, 0.4, 0.45, 0.5, 0.3], metric="eval_loss", patience=1, factor=0.5) == [1, 1, 1, 0.5, 0.5]


def test_plateau_cooldown_threshold_and_floor():
    flat = [0.5] * 9
    assert scales(flat, metric="eval_accuracy", patience=0, factor=0.5, cooldown=2) == [
        1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125]
    # +0.05% is below a 0.1% relative threshold: no improvement.
    assert scales([0.5, 0.50025, 0.5005], metric="eval_accuracy", patience=0, factor=0.5, threshold=1e-3) == [
        1, 0.5, 0.25]
    assert scales(flat, metric="eval_accuracy", patience=0, factor=0.1, min_scale=1e-2)[-1] == 1e-2


def test_metric_mode():
    assert metric_mode("eval_accuracy") == "max" and metric_mode("eval_dice") == "max"
    assert metric_mode("eval_loss") == "min" and metric_mode("eval_accuracy", "min") == "min"
    with pytest.raises(ValueError, match="set its mode"):
        metric_mode("eval_something")


def test_early_stopping():
    config = test_config.get_config().early_stopping
    config.update(enabled=True, metric="eval_loss", patience=2, min_delta=0.01)
    state, stops = EarlyStoppingState(), []
    for value in (1.0, 0.9, 0.895, 0.892, 0.9, 0.7):
        state = early_stopping_update(state, value, config)
        stops.append(state.should_stop(config.patience))
    assert stops == [False, False, False, False, True, False]


def test_rollback_decisions_and_budget():
    config = test_config.get_config().nan_recovery
    config.update(max_consecutive_skips=3, max_rollbacks=2)
    assert not needs_rollback(2, 1.0, config)
    assert needs_rollback(3, 1.0, config) and needs_rollback(0, float("nan"), config)
    check_rollback_budget(2, 10, config)
    with pytest.raises(RuntimeError, match="after 2 rollbacks.*--config.optimizer.learning_rate"):
        check_rollback_budget(3, 10, config)


def test_progressive_regularization_is_piecewise_constant():
    config = test_config.get_config()
    config.model.dropout, config.training.label_smoothing = 0.1, 0.0
    config.regularization.dropout_schedule = ((20, 0.2), (30, 0.3))
    config.regularization.label_smoothing_schedule = ((30, 0.1),)
    assert regularization_at(config, 0) == {"dropout_rate": 0.1, "label_smoothing": 0.0}
    assert regularization_at(config, 25.5) == {"dropout_rate": 0.2, "label_smoothing": 0.0}
    assert regularization_at(config, 30) == {"dropout_rate": 0.3, "label_smoothing": 0.1}


PARAMS = {"color": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}


def sgd_config(**optimizer):
    config = test_config.get_config()
    config.schedule.update(name="constant", warmup_epochs=0.0)
    config.optimizer.update(name="sgd", learning_rate=0.1, momentum=0.0, weight_decay=0.0, grad_clip_norm=0.0,
                            **optimizer)
    return config


def test_per_module_multipliers_scale_updates_by_the_configured_ratio():
    grads = jax.tree.map(lambda p: p * 2.0, PARAMS)
    plain_tx, _ = build_optimizer(sgd_config(), 10, 100)
    scaled_tx, _ = build_optimizer(sgd_config(lr_multipliers=(("head/.*", 10.0),)), 10, 100)
    args = optimizer_hyperparams(sgd_config().optimizer)
    plain, _ = plain_tx.update(grads, plain_tx.init(PARAMS), PARAMS, **args)
    scaled, _ = scaled_tx.update(grads, scaled_tx.init(PARAMS), PARAMS, **args)
    np.testing.assert_allclose(scaled["head"]["kernel"], 10 * plain["head"]["kernel"])
    np.testing.assert_allclose(scaled["head"]["bias"], 10 * plain["head"]["bias"])
    np.testing.assert_allclose(scaled["color"]["kernel"], plain["color"]["kernel"])
    np.testing.assert_allclose(plain["color"]["kernel"], -2.0)  # LR 1 (the train step applies the LR)
    unmatched_tx, _ = build_optimizer(sgd_config(lr_multipliers=(("backbone/.*", 0.1),)), 10, 100)
    with pytest.raises(ValueError, match="'backbone/.\\*' matches no parameter"):
        unmatched_tx.init(PARAMS)


def test_accumulation_equals_one_big_batch_step():
    micro = [jax.tree.map(lambda p, i=i: p * (i + 1.0), PARAMS) for i in range(4)]
    config = sgd_config(accumulation_steps=4)
    tx, schedule = build_optimizer(config, 10, 100)
    state, params = tx.init(PARAMS), PARAMS
    for step, grads in enumerate(micro):
        updates, state = tx.update(grads, state, params, **optimizer_hyperparams(config.optimizer))
        params = optax.apply_updates(params, jax.tree.map(lambda u, s=step: u * schedule(s), updates))
        if step < 3:
            jax.tree.map(np.testing.assert_array_equal, params, PARAMS)  # nothing applied before the 4th
    mean_grad = jax.tree.map(lambda *g: sum(g) / 4, *micro)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, PARAMS, mean_grad)
    jax.tree.map(np.testing.assert_allclose, params, expected)
    assert float(schedule(7)) == pytest.approx(0.1)
