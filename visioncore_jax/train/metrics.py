"""CLU metric collections for training and evaluation, merged on device inside the jitted steps."""

import flax
from clu import metrics

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
class EvalMetrics(metrics.Collection):
    """Evaluation metrics over one pass of the eval split (padding masked out); prefix `eval_`."""

    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("accuracy")


def prefixed(computed: dict, prefix: str) -> dict:
    """Returns `{prefix_name: float(value)}`, the scalar names written to TensorBoard."""
    return {f"{prefix}_{name}": float(value) for name, value in computed.items()}
