"""Per-example preprocessing as pure TensorFlow functions: augmentation, luma, normalization.

Augmentation uses stateless random ops seeded by (config seed, position of the example in the stream), so an
example is augmented the same way whatever the parallelism and whether or not the run was resumed.
"""

import tensorflow as tf

# ITU-R BT.601 luma weights, applied to RGB in [0, 1].
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(rgb: tf.Tensor) -> tf.Tensor:
    """BT.601 luma [..., 1] of RGB [..., 3] in [0, 1]."""
    return tf.reduce_sum(rgb * tf.constant(LUMA_WEIGHTS, rgb.dtype), axis=-1, keepdims=True)


def augment(rgb: tf.Tensor, seed: tf.Tensor, crop_padding: int, random_flip: bool,
            mask: tf.Tensor | None = None) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """Random crop after zero padding, then random horizontal flip, of one RGB image [H, W, 3] or clip
    [T, H, W, 3] in [0, 1]; every frame of a clip gets the same crop and flip. With a segmentation `mask`
    [H, W] (int32), returns `(rgb, mask)` with the mask cropped and flipped exactly as the image (padding is
    class 0)."""
    if mask is not None:
        stacked = augment(tf.concat([rgb, tf.cast(mask[..., None], rgb.dtype)], -1), seed, crop_padding, random_flip)
        return stacked[..., :3], tf.cast(tf.round(stacked[..., 3]), tf.int32)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if crop_padding > 0:
        padding = [[0, 0]] * (rgb.shape.rank - 3) + [[crop_padding, crop_padding]] * 2 + [[0, 0]]
        rgb = tf.image.stateless_random_crop(tf.pad(rgb, padding), tf.shape(rgb), seed=crop_seed)
    if random_flip:
        flip = tf.random.stateless_uniform([], flip_seed) < 0.5
        rgb = tf.where(flip, tf.reverse(rgb, axis=[-2]), rgb)
    return rgb


def pathway_inputs(rgb: tf.Tensor, mean, std, luma_mean: float, luma_std: float) -> dict:
    """Normalized `color` and `brightness` inputs; brightness is the luma of this very RGB image, taken
    before normalization."""
    return {
        "color": (rgb - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32),
        "brightness": (luma(rgb) - luma_mean) / luma_std,
    }
