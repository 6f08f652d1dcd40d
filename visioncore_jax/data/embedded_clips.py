"""`embedded_clips`: a procedural, offline TFDS dataset of short clips whose label needs motion.

Each clip has 8 frames of 16x16 RGB: a bright square moving in one of 4 directions at one of 2 speeds (8
classes) over a noisy background with static distractor squares. The start position is random and every frame
looks alike, so a single frame carries (almost) no information about the class: a model must compare frames.
Each clip also carries a behavior vector per frame (VisionCore's modulator input): a noisy "running speed"
that is higher for fast clips, and an uninformative "pupil size" random walk.
"""

import numpy as np
import tensorflow_datasets as tfds

from visioncore_jax.data.generated_info import GeneratedDatasetInfo

DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
SPEEDS = {"slow": 0.6, "fast": 1.2}  # pixels per frame
CLASS_NAMES = tuple(f"{direction}_{speed}" for direction in DIRECTIONS for speed in SPEEDS)
NUM_FRAMES, FRAME_SIZE, SQUARE = 8, 16, 4
SPLIT_SIZES = {"train": 4_000, "test": 800}
SPLIT_SEEDS = {"train": 11, "test": 12}


BEHAVIOR_DIM = 2


def generate_clips(split: str, num_examples: int | None = None, seed: int | None = None):
    """Generates `(clips uint8 [N, 8, 16, 16, 3], labels int64 [N], behavior float32 [N, 8, 2])` of `split`,
    deterministically."""
    n = SPLIT_SIZES[split] if num_examples is None else num_examples
    rng = np.random.default_rng(SPLIT_SEEDS[split] if seed is None else seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES))
    direction = np.asarray(list(DIRECTIONS.values()), np.float32)[labels // len(SPEEDS)]
    speed = np.asarray(list(SPEEDS.values()), np.float32)[labels % len(SPEEDS)]
    # Start anywhere the square stays inside the frame for the whole clip.
    travel = direction * speed[:, None] * (NUM_FRAMES - 1)
    low, high = np.maximum(0.0, -travel), (FRAME_SIZE - SQUARE) - np.maximum(0.0, travel)
    start = low + rng.uniform(size=(n, 2)) * (high - low)
    times = np.arange(NUM_FRAMES, dtype=np.float32)
    position = start[:, None, :] + direction[:, None, :] * speed[:, None, None] * times[None, :, None]

    grid = np.arange(FRAME_SIZE, dtype=np.float32)
    rows = (grid[None, None, :] >= position[..., 0:1] - 0.5) & (grid[None, None, :] < position[..., 0:1] + SQUARE - 0.5)
    cols = (grid[None, None, :] >= position[..., 1:2] - 0.5) & (grid[None, None, :] < position[..., 1:2] + SQUARE - 0.5)
    square = rows[..., :, None] & cols[..., None, :]  # [N, T, H, W]

    background = rng.uniform(0.0, 0.4, size=(n, 1, 1, 1, 3))
    clips = np.broadcast_to(background, (n, NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)).copy()
    distractors = rng.uniform(0, 1, size=(n, 1, FRAME_SIZE, FRAME_SIZE)) < 0.04
    clips = np.where(distractors[..., None], rng.uniform(0.5, 1.0, size=(n, 1, 1, 1, 3)), clips)
    color = rng.uniform(0.6, 1.0, size=(n, 1, 1, 1, 3))
    clips = np.where(square[..., None], color, clips)
    clips = clips + rng.normal(0, 0.08, clips.shape)
    running = speed[:, None] + rng.normal(0, 0.5, (n, NUM_FRAMES))
    pupil = np.cumsum(rng.normal(0, 0.2, (n, NUM_FRAMES)), axis=1)
    behavior = np.stack([running, pupil], -1).astype(np.float32)
    return np.clip(np.round(clips * 255), 0, 255).astype(np.uint8), labels.astype(np.int64), behavior


class EmbeddedClips(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the embedded clip dataset: prepared once into the TFDS data dir, no download."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 8 classes, 4,000 train / 800 test clips of 8x16x16x3.",
                     "1.1.0": "A behavior vector per frame (running speed, pupil size)."}

    def _info(self) -> tfds.core.DatasetInfo:
        return GeneratedDatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                "behavior": tfds.features.Tensor(shape=(NUM_FRAMES, BEHAVIOR_DIM), dtype=np.float32),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        clips, labels, behavior = generate_clips(split)
        for index, (clip, label, vector) in enumerate(zip(clips, labels, behavior, strict=True)):
            yield index, {"image": clip, "label": label, "behavior": vector}
