"""Where examples come from: TFDS builders (CIFAR, the embedded dataset, an image folder), prepared offline-aware."""

import dataclasses
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from visioncore_jax.data import embedded, embedded_clips, embedded_masks  # noqa: F401  (registers the builders)
from visioncore_jax.data.preprocessing import LUMA_WEIGHTS
from visioncore_jax.errors import InputError

STATISTICS_SAMPLE = 10_000  # training images used to measure normalization statistics
TASKS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset: its TFDS name, task, label feature and, for masks, the class names and the
    offset that makes mask values 0-based (oxford_iiit_pet's trimap stores 1, 2, 3); `extra_keys` are
    features the model receives unchanged beside the images."""

    tfds_name: str | None
    task: str = "classification"
    label_key: str = "label"
    class_names: tuple[str, ...] = ()
    label_offset: int = 0
    extra_keys: tuple[str, ...] = ()  # features passed to the model as they are (e.g. 'behavior')
    clips: bool = False  # examples are clips [T, H, W, 3] rather than images [H, W, 3]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the framework needs to know about a dataset."""

    num_classes: int
    task: str  # 'classification' (one label per example) | 'segmentation' (a label per pixel)
    num_train_examples: int
    num_eval_examples: int
    image_shape: tuple[int, ...]  # [H, W, 3] for images, [T, H, W, 3] for clips
    class_names: tuple[str, ...]
    train_label_counts: tuple[int, ...]  # examples (segmentation: pixels) per class in the training split
    extra_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (key, per-example shape) of the extra inputs


class DatasetUnavailableError(InputError):
    """The dataset is neither prepared locally nor allowed (or able) to be downloaded."""


def _unavailable_message(name: str, data_dir: str, error: Exception | None) -> str:
    where = data_dir or "~/tensorflow_datasets"
    detail = " ".join(str(error).split())
    detail = detail if len(detail) <= 200 else detail[:200] + " ..."
    why = (f"could not be downloaded ({type(error).__name__}: {detail})" if error else
           "downloading was not asked for (--config.data.download=True downloads it)")
    return (f"Dataset {name!r} is not prepared in {where} and {why}. Point --config.data.data_dir at a TFDS data "
            f"dir that holds it (`tfds build {name} --data_dir=DIR` on a connected machine), or train offline "
            "with --config.data.name=embedded_shapes.")


def _directories(root: str) -> set[str]:
    return {os.path.join(parent, name) for parent, names, _ in os.walk(root) for name in names}


def _remove_new_empty_directories(root: str, before: set[str]) -> None:
    """Removes the empty directories under `root` that were not in `before` (deepest first)."""
    for path in sorted(_directories(root) - before, key=len, reverse=True):
        if not os.listdir(path):
            os.rmdir(path)


def tfds_builder(name: str, data_dir: str, download: bool = False) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `name` in `data_dir` ('' = TFDS default). An unprepared dataset is generated when it
    is one of ours (`embedded_*`, procedural) and downloaded only when `download`; otherwise, or when the
    download fails, a DatasetUnavailableError says how to provide the data, and no new empty directory is left
    in the data dir."""
    builder = tfds.builder(name, data_dir=data_dir or None)
    if builder.is_prepared():
        return builder
    if not (download or name.startswith("embedded_")):
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, None))
    root = os.path.dirname(os.path.dirname(builder.data_dir))  # data_dir/<name>/<version>
    before = _directories(root)
    try:
        builder.download_and_prepare()
    except Exception as error:  # TFDS raises many types offline (DownloadError, ConnectionError, OSError …)
        if name.startswith("embedded_"):  # procedural: a failure here is a bug, not the network
            raise
        _remove_new_empty_directories(root, before)
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, error)) from error
    return builder


def _num_examples(builder: tfds.core.DatasetBuilder, key: str, split: str) -> int:
    """Size of `split` (a name, a slice such as 'train[:4096]', or a sum) from the builder's metadata, counted
    when the metadata lacks it (e.g. mock data)."""
    try:
        num_examples = builder.info.splits[split].num_examples
    except (ValueError, KeyError):  # not a split of the builder: as_dataset below says so in its own words
        num_examples = 0
    if num_examples:
        return num_examples
    try:
        dataset = builder.as_dataset(split=split)
    except (ValueError, KeyError) as error:
        raise InputError(f"--config.data.{key}={split!r} is not a split of {builder.name}: "
                         f"{sorted(builder.info.splits)}.") from error
    return int(dataset.reduce(0, lambda count, _: count + 1))


def label_counts(builder: tfds.core.DatasetBuilder, split: str, num_classes: int,
                 spec: DatasetSpec = DatasetSpec(None)) -> np.ndarray:
    """Examples (per-pixel labels for masks) per class in `split`; images are not decoded. Raises a ValueError
    naming the offending labels when some fall outside [0, num_classes)."""
    dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})

    def count(example):
        labels = tf.reshape(tf.cast(example[spec.label_key], tf.int64), [-1]) + spec.label_offset
        bad = (labels < 0) | (labels >= num_classes)
        counts = tf.math.bincount(tf.boolean_mask(labels, ~bad), minlength=num_classes, maxlength=num_classes,
                                  dtype=tf.int64)
        first_bad = tf.cond(tf.reduce_any(bad), lambda: tf.boolean_mask(labels, bad)[0],
                            lambda: tf.constant(0, tf.int64))
        return counts, tf.reduce_sum(tf.cast(bad, tf.int64)), first_bad

    counts, num_bad, bad_values = np.zeros(num_classes, np.int64), 0, set()
    for batch_counts, batch_bad, batch_first in tfds.as_numpy(dataset.map(count, num_parallel_calls=tf.data.AUTOTUNE)
                                                             .batch(10_000)):
        counts += batch_counts.sum(0)
        num_bad += int(batch_bad.sum())
        bad_values.update(batch_first[batch_bad > 0].tolist())
    if num_bad:
        raise InputError(f"{num_bad} labels of split {split!r} are outside [0, {num_classes}) (e.g. "
                         f"{sorted(bad_values)[:5]}); labels must be 0-based class indices.")
    return counts


def dataset_info(builder: tfds.core.DatasetBuilder, train_split: str, eval_split: str, image_size: int,
                 spec: DatasetSpec = DatasetSpec(None)) -> DatasetInfo:
    """Reads class names, split sizes and the training label histogram; raises a ValueError for unknown split
    names and out-of-range labels. Images (or clip frames) are resized to `image_size` x `image_size`."""
    class_names = spec.class_names or tuple(builder.info.features[spec.label_key].names)
    image_shape = (*builder.info.features["image"].shape[:-3], image_size, image_size, 3)
    num_train = _num_examples(builder, "train_split", train_split)
    counts = label_counts(builder, train_split, len(class_names), spec)
    return DatasetInfo(
        num_classes=len(class_names),
        task=spec.task,
        num_train_examples=num_train,
        num_eval_examples=_num_examples(builder, "eval_split", eval_split),
        image_shape=image_shape,
        class_names=class_names,
        train_label_counts=tuple(int(c) for c in counts),
        extra_shapes=tuple((key, tuple(builder.info.features[key].shape)) for key in spec.extra_keys),
    )


def channel_statistics(images: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-channel RGB mean/std and luma mean/std of images in [0, 1], measured on a sample of the train split.
    Luma is linear in RGB: its moments follow from the RGB sums and their 3x3 matrix of products, one matrix
    product per batch (2.5x faster than squaring a luma channel appended to every pixel)."""
    weights = np.asarray(LUMA_WEIGHTS)
    total, products, count = np.zeros(3), np.zeros((3, 3)), 0
    for batch in tfds.as_numpy(images.take(STATISTICS_SAMPLE).batch(1000)):
        rgb = batch.reshape(-1, 3).astype(np.float64)
        total += rgb.sum(0)
        products += rgb.T @ rgb
        count += len(rgb)
    mean, second = total / count, products / count
    luma_mean = mean @ weights
    variance = np.append(np.diag(second) - mean**2, weights @ second @ weights - luma_mean**2)
    std = np.sqrt(np.maximum(variance, 1e-12))
    return mean, std[:3], float(luma_mean), float(std[3])
