"""CLU metric collections for training and evaluation, merged on device inside the jitted steps."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics

from visioncore_jax.diagnostics.schema import per_class_recall

# clu.metrics.Std is not used: it is broken on JAX >= 0.10 (it calls jnp.clip with the removed `a_min`).


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    """Training metrics over a logging window; written with the prefix `train_`."""

    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("accuracy")
    learning_rate: metrics.LastValue.from_output("learning_rate")
    grad_norm: metrics.Average.from_output("grad_norm")
    clip_fraction: metrics.Average.from_output("clipped")
    skipped_steps: metrics.LastValue.from_output("skipped_steps")
    skip_run: metrics.LastValue.from_output("skip_run")


@flax.struct.dataclass
class ConfusionMatrix(metrics.Metric):
    """Counts [true class, predicted class] over all unmasked examples (not in clu)."""

    matrix: jax.Array

    @classmethod
    def from_model_output(cls, *, logits: jax.Array, label: jax.Array, mask: jax.Array, **_) -> "ConfusionMatrix":
        """The confusion counts of one batch."""
        num_classes = logits.shape[-1]
        predicted = jnp.argmax(logits, axis=-1)
        return cls(jnp.zeros((num_classes, num_classes), jnp.float32).at[label, predicted].add(mask))

    @classmethod
    def empty(cls) -> "ConfusionMatrix":
        """A placeholder without classes; `EvalMetrics.zeros` sizes it."""
        return cls(jnp.zeros((0, 0), jnp.float32))

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Adds the counts."""
        return type(self)(self.matrix + other.matrix)

    def compute(self) -> jax.Array:
        """The [K, K] counts."""
        return self.matrix


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
    """Evaluation metrics over one pass of the eval split (padding masked out); prefix `eval_`."""

    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("accuracy")
    confusion: ConfusionMatrix

    @classmethod
    def zeros(cls, num_classes: int) -> "EvalMetrics":
        """Empty metrics for `num_classes` classes (the confusion matrix needs its size up front)."""
        return cls.empty().replace(confusion=ConfusionMatrix(jnp.zeros((num_classes, num_classes), jnp.float32)))


def prefixed(computed: dict, prefix: str) -> dict:
    """Returns `{prefix_name: float(value)}` for the scalar entries, the names written to TensorBoard."""
    return {f"{prefix}_{name}": float(value) for name, value in computed.items() if np.ndim(value) == 0}


def confusion_summary(confusion: np.ndarray, class_names) -> dict:
    """Scalars from a confusion matrix: balanced accuracy (mean per-class recall), the largest share of
    predictions going to one class, and, for up to 20 classes, each class's accuracy and predicted share."""
    per_class = per_class_recall(confusion)
    predicted = confusion.sum(0) / max(confusion.sum(), 1)
    scalars = {"eval_balanced_accuracy": float(per_class.mean()),
               "eval_max_predicted_fraction": float(predicted.max())}
    if len(class_names) <= 20:
        for name, accuracy, share in zip(class_names, per_class, predicted, strict=True):
            scalars[f"eval_class_accuracy/{name}"] = float(accuracy)
            scalars[f"eval_predicted_fraction/{name}"] = float(share)
    return scalars
