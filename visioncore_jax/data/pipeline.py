"""Deterministic, resumable tf.data input pipelines yielding each process's part of the global batch."""

import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from visioncore_jax.data.preprocessing import augment, pathway_inputs
from visioncore_jax.data.sources import DatasetInfo, DatasetSpec, channel_statistics
from visioncore_jax.optim import durations

AUTOTUNE = tf.data.AUTOTUNE


def _without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` without tf.data's autotuning thread. Abandoning an iterator with that thread running (every run
    ends with a part-read training stream, and so does each NaN rollback) blocked its destruction for up to the
    time it had sat idle (measured: 1.4-19.6 s in 3 of 18 closes on this CPU, none in 15 without it); AUTOTUNE
    parallelism and buffer sizes then take tf.data's fixed defaults."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(f"The global batch {global_batch_size} does not divide by {process_count} processes; "
                         f"use a multiple of {process_count}.")
    return global_batch_size // process_count


class InputPipeline:
    """Train and eval batches of one dataset for one process.

    Global batch `i` of the training stream depends only on (seed, i), not on the number of processes: epoch `e`
    shuffles the whole training split with a seed derived from (seed, e) and augments example `j` of the stream
    with the stateless seed (seed, j); process `p` of `P` yields rows [p * B / P, (p + 1) * B / P) of each global
    batch of B. Resuming at step `s`, or running on another number of hosts, therefore yields exactly the global
    batches an uninterrupted single-process run would have seen.
    """

    def __init__(self, builder: tfds.core.DatasetBuilder, info: DatasetInfo, spec: DatasetSpec, *, train_split: str,
                 eval_split: str, seed: int, crop_padding: int, random_flip: bool, shuffle_buffer: int,
                 mean=(), std=(), process_index: int = 0, process_count: int = 1):
        self.info = info
        self._spec = spec
        self._seed = seed
        self._crop_padding = crop_padding
        self._random_flip = random_flip
        self._shuffle_buffer = shuffle_buffer
        self._process_index, self._process_count = process_index, process_count
        # Every process holds the whole training split (its global order must not depend on the process count;
        # each process then augments only its rows) and every `process_count`-th eval example (eval metrics are
        # sums). `Dataset.shard` rather than TFDS sub-splits, which ImageFolder does not support.
        self._train_images = _filled_cache(self._decoded(builder, train_split))
        self._eval_images = _filled_cache(self._decoded(builder, eval_split).shard(process_count, process_index))
        measured_mean, measured_std, self._luma_mean, self._luma_std = channel_statistics(
            self._train_images.map(lambda image, label, *extras: image))
        self._mean = tuple(mean) if mean else tuple(measured_mean)
        self._std = tuple(std) if std else tuple(measured_std)
        # Built once: every training stream maps with this one traced function, and every eval pass of a batch
        # size iterates the same dataset (a new tf.data graph, traced anew, for each cost ~0.1 s per call).
        self._augmented_features = tf.function(self._augmented)
        self._eval_datasets: dict[int, tf.data.Dataset] = {}

    def _decoded(self, builder, split: str) -> tf.data.Dataset:
        """(image float32 [(T,) H, W, 3] in [0, 1], label[, extras]) in the split's stored order, resized if
        needed. The label is a class index, or for segmentation a 0-based mask [H, W] resized by nearest
        neighbour; extras (a dict of the spec's `extra_keys`) come only when the spec names some."""
        height, width, _ = self.info.image_shape[-3:]
        spec = self._spec

        def decode(example):
            image = tf.image.convert_image_dtype(example["image"], tf.float32)
            label = tf.cast(example[spec.label_key], tf.int32) + spec.label_offset
            if image.shape[-3:-1] != (height, width):
                image = tf.image.resize(image, (height, width), antialias=True)
                image.set_shape(self.info.image_shape)
            if spec.task == "segmentation":
                label = tf.image.resize(label, (height, width), method="nearest")[..., 0]
                label.set_shape((height, width))
            if spec.extra_keys:
                return image, label, {key: example[key] for key in spec.extra_keys}
            return image, label

        dataset = builder.as_dataset(split=split, shuffle_files=False)
        return dataset.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)

    def _features(self, image, label, extras=None, seed=None) -> dict:
        if seed is not None and self._spec.task == "segmentation":
            image, label = augment(image, seed, self._crop_padding, self._random_flip, mask=label)
        elif seed is not None:
            image = augment(image, seed, self._crop_padding, self._random_flip)
        return {**pathway_inputs(image, self._mean, self._std, self._luma_mean, self._luma_std), **(extras or {}),
                "label": label}

    def _augmented(self, index, example) -> dict:
        """Features of `example`, the stream's example number `index`, augmented with the seed (seed, index)."""
        return self._features(*example, seed=tf.stack([tf.cast(self._seed, tf.int64), index]))

    def unaugmented_examples(self, split: str, count: int | None = None) -> dict[str, np.ndarray]:
        """The first `count` (all when None) examples of this process's 'train' or 'eval' split in stored
        order, preprocessed like eval batches (normalized, never augmented), plus `raw`: the [0, 1] images."""
        images = self._train_images if split == "train" else self._eval_images
        if count is not None:
            images = images.take(count)
        dataset = images.map(lambda image, *rest: {**self._features(image, *rest), "raw": image},
                             num_parallel_calls=AUTOTUNE).batch(4096)
        batches = list(tfds.as_numpy(dataset))
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def denormalize(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """`(rgb in [0, 1], luma in [0, 1])` of a batch's normalized `color` and `brightness` inputs."""
        rgb = batch["color"] * np.asarray(self._std, np.float32) + np.asarray(self._mean, np.float32)
        return rgb, batch["brightness"][..., 0] * self._luma_std + self._luma_mean

    def train_batches(self, global_batch_size: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Infinite stream of augmented training batches (this process's rows of each global batch), starting
        at `start_step`."""
        local = _local_batch_size(global_batch_size, self._process_count)
        steps_per_epoch = durations.steps_per_epoch(self.info.num_train_examples, global_batch_size)
        epoch, offset = divmod(start_step, steps_per_epoch)
        process = self._process_index
        while True:
            first_example = epoch * steps_per_epoch * global_batch_size
            dataset = (
                self._train_images.shuffle(self._shuffle_buffer, seed=self._seed * 1_000_003 + epoch,
                                           reshuffle_each_iteration=False)
                .take(steps_per_epoch * global_batch_size)
                .enumerate(start=first_example)
                .skip(offset * global_batch_size)
                .filter(lambda index, example: index % global_batch_size // local == process)
                .map(self._augmented_features, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(local, drop_remainder=True)
                .prefetch(AUTOTUNE)
            )
            yield from tfds.as_numpy(_without_autotuning(dataset))
            epoch, offset = epoch + 1, 0

    def eval_batches(self, global_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """One pass over the eval split in stored order, un-augmented; the last batch is padded and every
        batch carries `mask` (1 = real example). Every process yields the same number of batches."""
        local = _local_batch_size(global_batch_size, self._process_count)
        num_batches = math.ceil(self.info.num_eval_examples / global_batch_size)
        dataset = self._eval_dataset(local)
        empty = {k: np.zeros((0, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
                 for k, spec in dataset.element_spec.items()}
        count = 0
        for batch in tfds.as_numpy(dataset):
            count += 1
            yield _padded(batch, local)
        for _ in range(num_batches - count):  # this process's share ran out before the others'
            yield _padded(empty, local)

    def _eval_dataset(self, local_batch_size: int) -> tf.data.Dataset:
        """This process's eval batches of `local_batch_size` (the last one short), built on first use."""
        if local_batch_size not in self._eval_datasets:
            dataset = self._eval_images.map(self._features, num_parallel_calls=AUTOTUNE).batch(local_batch_size)
            self._eval_datasets[local_batch_size] = _without_autotuning(dataset.prefetch(AUTOTUNE))
        return self._eval_datasets[local_batch_size]


def _filled_cache(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset.cache()` filled by one complete pass now. A lazily filled in-memory cache can be read while
    partly written when two iterators overlap (a suspended generator, e.g. `next(pipeline.eval_batches(n))`,
    and a new pass), which yields a truncated split; filling it first makes every later pass complete."""
    cached = dataset.cache()
    cached.reduce(0, lambda count, _: count + 1)
    return cached


def _padded(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads every array of `batch` with zeros to `size` rows and adds `mask` (1 real, 0 padding)."""
    real = len(batch["label"])
    padded = {k: np.concatenate([v, np.zeros((size - real, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    padded["mask"] = (np.arange(size) < real).astype(np.float32)
    return padded
