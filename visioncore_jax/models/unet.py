"""A U-Net for segmentation with SE or CBAM attention in its encoder blocks."""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.attention import ATTENTIONS
from visioncore_jax.models.conv_block import ConvBlock


class UNetBlock(nn.Module):
    """Two ConvBlocks, then (encoder blocks only) SE / CBAM attention."""

    features: int
    conv: Mapping[str, Any]
    attention: str = "none"
    attention_options: Mapping[str, Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Applies the block to NHWC `x`."""
        x = ConvBlock(self.features, **self.conv)(x, train=train)
        x = ConvBlock(self.features, **self.conv)(x, train=train)
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention={self.attention!r} is not one of {sorted(ATTENTIONS)}.")
        if ATTENTIONS[self.attention] is not None:
            x = ATTENTIONS[self.attention](**(self.attention_options or {}), name="attention")(x, train=train)
        return x


class UNet(nn.Module):
    """Encoder (blocks of `widths`, 2x2 max-pool between them) → decoder (2x2 transposed convs, skip
    concatenation, blocks) → 1x1 conv to per-pixel logits [B, H, W, num_classes] on `inputs['color']`.
    H and W must be divisible by 2^(len(widths) - 1)."""

    num_classes: int
    widths: Sequence[int] = (16, 32, 64)
    conv: Mapping[str, Any] = None
    attention: str = "cbam"
    attention_options: Mapping[str, Any] = None

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool, dropout_rate=None) -> dict:
        """Returns `{'logits': [B, H, W, num_classes] float32}`."""
        del dropout_rate  # no dropout in this U-Net
        x = inputs["color"]
        factor = 2 ** (len(self.widths) - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"Image size {x.shape[1:3]} must be divisible by {factor} for {len(self.widths)} levels.")
        conv = dict(self.conv or {})
        skips = []
        for level, width in enumerate(self.widths):
            if level:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = UNetBlock(width, conv, self.attention, self.attention_options, name=f"encoder{level}")(x, train=train)
            skips.append(x)
        for level in reversed(range(len(self.widths) - 1)):
            width = self.widths[level]
            x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), name=f"up{level}")(x)
            x = jnp.concatenate([x, skips[level]], axis=-1)
            x = UNetBlock(width, conv, name=f"decoder{level}")(x, train=train)
        logits = nn.Conv(self.num_classes, (1, 1), name="head")(x)
        return {"logits": logits.astype(jnp.float32)}
