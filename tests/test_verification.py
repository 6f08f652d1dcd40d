"""Verified repair's measurements: per-example outcomes, the metric from them, the paired margin, and the
per-example predictions of a state on a real eval split."""

import numpy as np
import pytest

from tests.fault_zoo import zoo_config
from visioncore_jax.tools import verification
from visioncore_jax.tools.verification import ExampleScores, paired_margin
from visioncore_jax.train.experiment import build_experiment, jitted_steps
from visioncore_jax.train.loop import evaluate
from visioncore_jax.train.predictions import eval_predictions
from visioncore_jax.train.tasks import dice_and_iou


def _classifier_pair(agree: float, n: int = 2000, seed: int = 1) -> tuple[ExampleScores, ExampleScores]:
    """A baseline right on 80% of n examples and a trial that flips a share (1 - agree) of them at random."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    base = np.where(rng.random(n) < 0.8, labels, (labels + 1) % 10)
    flip = rng.random(n) > agree
    trial = np.where(flip, np.where(base == labels, (labels + 1) % 10, labels), base)
    return (ExampleScores.from_predictions("classification", labels, base, 10),
            ExampleScores.from_predictions("classification", labels, trial, 10))


def test_classification_metric_is_accuracy_and_the_paired_margin_is_the_se_of_the_mean_difference():
    base, trial = _classifier_pair(agree=0.9)
    assert base.metric() == pytest.approx(base.outcomes.mean()) and 0.77 < base.metric() < 0.83
    differences = trial.outcomes - base.outcomes
    analytic = verification.NOISE_Z * differences.std(ddof=1) / np.sqrt(len(differences))
    margin = paired_margin(base, trial)
    assert margin == pytest.approx(analytic, rel=0.1)  # the bootstrap's own error is ~2%
    assert margin == paired_margin(base, trial)  # a fixed seed: the same verdict every time
    # Agreeing on 90% of examples, the paired noise is well below the unpaired bound.
    unpaired = verification.noise_margin(base.metric(), trial.metric(), 2000, 2000)
    assert margin < 0.85 * unpaired
    # Two trials that agree everywhere differ by nothing: only MIN_GAIN is left.
    assert paired_margin(base, base) == verification.MIN_GAIN


def test_paired_margin_needs_the_same_examples():
    base, trial = _classifier_pair(agree=0.9)
    other = ExampleScores("classification", base.labels[::-1].copy(), trial.outcomes)
    assert not base.pairs_with(other) and base.pairs_with(trial)
    with pytest.raises(ValueError, match="same examples"):
        paired_margin(base, other)


def test_segmentation_metric_is_the_mean_dice_of_the_pooled_confusion(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (40, 8, 8))
    predictions = np.where(rng.random((40, 8, 8)) < 0.7, labels, rng.integers(0, 3, (40, 8, 8)))
    scores = ExampleScores.from_predictions("segmentation", labels, predictions, 3)
    pooled = np.zeros((3, 3))
    np.add.at(pooled, (labels.ravel(), predictions.ravel()), 1)
    assert scores.outcomes.shape == (40, 3, 3) and np.array_equal(scores.outcomes.sum(0), pooled)
    assert scores.metric() == pytest.approx(dice_and_iou(pooled)[0].mean())
    scores.save(str(tmp_path))
    loaded = ExampleScores.load(str(tmp_path))
    assert loaded.task == "segmentation" and np.array_equal(loaded.outcomes, scores.outcomes)
    assert ExampleScores.load(str(tmp_path / "none")) is None
    better = ExampleScores.from_predictions("segmentation", labels, np.where(rng.random((40, 8, 8)) < 0.5, labels,
                                                                               predictions), 3)
    assert better.metric() > scores.metric() and paired_margin(scores, better) > verification.MIN_GAIN


def test_eval_predictions_score_the_split_as_the_loop_evaluates_it(tfds_data_dir):
    config = zoo_config(tfds_data_dir)
    config.data.eval_split = "test[:100]"  # 100 images in batches of 64: the padding rows must drop out
    config.training.eval_batch_size = 64
    experiment = build_experiment(config)
    state = experiment.init_state()
    labels, predictions = eval_predictions(state, experiment.pipeline, experiment.mesh, 64)
    scalars, confusion = evaluate(state, experiment, jitted_steps(experiment)[1])
    assert labels.shape == predictions.shape == (100,)
    counts = np.zeros_like(np.asarray(confusion))
    np.add.at(counts, (labels, predictions), 1)
    assert np.array_equal(counts, confusion)
    scores = ExampleScores.from_predictions("classification", labels, predictions, experiment.info.num_classes)
    assert scores.metric() == pytest.approx(scalars["eval_accuracy"], abs=1e-6)
