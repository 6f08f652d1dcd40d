"""Segmentation: Dice / IoU against hand-computed values, soft Dice against NumPy, mask-consistent augmentation,
the embedded masks dataset, and the CBAM U-Net config end to end."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from configs import seg_cbam
from tests.conftest import read_scalars
from visioncore_jax.data.embedded_masks import CLASS_NAMES, generate_masked_images
from visioncore_jax.data.preprocessing import augment
from visioncore_jax.train import train_and_evaluate
from visioncore_jax.train.losses import soft_dice_loss
from visioncore_jax.train.tasks import Segmentation, dice_and_iou


def test_dice_and_iou_from_a_confusion_matrix():
    # Class 2 is predicted 5 times but never present; class 3 is neither present nor predicted.
    confusion = np.asarray([[50, 10, 0, 0], [5, 30, 5, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    dice, iou = dice_and_iou(confusion)
    np.testing.assert_allclose(dice, [100 / 115, 60 / 80, 0.0, 1.0])
    np.testing.assert_allclose(iou, [50 / 65, 30 / 50, 0.0, 1.0])


def test_soft_dice_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(2, 4, 4, 3)), rng.integers(0, 3, (2, 4, 4))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = np.eye(3)[labels]
    dice = (2 * (p * y).sum((0, 1, 2)) + 1) / (p.sum((0, 1, 2)) + y.sum((0, 1, 2)) + 1)
    np.testing.assert_allclose(soft_dice_loss(jnp.asarray(logits), jnp.asarray(labels)), 1 - dice.mean(), rtol=1e-5)
    # Perfect, confident predictions give a loss of ~0 and the task's loss adds the cross-entropy.
    confident = jnp.asarray(20.0 * (y - 0.5))
    assert float(soft_dice_loss(confident, jnp.asarray(labels))) < 1e-6
    total = Segmentation(dice_weight=0.5).data_loss({"logits": jnp.asarray(logits)}, jnp.asarray(labels), 0.0)
    ce = -np.mean(np.log((p * y).sum(-1)))
    np.testing.assert_allclose(total, ce + 0.5 * (1 - dice.mean()), rtol=1e-5)


def test_augmentation_moves_the_mask_with_the_image():
    mask = tf.constant(np.random.default_rng(0).integers(0, 4, (32, 32)), tf.int32)
    rgb = tf.stack([tf.cast(mask, tf.float32) / 10, tf.zeros((32, 32)), tf.ones((32, 32))], -1)
    for seed in range(8):
        out_rgb, out_mask = augment(rgb, tf.constant([0, seed], tf.int64), crop_padding=4, random_flip=True,
                                    mask=mask)
        np.testing.assert_allclose(out_rgb[..., 0].numpy() * 10, out_mask.numpy(), atol=1e-5)
        padding = out_rgb[..., 2].numpy() == 0
        assert np.all(out_mask.numpy()[padding] == 0)


def test_embedded_masks_are_deterministic_and_cover_every_class():
    images, masks = generate_masked_images("train", 64)
    again, masks_again = generate_masked_images("train", 64)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(masks, masks_again)
    assert set(np.unique(masks)) == set(range(len(CLASS_NAMES)))


@pytest.mark.slow
def test_cbam_unet_config_trains_end_to_end_with_dice_metrics(prepare_tfds, tmp_path):
    config = seg_cbam.get_config()
    config.data.data_dir = prepare_tfds("embedded_masks")
    config.model.unet.widths = (8, 16)
    config.schedule.warmup_epochs = 0.0
    config.training.update(num_epochs=-1, num_train_steps=6, batch_size=32, eval_batch_size=400,
                           log_every_steps=3, eval_every_epochs=3 / 125)
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 6
    scalars = read_scalars(str(tmp_path))
    record = [json.loads(line) for line in open(tmp_path / "diagnostics" / "eval.jsonl")][-1]
    assert record["task"] == "segmentation" and np.asarray(record["confusion"]).sum() == 800 * 32 * 32
    assert record["num_examples"] == 800  # images, not pixels: the sample size of the repair's noise margin
    dice, iou = dice_and_iou(np.asarray(record["confusion"]))
    np.testing.assert_allclose(record["dice_per_class"], dice, rtol=1e-6)
    np.testing.assert_allclose(scalars["eval_mean_iou"][-1][1], iou.mean(), rtol=1e-5)
    train = [json.loads(line) for line in open(tmp_path / "diagnostics" / "train.jsonl")][-1]
    assert {"encoder0/attention", "encoder1/attention"} <= set(train["gates"])
