"""Class weights, the weighted loss, the long-tailed embedded data, and per-class eval metrics end to end."""

import numpy as np
import pytest

from configs import imbalanced
from tests.conftest import read_scalars
from visioncore_jax.data import build_input
from visioncore_jax.data.embedded import CLASS_NAMES, long_tail_counts
from visioncore_jax.train import train_and_evaluate
from visioncore_jax.train.losses import class_weights, cross_entropy, weighted_mean
from visioncore_jax.train.metrics import confusion_summary


def test_cube_root_inverse_class_weights_by_hand():
    counts = [800, 100, 50, 50]  # N = 1000, K = 4: N / (K n_c) = 0.3125, 2.5, 5, 5
    expected = [max(0.3125 ** (1 / 3), 0.7), min(2.5 ** (1 / 3), 1.3), 1.3, 1.3]  # 0.679 → 0.7; 1.357 → 1.3
    np.testing.assert_allclose(class_weights(counts, "cube_root_inverse", (0.7, 1.3)), expected, rtol=1e-6)
    np.testing.assert_allclose(class_weights(counts, "cube_root_inverse", (0.1, 10)),
                               np.cbrt([0.3125, 2.5, 5, 5]), rtol=1e-6)
    np.testing.assert_array_equal(class_weights([5, 5, 5], "cube_root_inverse"), [1, 1, 1])
    np.testing.assert_array_equal(class_weights(counts, "none"), [1, 1, 1, 1])


def test_inverse_class_weights_by_hand():
    counts = [800, 100, 50, 50]  # N / (K n_c) = 0.3125, 2.5, 5, 5
    np.testing.assert_allclose(class_weights(counts, "inverse", (0.1, 10)), [0.3125, 2.5, 5, 5], rtol=1e-6)
    np.testing.assert_allclose(class_weights(counts, "inverse", (0.7, 1.3)), [0.7, 1.3, 1.3, 1.3], rtol=1e-6)


def test_weighted_loss_is_torchs_weighted_mean():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 3)).astype(np.float32), np.array([0, 1, 2, 2, 1, 0])
    weights = np.array([0.7, 1.0, 1.3], np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    nll = -log_probs[np.arange(6), labels]
    expected = (weights[labels] * nll).sum() / weights[labels].sum()
    np.testing.assert_allclose(weighted_mean(cross_entropy(logits, labels), labels, weights), expected, rtol=1e-5)


def test_confusion_summary():
    confusion = np.array([[8, 2, 0], [0, 5, 5], [0, 10, 0]], np.float32)
    summary = confusion_summary(confusion, ("a", "b", "c"))
    np.testing.assert_allclose(summary["eval_balanced_accuracy"], (0.8 + 0.5 + 0.0) / 3)
    np.testing.assert_allclose(summary["eval_max_predicted_fraction"], 17 / 30)
    assert summary["eval_class_accuracy/c"] == 0.0 and summary["eval_predicted_fraction/a"] == pytest.approx(8 / 30)


@pytest.mark.slow
def test_long_tailed_run_reports_per_class_metrics(prepare_tfds, tmp_path):
    config = imbalanced.get_config()
    config.data.data_dir = prepare_tfds("embedded_shapes_longtail")
    config.model.update(width=8, num_blocks=(1, 1))
    config.training.update(num_epochs=-1, num_train_steps=4, batch_size=32, log_every_steps=2,
                           eval_batch_size=512)
    config.schedule.warmup_epochs = 0.0
    info = build_input(config).info
    assert info.train_label_counts == tuple(long_tail_counts(1200, 20.0)) and info.num_eval_examples == 2000
    train_and_evaluate(config, str(tmp_path))
    scalars = {tag: series[-1][1] for tag, series in read_scalars(str(tmp_path)).items()}
    shares = [scalars[f"eval_predicted_fraction/{name}"] for name in CLASS_NAMES]
    np.testing.assert_allclose(sum(shares), 1.0, rtol=1e-5)
    np.testing.assert_allclose(max(shares), scalars["eval_max_predicted_fraction"])
    per_class = [scalars[f"eval_class_accuracy/{name}"] for name in CLASS_NAMES]
    # The eval split is balanced: plain accuracy equals balanced accuracy equals the mean per-class accuracy.
    np.testing.assert_allclose(np.mean(per_class), scalars["eval_balanced_accuracy"], rtol=1e-5)
    np.testing.assert_allclose(scalars["eval_accuracy"], scalars["eval_balanced_accuracy"], rtol=1e-5)
