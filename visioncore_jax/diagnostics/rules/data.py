"""Data and labels rules: a model no better than chance, and predictions collapsed onto one class (or following a
skewed training split's prior). Both are symptoms that LR, initialization or regularization causes explain when
present; alone, they point at the data."""

import math

import numpy as np

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import evidence as ev
from visioncore_jax.diagnostics.rules.rule import Rule
from visioncore_jax.diagnostics.schema import RunRecords

FAMILY = "data and labels"
# chance_level: (only on a run that had a chance to learn: evidence.had_chance_to_learn) every record after the
# first 20% of the run has a loss between 2% below and 15% above the label entropy (noisy fits of random labels
# sit at or just above it; far above is no chance-level fit: a diverged model, or a loss with extra terms such as
# Dice: a healthy 40-step U-Net sits at 1.85x), and the last 2 evals' balanced accuracy is below 1.3 / K.
CHANCE_LOSS_BELOW, CHANCE_LOSS_ABOVE = 0.02, 0.15
CHANCE_ACCURACY_FACTOR = 1.3
CHANCE_EVALS = 2
# one_class_collapse: the same class gets > 80% of eval predictions in each of the last 2 evals while no class has
# half of the labels (healthy but barely trained 10-class runs: <= 55% at the end, single evals up to 70% mid-run).
COLLAPSE_PREDICTED_SHARE = 0.8
COLLAPSE_EVALS = 2
COLLAPSE_LABEL_SHARE = 0.5
# ... or, the data cause seen directly (no single class need win): the training split's class mix is far from the
# eval split's (total variation >= 0.3; a split of a balanced set differs by < 0.05, the zoo's healthy runs'
# 256-image eval slices by 0.082 at most) and, in each of the last 2 evals, the eval predictions are closer to
# the training mix than to the eval labels: past the halfway point between what the eval images are and what the
# training split was (on the segment between the two mixes total variation is linear, so "closer" is exactly
# "more than halfway"). The model then predicts the training prior more than the images; a model that learned
# the images predicts near the eval mix whatever the skew. Zoo: a digits folder whose training split keeps 5% of
# every class but 0 (0s: 69% of training labels, 10% of eval labels): predictions 32% / 52% / 12% on three
# classes (0.56 from the training mix, 0.67 from the eval labels), and 44% / 13% / 20% (0.35 vs 0.47).
SKEWED_TRAIN_VARIATION = 0.3
# Its advice for such a split: `inverse` class weights (1 / (K x the class's training share)) make the expected
# training loss that of a class-balanced split, i.e. they undo the skew against a balanced eval split (label-shift
# correction); the range is widened to hold them (the default 0.7-1.3 clips a 67%-zeros split's 0.15-5.3 weights
# to a ratio under 2). Cube-root weights, a partial correction, come second. Zoo run one_class_collapse/0 (resnet,
# 67% zeros), 60 steps: unweighted 0.228 eval accuracy, clipped cube-root 0.214, inverse 0.304 with no finding.
SKEWED_SPLIT_WEIGHTING = "inverse"


def _variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two class distributions."""
    return 0.5 * float(np.abs(p - q).sum())


def chance_level(run: RunRecords) -> list[Finding]:
    """Loss at or above the label entropy on every late record, and (balanced) accuracy ≈ 1/K, in a run long
    enough to have learned."""
    k = ev.num_classes(run)
    if k < 2 or not run.train or not ev.had_chance_to_learn(run):
        return []
    late = ev.late_records(run)
    losses = ev.scalar_series(late, "loss")
    entropy = ev.label_entropy(run)
    if run.eval:
        accuracies = [r.chance_accuracy_metric for r in run.eval[-CHANCE_EVALS:]]
    else:
        accuracies = [late[-1].scalar("accuracy").mean]
    accuracy = max(accuracies)
    if not (np.isfinite(losses).all() and (losses > (1 - CHANCE_LOSS_BELOW) * entropy).all()
            and (losses < (1 + CHANCE_LOSS_ABOVE) * entropy).all()
            and accuracy < CHANCE_ACCURACY_FACTOR / k):
        return []
    return [Finding(
        "chance_level", "error",
        f"Loss {losses[-1]:.3f} (label entropy {entropy:.3f}) on all {len(late)} records after the first "
        f"{ev.LATE_SHARE:.0%} of the run, and accuracy {accuracy:.3f} ≈ 1/{k}: the model predicts no better than "
        "chance.",
        "The model learned nothing about the inputs that predicts the labels. With a sane LR and initialization "
        "(no such finding above), the data is the suspect: labels that do not match the images (shuffled or "
        "misaligned labels, a wrong label key), or inputs without signal (constant or badly normalized images). "
        "Preflight's label and data checks test both.",
        {"loss": float(losses[-1]), "loss_range": [float(losses.min()), float(losses.max())],
         "label_entropy": entropy, "accuracy": accuracy, "chance_accuracy": 1 / k, "travel": ev.travel(run)},
        ("--mode=preflight", "--mode=lr_find"), steps=ev.steps_of(late))]


def _distributions(record) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(predicted, eval label, training label) shares of an eval record; None if it lacks the first two."""
    predicted = np.nan_to_num(np.asarray(record.predicted_histogram, np.float64), nan=0.0)
    labels = np.nan_to_num(np.asarray(record.label_histogram, np.float64), nan=1.0)
    train = np.nan_to_num(np.asarray(record.train_label_histogram, np.float64), nan=0.0)
    if not predicted.size or predicted.shape != labels.shape:
        return None
    return predicted, labels, train if train.shape == labels.shape else np.full_like(labels, np.nan)


def _outward(value: float, rounding) -> float:
    """`value` to 2 significant digits, rounded by `rounding` (math.floor or math.ceil)."""
    scale = 10.0 ** (math.floor(math.log10(value)) - 1)
    return float(f"{rounding(value / scale) * scale:.2g}")


def class_weight_advice(train: np.ndarray) -> tuple[str, ...]:
    """The class-weighting overrides for a run whose training mix `train` (shares per class; NaN when unknown) is
    skewed against the eval split's: `inverse` weights with the range widened to hold them (see
    SKEWED_SPLIT_WEIGHTING), then the gentler cube-root weights."""
    cube = ev.override("training.class_weighting", "cube_root_inverse")
    shares = train[np.isfinite(train) & (train > 0)]
    if shares.size < 2:
        return (cube,)
    weights = 1.0 / (train.size * shares)
    low, high = min(_outward(weights.min(), math.floor), 1.0), max(_outward(weights.max(), math.ceil), 1.0)
    return (f"{ev.override('training.class_weighting', SKEWED_SPLIT_WEIGHTING)} "
            f"{ev.override('training.class_weight_range', f'({low:g},{high:g})')}", cube)


def one_class_collapse(run: RunRecords) -> list[Finding]:
    """Eval predictions concentrated on one class (in each of the last evals) while the labels are spread, or
    predictions closer to a training split skewed against the eval split than to the eval labels (each of the last
    evals); recommends class weighting (skewed training data is the data cause) and the data checks."""
    recent = [_distributions(record) for record in run.eval[-COLLAPSE_EVALS:]]
    if not recent or any(d is None for d in recent):
        return []
    predicted, labels, train = recent[-1]
    tops = {int(np.argmax(p)) for p, _, _ in recent}
    top = int(np.argmax(predicted))
    predicted_share = min(float(p.max()) for p, _, _ in recent)
    one_class = tops == {top} and predicted_share > COLLAPSE_PREDICTED_SHARE and labels.max() < COLLAPSE_LABEL_SHARE
    train_variation = _variation(train, labels) if np.isfinite(train).all() else 0.0
    # Per eval: how far the predictions are from the eval labels, and from the training split's mix.
    distances = [(_variation(p, q), _variation(p, t)) for p, q, t in recent]
    to_labels, to_training = distances[-1]
    follows_skew = train_variation >= SKEWED_TRAIN_VARIATION and all(t < q for q, t in distances)
    if not (one_class or follows_skew):
        return []
    last = run.eval[-1]

    def name(c: int) -> str:
        return repr(last.class_names[c] if c < len(last.class_names) else str(c))

    if one_class:
        summary = (f"{predicted_share:.0%} or more of eval predictions are class {name(top)} in the last "
                   f"{len(recent)} evals; it holds {labels[top]:.0%} of the eval labels.")
    else:
        majority = int(np.argmax(train))
        summary = (f"The training split's class mix is far from the eval split's (total variation "
                   f"{train_variation:.2f}: class {name(majority)} is {train[majority]:.0%} of the training labels, "
                   f"{labels[majority]:.0%} of the eval labels) and the eval predictions follow it: closer to "
                   f"the training mix than to the eval labels in each of the last {len(recent)} evals (last: "
                   f"{to_training:.2f} vs {to_labels:.2f}; class {name(top)}: {predicted[top]:.0%} of "
                   "predictions).")
    return [Finding(
        "one_class_collapse", "warning", summary,
        "The model predicts (almost) one class, or a few, for everything. With a sane first loss and LR (no such "
        "finding above), skewed training data is the usual cause: the majority classes win unless the classes are "
        "weighted; preflight's class_imbalance and split checks show the training label counts.",
        {"class": name(top).strip("'"), "predicted_share": float(predicted[top]), "label_share": float(labels[top]),
         "largest_label_share": float(labels.max()), "evals": len(recent),
         "train_eval_label_variation": train_variation, "prediction_label_variation": to_labels,
         "prediction_train_variation": to_training},
        (class_weight_advice(train) if train_variation >= SKEWED_TRAIN_VARIATION else
         (ev.override("training.class_weighting", "cube_root_inverse"),)) + ("--mode=preflight",),
        steps=(run.eval[-len(recent)].step, last.step))]


# A collapse explains an overfitting finding that fires with it: a model that memorized its training images
# predicts eval images by the training images they resemble, spread over the classes, not one class (or the
# training prior) for everything. Its train/eval gap is then the skew: on training labels that one class
# dominates, predicting it scores high. Found on a 2-stage dual ResNet trained on 95%-one-class labels: eval loss
# 3.48 -> 5.09, train accuracy 84 points above eval's, every eval prediction the majority class; overfitting's
# advice (the whole split, dropout, weight decay) would not touch the cause.
RULES = (
    Rule("chance_level", chance_level, FAMILY, "symptom", ("one_class_collapse",)),
    Rule("one_class_collapse", one_class_collapse, FAMILY, "symptom", ("overfitting",)),
)
