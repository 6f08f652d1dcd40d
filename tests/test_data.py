"""Input pipelines: luma and augmentation shared by both pathways, determinism and exact resume, process
splits, eval padding, the embedded dataset, CIFAR through TFDS mock data, offline errors, global batches."""

import os
import tempfile

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import test as test_config
from visioncore_jax.data import build_input, generate_examples, to_global_batch
from visioncore_jax.data.embedded import CLASS_NAMES, SHAPES
from visioncore_jax.data.preprocessing import LUMA_WEIGHTS
from visioncore_jax.train.partitioning import make_mesh

NUM_FOLDER_CLASSES = 3


@pytest.fixture(scope="module")
def folder_config(tmp_path_factory):
    """An image folder of 3 classes (48 train, 9 test images of 40x40, resized to 32x32)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 16), ("test", 3)):
        for label in range(NUM_FOLDER_CLASSES):
            os.makedirs(root / split / f"class{label}")
            for index in range(per_class):
                image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                tf.io.write_file(str(root / split / f"class{label}" / f"{index}.png"), tf.io.encode_png(image))
    config = test_config.get_config()
    config.data.update(name="image_folder", image_folder=str(root), shuffle_buffer=64)
    return config


@pytest.fixture(scope="module")
def embedded_pipeline(tfds_data_dir):
    """The test config's pipeline on a 2,048-image training slice (the whole split: ~4x the build time)."""
    config = test_config.get_config()
    config.data.update(data_dir=tfds_data_dir, train_split="train[:2048]")
    return build_input(config), config


def unnormalize(batch, pipeline):
    rgb = batch["color"] * np.asarray(pipeline._std) + np.asarray(pipeline._mean)
    return rgb, batch["brightness"][..., 0] * pipeline._luma_std + pipeline._luma_mean


def test_brightness_is_the_luma_of_the_same_augmented_image(embedded_pipeline):
    pipeline, _ = embedded_pipeline
    batch = next(pipeline.train_batches(64))
    rgb, brightness = unnormalize(batch, pipeline)
    np.testing.assert_allclose(brightness, rgb @ np.asarray(LUMA_WEIGHTS), atol=1e-5)
    # Crop padding shows as black borders in both pathways at the same pixels.
    black = np.all(np.abs(rgb) < 1e-6, axis=-1)
    assert black.any()
    np.testing.assert_allclose(brightness[black], 0.0, atol=1e-5)


def test_eval_is_deterministic_and_unaugmented_train_is_augmented(embedded_pipeline, tfds_data_dir):
    pipeline, _ = embedded_pipeline
    first, second = next(pipeline.eval_batches(64)), next(pipeline.eval_batches(64))
    jax.tree.map(np.testing.assert_array_equal, first, second)
    raw = next(iter(tfds.as_numpy(tfds.builder("embedded_shapes", data_dir=tfds_data_dir).as_dataset(
        split="test", shuffle_files=False).take(64).batch(64))))
    rgb, _ = unnormalize(first, pipeline)
    np.testing.assert_allclose(rgb, raw["image"] / 255.0, atol=1e-5)
    np.testing.assert_array_equal(first["label"], raw["label"])
    train = next(pipeline.train_batches(64))
    train_rgb, _ = unnormalize(train, pipeline)
    assert np.mean(np.all(np.abs(train_rgb) < 1e-6, axis=-1)) > 0.01  # padding from random crops


def test_normalization_statistics_are_measured(embedded_pipeline):
    pipeline, _ = embedded_pipeline
    batch = next(pipeline.eval_batches(512))
    assert abs(batch["color"].mean()) < 0.1 and abs(batch["color"].std() - 1) < 0.1
    assert abs(batch["brightness"].mean()) < 0.1 and abs(batch["brightness"].std() - 1) < 0.1


def test_resumed_stream_equals_uninterrupted_stream_across_epochs(folder_config):
    pipeline = build_input(folder_config)
    steps_per_epoch = 48 // 8
    stream = pipeline.train_batches(8)
    uninterrupted = [next(stream) for _ in range(2 * steps_per_epoch + 2)]
    for start in (0, 4, steps_per_epoch, steps_per_epoch + 3):
        resumed = pipeline.train_batches(8, start_step=start)
        for expected in uninterrupted[start:start + 4]:
            jax.tree.map(np.testing.assert_array_equal, next(resumed), expected)
    # Epochs are reshuffled: the second epoch's order differs from the first's.
    first_epoch = np.concatenate([b["label"] for b in uninterrupted[:steps_per_epoch]])
    second_epoch = np.concatenate([b["label"] for b in uninterrupted[steps_per_epoch:2 * steps_per_epoch]])
    assert np.bincount(first_epoch).tolist() == np.bincount(second_epoch).tolist() == [16, 16, 16]
    assert not np.array_equal(uninterrupted[0]["color"], uninterrupted[steps_per_epoch]["color"])


def test_processes_split_the_single_process_global_batch(folder_config):
    """2 processes yield the two halves of the global batches of 1 process (augmented alike), from any step."""
    single = build_input(folder_config)
    parts = [build_input(folder_config, process_index=i, process_count=2) for i in range(2)]
    steps_per_epoch = 48 // 8
    for start in (0, steps_per_epoch - 1):  # the second crosses into the next epoch
        whole = single.train_batches(8, start_step=start)
        halves = [pipeline.train_batches(8, start_step=start) for pipeline in parts]
        for _ in range(3):
            expected, first, second = next(whole), next(halves[0]), next(halves[1])
            assert len(first["label"]) == len(second["label"]) == 4
            for key in expected:
                np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), expected[key])


def test_eval_padding_counts_every_example_once(folder_config):
    pipeline = build_input(folder_config)
    batches = list(pipeline.eval_batches(8))
    assert len(batches) == 2 and all(len(b["label"]) == 8 for b in batches)
    assert sum(b["mask"].sum() for b in batches) == 9
    assert batches[1]["mask"].tolist() == [1] + [0] * 7
    assert pipeline.info.num_classes == NUM_FOLDER_CLASSES


def test_embedded_dataset_needs_both_pathways():
    images, labels = generate_examples("test", 2000)
    again, _ = generate_examples("test", 2000)
    np.testing.assert_array_equal(images, again)
    assert len(CLASS_NAMES) >= 10 and np.bincount(labels).min() == 200
    rgb = images.astype(np.float64) / 255
    hsv = tf.image.rgb_to_hsv(rgb).numpy()
    # Hue (color only) separates the two hue families: warm reds vs cool cyans/blues among saturated pixels.
    saturated = hsv[..., 1] > 0.45
    hue_family = labels // len(SHAPES)
    cool_fraction = [np.mean(((hsv[..., 0] > 0.35) & (hsv[..., 0] < 0.8))[hue_family == f][saturated[hue_family == f]])
                     for f in (0, 1)]
    assert cool_fraction[1] - cool_fraction[0] > 0.15  # the families overlap a little by design
    # Luma structure (brightness only) separates shapes: the area standing out from the background's luma
    # follows the shape (disk > ring, which has a hole, > triangle).
    luma = rgb @ np.asarray(LUMA_WEIGHTS)
    area = (np.abs(luma - np.median(luma, axis=(1, 2), keepdims=True)) > 0.2).mean(axis=(1, 2))
    shape_area = {name: area[labels % len(SHAPES) == i].mean() for i, name in enumerate(SHAPES)}
    assert shape_area["disk"] > 1.2 * shape_area["ring"] > 1.2 * shape_area["triangle"]


@pytest.mark.parametrize("name", ["embedded_shapes/longtail", "embedded_clips", "embedded_masks"])
def test_unprepared_embedded_builder_leaves_no_temp_dir(name, tmp_path, monkeypatch):
    """TFDS's bucket lookup, skipped for generated datasets, made an empty `tmp*tfds` dir per builder."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    builder = tfds.builder(name, data_dir=str(tmp_path / "data"))
    assert not builder.is_prepared() and builder.info.features["image"] is not None
    assert os.listdir(temp) == []


def test_cifar100_through_tfds_mock_data():
    config = test_config.get_config()
    config.data.update(name="cifar100", download=True)  # mock_data's no-op download stands in for the real one
    with tfds.testing.mock_data(num_examples=64):
        pipeline = build_input(config)
        batch = next(pipeline.train_batches(32))
    assert pipeline.info.num_classes == 100
    assert batch["color"].shape == (32, 32, 32, 3) and batch["brightness"].shape == (32, 32, 32, 1)
    assert batch["label"].dtype == np.int32 and batch["label"].max() < 100


def test_global_batch_is_sharded_over_the_devices():
    mesh = make_mesh()
    assert mesh.devices.size == 2
    batch = {"color": np.zeros((16, 4, 4, 3), np.float32), "label": np.arange(16, dtype=np.int32)}
    sharded = to_global_batch(batch, mesh)
    assert sharded["label"].sharding.shard_shape((16,)) == (8,)
    np.testing.assert_array_equal(np.asarray(sharded["label"]), np.arange(16))
    with pytest.raises(ValueError, match="multiple of 2"):
        to_global_batch({"label": np.arange(13)}, mesh)
