"""Squeeze-and-excitation and CBAM attention, applied as `x + scale · (x · attention − x)`.

With attention in (0, 1) the output stays within `x ± scale·|x|`: at scale 0 the module is the identity, so it
can be dropped into a trained network without disturbing it. Logits are clamped before the sigmoid so the gates
cannot saturate into vanishing gradients; the gate values are sown under `intermediates/gate`, their statistics
under `diagnostics`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.batch_norm import BatchNorm
from visioncore_jax.models.layers import sow_gate_stats


def hidden_width(channels: int, reduction: int) -> int:
    """Width of the attention MLP: `max(channels // reduction, 1)`."""
    return max(channels // reduction, 1)


class AttentionScale(nn.Module):
    """The blend factor: a fixed value, or a learnable scalar starting at that value."""

    init_value: float = 0.1
    learnable: bool = False

    @nn.compact
    def __call__(self) -> jax.Array:
        """Returns the scale."""
        if self.learnable:
            return self.param("scale", nn.initializers.constant(self.init_value), ())
        return jnp.asarray(self.init_value)


def _blend(x: jax.Array, attention: jax.Array, scale: jax.Array) -> jax.Array:
    return x + scale * (x * attention - x)


class SqueezeExcitation(nn.Module):
    """SE: global average pool → Dense → BN → ReLU → Dense → BN → clamp → sigmoid, per channel."""

    reduction: int = 16
    clamp: float = 10.0
    scale: float = 0.1
    learnable_scale: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Reweights the channels of NHWC `x`."""
        channels = x.shape[-1]
        norm = lambda: BatchNorm(use_running_average=not train)  # noqa: E731
        y = jnp.mean(x, axis=(1, 2))
        y = nn.relu(norm()(nn.Dense(hidden_width(channels, self.reduction))(y)))
        y = norm()(nn.Dense(channels)(y))
        gate = nn.sigmoid(jnp.clip(y, -self.clamp, self.clamp))[:, None, None, :]
        self.sow("intermediates", "gate", gate)
        sow_gate_stats(self, gate)
        return _blend(x, gate, AttentionScale(self.scale, self.learnable_scale)())


class CBAM(nn.Module):
    """CBAM: channel attention (average- and max-pooled features through one shared MLP with BN), then spatial
    attention (7×7 conv + BN on the channel-wise mean and max); the product of both gates is blended in."""

    reduction: int = 16
    spatial_kernel: int = 7
    clamp: float = 10.0
    scale: float = 0.1
    learnable_scale: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Reweights the channels and positions of NHWC `x`."""
        channels = x.shape[-1]
        hidden = nn.Dense(hidden_width(channels, self.reduction), name="mlp_hidden")
        hidden_norm = BatchNorm(use_running_average=not train, name="mlp_norm")
        out = nn.Dense(channels, name="mlp_out")
        # The two pooled vectors go through the shared MLP as one batch, so BN sees both.
        pooled = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], axis=0)
        logits = out(nn.relu(hidden_norm(hidden(pooled))))
        avg_logits, max_logits = jnp.split(logits, 2, axis=0)
        channel_gate = nn.sigmoid(jnp.clip(avg_logits + max_logits, -self.clamp, self.clamp))[:, None, None, :]

        refined = x * channel_gate
        descriptor = jnp.concatenate([jnp.mean(refined, -1, keepdims=True), jnp.max(refined, -1, keepdims=True)], -1)
        spatial = nn.Conv(1, (self.spatial_kernel,) * 2, padding="SAME", use_bias=False, name="spatial_conv")(
            descriptor)
        spatial = BatchNorm(use_running_average=not train, name="spatial_norm")(spatial)
        spatial_gate = nn.sigmoid(jnp.clip(spatial, -self.clamp, self.clamp))
        gate = channel_gate * spatial_gate
        self.sow("intermediates", "gate", gate)
        sow_gate_stats(self, gate)
        return _blend(x, gate, AttentionScale(self.scale, self.learnable_scale)())


ATTENTIONS = {"none": None, "se": SqueezeExcitation, "cbam": CBAM}
