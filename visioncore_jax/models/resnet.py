"""ResNet building blocks, a backbone, and the single-pathway ResNet classifier.

Follows the torchvision/original layout: 3x3 stem (stride 1), four stages at strides 1/2/2/2 with planes
width·(1, 2, 4, 8), basic (expansion 1) or bottleneck (expansion 4) blocks, a 1x1 conv + BN shortcut where the
stride or width changes, convolutions without bias padded as torch's (k // 2 on every side), Kaiming fan-out
initialisation.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.batch_norm import BatchNorm
from visioncore_jax.models.layers import Dropout, kaiming_fan_out, sow_activation_stats

STAGE_STRIDES = (1, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (expansion 1)."""

    planes: int
    strides: int
    conv: Any
    norm: Any
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to NHWC `x`."""
        y = nn.relu(self.norm()(self.conv(self.planes, (3, 3), self.strides)(x)))
        y = self.norm()(self.conv(self.planes, (3, 3))(y))
        y = nn.relu(y + shortcut(x, self.planes * self.expansion, self.strides, self.conv, self.norm))
        sow_activation_stats(self, y)
        return y


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand, with a residual connection (expansion 4)."""

    planes: int
    strides: int
    conv: Any
    norm: Any
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to NHWC `x`."""
        y = nn.relu(self.norm()(self.conv(self.planes, (1, 1))(x)))
        y = nn.relu(self.norm()(self.conv(self.planes, (3, 3), self.strides)(y)))
        y = self.norm()(self.conv(self.planes * self.expansion, (1, 1))(y))
        y = nn.relu(y + shortcut(x, self.planes * self.expansion, self.strides, self.conv, self.norm))
        sow_activation_stats(self, y)
        return y


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def shortcut(x: jax.Array, features: int, strides: int, conv, norm) -> jax.Array:
    """Identity, or a 1x1 conv + norm projection when the stride or the width changes."""
    if strides == 1 and x.shape[-1] == features:
        return x
    return norm()(conv(features, (1, 1), strides, name="shortcut_conv")(x))


def torch_padded_conv(features: int, kernel_size: tuple[int, int], strides: int = 1, **kwargs) -> nn.Conv:
    """A bias-free Kaiming fan-out conv padded `k // 2` on every side, as the originals' torch `padding=k // 2`:
    on even sizes at stride 2 this differs from XLA's "SAME" (which pads (0, 1)), so converted torch weights
    compute the same function."""
    return nn.Conv(features, kernel_size, strides, padding=[(k // 2, k // 2) for k in kernel_size], use_bias=False,
                   kernel_init=kaiming_fan_out, **kwargs)


class ResNetBackbone(nn.Module):
    """Stem and four stages (each followed by dropout at `conv_dropout` when > 0); returns globally
    average-pooled features [B, C]."""

    block: str
    num_blocks: Sequence[int]
    width: int
    reduce_architecture: bool
    bn_momentum: float
    conv_dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Maps NHWC images to pooled features."""
        conv = functools.partial(torch_padded_conv, dtype=self.dtype)
        norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                                 epsilon=1e-5, dtype=self.dtype)
        width = self.width // 2 if self.reduce_architecture else self.width
        x = nn.relu(norm(name="stem_bn")(conv(width, (3, 3), name="stem_conv")(x.astype(self.dtype))))
        sow_activation_stats(self, x, prefix="stem_")
        if not self.reduce_architecture:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # as torch's padding=1
        block_cls = BLOCKS[self.block]
        stages = zip(self.num_blocks, STAGE_STRIDES[: len(self.num_blocks)], strict=True)
        for stage, (count, stage_strides) in enumerate(stages, start=1):
            for index in range(count):
                x = block_cls(width * 2 ** (stage - 1), stage_strides if index == 0 else 1, conv, norm,
                              name=f"stage{stage}_block{index}")(x)
            if self.conv_dropout > 0:
                x = Dropout()(x, self.conv_dropout, train=train)
        return jnp.mean(x, axis=(1, 2))


class ResNet(nn.Module):
    """Single-pathway ResNet classifier on `inputs['color']`: backbone → dropout → Dense `head`."""

    num_classes: int
    backbone: Mapping[str, Any]
    dropout: float

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool, dropout_rate=None) -> dict:
        """Returns `{'logits': [B, num_classes] float32}`."""
        rate = self.dropout if dropout_rate is None else dropout_rate
        features = ResNetBackbone(**self.backbone, name="color")(inputs["color"], train=train)
        features = Dropout()(features, rate, train=train)
        logits = nn.Dense(self.num_classes, name="head")(features)
        return {"logits": logits.astype(jnp.float32)}
