"""BatchNorm whose batch statistics, and their gradients, are per-channel sums computed as matrix products.

Same parameters, batch statistics, defaults and outputs as `flax.linen.BatchNorm` (channels last; statistics in
float32, the variance as E[x²] - E[x]² clipped at 0; the running averages updated outside initialisation), so
checkpoints and converted PyTorch weights load either way. Hand-written for speed on XLA:CPU: there a per-channel
reduction over the N·H·W rows of an activation (jnp.mean, and the sums autodiff makes of its gradient) is a
column reduction that XLA:CPU rewrites into reduce-windows, 3.7 ms for a [64, 32, 32, 32] float32 tensor on a
2-core Xeon, while the same sums as a vector-matrix product take 0.63 ms (BENCHMARKS.md, "Closing the CPU gap").
A ResNet-18's BatchNorms do four such sums per layer per step (two forward, two backward). Accelerators keep
plain reductions (`sums_as_products`): their reductions are fast, and the products were not measured there.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def sums_as_products() -> bool:
    """Whether the per-channel sums are vector-matrix products (XLA:CPU) or reductions (accelerators)."""
    return jax.default_backend() == "cpu"


def _channel_sums(rows: jax.Array) -> jax.Array:
    """Per-channel sums of a float32 [rows, channels] matrix."""
    if sums_as_products():
        return jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(rows, axis=0)


def _normalize(x, mean, var, scale, bias, epsilon, dtype):
    """flax's normalization, in its order of operations: (x - mean) · (rsqrt(var + eps) · scale) + bias."""
    y = x - mean
    y = y * (jax.lax.rsqrt(var + epsilon) * scale)
    return (y + bias).astype(dtype)


def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """float32 mean and variance (E[x²] - E[x]², clipped at 0, as flax's default) over every axis but the last."""
    rows = x.astype(jnp.float32).reshape(-1, x.shape[-1])
    mean = _channel_sums(rows) / rows.shape[0]
    mean_of_squares = _channel_sums(rows * rows) / rows.shape[0]
    return mean, jnp.maximum(0.0, mean_of_squares - mean * mean)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon: float, dtype: Any):
    """(normalized x in `dtype`, batch mean, batch variance): training-mode BatchNorm over all axes but the last."""
    return _batch_norm_train_forward(x, scale, bias, epsilon, dtype)[0]


def _batch_norm_train_forward(x, scale, bias, epsilon, dtype):
    """batch_norm_train's outputs and the residuals its gradient needs."""
    mean, var = _moments(x)
    return (_normalize(x, mean, var, scale, bias, epsilon, dtype), mean, var), (x, scale, mean, var)


def _batch_norm_train_backward(epsilon, dtype, residuals, cotangents):
    """The textbook BatchNorm gradient, dx = scale·inv·(g - mean(g) - x̂·mean(g·x̂)), plus the terms of the mean
    and variance outputs; its two per-channel sums are `_channel_sums`."""
    del dtype
    x, scale, mean, var = residuals
    dy, dmean, dvar = cotangents
    rows = x.astype(jnp.float32).reshape(-1, x.shape[-1])
    count = rows.shape[0]
    inv = jax.lax.rsqrt(var + epsilon)
    centered = rows - mean
    normalized = centered * inv
    g = dy.astype(jnp.float32).reshape(rows.shape)
    dbias = _channel_sums(g)
    dscale = _channel_sums(g * normalized)
    dx = (scale * inv) * (g - (dbias + normalized * dscale) / count) + (dmean + 2.0 * dvar * centered) / count
    return dx.reshape(x.shape).astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


batch_norm_train.defvjp(_batch_norm_train_forward, _batch_norm_train_backward)


class BatchNorm(nn.Module):
    """Drop-in for `flax.linen.BatchNorm` over the last (channel) axis; see the module docstring."""

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    scale_init: Any = nn.initializers.ones
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """Normalizes `x` with its batch statistics (training) or the running averages."""
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        channels = (x.shape[-1],)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, channels, jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, channels, jnp.float32)
        scale = self.param("scale", self.scale_init, channels, jnp.float32)
        bias = self.param("bias", self.bias_init, channels, jnp.float32)
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        if use_running_average:
            return _normalize(x, running_mean.value, running_var.value, scale, bias, self.epsilon, dtype)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, dtype)
        if not self.is_initializing():
            running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
            running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
        return y
