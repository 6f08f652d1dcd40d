"""A configurable conv block (standard / depthwise-separable / grouped conv, optional weight norm, any norm,
activation-matched init) and a residual block built from it that is the identity at initialisation."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visioncore_jax.models.attention import ATTENTIONS
from visioncore_jax.models.layers import sow_activation_stats
from visioncore_jax.models.norms import make_norm

CONV_TYPES = ("standard", "depthwise", "grouped")
ACTIVATIONS = {"relu": nn.relu, "silu": nn.silu, "gelu": nn.gelu}
# Kaiming fan-out gain per activation: ReLU's 2; SiLU and GELU as leaky ReLU with slope 0.01, 2 / (1 + a²),
# the original's closer approximation for smooth activations.
_GAINS = {"relu": 2.0, "silu": 2.0 / (1 + 0.01**2), "gelu": 2.0 / (1 + 0.01**2)}


def activation_init(activation: str) -> nn.initializers.Initializer:
    """Kaiming-normal fan-out initializer matched to `activation`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {sorted(ACTIVATIONS)}.")
    return nn.initializers.variance_scaling(_GAINS[activation], "fan_out", "normal")


class ConvBlock(nn.Module):
    """conv → norm → activation, with the conv chosen by `conv_type`.

    `depthwise`: a depthwise k×k conv then a pointwise 1×1 conv (k²·C_in + C_in·C_out weights); `grouped`: one
    conv with `groups` feature groups; `weight_norm` (standard convs only) reparametrizes the kernel as
    g · v / ‖v‖ with flax's `nn.WeightNorm`. `zero_init_norm` starts the norm scale at 0 so the block outputs 0.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    conv_type: str = "standard"
    groups: int = 1
    weight_norm: bool = False
    norm: str = "batch"
    activation: str | None = "relu"
    zero_init_norm: bool = False
    init_activation: str = "relu"
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    def _validate(self, in_features: int) -> None:
        if self.conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type={self.conv_type!r} is not one of {list(CONV_TYPES)}.")
        if self.weight_norm and self.conv_type != "standard":
            raise ValueError(f"weight_norm=True works with conv_type='standard' only, not {self.conv_type!r}; "
                             "turn one of them off.")
        if self.conv_type == "grouped" and (in_features % self.groups or self.features % self.groups):
            raise ValueError(f"groups={self.groups} must divide the input ({in_features}) and output "
                             f"({self.features}) channels.")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Applies the block to NHWC `x`."""
        self._validate(x.shape[-1])
        init = activation_init(self.activation or self.init_activation)
        conv = lambda features, size, strides, groups=1, name=None: nn.Conv(  # noqa: E731
            features, (size, size), strides, padding="SAME", feature_group_count=groups, use_bias=False,
            kernel_init=init, dtype=self.dtype, name=name)
        if self.conv_type == "depthwise":
            x = conv(x.shape[-1], self.kernel_size, self.strides, groups=x.shape[-1], name="depthwise")(x)
            x = conv(self.features, 1, 1, name="pointwise")(x)
        elif self.conv_type == "grouped":
            x = conv(self.features, self.kernel_size, self.strides, groups=self.groups)(x)
        elif self.weight_norm:
            x = nn.WeightNorm(conv(self.features, self.kernel_size, self.strides))(x)
        else:
            x = conv(self.features, self.kernel_size, self.strides)(x)
        norm = make_norm(self.norm, train=train, zero_init=self.zero_init_norm, momentum=self.bn_momentum,
                         dtype=self.dtype)
        if norm is not None:
            x = norm(x)
        if self.activation:
            x = ACTIVATIONS[self.activation](x)
            sow_activation_stats(self, x)
        return x


class ResBlock(nn.Module):
    """`x + attention(main(x))`, main = ConvBlock → ConvBlock without activation whose norm scale starts at 0,
    so the block is exactly the identity at initialisation (no activation after the sum to undo that, and SE /
    CBAM map 0 to 0). A 1×1 projection shortcut is used when the stride or the width changes."""

    features: int
    strides: int = 1
    block: dict = None  # ConvBlock options shared by both convs (conv_type, norm, activation, ...)
    attention: str = "none"  # 'none' | 'se' | 'cbam' on the residual branch
    attention_options: dict = None  # reduction, scale, learnable_scale, clamp

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Applies the residual block to NHWC `x`."""
        options = dict(self.block or {})
        if options.get("norm", "batch") == "none":
            raise ValueError("A ResBlock needs a norm (its zero-initialised scale makes the block the identity).")
        y = ConvBlock(self.features, strides=self.strides, **options)(x, train=train)
        activation = options.pop("activation", "relu")
        y = ConvBlock(self.features, activation=None, zero_init_norm=True, init_activation=activation,
                      **options)(y, train=train)
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention={self.attention!r} is not one of {sorted(ATTENTIONS)}.")
        if ATTENTIONS[self.attention] is not None:
            y = ATTENTIONS[self.attention](**(self.attention_options or {}), name="attention")(y, train=train)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = ConvBlock(self.features, kernel_size=1, strides=self.strides, activation=None,
                          init_activation=activation, name="shortcut",
                          **{k: v for k, v in options.items() if k not in ("conv_type", "groups")})(x, train=train)
        return x + y
