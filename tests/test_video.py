"""The temporal experiment: clips whose label needs motion, clip-consistent augmentation, and an end-to-end
ConvGRU run."""

import numpy as np
import pytest
import tensorflow as tf

from configs import video_convgru
from tests.conftest import read_scalars
from visioncore_jax.data.embedded_clips import CLASS_NAMES, SPEEDS, generate_clips
from visioncore_jax.data.preprocessing import augment
from visioncore_jax.train import train_and_evaluate


def test_the_label_is_in_the_motion_not_in_a_frame():
    clips, labels = generate_clips("test")
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


@pytest.mark.slow
def test_convgru_clip_classifier_trains_end_to_end(tfds_data_dir, tmp_path):
    config = video_convgru.get_config()
    config.data.data_dir = tfds_data_dir
    config.model.encoder_widths = (8,)
    config.model.gru.hidden = 8
    config.training.update(num_epochs=-1, num_train_steps=6, batch_size=32, eval_batch_size=400,
                           log_every_steps=3)
    config.schedule.warmup_epochs = 0.0
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 6
    assert set(state.params["gru"]) == {"input", "cell", "h0"}
    scalars = read_scalars(str(tmp_path))
    assert scalars["eval_accuracy"][-1][0] == 6 and np.isfinite(scalars["train_loss"][-1][1])
