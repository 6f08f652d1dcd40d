"""`embedded_shapes`: a procedural, offline TFDS dataset whose class needs both color and luminance structure.

Each 32x32 RGB image shows one shape (disk, square, triangle, ring, cross) in one hue family (warm or cool) on a
cluttered, noisy background: 10 classes = 5 shapes x 2 hue families. The shape is visible in luma (brightness
pathway); the hue family only in color, because the foreground and background brightness are drawn
independently of the hue. Position, size, rotation, saturation, clutter rectangles, an occluding bar and pixel
noise make it a task a small ResNet learns well above chance but not perfectly in one epoch.
Examples are generated with NumPy from a fixed seed per split, so preparation needs no download and every
machine builds the same bytes.
"""

import numpy as np
import tensorflow_datasets as tfds

from visioncore_jax.data.generated_info import GeneratedDatasetInfo

SHAPES = ("disk", "square", "triangle", "ring", "cross")
HUE_FAMILIES = ("warm", "cool")
CLASS_NAMES = tuple(f"{hue}_{shape}" for hue in HUE_FAMILIES for shape in SHAPES)
IMAGE_SIZE = 32
SPLIT_SIZES = {"train": 12_000, "test": 2_000}
SPLIT_SEEDS = {"train": 1, "test": 2}
_HUE_CENTERS = {"warm": 0.04, "cool": 0.58}
_HUE_SPREAD = 0.14


def _shape_masks(shape_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean masks [N, S, S] of randomly placed, scaled and rotated shapes."""
    n = len(shape_ids)
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    center = rng.uniform(10, 22, size=(n, 2)).astype(np.float32)
    radius = rng.uniform(5, 10, size=(n, 1, 1)).astype(np.float32)
    angle = rng.uniform(-0.5, 0.5, size=(n, 1, 1)).astype(np.float32)
    dx = (grid[None, None, :] - center[:, 0, None, None]) / radius
    dy = (grid[None, :, None] - center[:, 1, None, None]) / radius
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    r = np.sqrt(u**2 + v**2)
    candidates = np.stack([
        r <= 1.0,  # disk
        np.maximum(np.abs(u), np.abs(v)) <= 0.8,  # square
        (v <= 0.7) & (v >= -0.9 + 1.7 * np.abs(u)),  # triangle, apex up
        (r <= 1.0) & (r >= 0.55),  # ring
        ((np.abs(u) <= 0.3) | (np.abs(v) <= 0.3)) & (np.maximum(np.abs(u), np.abs(v)) <= 1.0),  # cross
    ], axis=1)
    return candidates[np.arange(n), shape_ids]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB for arrays of equal shape in [0, 1]; returns [..., 3]."""
    i = np.floor(h * 6.0).astype(np.int32) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ], axis=0)
    return np.take_along_axis(table, i[None, ..., None], axis=0)[0]


def _random_rectangles(n: int, count: int, max_side: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean masks [n, count, S, S] of axis-aligned rectangles."""
    grid = np.arange(IMAGE_SIZE)
    x0 = rng.integers(0, IMAGE_SIZE, size=(n, count, 1, 1))
    y0 = rng.integers(0, IMAGE_SIZE, size=(n, count, 1, 1))
    w = rng.integers(2, max_side, size=(n, count, 1, 1))
    h = rng.integers(2, max_side, size=(n, count, 1, 1))
    inside_x = (grid[None, None, None, :] >= x0) & (grid[None, None, None, :] < x0 + w)
    inside_y = (grid[None, None, :, None] >= y0) & (grid[None, None, :, None] < y0 + h)
    return inside_x & inside_y


def long_tail_counts(per_class: int, imbalance_ratio: float, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Examples per class falling exponentially from `per_class` (class 0) to `per_class / imbalance_ratio`."""
    return np.round(per_class * imbalance_ratio ** (-np.arange(num_classes) / (num_classes - 1))).astype(int)


def generate_examples(split: str, num_examples: int | None = None, seed: int | None = None,
                      class_counts: np.ndarray | None = None):
    """Generates `(images uint8 [N, 32, 32, 3], labels int64 [N])` of `split`, deterministically.

    Class `c` = hue family `c // 5`, shape `c % 5`. Labels are balanced unless `class_counts` gives the number
    of examples of each class.
    """
    rng = np.random.default_rng(SPLIT_SEEDS[split] if seed is None else seed)
    if class_counts is None:
        n = SPLIT_SIZES[split] if num_examples is None else num_examples
        labels = rng.permutation(np.arange(n) % len(CLASS_NAMES))
    else:
        labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), class_counts))
        n = len(labels)
    hue_family, shape_ids = labels // len(SHAPES), labels % len(SHAPES)

    # Background: low-saturation color of random brightness, plus colored clutter rectangles.
    background = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0, 0.3, n), rng.uniform(0.1, 0.9, n))
    images = np.broadcast_to(background[:, None, None, :], (n, IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
    clutter = _random_rectangles(n, 3, 10, rng)
    clutter_colors = _hsv_to_rgb(rng.uniform(0, 1, (n, 3)), rng.uniform(0, 0.6, (n, 3)), rng.uniform(0, 1, (n, 3)))
    for k in range(3):
        images = np.where(clutter[:, k, ..., None], clutter_colors[:, k, None, None, :], images)

    # Foreground: hue from the class's family (families overlap a little), brightness independent of the hue
    # but kept apart from the background's so that the shape is visible in luma.
    centers = np.asarray([_HUE_CENTERS[h] for h in HUE_FAMILIES])[hue_family]
    hue = np.mod(centers + rng.normal(0, _HUE_SPREAD, n), 1.0)
    background_value = background.max(-1)
    value = np.where(background_value > 0.5, rng.uniform(0.05, 0.35, n), rng.uniform(0.65, 1.0, n))
    foreground = _hsv_to_rgb(hue, rng.uniform(0.45, 1.0, n), value)
    images = np.where(_shape_masks(shape_ids, rng)[..., None], foreground[:, None, None, :], images)

    # One thin occluding bar in a random color, then pixel noise.
    bar = _random_rectangles(n, 1, 4, rng)[:, 0]
    bar_colors = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n))
    images = np.where(bar[..., None], bar_colors[:, None, None, :], images)
    images = images + rng.normal(0, 0.08, images.shape)
    return np.clip(np.round(images * 255), 0, 255).astype(np.uint8), labels.astype(np.int64)


LONG_TAIL_RATIO = 20.0


class EmbeddedShapes(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the embedded dataset: prepared once into the TFDS data dir, no download.

    Configs: `balanced` (12,000 train / 2,000 test) and `longtail` (training classes fall exponentially from
    1,200 to 60 examples, a 20:1 imbalance; the test split stays balanced so per-class accuracy is comparable).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 10 classes; balanced and long-tailed training splits."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="balanced", description="1,200 training examples per class."),
        tfds.core.BuilderConfig(name="longtail", description="Training classes from 1,200 down to 60 examples."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return GeneratedDatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        counts = None
        if self.builder_config.name == "longtail" and split == "train":
            counts = long_tail_counts(SPLIT_SIZES["train"] // len(CLASS_NAMES), LONG_TAIL_RATIO)
        images, labels = generate_examples(split, class_counts=counts)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image, "label": label}
