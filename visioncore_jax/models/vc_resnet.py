"""VisionCore-style ResNet: a configurable channel progression of identity-at-init residual blocks built from
`ConvBlock`, optionally with SE or CBAM attention on every residual branch."""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.conv_block import ConvBlock, ResBlock
from visioncore_jax.models.layers import Dropout


class VisionCoreResNet(nn.Module):
    """Classifier on `inputs['color']`: a stem ConvBlock, then per stage `blocks_per_stage` ResBlocks (the first
    with the stage's stride), global average pooling, dropout and a Dense `head`.

    `channels` is the channel progression (monotonically increasing, e.g. (64, 128, 256)), `strides` each
    stage's stride, `conv` the ConvBlock options (conv_type, norm, activation, weight_norm, ...), `attention`
    'none' | 'se' | 'cbam' with `attention_options` (reduction, scale, learnable_scale, clamp).
    """

    num_classes: int
    channels: Sequence[int]
    strides: Sequence[int]
    blocks_per_stage: int
    conv: Mapping[str, Any]
    attention: str = "none"
    attention_options: Mapping[str, Any] = None
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool, dropout_rate=None) -> dict:
        """Returns `{'logits': [B, num_classes] float32}`."""
        if len(self.channels) != len(self.strides):
            raise ValueError(f"channels {tuple(self.channels)} and strides {tuple(self.strides)} need one entry "
                             "per stage each.")
        options = {**self.conv, "dtype": self.dtype}
        x = ConvBlock(self.channels[0], name="stem", **options)(inputs["color"].astype(self.dtype), train=train)
        for stage, (width, stride) in enumerate(zip(self.channels, self.strides, strict=True)):
            for index in range(self.blocks_per_stage):
                x = ResBlock(width, stride if index == 0 else 1, block=options, attention=self.attention,
                             attention_options=self.attention_options, name=f"stage{stage}_block{index}")(
                    x, train=train)
        features = jnp.mean(x, axis=(1, 2))
        features = Dropout()(features, self.dropout if dropout_rate is None else dropout_rate, train=train)
        return {"logits": nn.Dense(self.num_classes, name="head")(features).astype(jnp.float32)}
