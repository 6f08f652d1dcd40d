r"""The seed's dual-pathway ("multi-channel") ResNet-18 on CIFAR-100: color RGB + brightness luma pathways.

Architecture as the original MultiChannelResNetNetwork with reduce_architecture=True: 5,640,804 parameters.
Optimizer as the original: Adam 3e-4, weight decay 1e-4, clip 1.0, cosine decay to 1e-6.

Needs CIFAR-100 prepared by TFDS (`tfds build cifar100` on a connected machine, or --config.data.data_dir).

Command (GPU/TPU host):
  python main.py --workdir=workdirs/cifar100_mc --config=configs/cifar100_mc.py

Expected result: not yet measured by this project (no accelerator was available when it was written); the
original reports ~47.5% validation accuracy after 5 epochs for its ResNet-50 variant without augmentation.
"""

from configs import default


def get_config():
    """Returns the CIFAR-100 dual-pathway ResNet-18 configuration."""
    config = default.get_config()
    config.data.name = "cifar100"
    config.model.name = "dual_resnet"
    config.model.block = "basic"
    config.model.num_blocks = (2, 2, 2, 2)
    config.model.width = 64
    config.model.reduce_architecture = True
    config.model.dropout = 0.3
    config.model.bn_momentum = 0.95  # PyTorch momentum 0.05
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-4
    config.optimizer.weight_decay = 1e-4
    config.optimizer.grad_clip_norm = 1.0
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    config.schedule.min_learning_rate = 1e-6
    config.training.batch_size = 128
    config.training.num_epochs = 60.0
    config.training.checkpoint_every_steps = 1000
    return config
