"""Models built from `config.model`: the dual-pathway ResNet, its single-pathway baseline, and a ConvGRU clip
classifier."""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from visioncore_jax.models.dual_resnet import DualPathwayResNet
from visioncore_jax.models.resnet import BLOCKS, ResNet, ResNetBackbone
from visioncore_jax.models.unet import UNet
from visioncore_jax.models.vc_resnet import VisionCoreResNet
from visioncore_jax.models.video import ConvGRUClassifier

MODELS = {"dual_resnet": DualPathwayResNet, "resnet": ResNet, "conv_gru": ConvGRUClassifier,
          "vc_resnet": VisionCoreResNet, "unet": UNet}
SEGMENTATION_MODELS = ("unet",)
CLIP_MODELS = ("conv_gru",)  # models of clips [T, H, W, 3]; every other model takes images [H, W, 3]
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """Builds the model named by `config.model.name` (a config `validate_config` accepted, which also checks
    that the model fits the dataset's task and example shape) for `num_classes` classes (compute dtype from
    `config.training.dtype`; parameters stay float32)."""
    model = config.model
    backbone = dict(
        block=model.block,
        num_blocks=tuple(int(n) for n in model.num_blocks),
        width=int(model.width),
        reduce_architecture=bool(model.reduce_architecture),
        bn_momentum=float(model.bn_momentum),
        conv_dropout=float(model.conv_dropout),
        dtype=DTYPES[config.training.dtype],
    )
    if model.name == "conv_gru":
        gru = model.gru.to_dict()
        gru["hidden_clamp"] = gru["hidden_clamp"] if gru["hidden_clamp"] > 0 else None  # <= 0: no clamp
        return ConvGRUClassifier(num_classes, tuple(model.encoder_widths), model.conv.to_dict(), gru,
                                 float(model.dropout), int(model.get("behavior_embed_dim", 0)),
                                 dtype=DTYPES[config.training.dtype])
    if model.name == "unet":
        unet = model.unet
        return UNet(num_classes, tuple(unet.widths), unet.conv.to_dict(), unet.attention,
                    unet.attention_options.to_dict())
    if model.name == "vc_resnet":
        vc = model.vc
        return VisionCoreResNet(num_classes, tuple(vc.channels), tuple(vc.strides), vc.blocks_per_stage,
                                vc.conv.to_dict(), vc.attention, vc.attention_options.to_dict(),
                                float(model.dropout), dtype=DTYPES[config.training.dtype])
    if model.name == "dual_resnet":
        return DualPathwayResNet(num_classes, backbone, float(model.dropout), aux_heads=model.aux_loss_weight > 0)
    return ResNet(num_classes, backbone, float(model.dropout))


__all__ = ["BLOCKS", "CLIP_MODELS", "DTYPES", "MODELS", "SEGMENTATION_MODELS", "ConvGRUClassifier",
           "DualPathwayResNet", "ResNet", "ResNetBackbone", "UNet", "VisionCoreResNet", "build_model"]
