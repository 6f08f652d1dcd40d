"""Pure train and eval steps. They are jitted with explicit shardings in `partitioning.py`."""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from visioncore_jax.optim import optimizer_metrics
from visioncore_jax.optim.transforms import all_finite
from visioncore_jax.train.losses import cross_entropy, weighted_mean
from visioncore_jax.train.metrics import EvalMetrics, TrainMetrics
from visioncore_jax.train.state import TrainState


def train_step(
    state: TrainState,
    metrics: TrainMetrics,
    batch: Mapping[str, jax.Array],
    regularization: Mapping[str, jax.Array],
    *,
    learning_rate_fn: optax.Schedule,
    aux_loss_weight: float = 0.0,
    class_weights: jax.Array | None = None,
) -> tuple[TrainState, TrainMetrics]:
    """One optimizer step on `batch`; returns the new state and `metrics` merged with this step's.

    `regularization` holds `dropout_rate` and `label_smoothing` as values (progressive regularization changes
    them without recompiling). The loss is the (label-smoothed) cross-entropy of the fused head plus
    `aux_loss_weight` times the cross-entropy of each per-pathway auxiliary head when the model has them, each
    averaged with per-class `class_weights` when given. A
    step whose loss or gradients are non-finite keeps the old BatchNorm statistics; the optimizer's NaN-skip
    keeps the old parameters.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    label_smoothing = regularization["label_smoothing"]

    def loss_fn(params):
        outputs, new_variables = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch,
            train=True,
            dropout_rate=regularization["dropout_rate"],
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats"],
        )
        labels = batch["label"]
        data_loss = lambda logits: weighted_mean(cross_entropy(logits, labels, label_smoothing), labels,  # noqa
                                                 class_weights)
        loss = data_loss(outputs["logits"])
        for aux_logits in outputs.get("aux_logits", {}).values():
            loss += aux_loss_weight * data_loss(aux_logits)
        return loss, (outputs["logits"], new_variables["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    finite = jnp.isfinite(loss) & all_finite(grads)
    batch_stats = jax.tree.map(lambda new, old: jnp.where(finite, new, old), batch_stats, state.batch_stats)
    new_state = state.apply_gradients(grads, batch_stats)

    opt_stats = optimizer_metrics(new_state.opt_state)
    step_metrics = TrainMetrics.single_from_model_output(
        loss=loss,
        accuracy=(jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
        learning_rate=learning_rate_fn(state.step) * state.lr_scale,
        grad_norm=opt_stats["grad_norm"],
        clipped=opt_stats["clipped"],
        skipped_steps=opt_stats["skipped_steps"].astype(jnp.float32),
        skip_run=opt_stats["current_skip_run"].astype(jnp.float32),
    )
    return new_state, metrics.merge(step_metrics)


def eval_step(state: TrainState, metrics: EvalMetrics, batch: Mapping[str, jax.Array]) -> EvalMetrics:
    """Evaluates `batch` with running BatchNorm statistics; padding rows (`mask` 0) do not count."""
    outputs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch, train=False)
    logits = outputs["logits"]
    step_metrics = EvalMetrics.single_from_model_output(
        logits=logits,
        label=batch["label"],
        loss=cross_entropy(logits, batch["label"]),
        accuracy=(jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
        mask=batch["mask"],
    )
    return metrics.merge(step_metrics)
