"""Regularization and generalization rules: regularization so heavy the model cannot fit the training data, and
overfitting (training improves while evaluation worsens)."""

import math

import numpy as np

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import evidence as ev
from visioncore_jax.diagnostics.rules.rule import Rule
from visioncore_jax.diagnostics.schema import RunRecords
from visioncore_jax.splits import sliced_from, split_name

FAMILY = "regularization and generalization"
# over_regularization: (on a run that had a chance to learn) training accuracy below 50% and rising less than 5
# points over the second half of the run, while some regularizer is heavy: weight decay >= 0.05 (5e-4 is the
# usual SGD value, 0.05 the top of the usual AdamW range), or above the default with an optimized L2 term at least
# the data loss (healthy runs: ~1%); dropout >= 0.5; label smoothing >= 0.3 (0.1 is usual).
OVER_REG_TRAIN_ACCURACY = 0.5
OVER_REG_MIN_RISE = 0.05
HEAVY_WEIGHT_DECAY = 0.05
HEAVY_REG_LOSS_SHARE = 1.0
HEAVY_DROPOUT = 0.5
HEAVY_LABEL_SMOOTHING = 0.3
# The values recommended instead (configs/default.py's).
REGULARIZATION_DEFAULTS = {"optimizer.weight_decay": 1e-4, "model.dropout": 0.1, "training.label_smoothing": 0.0}
HEAVY_LIMITS = {"optimizer.weight_decay": HEAVY_WEIGHT_DECAY, "model.dropout": HEAVY_DROPOUT,
                "training.label_smoothing": HEAVY_LABEL_SMOOTHING}
# overfitting: the last eval loss 20% above its minimum, the minimum at least 3 evals back, train loss still
# falling, and train accuracy 15 points above eval accuracy.
OVERFIT_LOSS_RISE = 1.2
OVERFIT_EVALS_SINCE_BEST = 3
OVERFIT_GAP = 0.15
# Its advice, cause first: the whole split when the run trains on a slice of it (TFDS `name[...]`); random shifts
# of OVERFIT_CROP_PADDING pixels when the run has none (label-preserving for every task here, unlike a flip,
# which turns a clip's "left" into "right"); dropout OVERFIT_DROPOUT; weight decay at the top of the usual range
# of the optimizer's kind (an L2 term added to the gradient, SGD / Adam: 5e-4; decoupled, AdamW / LAMB: 1e-2,
# PyTorch's AdamW default; 5e-4 there shrinks the weights by lr x 5e-4 a step, nothing); early stopping last (it
# keeps the best checkpoint but does not close the gap).
OVERFIT_CROP_PADDING = 4
OVERFIT_DROPOUT = 0.3
OVERFIT_WEIGHT_DECAY = {"coupled": 5e-4, "decoupled": 1e-2}
DECOUPLED_DECAY_OPTIMIZERS = ("adamw", "lamb")
# A training split is "small" below 100 examples per class (the few-shot regime, where more data is the fix; the
# zoo's overfitting variants train on 13-32 per class, its healthy runs on 144-410). On a larger split the gap
# comes from training too long or too freely for the data, and the explanation says so instead.
SMALL_SPLIT_PER_CLASS = 100
CHANCE_ACCURACY_FACTOR = 1.3


def _heavy_regularizers(run: RunRecords) -> dict[str, float]:
    """The configured regularizers above their limits (config key → value); a weight decay above the default
    also counts when its optimized L2 term outweighs the data loss."""
    last = run.train[-1]
    reg_loss, data_loss = last.scalar("reg_loss").mean, last.scalar("loss").mean
    reg_share = reg_loss / data_loss if data_loss > 0 else math.nan
    values = {key: ev.as_number(ev.config_value(run, key, 0.0)) for key in REGULARIZATION_DEFAULTS}
    heavy = {key: value for key, value in values.items() if value >= HEAVY_LIMITS[key]}
    if reg_share >= HEAVY_REG_LOSS_SHARE and values["optimizer.weight_decay"] > REGULARIZATION_DEFAULTS[
            "optimizer.weight_decay"]:
        heavy["optimizer.weight_decay"] = values["optimizer.weight_decay"]
    return heavy


def over_regularization(run: RunRecords) -> list[Finding]:
    """Training accuracy held low (and not rising) while weight decay / dropout / label smoothing are heavy."""
    if not run.train or not ev.had_chance_to_learn(run):
        return []
    heavy = _heavy_regularizers(run)
    accuracies = ev.scalar_series(run.train, "accuracy")
    accuracy = accuracies[-1]
    rise = accuracy - accuracies[len(accuracies) // 2]  # over the second half of the run
    if not heavy or not accuracy < OVER_REG_TRAIN_ACCURACY or rise >= OVER_REG_MIN_RISE:
        return []
    k = ev.num_classes(run)
    last = run.train[-1]
    return [Finding(
        "over_regularization", "error" if k and accuracy < CHANCE_ACCURACY_FACTOR / k else "warning",
        f"Training accuracy is {accuracy:.1%} (rising {rise:+.1%} over the second half) with heavy "
        "regularization: " + ", ".join(f"{key}={value:g}" for key, value in heavy.items()) + ".",
        "Regularization this strong keeps the model from fitting even the training data: the weights are pulled to "
        "zero, most activations are dropped, or the targets are nearly uniform. Reduce it until training accuracy "
        "rises, then add back only what closes the train/eval gap.",
        {"train_accuracy": accuracy, "accuracy_rise": rise, "heavy": heavy,
         "reg_loss": last.scalar("reg_loss").mean, "data_loss": last.scalar("loss").mean},
        (" ".join(ev.override(key, REGULARIZATION_DEFAULTS[key]) for key in heavy),)
        + tuple(ev.override(key, REGULARIZATION_DEFAULTS[key]) for key in heavy if len(heavy) > 1),
        steps=ev.steps_of(run.train))]


def whole_split(run: RunRecords) -> str | None:
    """The split the run's training split is a slice of (`train` for `train[:128]`), when the eval split is not
    drawn from it too (then the rest of it may be the eval data); None otherwise."""
    whole = sliced_from(str(ev.config_value(run, "data.train_split", "")))
    return None if whole == split_name(str(ev.config_value(run, "data.eval_split", ""))) else whole


def overfitting_advice(run: RunRecords) -> tuple[str, ...]:
    """The overfitting overrides, cause first: the whole training split, shift augmentation, dropout, weight
    decay for the optimizer's kind, early stopping (overrides repeating the run's values are dropped later)."""
    split = whole_split(run)
    crop = ev.as_number(ev.config_value(run, "data.crop_padding", 0))
    decay = "decoupled" if ev.config_value(run, "optimizer.name") in DECOUPLED_DECAY_OPTIMIZERS else "coupled"
    return ((ev.override("data.train_split", split),) if split else ()) + \
        ((ev.override("data.crop_padding", OVERFIT_CROP_PADDING),) if not crop > 0 else ()) + \
        (ev.override("model.dropout", OVERFIT_DROPOUT),
         ev.override("optimizer.weight_decay", OVERFIT_WEIGHT_DECAY[decay]),
         ev.override("early_stopping.enabled", True))


def _size_cause(examples: int, k: int) -> str:
    """The explanation's cause when no slice can be undone: more data for a small split (< SMALL_SPLIT_PER_CLASS
    examples per class), training too long or too freely for a larger one."""
    if not (examples > 0 and k > 0):
        return "More data would narrow the gap, and no config override adds it; "
    if examples / k < SMALL_SPLIT_PER_CLASS:
        return (f"With {examples / k:.0f} examples per class the training split is small: more data is the fix, "
                "and no config override adds it; ")
    return (f"With {examples / k:.0f} examples per class the training split is not small: the model trains too "
            "long or too freely for it; ")


def overfitting(run: RunRecords) -> list[Finding]:
    """Training keeps improving while evaluation worsens."""
    if len(run.eval) < OVERFIT_EVALS_SINCE_BEST + 1 or len(run.train) < 2:
        return []
    eval_losses = np.asarray([r.loss for r in run.eval])
    if not np.isfinite(eval_losses).all():
        return []
    best = int(np.argmin(eval_losses))
    best_step = run.eval[best].step
    train_losses = ev.scalar_series(run.train, "loss")
    # The train loss of the period that ended at the best eval (train and eval records share steps).
    at_best = max((i for i, r in enumerate(run.train) if r.step <= best_step), default=0)
    gap = run.train[-1].scalar("accuracy").mean - run.eval[-1].accuracy
    if not (len(eval_losses) - 1 - best >= OVERFIT_EVALS_SINCE_BEST
            and eval_losses[-1] > OVERFIT_LOSS_RISE * eval_losses[best]
            and train_losses[-1] < train_losses[at_best] and gap > OVERFIT_GAP):
        return []
    examples = run.train[-1].steps_per_epoch * int(ev.as_number(ev.config_value(run, "training.batch_size", 0)))
    k, split = ev.num_classes(run), whole_split(run)
    size = f" on about {examples} training examples" + (f" ({examples / k:.0f} per class)" if k else "") \
        if examples > 0 else ""
    cause = (f"The training split {ev.config_value(run, 'data.train_split')} is a slice of {split}: train on the "
             "whole split; " if split else _size_cause(examples, k))
    return [Finding(
        "overfitting", "warning",
        f"Eval loss rose from {eval_losses[best]:.3f} (step {best_step}) to {eval_losses[-1]:.3f} while train loss "
        f"fell to {train_losses[-1]:.3f}{size}; train accuracy is {gap:.0%} above eval accuracy.",
        "The model memorizes the training set instead of generalizing. " + cause +
        "augmentation and regularization narrow the gap; early stopping keeps the best checkpoint but does not "
        "close it.",
        {"best_eval_loss": float(eval_losses[best]), "best_step": best_step, "last_eval_loss": float(eval_losses[-1]),
         "train_loss_at_best": float(train_losses[at_best]), "last_train_loss": float(train_losses[-1]),
         "train_eval_accuracy_gap": gap, "train_examples": examples},
        overfitting_advice(run), steps=(best_step, run.eval[-1].step))]


RULES = (
    Rule("over_regularization", over_regularization, FAMILY, "cause",
         ("chance_level", "one_class_collapse", "dead_units", "lr_too_low", "loss_plateau")),
    Rule("overfitting", overfitting, FAMILY, "cause"),
)
