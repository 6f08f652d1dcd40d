"""The project's BatchNorm (per-channel sums as matrix products, a hand-written gradient) against float64 NumPy and
against flax's BatchNorm: the same variables, outputs, gradients and running statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visioncore_jax.models import batch_norm
from visioncore_jax.models.batch_norm import BatchNorm

EPSILON = 1e-5


def numpy_batch_norm(x, scale, bias, weights):
    """float64 training-mode BatchNorm over all axes but the last, and the gradients of sum(y · weights)."""
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    mean, var = x.mean(axes), x.var(axes)
    normalized = (x - mean) / np.sqrt(var + EPSILON)
    y = normalized * scale + bias
    dbias, dscale = weights.sum(axes), (weights * normalized).sum(axes)
    dx = scale / np.sqrt(var + EPSILON) * (weights - (dbias + normalized * dscale) / count)
    return y, mean, var, dx, dscale, dbias


def loss_and_grads(module, variables, x, weights):
    """(y, updated batch_stats, d/dx, d/dparams) of sum(y · weights) in training mode."""
    def loss(params, x):
        y, updates = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(y.astype(jnp.float32) * weights), (y, updates["batch_stats"])
    (_, (y, stats)), (dparams, dx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], x)
    return y, stats, dx, dparams


@pytest.mark.parametrize("as_products", [True, False])
@pytest.mark.parametrize("shape", [(16, 8, 8, 4), (4, 3, 5, 6, 3)])
def test_training_step_equals_float64_numpy(shape, as_products, monkeypatch):
    # Products on CPU; the reductions accelerators use are checked here too.
    monkeypatch.setattr(batch_norm, "sums_as_products", lambda: as_products)
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, shape)  # a mean far from 0: E[x²] - E[x]² must not lose the variance
    weights = rng.normal(size=shape)
    scale, bias = rng.normal(size=shape[-1]), rng.normal(size=shape[-1])
    module = BatchNorm(use_running_average=False, momentum=0.9)
    variables = module.init(jax.random.key(0), jnp.zeros(shape, jnp.float32))
    assert jax.tree.map(jnp.shape, variables) == {"params": {"scale": shape[-1:], "bias": shape[-1:]},
                                                  "batch_stats": {"mean": shape[-1:], "var": shape[-1:]}}
    variables = {**variables, "params": {"scale": jnp.float32(scale), "bias": jnp.float32(bias)}}
    y, stats, dx, dparams = loss_and_grads(module, variables, jnp.float32(x), jnp.float32(weights))
    y64, mean64, var64, dx64, dscale64, dbias64 = numpy_batch_norm(x, scale, bias, weights)
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dparams["scale"], dscale64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dparams["bias"], dbias64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats["mean"], 0.1 * mean64, rtol=1e-5)  # momentum 0.9 from 0
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var64, rtol=1e-5)  # from 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_equals_flax_batch_norm_in_training_and_evaluation(dtype):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(1.0, 2.0, (8, 6, 6, 5)), dtype)
    weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    variables = {"params": {"scale": jnp.float32(rng.normal(size=5)), "bias": jnp.float32(rng.normal(size=5))},
                 "batch_stats": {"mean": jnp.float32(rng.normal(size=5)), "var": jnp.float32(rng.uniform(1, 2, 5))}}
    ours, theirs = (cls(use_running_average=False, momentum=0.8, dtype=dtype) for cls in (BatchNorm, nn.BatchNorm))
    (y, stats, dx, dparams), (y_flax, stats_flax, dx_flax, dparams_flax) = (
        loss_and_grads(module, variables, x, weights) for module in (ours, theirs))
    assert y.dtype == y_flax.dtype == dtype and dx.dtype == dtype
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == jnp.float32 else {"rtol": 1e-2, "atol": 2e-2}
    np.testing.assert_allclose(np.float32(y), np.float32(y_flax), **tolerance)
    np.testing.assert_allclose(np.float32(dx), np.float32(dx_flax), **tolerance)
    for tree, tree_flax in ((dparams, dparams_flax), (stats, stats_flax)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), tree, tree_flax)
    # Evaluation: the running averages, the same operations in the same order as flax: bit for bit.
    evaluated = [cls(use_running_average=True, dtype=dtype).apply(variables, x) for cls in (BatchNorm, nn.BatchNorm)]
    np.testing.assert_array_equal(np.float32(evaluated[0]), np.float32(evaluated[1]))
