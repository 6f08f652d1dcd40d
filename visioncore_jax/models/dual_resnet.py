"""The dual-pathway ResNet: a color (RGB) and a brightness (luma) backbone fused before one classifier."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.layers import Dropout
from visioncore_jax.models.resnet import ResNetBackbone

PATHWAYS = ("color", "brightness")


class DualPathwayResNet(nn.Module):
    """Two independent ResNet backbones (`color` on RGB, `brightness` on luma), no cross-pathway connections.

    Each pathway: backbone → global average pool → dropout; then concat [color, brightness] → Dense `head`.
    With `aux_heads`, each pathway also gets its own Dense classifier (`aux_head_color`, `aux_head_brightness`)
    whose logits are returned as `aux_logits` and trained by a weighted auxiliary loss in the train step (the
    original's per-pathway heads were never trained, so their accuracy read as chance).
    """

    num_classes: int
    backbone: Mapping[str, Any]
    dropout: float
    aux_heads: bool = False

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool, dropout_rate=None) -> dict:
        """Returns `{'logits': [B, K]}` (and `'aux_logits': {pathway: [B, K]}` with aux heads), float32."""
        rate = self.dropout if dropout_rate is None else dropout_rate
        features = {
            pathway: Dropout()(ResNetBackbone(**self.backbone, name=pathway)(inputs[pathway], train=train), rate,
                               train=train)
            for pathway in PATHWAYS
        }
        fused = jnp.concatenate([features[pathway] for pathway in PATHWAYS], axis=-1)
        outputs = {"logits": nn.Dense(self.num_classes, name="head")(fused).astype(jnp.float32)}
        if self.aux_heads:
            outputs["aux_logits"] = {
                pathway: nn.Dense(self.num_classes, name=f"aux_head_{pathway}")(features[pathway]).astype(
                    jnp.float32)
                for pathway in PATHWAYS
            }
        return outputs
