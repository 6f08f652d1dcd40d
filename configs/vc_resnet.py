r"""VisionCore-style ResNet (seed 001) with CBAM attention on the embedded dataset, RGB pathway only.

RMSNorm with learnable scale and bias, SiLU with its matched initialisation, depthwise-separable convs, a
monotonically increasing channel progression, residual blocks that are the identity at initialisation, CBAM
on every residual branch.

Command:
  python main.py --workdir=workdirs/vc_resnet --config=configs/vc_resnet.py

Expected result: not yet measured (added at the end of a session; see README.md, "Experiments").
"""

import ml_collections

from configs import default


def get_config():
    """Returns the VisionCore ResNet + CBAM configuration."""
    config = default.get_config()
    config.model.name = "vc_resnet"
    config.model.vc = ml_collections.ConfigDict(dict(
        channels=(32, 64, 128),
        strides=(1, 2, 2),
        blocks_per_stage=1,
        conv=dict(conv_type="depthwise", norm="rms", activation="silu", weight_norm=False),
        attention="cbam",  # 'none' | 'se' | 'cbam'
        attention_options=dict(reduction=8, scale=0.1, learnable_scale=True, clamp=10.0),
    ))
    return config
