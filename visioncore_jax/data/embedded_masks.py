"""`embedded_masks`: a procedural, offline TFDS segmentation dataset: per-pixel shape classes.

Each 32x32 RGB image shows two or three shapes (disk, square, triangle) of random colors, sizes, positions and
rotations, drawn in turn (later shapes occlude earlier ones), over a cluttered noisy background. The mask gives
every pixel its class: 0 background, 1 disk, 2 square, 3 triangle. Color carries no class information, so a
model must use shape; clutter rectangles (background class) make square pixels the hardest.
"""

import numpy as np
import tensorflow_datasets as tfds

from visioncore_jax.data.embedded import IMAGE_SIZE, _hsv_to_rgb, _random_rectangles, _shape_masks
from visioncore_jax.data.generated_info import GeneratedDatasetInfo

CLASS_NAMES = ("background", "disk", "square", "triangle")
SPLIT_SIZES = {"train": 4_000, "test": 800}
SPLIT_SEEDS = {"train": 21, "test": 22}
MAX_OBJECTS = 3


def generate_masked_images(split: str, num_examples: int | None = None, seed: int | None = None):
    """Generates `(images uint8 [N, 32, 32, 3], masks uint8 [N, 32, 32])` of `split`, deterministically."""
    n = SPLIT_SIZES[split] if num_examples is None else num_examples
    rng = np.random.default_rng(SPLIT_SEEDS[split] if seed is None else seed)
    background = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0, 0.5, n), rng.uniform(0.1, 0.9, n))
    images = np.broadcast_to(background[:, None, None, :], (n, IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
    clutter = _random_rectangles(n, 2, 8, rng)
    clutter_colors = _hsv_to_rgb(rng.uniform(0, 1, (n, 2)), rng.uniform(0, 1, (n, 2)), rng.uniform(0, 1, (n, 2)))
    for k in range(2):
        images = np.where(clutter[:, k, ..., None], clutter_colors[:, k, None, None, :], images)
    masks = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    num_objects = rng.integers(2, MAX_OBJECTS + 1, n)
    for k in range(MAX_OBJECTS):
        shape_ids = rng.integers(0, len(CLASS_NAMES) - 1, n)  # disk, square, triangle = embedded SHAPES[:3]
        present = (k < num_objects)[:, None, None]
        drawn = _shape_masks(shape_ids, rng) & present
        colors = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.3, 1, n), rng.uniform(0, 1, n))
        # Keep every shape visible against the background in brightness.
        colors = np.where(np.abs(colors.max(-1, keepdims=True) - background.max(-1, keepdims=True)) < 0.25,
                          1.0 - colors, colors)
        images = np.where(drawn[..., None], colors[:, None, None, :], images)
        masks = np.where(drawn, (shape_ids + 1)[:, None, None].astype(np.uint8), masks)
    images = images + rng.normal(0, 0.06, images.shape)
    return np.clip(np.round(images * 255), 0, 255).astype(np.uint8), masks


class EmbeddedMasks(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the embedded segmentation dataset: prepared once into the TFDS data dir, no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 4 pixel classes, 4,000 train / 800 test images of 32x32."}

    def _info(self) -> tfds.core.DatasetInfo:
        return GeneratedDatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "segmentation_mask": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            }),
            supervised_keys=("image", "segmentation_mask"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        images, masks = generate_masked_images(split)
        for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
            yield index, {"image": image, "segmentation_mask": mask[..., None]}
