"""Optimizer chain and schedules: values against closed forms and NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import test as test_config
from visioncore_jax.optim import build_optimizer, build_schedule, optimizer_metrics
from visioncore_jax.optim.transforms import clip_by_global_norm_with_stats, kernel_mask, skip_nonfinite


def config_with(**schedule):
    config = test_config.get_config()
    config.optimizer.learning_rate = 0.1
    config.schedule.update(schedule)
    return config


def test_warmup_cosine_values():
    peak, floor, spe, total = 0.1, 1e-3, 10, 100
    schedule = build_schedule(config_with(name="warmup_cosine", warmup_epochs=2.0, min_learning_rate=floor),
                              spe, total)
    warmup = 20
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(schedule(1), peak / warmup, rtol=1e-6)  # the first warmup step is not the peak
    np.testing.assert_allclose(schedule(warmup), peak, rtol=1e-6)
    cosine = lambda s: floor + (peak - floor) * 0.5 * (1 + np.cos(np.pi * (s - warmup) / (total - warmup)))  # noqa
    for step in (warmup + 1, 60, total - 1, total):
        np.testing.assert_allclose(schedule(step), cosine(step), rtol=1e-5)


def test_schedule_errors_name_the_key():
    with pytest.raises(ValueError, match="config.schedule.name='one_cycle' is not one of"):
        build_schedule(config_with(name="one_cycle"), 10, 100)
    with pytest.raises(ValueError, match="config.schedule.warmup_epochs=20.0"):
        build_schedule(config_with(name="warmup_cosine", warmup_epochs=20.0), 10, 100)


def test_clip_records_the_pre_clip_norm():
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([[12.0]])}
    clip = clip_by_global_norm_with_stats(6.5)
    clipped, state = clip.update(grads, clip.init(grads))
    np.testing.assert_allclose(state.grad_norm, 13.0)
    assert float(state.clipped) == 1.0
    np.testing.assert_allclose(optax.global_norm(clipped), 6.5, rtol=1e-6)
    _, state = clip.update(jax.tree.map(lambda g: g / 10, grads), state)
    assert float(state.clipped) == 0.0


def test_skip_nonfinite_keeps_params_and_counts_runs():
    params = {"w": jnp.ones(3)}
    tx = skip_nonfinite(optax.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    good, bad = {"w": jnp.ones(3)}, {"w": jnp.array([1.0, jnp.nan, 1.0])}
    for grads in (good, bad, bad, good, bad):
        updates, new_state = tx.update(grads, state, params)
        if grads is bad:
            np.testing.assert_array_equal(updates["w"], 0.0)
            jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
        params, state = optax.apply_updates(params, updates), new_state
    assert int(state.skipped_steps) == 3 and int(state.longest_skip_run) == 2 and int(state.current_skip_run) == 1


def test_weight_decay_mask_and_optimizer_metrics_under_jit():
    params = {"conv": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}, "bn": {"scale": jnp.ones(3)}}
    assert kernel_mask(params) == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False}}
    config = config_with(name="constant")
    config.optimizer.update(name="sgd", momentum=0.0, weight_decay=0.5, grad_clip_norm=0.0)
    tx, _ = build_optimizer(config, 10, 100)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, state = jax.jit(tx.update)(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 * 0.5)  # lr * wd * param, kernels only
    np.testing.assert_array_equal(updates["conv"]["bias"], 0.0)
    metrics = jax.jit(optimizer_metrics)(state)
    assert set(metrics) == {"grad_norm", "clipped", "skipped_steps", "longest_skip_run"}


def test_unknown_optimizer_is_an_error():
    config = config_with(name="constant")
    config.optimizer.name = "adamax"
    with pytest.raises(ValueError, match="config.optimizer.name='adamax' is not one of"):
        build_optimizer(config, 10, 100)
