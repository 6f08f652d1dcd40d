"""What a train / eval step optimizes and measures for each kind of label: one class per example
(classification) or one class per pixel (segmentation). The steps stay the same for both."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from visioncore_jax.train.losses import cross_entropy, soft_dice_loss, weighted_mean
from visioncore_jax.train.metrics import EvalMetrics, confusion_summary


@dataclasses.dataclass(frozen=True)
class Classification:
    """Softmax cross-entropy (label smoothing, class weights) on the fused head plus `aux_loss_weight` times
    that of each per-pathway auxiliary head; accuracy per example."""

    class_weights: tuple[float, ...] | None = None  # a tuple: tasks are hashable (static in jitted steps)
    aux_loss_weight: float = 0.0
    name = "classification"

    def data_loss(self, outputs: dict, labels: jax.Array, label_smoothing) -> jax.Array:
        """The loss the optimizer minimizes, without weight decay."""
        def loss_of(logits):
            return weighted_mean(cross_entropy(logits, labels, label_smoothing), labels, self.class_weights)

        loss = loss_of(outputs["logits"])
        for aux_logits in outputs.get("aux_logits", {}).values():
            loss += self.aux_loss_weight * loss_of(aux_logits)
        return loss

    def correct(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """1.0 where the prediction is right, per example [B]."""
        return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)

    def eval_metrics(self, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> EvalMetrics:
        """This batch's eval metrics; rows with `mask` 0 (padding) do not count."""
        return EvalMetrics.single_from_model_output(
            logits=logits, label=labels, loss=cross_entropy(logits, labels), accuracy=self.correct(logits, labels),
            mask=mask)

    def summary(self, confusion: np.ndarray, class_names) -> dict:
        """Scalars derived from the eval confusion matrix."""
        return confusion_summary(confusion, class_names)


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """Per-pixel cross-entropy plus `dice_weight` times the soft-Dice loss; metrics over pixels, with Dice and
    IoU per class from the pixel confusion matrix."""

    dice_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None
    name = "segmentation"

    def data_loss(self, outputs: dict, labels: jax.Array, label_smoothing) -> jax.Array:
        """Mean pixel cross-entropy (class-weighted when weights are given) + dice_weight · soft Dice."""
        logits = outputs["logits"]
        ce = weighted_mean(cross_entropy(logits, labels, label_smoothing), labels, self.class_weights)
        return ce + self.dice_weight * soft_dice_loss(logits, labels)

    def correct(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Pixel accuracy of each example [B]."""
        return (jnp.argmax(logits, -1) == labels).astype(jnp.float32).reshape(labels.shape[0], -1).mean(1)

    def eval_metrics(self, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> EvalMetrics:
        """This batch's metrics over its pixels; pixels of padding rows (`mask` 0) do not count."""
        num_classes = logits.shape[-1]
        pixel_mask = jnp.broadcast_to(mask.reshape(-1, *([1] * (labels.ndim - 1))), labels.shape).reshape(-1)
        flat_logits, flat_labels = logits.reshape(-1, num_classes), labels.reshape(-1)
        return EvalMetrics.single_from_model_output(
            logits=flat_logits, label=flat_labels, loss=cross_entropy(flat_logits, flat_labels),
            accuracy=(jnp.argmax(flat_logits, -1) == flat_labels).astype(jnp.float32), mask=pixel_mask)

    def summary(self, confusion: np.ndarray, class_names) -> dict:
        """Pixel-level confusion summary plus `eval_mean_dice`, `eval_mean_iou` and both per class."""
        scalars = confusion_summary(confusion, class_names)
        dice, iou = dice_and_iou(confusion)
        scalars.update(eval_mean_dice=float(dice.mean()), eval_mean_iou=float(iou.mean()))
        for name, class_dice, class_iou in zip(class_names, dice, iou, strict=True):
            scalars[f"eval_dice/{name}"] = float(class_dice)
            scalars[f"eval_iou/{name}"] = float(class_iou)
        return scalars


def dice_and_iou(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Dice `2TP / (2TP + FP + FN)` and IoU `TP / (TP + FP + FN)` from [true, predicted] counts; a
    class neither present nor predicted scores 1."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 1.0)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 1.0)
    return dice, iou


TASKS = {"classification": Classification, "segmentation": Segmentation}
