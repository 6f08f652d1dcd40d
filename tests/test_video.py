"""The temporal experiment: clips whose label needs motion, clip-consistent augmentation, and an end-to-end
ConvGRU run."""

import numpy as np
import pytest
import tensorflow as tf

from configs import video_convgru
from tests.conftest import read_scalars
from visioncore_jax.data import build_input
from visioncore_jax.data.embedded_clips import CLASS_NAMES, SPEEDS, generate_clips
from visioncore_jax.data.preprocessing import augment
from visioncore_jax.train import train_and_evaluate


def test_the_label_is_in_the_motion_not_in_a_frame():
    clips, labels, _ = generate_clips("test")
    bright = clips.astype(np.float32).mean(-1) > 150  # the moving square (and a few distractors)
    rows = np.arange(16)[None, None, :, None]
    centre_row = (bright * rows).sum((2, 3)) / np.maximum(bright.sum((2, 3)), 1)  # [N, T]
    motion = centre_row[:, -1] - centre_row[:, 0]
    directions = np.asarray(labels) // len(SPEEDS)  # right, left, down, up
    assert motion[directions == 2].mean() > 3 and motion[directions == 3].mean() < -3
    # One frame alone: the average row of the square barely depends on the class.
    single_frame = [centre_row[labels == c, 3].mean() for c in range(len(CLASS_NAMES))]
    assert np.ptp(single_frame) < 4


def test_every_frame_gets_the_same_crop_and_flip():
    frame = tf.random.stateless_uniform((16, 16, 3), seed=(1, 2))
    clip = tf.stack([frame] * 8)  # identical frames must stay identical after augmentation
    changed = 0
    for seed in range(6):
        out = np.asarray(augment(clip, tf.constant([0, seed], tf.int64), crop_padding=2, random_flip=True))
        for t in range(1, 8):
            np.testing.assert_array_equal(out[t], out[0])
        changed += not np.array_equal(out[0], np.asarray(frame))
    assert changed >= 4  # and augmentation does happen


def test_clips_carry_behavior_vectors_into_the_batches(prepare_tfds):
    config = video_convgru.get_config()
    config.data.data_dir = prepare_tfds("embedded_clips")
    pipeline = build_input(config)
    batch = next(pipeline.train_batches(32))
    assert batch["behavior"].shape == (32, 8, 2) and batch["color"].shape == (32, 8, 16, 16, 3)
    _, labels, behavior = generate_clips("train")
    fast = labels % len(SPEEDS) == 1
    assert behavior[fast, :, 0].mean() > behavior[~fast, :, 0].mean() + 0.4  # running speed follows speed


@pytest.mark.slow
@pytest.mark.parametrize("behavior_embed_dim", [0, 4])
def test_convgru_clip_classifier_trains_end_to_end(prepare_tfds, tmp_path, behavior_embed_dim):
    config = video_convgru.get_config()
    config.data.data_dir = prepare_tfds("embedded_clips")
    config.model.encoder_widths = (8,)
    config.model.gru.hidden = 8
    config.model.behavior_embed_dim = behavior_embed_dim
    config.training.update(num_epochs=-1, num_train_steps=6, batch_size=32, eval_batch_size=400,
                           log_every_steps=3)
    config.schedule.warmup_epochs = 0.0
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 6
    if behavior_embed_dim:  # the behavior vectors are embedded and read by the ConvGRU
        assert state.params["modulated"]["behavior_embedding"]["kernel"].shape == (2, 4)
        assert set(state.params["modulated"]["gru"]) == {"input", "cell", "h0"}
    else:
        assert set(state.params["gru"]) == {"input", "cell", "h0"}
    scalars = read_scalars(str(tmp_path))
    assert scalars["eval_accuracy"][-1][0] == 6 and np.isfinite(scalars["train_loss"][-1][1])
