"""A clip classifier: a per-frame conv encoder, a ConvGRU over time, a linear head."""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.conv_block import ConvBlock
from visioncore_jax.models.layers import Dropout
from visioncore_jax.models.modulation import BehaviorModulatedConvGRU
from visioncore_jax.models.recurrent import ConvGRU


class ConvGRUClassifier(nn.Module):
    """Classifies clips `inputs['color']` [B, T, H, W, 3]: ConvBlocks applied to every frame (the first at
    stride 1, the rest at stride 2), a ConvGRU over the frame features, global average pooling of its last
    state, dropout and a Dense `head`. With `behavior_embed_dim > 0` the ConvGRU also reads `inputs['behavior']`
    ([B, D] or [B, T, D]) embedded to that many channels and broadcast over space (VisionCore's modulator)."""

    num_classes: int
    encoder_widths: Sequence[int]
    conv: Mapping[str, Any]  # ConvBlock options: conv_type, norm, activation, ...
    gru: Mapping[str, Any]  # ConvGRU options: hidden, kernel_size, recurrent_norm, learnable_h0, ...
    dropout: float = 0.0
    behavior_embed_dim: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool, dropout_rate=None) -> dict:
        """Returns `{'logits': [B, num_classes] float32}`."""
        clips = inputs["color"]
        batch, steps = clips.shape[:2]
        x = clips.reshape(batch * steps, *clips.shape[2:]).astype(self.dtype)
        for index, width in enumerate(self.encoder_widths):
            x = ConvBlock(width, strides=1 if index == 0 else 2, dtype=self.dtype, **self.conv,
                          name=f"encoder{index}")(x, train=train)
        x = x.reshape(batch, steps, *x.shape[1:])
        if self.behavior_embed_dim > 0:
            if "behavior" not in inputs:
                raise ValueError("config.model.behavior_embed_dim > 0 needs a dataset with behavior vectors "
                                 "(e.g. config.data.name='embedded_clips'); set it to 0 otherwise.")
            state = BehaviorModulatedConvGRU(self.behavior_embed_dim, self.gru, name="modulated")(
                x, inputs["behavior"])
        else:
            state = ConvGRU(**self.gru, name="gru")(x)
        features = jnp.mean(state, axis=(1, 2))
        features = Dropout()(features, self.dropout if dropout_rate is None else dropout_rate, train=train)
        return {"logits": nn.Dense(self.num_classes, name="head")(features).astype(jnp.float32)}
