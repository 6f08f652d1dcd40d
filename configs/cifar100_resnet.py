r"""Single-pathway baseline for `cifar100_mc.py`: the same ResNet-18 blocks on RGB only.

Command (GPU/TPU host):
  python main.py --workdir=workdirs/cifar100_resnet --config=configs/cifar100_resnet.py

Expected result: not yet measured by this project (no accelerator was available when it was written).
"""

from configs import cifar100_mc


def get_config():
    """Returns the single-pathway ResNet-18 baseline on CIFAR-100."""
    config = cifar100_mc.get_config()
    config.model.name = "resnet"
    return config
