"""Pure train and eval steps. They are jitted with explicit shardings in `partitioning.py`."""

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from visioncore_jax.models.layers import DIAGNOSTICS
from visioncore_jax.optim import optimizer_metrics
from visioncore_jax.optim.optimizers import RUNTIME_SETTINGS
from visioncore_jax.optim.transforms import all_finite
from visioncore_jax.train.metrics import EvalMetrics, TrainMetrics
from visioncore_jax.train.state import TrainState
from visioncore_jax.train.statistics import accumulate, empty_summary, step_statistics
from visioncore_jax.train.tasks import Classification

CLASSIFICATION = Classification()  # the default task: plain cross-entropy


def training_loss(apply_fn, params, batch_stats, batch: Mapping[str, jax.Array],
                  hyperparams: Mapping[str, jax.Array], dropout_rng: jax.Array, *, task,
                  mutable: tuple[str, ...] = ("batch_stats",)):
    """`(data loss, (model outputs, updated mutable collections))` of `batch` in training mode: batch statistics,
    dropout at `hyperparams['dropout_rate']`, label smoothing at `hyperparams['label_smoothing']`."""
    outputs, new_variables = apply_fn(
        {"params": params, "batch_stats": batch_stats},
        batch,
        train=True,
        dropout_rate=hyperparams["dropout_rate"],
        rngs={"dropout": dropout_rng},
        mutable=list(mutable),
    )
    return task.data_loss(outputs, batch["label"], hyperparams["label_smoothing"]), (outputs, new_variables)


def _step(state: TrainState, batch: Mapping[str, jax.Array], hyperparams: Mapping[str, jax.Array], *,
          collect: bool, task):
    """The update of one step: `(new_state, per-step scalars, diagnostics statistics or None)`."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        loss, (outputs, new_variables) = training_loss(
            state.apply_fn, params, state.batch_stats, batch, hyperparams, dropout_rng, task=task,
            mutable=("batch_stats", DIAGNOSTICS) if collect else ("batch_stats",))
        return loss, (outputs["logits"], new_variables)

    (loss, (logits, new_variables)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    finite = jnp.isfinite(loss) & all_finite(grads)
    batch_stats = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_variables["batch_stats"],
                               state.batch_stats)
    new_state = state.apply_gradients(grads, batch_stats, hyperparams["learning_rate"],
                                      **{name: hyperparams[name] for name in RUNTIME_SETTINGS})

    opt_stats = optimizer_metrics(new_state.opt_state)
    scalars = dict(
        loss=loss,
        accuracy=task.correct(logits, batch["label"]),
        learning_rate=hyperparams["learning_rate"] * state.lr_scale,
        grad_norm=opt_stats["grad_norm"],
        clipped=opt_stats["clipped"],
        skipped_steps=opt_stats["skipped_steps"].astype(jnp.float32),
        skip_run=opt_stats["current_skip_run"].astype(jnp.float32),
    )
    if not collect:
        return new_state, scalars, None
    stats = step_statistics(grads=grads, params=state.params, new_params=new_state.params,
                            sown=new_variables.get(DIAGNOSTICS, {}), data_loss=loss,
                            weight_decay=hyperparams["weight_decay"])
    extra = {f"scalars/{name}": jnp.asarray(scalars[name], jnp.float32).mean()
             for name in ("accuracy", "learning_rate", "grad_norm", "clipped")}
    skipped_before = optimizer_metrics(state.opt_state)["skipped_steps"]
    extra["scalars/skipped"] = (opt_stats["skipped_steps"] - skipped_before).astype(jnp.float32)
    return new_state, scalars, stats.extended(extra)


def train_step(
    state: TrainState,
    metrics: TrainMetrics,
    statistics: dict | None,
    batch: Mapping[str, jax.Array],
    hyperparams: Mapping[str, jax.Array],
    *,
    task=CLASSIFICATION,
) -> tuple[TrainState, TrainMetrics, dict | None]:
    """One optimizer step on `batch`; returns the new state, `metrics` merged with this step's and, when
    `statistics` (an aggregate from `empty_statistics`) is not None, the aggregate with this step's
    diagnostics statistics added. With `statistics=None` none of them is computed.

    `hyperparams` holds the step's `learning_rate`, `dropout_rate`, `label_smoothing`, `grad_clip_norm` and
    `weight_decay` as values (see `Experiment.hyperparams`): schedules, progressive regularization and runs
    differing only in them share one compiled step. The loss is `task.data_loss` (weight decay lives in the
    optimizer; its implied L2 penalty is reported as `reg_loss`). A step whose loss or gradients are non-finite keeps
    the old BatchNorm statistics; the optimizer's NaN-skip keeps the old parameters.
    """
    if statistics is None:
        new_state, scalars, stats = _step(state, batch, hyperparams, collect=False, task=task)
    else:
        new_state, scalars, stats = _collecting_step(state, batch, hyperparams, task=task)
    metrics = metrics.merge(TrainMetrics.single_from_model_output(**scalars))
    if stats is not None:
        statistics = accumulate(statistics, stats, new_state.step)
    return new_state, metrics, statistics


@functools.partial(jax.jit, static_argnames=("task",))
def _collecting_step(state: TrainState, batch: Mapping[str, jax.Array], hyperparams: Mapping[str, jax.Array], *,
                     task):
    """`_step` with its diagnostics statistics, jitted so that the model is traced once for both uses: jit's
    trace cache hands `train_step`'s trace the trace `empty_statistics` made for the aggregate's keys."""
    return _step(state, batch, hyperparams, collect=True, task=task)


def empty_statistics(state: TrainState, batch: Mapping[str, jax.Array], hyperparams: Mapping[str, jax.Array],
                     **step_kwargs) -> dict:
    """An empty diagnostics aggregate with the keys `train_step` records for this model (traced, not run; the
    trace is reused for equal models, optimizers and shapes)."""
    return empty_summary(_collecting_step.eval_shape(state, batch, hyperparams, **step_kwargs)[2])


def eval_step(state: TrainState, metrics: EvalMetrics, batch: Mapping[str, jax.Array], *,
              task=CLASSIFICATION) -> EvalMetrics:
    """Evaluates `batch` with running BatchNorm statistics; padding rows (`mask` 0) do not count."""
    outputs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch, train=False)
    return metrics.merge(task.eval_metrics(outputs["logits"], batch["label"], batch["mask"]))


def predict_step(state: TrainState, batch: Mapping[str, jax.Array]) -> jax.Array:
    """The predicted class of each example (classification, [B]) or pixel (segmentation, [B, H, W]), with running
    BatchNorm statistics."""
    outputs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch, train=False)
    return jnp.argmax(outputs["logits"], -1).astype(jnp.int32)
