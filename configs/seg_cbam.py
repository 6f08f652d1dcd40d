r"""Segmentation experiment: a U-Net with CBAM in its encoder blocks on the embedded masks dataset.

`embedded_masks`: 32x32 images with two or three shapes (disk, square, triangle) of random colors; every
pixel is labelled background / disk / square / triangle. Loss = pixel cross-entropy + soft Dice
(`training.dice_weight`); eval reports pixel accuracy, Dice and IoU per class and their means.

Command:
  python main.py --workdir=workdirs/seg --config=configs/seg_cbam.py

Expected result (2 CPU cores): see the README's experiments table (eval_mean_dice, measured).
"""

import ml_collections

from configs import default


def get_config():
    """Returns the CBAM U-Net segmentation configuration."""
    config = default.get_config()
    config.data.name = "embedded_masks"
    config.data.crop_padding = 4  # the mask is cropped and flipped with the image
    config.model.name = "unet"
    config.model.unet = ml_collections.ConfigDict(dict(
        widths=(16, 32, 64),
        conv=dict(conv_type="standard", norm="batch", activation="relu"),
        attention="cbam",  # 'none' | 'se' | 'cbam' in the encoder blocks
        attention_options=dict(reduction=4, scale=0.1, learnable_scale=True, clamp=10.0),
    ))
    config.model.dropout = 0.0  # the U-Net has no dropout; progressive dropout would be ignored
    config.training.batch_size = 64
    config.training.num_epochs = 8.0
    config.training.dice_weight = 1.0
    config.plateau.metric = "eval_mean_dice"
    config.early_stopping.metric = "eval_mean_dice"
    return config
