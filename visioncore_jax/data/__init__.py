"""Input pipelines built from `config.data`: TFDS datasets, the embedded offline dataset, image folders."""

import collections

import jax
import ml_collections

from visioncore_jax.data.embedded import EmbeddedShapes, generate_examples
from visioncore_jax.data.embedded_masks import CLASS_NAMES as MASK_CLASS_NAMES
from visioncore_jax.data.image_folder import image_folder_builder
from visioncore_jax.data.pipeline import InputPipeline
from visioncore_jax.data.sharding import to_global_batch
from visioncore_jax.data.sources import (
    DatasetInfo,
    DatasetSpec,
    DatasetUnavailableError,
    dataset_info,
    tfds_builder,
)

# Name → how to read it; `image_folder` reads config.data.image_folder instead of a TFDS name.
DATASETS = {
    "embedded_shapes": DatasetSpec("embedded_shapes/balanced"),
    "embedded_shapes_longtail": DatasetSpec("embedded_shapes/longtail"),
    "embedded_clips": DatasetSpec("embedded_clips", extra_keys=("behavior",), clips=True),
    "embedded_masks": DatasetSpec("embedded_masks", "segmentation", "segmentation_mask", MASK_CLASS_NAMES),
    "oxford_iiit_pet": DatasetSpec("oxford_iiit_pet", "segmentation", "segmentation_mask",
                                   ("pet", "background", "border"), label_offset=-1),
    "cifar10": DatasetSpec("cifar10"),
    "cifar100": DatasetSpec("cifar100"),
    "image_folder": DatasetSpec(None),
}


# TFDS pipelines built in this process, least recently used first, by their settings: runs of one data config
# (repair trials, LR range tests, tests) skip reading and measuring the splits again. TFDS data is immutable once
# prepared; image folders are scanned on every build (their files may change between runs).
_PIPELINES: collections.OrderedDict[tuple, InputPipeline] = collections.OrderedDict()
MAX_CACHED_PIPELINES = 2


def build_input(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                process_count: int | None = None) -> InputPipeline:
    """Builds this process's input pipeline for `config.data` (a config `validate_config` accepted), preparing an
    embedded dataset on first use and downloading others only with `config.data.download`."""
    data = config.data
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    key = (data.to_json_best_effort(sort_keys=True), config.seed, process_index, process_count)
    if data.name != "image_folder" and key in _PIPELINES:
        _PIPELINES.move_to_end(key)
        return _PIPELINES[key]
    spec = DATASETS[data.name]
    if data.name == "image_folder":
        builder = image_folder_builder(data.image_folder, data.train_split, data.eval_split, data.skip_corrupt)
    else:
        builder = tfds_builder(spec.tfds_name, data.data_dir, data.download)
    info = dataset_info(builder, data.train_split, data.eval_split, data.image_size, spec)
    pipeline = InputPipeline(
        builder, info, spec, train_split=data.train_split, eval_split=data.eval_split, seed=config.seed,
        crop_padding=data.crop_padding, random_flip=data.random_flip, shuffle_buffer=data.shuffle_buffer,
        mean=tuple(data.mean), std=tuple(data.std), process_index=process_index, process_count=process_count,
    )
    if data.name != "image_folder":
        _PIPELINES[key] = pipeline
        while len(_PIPELINES) > MAX_CACHED_PIPELINES:
            _PIPELINES.popitem(last=False)
    return pipeline


__all__ = ["DATASETS", "DatasetInfo", "DatasetSpec", "DatasetUnavailableError", "EmbeddedShapes", "InputPipeline",
           "build_input", "generate_examples", "to_global_batch"]
