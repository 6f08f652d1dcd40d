"""Normalization layers selectable by name, including an affine RMSNorm."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.batch_norm import BatchNorm

NORMS = ("batch", "group", "layer", "rms", "none")


class RMSNorm(nn.Module):
    """`y = x / sqrt(mean(x², axes) + eps) · scale (+ bias)`, computed in float32, cast back to the input dtype.

    As `torch.nn.RMSNorm`, no bias by default; `use_bias=True` adds one (as the original VisionCore layer; a
    checkpoint saved with it restores only into a model built with it: otherwise the restore fails naming the
    `bias` entries). Hand-written because `flax.linen.RMSNorm` has no bias option. With `affine=False` there are
    no parameters. `axes` are the normalized axes (default: channels, as the original's `norm_dims=(1,)` in NCHW).
    """

    eps: float = 1e-4
    axes: Sequence[int] = (-1,)
    affine: bool = True
    use_bias: bool = False
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalizes `x` over `axes`; scale and bias have the size of the last (channel) axis."""
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=tuple(self.axes), keepdims=True) + self.eps)
        if self.affine:
            y = y * self.param("scale", self.scale_init, (x.shape[-1],), jnp.float32)
        if self.affine and self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        return y.astype(x.dtype)


def make_norm(name: str, *, train: bool, zero_init: bool = False, momentum: float = 0.9, groups: int = 8,
              dtype: Any = jnp.float32) -> nn.Module | None:
    """The norm layer `name` (None for 'none'); `zero_init` starts its scale at 0 (identity residual blocks)."""
    scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
    if name == "batch":
        return BatchNorm(use_running_average=not train, momentum=momentum, scale_init=scale_init, dtype=dtype)
    if name == "group":
        return nn.GroupNorm(num_groups=groups, scale_init=scale_init, dtype=dtype)
    if name == "layer":
        return nn.LayerNorm(scale_init=scale_init, dtype=dtype)
    if name == "rms":
        return RMSNorm(scale_init=scale_init)
    if name == "none":
        return None
    raise ValueError(f"norm={name!r} is not one of {list(NORMS)}.")
