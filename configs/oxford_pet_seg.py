r"""Real-data segmentation: the CBAM U-Net on TFDS `oxford_iiit_pet` trimaps (pet / background / border).

Needs the dataset prepared in the TFDS data dir (`tfds build oxford_iiit_pet`, ~800 MB download; the
tensorflow-datasets builder reads the official archives). Images and masks are resized to 128x128.

Command:
  python main.py --workdir=workdirs/pets --config=configs/oxford_pet_seg.py --config.data.data_dir=DIR

Expected result: not measured here (no network on the development machine); published U-Nets of this size
reach a mean IoU around 0.7 on the trimaps.
"""

from configs import seg_cbam


def get_config():
    """Returns the oxford_iiit_pet segmentation configuration."""
    config = seg_cbam.get_config()
    config.data.name = "oxford_iiit_pet"
    config.data.image_size = 128
    config.data.crop_padding = 8
    config.data.shuffle_buffer = 4_000
    config.model.unet.widths = (32, 64, 128, 256)
    config.training.batch_size = 32
    config.training.eval_batch_size = 64
    config.training.num_epochs = 40.0
    config.optimizer.learning_rate = 1e-3
    return config
