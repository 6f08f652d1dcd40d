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
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _validate(model: ml_collections.ConfigDict, dtype: str) -> None:
    """Raises a ValueError naming the key for every invalid `config.model` field."""
    if model.name not in MODELS:
        raise ValueError(f"config.model.name={model.name!r} is not one of {sorted(MODELS)}.")
    if model.name == "conv_gru":
        if "gru" not in model or "conv" not in model or "encoder_widths" not in model:
            raise ValueError("config.model.name='conv_gru' needs config.model.encoder_widths, .conv and .gru "
                             "(see configs/video_convgru.py).")
        if not model.encoder_widths or model.gru.hidden < 1:
            raise ValueError("config.model.encoder_widths must be non-empty and config.model.gru.hidden >= 1.")
    elif model.name == "unet":
        if "unet" not in model or not model.unet.widths:
            raise ValueError("config.model.name='unet' needs config.model.unet (widths, conv, attention, "
                             "attention_options); see configs/seg_cbam.py.")
    elif model.name == "vc_resnet":
        if "vc" not in model:
            raise ValueError("config.model.name='vc_resnet' needs config.model.vc (channels, strides, "
                             "blocks_per_stage, conv, attention, attention_options); see configs/vc_resnet.py.")
    elif model.block not in BLOCKS:
        raise ValueError(f"config.model.block={model.block!r} is not one of {sorted(BLOCKS)}.")
    if not model.num_blocks or any(int(n) < 1 for n in model.num_blocks) or len(model.num_blocks) > 4:
        raise ValueError(f"config.model.num_blocks={tuple(model.num_blocks)} needs 1 to 4 stages of >= 1 block.")
    if model.width < 2:
        raise ValueError(f"config.model.width={model.width} must be >= 2.")
    for key in ("dropout", "conv_dropout"):
        if not 0.0 <= model[key] < 1.0:
            raise ValueError(f"config.model.{key}={model[key]} must be in [0, 1).")
    if not 0.0 <= model.bn_momentum < 1.0:
        raise ValueError(f"config.model.bn_momentum={model.bn_momentum} must be in [0, 1) (flax convention: "
                         "PyTorch momentum 0.1 is 0.9 here).")
    if model.aux_loss_weight < 0 or (model.aux_loss_weight > 0 and model.name != "dual_resnet"):
        raise ValueError(f"config.model.aux_loss_weight={model.aux_loss_weight}: auxiliary per-pathway heads need "
                         "model.name='dual_resnet' and a weight >= 0.")
    if dtype not in DTYPES:
        raise ValueError(f"config.training.dtype={dtype!r} is not one of {sorted(DTYPES)}.")


def build_model(config: ml_collections.ConfigDict, num_classes: int, task: str = "classification") -> nn.Module:
    """Builds the model named by `config.model.name` for `num_classes` classes of `task` (compute dtype from
    `config.training.dtype`; parameters stay float32)."""
    model = config.model
    _validate(model, config.training.dtype)
    if (task == "segmentation") != (model.name in SEGMENTATION_MODELS):
        raise ValueError(f"config.model.name={model.name!r} does not fit the {task} dataset "
                         f"config.data.name={config.data.name!r}: segmentation data needs one of "
                         f"{list(SEGMENTATION_MODELS)}, classification data any other model.")
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


__all__ = ["ConvGRUClassifier", "DualPathwayResNet", "ResNet", "ResNetBackbone", "UNet", "VisionCoreResNet",
           "build_model"]
