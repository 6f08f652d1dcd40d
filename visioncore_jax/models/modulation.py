"""VisionCore's behavior modulator: a behavior vector per example, embedded, broadcast over time and space, and
concatenated to the features a ConvGRU reads."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.recurrent import ConvGRU


class BehaviorModulatedConvGRU(nn.Module):
    """`ConvGRU(concat[features, broadcast(Dense(behavior))])`.

    `features` [B, T, H, W, C]; `behavior` [B, D] (one vector per clip) or [B, T, D] (one per frame), embedded
    to `embed_dim` channels (the original: 42 → 32) and repeated over H and W (and T when per clip).
    """

    embed_dim: int
    gru: Mapping[str, Any]

    @nn.compact
    def __call__(self, features: jax.Array, behavior: jax.Array) -> jax.Array:
        """Runs the ConvGRU on the features with the embedded behavior appended as channels."""
        batch, steps, height, width, _ = features.shape
        if behavior.ndim == 2:
            behavior = jnp.broadcast_to(behavior[:, None, :], (batch, steps, behavior.shape[-1]))
        if behavior.shape[:2] != (batch, steps):
            raise ValueError(f"behavior of shape {behavior.shape} does not match features [B={batch}, T={steps}].")
        embedded = nn.Dense(self.embed_dim, name="behavior_embedding")(behavior.astype(features.dtype))
        embedded = jnp.broadcast_to(embedded[:, :, None, None, :], (batch, steps, height, width, self.embed_dim))
        return ConvGRU(**self.gru, name="gru")(jnp.concatenate([features, embedded], axis=-1))
