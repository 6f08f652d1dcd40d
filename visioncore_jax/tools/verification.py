"""How verified repair measures a trial and tells a fix from noise: every trial's per-example outcomes on one eval
split (`ExampleScores`), the run's metric from them (accuracy; mean Dice from the pooled pixel confusion), and the
margin a gain over the baseline must exceed, paired over the same examples (`paired_margin`).

Two models scored on the same examples make correlated errors: most examples are right (or wrong) for both, and
only the examples they disagree on carry the difference. The unpaired standard error sqrt(p1 q1 / n + p2 q2 / n)
ignores that and over-states the noise of the comparison; the paired one, over resamples of the examples that
score both trials on the same draw, measures it (the paired bootstrap of Koehn 2004 and Berg-Kirkpatrick et al.
2012, the usual test for two systems on one test set). For accuracy it equals the standard error of the mean
per-example difference (McNemar's test in z form). `noise_margin`, the unpaired bound, remains for trials stored
without per-example outcomes.
"""

import dataclasses
import math
import os
import statistics

import numpy as np

from visioncore_jax.train.tasks import dice_and_iou

# "Better than the baseline": the smallest metric gain a verified fix needs (absolute, accuracy / Dice in [0, 1]),
# however large the eval set.
MIN_GAIN = 0.005
# ... and the gain must exceed the comparison's noise: NOISE_Z standard errors of the difference of the two
# trials' metrics. A candidate that does not help may be compared LOOKS times (a repair's second, longer look at
# the candidates the first one could not tell from noise), so each look tests at ERROR_RATE / LOOKS (Bonferroni):
# one-sided, z = 2.24, and over both looks a candidate that does not help is verified by chance at most once in 40
# (ERROR_RATE: the usual 95% two-sided z's tail); by the union bound a repair whose k candidates all do nothing names
# a fix by chance with probability at most k x 2.5%. Fixed a priori, not fitted to any run.
ERROR_RATE, LOOKS = 0.025, 2
NOISE_Z = round(statistics.NormalDist().inv_cdf(1 - ERROR_RATE / LOOKS), 3)
# Bootstrap resamples of the eval examples (the standard error's own relative error is ~1 / sqrt(2 x 1000), 2%),
# drawn CHUNK at a time (a [CHUNK, N] weight matrix), from a fixed seed: a repair's verdicts are reproducible.
RESAMPLES, CHUNK, SEED = 1000, 100, 0
SCORES_FILE = "eval_scores.npz"


@dataclasses.dataclass(frozen=True)
class ExampleScores:
    """One trial's per-example outcomes on an eval split: `labels` (two trials are paired only when they saw the
    same examples) and `outcomes`, 1/0 per example for classification [N], the pixel confusion counts of each image
    [N, K, K] (true, predicted) for segmentation."""

    task: str
    labels: np.ndarray
    outcomes: np.ndarray

    @classmethod
    def from_predictions(cls, task: str, labels: np.ndarray, predictions: np.ndarray,
                         num_classes: int) -> "ExampleScores":
        """The outcomes of `predictions` against `labels` (`eval_predictions`) for a `task` ('classification' or
        'segmentation') with `num_classes` classes."""
        if task != "segmentation":
            return cls(task, labels, (labels == predictions).astype(np.float32))
        count = labels.shape[0]
        cells = labels.reshape(count, -1).astype(np.int64) * num_classes + predictions.reshape(count, -1)
        cells += np.arange(count)[:, None] * num_classes**2
        confusion = np.bincount(cells.ravel(), minlength=count * num_classes**2)
        return cls(task, labels, confusion.reshape(count, num_classes, num_classes).astype(np.float32))

    @property
    def num_examples(self) -> int:
        """Images (or clips) scored."""
        return int(self.labels.shape[0])

    def metric(self, weights: np.ndarray | None = None):
        """Accuracy, or mean Dice over classes of the pooled confusion (the loop's `eval_mean_dice`); with
        `weights` [R, N] (how often a resample draws each example), one value per resample [R]."""
        if weights is None:
            return float(self.metric(np.ones((1, self.num_examples)))[0])
        if self.task != "segmentation":
            return weights @ self.outcomes / weights.sum(1)
        pooled = np.tensordot(weights, self.outcomes, axes=1)
        return np.array([dice_and_iou(confusion)[0].mean() for confusion in pooled])

    def pairs_with(self, other: "ExampleScores") -> bool:
        """Whether `other` scored the same examples (same task, same labels in the same order)."""
        return self.task == other.task and np.array_equal(self.labels, other.labels)

    def save(self, directory: str) -> None:
        """Writes `directory/eval_scores.npz`."""
        np.savez_compressed(os.path.join(directory, SCORES_FILE), task=self.task, labels=self.labels,
                            outcomes=self.outcomes)

    @classmethod
    def load(cls, directory: str) -> "ExampleScores | None":
        """The scores saved in `directory`, None when there are none."""
        path = os.path.join(directory, SCORES_FILE)
        if not os.path.exists(path):
            return None
        with np.load(path) as saved:
            return cls(str(saved["task"]), saved["labels"], saved["outcomes"])


def paired_margin(baseline: ExampleScores, trial: ExampleScores) -> float:
    """The gain over `baseline` that `trial`'s metric needs to count as a fix: NOISE_Z paired-bootstrap standard
    errors of the difference of the two metrics over resamples of their common examples, at least MIN_GAIN."""
    if not baseline.pairs_with(trial):
        raise ValueError("A paired margin needs two trials scored on the same examples.")
    count, rng = baseline.num_examples, np.random.default_rng(SEED)
    differences = []
    for _ in range(RESAMPLES // CHUNK):
        weights = rng.multinomial(count, np.full(count, 1.0 / count), size=CHUNK).astype(np.float64)
        differences.append(trial.metric(weights) - baseline.metric(weights))
    return max(MIN_GAIN, NOISE_Z * float(np.std(np.concatenate(differences), ddof=1)))


def noise_margin(baseline: float, metric: float, baseline_examples: int, examples: int) -> float:
    """The unpaired margin, for trials without per-example outcomes: NOISE_Z standard errors of the difference of
    two independent means of per-example scores in [0, 1] over `baseline_examples` and `examples` eval examples, at
    least MIN_GAIN; infinite when an eval size is unknown. A score in [0, 1] with mean p has a variance of at most
    p(1 - p), so this bounds the standard error of accuracy and, with images as the sampling unit, of Dice."""
    if min(baseline_examples, examples) <= 0:
        return math.inf
    variance = baseline * (1 - baseline) / baseline_examples + metric * (1 - metric) / examples
    return max(MIN_GAIN, NOISE_Z * math.sqrt(variance))
