"""Optimizer chain and schedules: values against closed forms and NumPy references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import test as test_config
from visioncore_jax.optim import SCHEDULES, build_optimizer, build_schedule, optimizer_hyperparams, optimizer_metrics
from visioncore_jax.optim.optimizers import _base_optimizer
from visioncore_jax.optim.schedule_plot import plot
from visioncore_jax.optim.transforms import clip_by_global_norm_with_stats, kernel_mask, skip_nonfinite
from visioncore_jax.train.validation import validate_config


def config_with(**schedule):
    config = test_config.get_config()
    config.optimizer.learning_rate = 0.1
    config.schedule.update(schedule)
    return config


PEAK, FLOOR, SPE, TOTAL = 0.1, 1e-3, 10, 100


def lr(config, step, total=TOTAL):
    return float(build_schedule(config, SPE, total)(step))


def test_warmup_cosine_values():
    config = config_with(name="warmup_cosine", warmup_epochs=2.0, min_learning_rate=FLOOR)
    warmup = 20
    np.testing.assert_allclose(lr(config, 0), PEAK / warmup, rtol=1e-6)  # the first step is not the full LR
    np.testing.assert_allclose(lr(config, warmup - 1), PEAK, rtol=1e-6)  # the peak at the end of warmup
    cosine = lambda s: FLOOR + (PEAK - FLOOR) * 0.5 * (1 + np.cos(np.pi * (s - warmup) / (TOTAL - warmup)))  # noqa
    for step in (warmup, warmup + 1, 60, TOTAL - 1, TOTAL):
        np.testing.assert_allclose(lr(config, step), cosine(step), rtol=1e-5)
    np.testing.assert_allclose(lr(config, TOTAL), FLOOR, rtol=1e-5)


def test_sgdr_cycle_boundaries_with_multiplier_two():
    config = config_with(name="cosine_restarts", warmup_epochs=0.0, min_learning_rate=FLOOR, cycle_epochs=-1,
                         cycle_steps=10, cycle_mult=2.0, cycle_peak_decay=0.5)
    cycle = lambda s, start, length, peak: FLOOR + (peak - FLOOR) * 0.5 * (1 + np.cos(np.pi * (s - start) / length))  # noqa
    for start, length, peak in ((0, 10, PEAK), (10, 20, PEAK / 2), (30, 40, PEAK / 4)):
        np.testing.assert_allclose(lr(config, start), peak, rtol=1e-5)  # restart at the boundary
        np.testing.assert_allclose(lr(config, start + length // 2), cycle(start + length // 2, start, length, peak),
                                   rtol=1e-5)
        np.testing.assert_allclose(lr(config, start + length - 1), cycle(start + length - 1, start, length, peak),
                                   rtol=1e-4)


def torch_onecycle(step, total, peak, pct_start=0.3, div=25.0, final_div=1e4, anneal="cos", three_phase=False):
    """torch.optim.lr_scheduler.OneCycleLR.get_lr (torch 2.x) in NumPy: the LR of update number `step`."""
    start = peak / div
    phases = [(float(pct_start * total) - 1, start, peak)]
    if three_phase:
        phases += [(float(2 * pct_start * total) - 2, peak, start), (total - 1, start, start / final_div)]
    else:
        phases += [(total - 1, peak, start / final_div)]
    first = 0
    for i, (last, lr_start, lr_end) in enumerate(phases):
        if step <= last or i == len(phases) - 1:
            pct = (step - first) / (last - first)
            if anneal == "cos":
                return lr_end + (lr_start - lr_end) / 2.0 * (np.cos(np.pi * pct) + 1)
            return (lr_end - lr_start) * pct + lr_start
        first = last


@pytest.mark.parametrize("anneal,three_phase", [("cos", False), ("linear", False), ("cos", True), ("linear", True)])
def test_onecycle_equals_torch_step_for_step(anneal, three_phase):
    total = 1000
    config = config_with(name="onecycle", warmup_epochs=0.0, pct_start=0.3, anneal_strategy=anneal,
                         three_phase=three_phase)
    schedule = build_schedule(config, SPE, total)
    ours = np.asarray(jax.vmap(schedule)(jnp.arange(total)))
    ref = np.array([torch_onecycle(s, total, PEAK, anneal=anneal, three_phase=three_phase) for s in range(total)])
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-9)
    # The boundaries: the peak at step 299, the end (start / final_div_factor, below the 1e-6 floor) at 999.
    assert int(np.argmax(ours)) == 299
    np.testing.assert_allclose(ours[[0, 299, 999]], [PEAK / 25, PEAK, PEAK / 25 / 1e4], rtol=1e-5)
    if three_phase:
        np.testing.assert_allclose(ours[598], PEAK / 25, rtol=1e-5)  # back at the start at 2 * 300 - 2
    np.testing.assert_allclose(float(schedule(total + 5)), ours[-1], rtol=1e-6)  # past the end: held


def test_onecycle_floor_only_when_asked_and_short_phases_rejected():
    config = config_with(name="onecycle", warmup_epochs=0.0, min_learning_rate=1e-3, onecycle_floored=True)
    np.testing.assert_allclose(lr(config, TOTAL - 1), 1e-3, rtol=1e-6)
    config.schedule.onecycle_floored = False
    np.testing.assert_allclose(lr(config, TOTAL - 1), PEAK / 25 / 1e4, rtol=1e-5)
    with pytest.raises(ValueError, match="phase shorter than one step"):
        build_schedule(config_with(name="onecycle", warmup_epochs=0.0, pct_start=0.01), SPE, TOTAL)
    with pytest.raises(ValueError, match="anneal_strategy='cosine' is not one of"):
        validate_config(config_with(name="onecycle", warmup_epochs=0.0, anneal_strategy="cosine"), 1)


def test_polynomial_at_half_and_exponential_at_epoch_three():
    config = config_with(name="polynomial", warmup_epochs=0.0, power=2.0, min_learning_rate=FLOOR)
    np.testing.assert_allclose(lr(config, TOTAL // 2), (PEAK - FLOOR) * 0.5**2 + FLOOR, rtol=1e-5)
    config = config_with(name="exponential", warmup_epochs=0.0, decay_rate=0.5, staircase=False,
                         min_learning_rate=FLOOR)
    np.testing.assert_allclose(lr(config, 3 * SPE), PEAK * 0.5**3, rtol=1e-5)
    np.testing.assert_allclose(lr(config, 35), PEAK * 0.5**3.5, rtol=1e-5)
    config.schedule.staircase = True
    np.testing.assert_allclose(lr(config, 35), PEAK * 0.5**3, rtol=1e-5)
    np.testing.assert_allclose(lr(config, 99), FLOOR, rtol=1e-5)  # 0.1 * 0.5^9 < floor: the floor holds


def test_warmup_composes_with_every_schedule():
    for name in ("constant", "warmup_cosine", "cosine_restarts", "onecycle", "polynomial", "exponential"):
        config = config_with(name=name, warmup_epochs=-1, warmup_steps=5)
        np.testing.assert_allclose(lr(config, 0), PEAK / 5, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(lr(config, 4), PEAK, rtol=1e-6, err_msg=name)


def test_a_warmup_longer_than_the_run_is_an_error():
    with pytest.raises(ValueError, match="200 warmup steps"):
        build_schedule(config_with(name="warmup_cosine", warmup_epochs=20.0), SPE, TOTAL)


def test_clip_records_the_pre_clip_norm():
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([[12.0]])}
    clip = clip_by_global_norm_with_stats()
    clipped, state = clip.update(grads, clip.init(grads), grad_clip_norm=6.5)
    np.testing.assert_allclose(state.grad_norm, 13.0)
    assert float(state.clipped) == 1.0
    np.testing.assert_allclose(optax.global_norm(clipped), 6.5, rtol=1e-6)
    _, state = clip.update(jax.tree.map(lambda g: g / 10, grads), state, grad_clip_norm=6.5)
    assert float(state.clipped) == 0.0
    unclipped, state = clip.update(grads, state, grad_clip_norm=0.0)  # 0 disables clipping
    assert float(state.clipped) == 0.0 and float(state.grad_norm) == 13.0
    jax.tree.map(np.testing.assert_array_equal, unclipped, grads)
    with pytest.raises(TypeError, match="takes 'grad_clip_norm' at update time"):
        clip.update(grads, state)


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
    tx, learning_rate_fn = build_optimizer(config, 10, 100)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, state = jax.jit(tx.update)(zero, tx.init(params), params, **optimizer_hyperparams(config.optimizer))
    # The chain's updates are those of LR 1; the train step scales them by the step's LR.
    np.testing.assert_allclose(updates["conv"]["kernel"] * learning_rate_fn(0), -0.1 * 0.5)  # lr * wd * param
    np.testing.assert_array_equal(updates["conv"]["bias"], 0.0)  # kernels only
    metrics = jax.jit(optimizer_metrics)(state)
    assert set(metrics) == {"grad_norm", "clipped", "skipped_steps", "current_skip_run", "longest_skip_run"}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lamb"])
def test_runtime_weight_decay_matches_optax_state_and_updates(name):
    """The chain takes its weight decay at update time, yet keeps optax's state structure (checkpoints of the
    versions that built it with `optax.add_decayed_weights` / `optax.adamw` / `optax.lamb` restore) and makes
    the same updates."""
    params = {"conv": {"kernel": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "bias": jnp.ones(4)}}
    grads = jax.tree.map(lambda p: 0.3 * p + 0.05, params)
    opt = config_with(name="constant").optimizer
    opt.update(name=name, weight_decay=0.2)
    unit = lambda count: jnp.ones((), jnp.float32)  # noqa: E731 - the chain's LR-1 schedule
    decay = optax.add_decayed_weights(0.2, mask=kernel_mask)
    stock = {
        "sgd": optax.chain(decay, optax.sgd(unit, momentum=opt.momentum, nesterov=opt.nesterov)),
        "adam": optax.chain(decay, optax.adam(unit, b1=opt.b1, b2=opt.b2, eps=opt.eps)),
        "adamw": optax.adamw(unit, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=0.2, mask=kernel_mask),
        "lamb": optax.lamb(unit, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=0.2, mask=kernel_mask),
    }[name]
    ours = _base_optimizer(opt)
    expected_state, ours_state = stock.init(params), ours.init(params)
    assert jax.tree.structure(ours_state) == jax.tree.structure(expected_state)
    for _ in range(2):
        expected, expected_state = stock.update(grads, expected_state, params)
        updates, ours_state = ours.update(grads, ours_state, params, weight_decay=0.2)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), updates, expected)


def test_clip_norm_and_weight_decay_are_inputs_of_one_compiled_update():
    """Configs differing only in clip norm and weight decay share the chain object and its compiled update (so
    runs and repair trials share a compiled train step), and each value still takes effect."""
    params = {"conv": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}}
    grads = jax.tree.map(lambda p: 0.1 * p, params)  # norm 0.35: under the default clip norm 5
    configs = [config_with(name="constant") for _ in range(3)]
    configs[1].optimizer.update(weight_decay=0.5)
    configs[2].optimizer.update(grad_clip_norm=1e-3)
    txs = [build_optimizer(config, 10, 100)[0] for config in configs]
    assert txs[0] is txs[1] is txs[2]
    update = jax.jit(txs[0].update)
    results = [update(grads, txs[0].init(params), params, **optimizer_hyperparams(c.optimizer)) for c in configs]
    assert update._cache_size() == 1
    (plain, plain_state), (decayed, _), (clipped, clipped_state) = results
    assert optimizer_metrics(plain_state)["clipped"] == 0.0 and optimizer_metrics(clipped_state)["clipped"] == 1.0
    assert not np.allclose(decayed["conv"]["kernel"], plain["conv"]["kernel"])
    np.testing.assert_array_equal(decayed["conv"]["bias"], plain["conv"]["bias"])  # kernels only
    assert not np.allclose(clipped["conv"]["kernel"], plain["conv"]["kernel"])


def test_plot_every_schedule(tmp_path):
    config = test_config.get_config()
    config.training.update(num_train_steps=50)
    plot(config, SCHEDULES, 10, str(tmp_path / "lr.png"))
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
