"""`train_and_evaluate(config, workdir)`: the training loop that ties builders, steps, writers and checkpoints.

Config flows one way: config → `build_input` / `build_model` / `build_optimizer` → pure jitted steps → metric
writers and checkpoints. Re-running the same command in the same workdir resumes exactly where it stopped.
"""

import dataclasses
import functools
import logging
import math
import os
import signal
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers, parameter_overview, periodic_actions
from flax import traverse_util

from visioncore_jax.data import build_input, to_global_batch
from visioncore_jax.models import build_model
from visioncore_jax.optim import build_optimizer
from visioncore_jax.optim.stability import check_rollback_budget, needs_rollback, regularization_at
from visioncore_jax.train import checkpointing, partitioning
from visioncore_jax.train.controls import LoopState, after_eval, validate_controls
from visioncore_jax.train.losses import class_weights
from visioncore_jax.train.metrics import EvalMetrics, TrainMetrics, confusion_summary, prefixed
from visioncore_jax.train.state import TrainState, create_train_state
from visioncore_jax.train.steps import eval_step, train_step
from visioncore_jax.train.validation import validate_training


def resolve_num_train_steps(training: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """Total optimizer steps from exactly one of `num_epochs` / `num_train_steps` (the other must be <= 0)."""
    by_epochs, by_steps = training.num_epochs > 0, training.num_train_steps > 0
    if by_epochs == by_steps:
        raise ValueError(
            "Set exactly one of config.training.num_epochs and config.training.num_train_steps to a positive "
            f"value (got num_epochs={training.num_epochs}, num_train_steps={training.num_train_steps}); "
            "disable the other with -1."
        )
    if by_steps:
        return int(training.num_train_steps)
    return max(1, math.ceil(training.num_epochs * steps_per_epoch))


class _StopRequest:
    """Turns SIGTERM into a flag the loop checks after each step, so it can save and exit cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint at the end of this step, then exiting.")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _write_config_once(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes `workdir/config.json` on the first run of a workdir (process 0 only)."""
    path = os.path.join(workdir, "config.json")
    if jax.process_index() == 0 and not os.path.exists(path):
        with open(path, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _example_inputs(image_shape: tuple[int, ...]) -> dict:
    """Zero inputs of one example (color and its brightness), for model initialisation."""
    return {"color": jnp.zeros((1, *image_shape[:-1], 3)), "brightness": jnp.zeros((1, *image_shape[:-1], 1))}


def _flat_hparams(config: ml_collections.ConfigDict) -> dict:
    """The config as flat `a.b` keys with scalar values, as TensorBoard's hparams plugin needs."""
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def evaluate(state: TrainState, pipeline, eval_fn, batch_size: int, mesh) -> dict:
    """One pass over the eval split; returns `eval_loss`, `eval_accuracy` and the confusion-matrix summary
    (balanced accuracy, largest predicted share, per-class accuracy and predicted share) as floats."""
    info = pipeline.info
    metrics = jax.device_put(EvalMetrics.zeros(info.num_classes), partitioning.replicated(mesh))
    for batch in pipeline.eval_batches(batch_size):
        metrics = eval_fn(state, metrics, to_global_batch(batch, mesh))
    computed = jax.device_get(metrics.compute())
    return prefixed(computed, "eval") | confusion_summary(computed["confusion"], info.class_names)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains and evaluates the configured model, writing TensorBoard events and checkpoints to `workdir`.

    Returns the final train state. Interrupted runs (SIGTERM, a killed process) resume from the latest
    checkpoint when the same command is run again, with the same data order and randomness. A SIGTERM at any
    point, set-up included, ends the run after its current step with a checkpoint.
    """
    with _StopRequest() as stop:
        return _train_and_evaluate(config, workdir, stop)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop: _StopRequest) -> TrainState:
    training = config.training
    validate_training(training)
    validate_controls(config)
    os.makedirs(workdir, exist_ok=True)
    mesh = partitioning.make_mesh()
    partitioning.check_batch_size(training.batch_size, mesh)
    partitioning.check_batch_size(training.eval_batch_size, mesh, "config.training.eval_batch_size")

    pipeline = build_input(config)
    info = pipeline.info
    steps_per_epoch = info.num_train_examples // training.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"config.training.batch_size={training.batch_size} exceeds the {info.num_train_examples} training "
            "examples; use a smaller batch."
        )
    num_train_steps = resolve_num_train_steps(training, steps_per_epoch)
    eval_every_steps = max(1, round(training.eval_every_epochs * steps_per_epoch))

    model = build_model(config, info.num_classes)
    weights = None
    if training.class_weighting != "none":
        weights = jnp.asarray(class_weights(info.train_label_counts, training.class_weighting,
                                            tuple(training.class_weight_range)))
        logging.info("Class weights (%s): %s", training.class_weighting, np.round(np.asarray(weights), 3).tolist())
    tx, learning_rate_fn = build_optimizer(config, steps_per_epoch, num_train_steps)
    init = partitioning.jit_replicated(
        create_train_state, mesh, model=model, tx=tx, example_inputs=_example_inputs(info.image_shape),
        seed=config.seed,
    )
    state = init()

    # The manager is closed (pending saves finished) however the run ends, errors included.
    with checkpointing.create_manager(workdir, training.max_checkpoints_to_keep) as manager:
        state, saved_loop_state = checkpointing.restore_latest(manager, state)
        loop_state = LoopState.from_json(saved_loop_state) if saved_loop_state else LoopState()
        start_step = int(jax.device_get(state.step))

        writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
        if start_step == 0:
            _write_config_once(config, workdir)
            parameter_overview.log_parameter_overview(state.params)
            writer.write_hparams(_flat_hparams(config))
            # A step-0 checkpoint gives NaN recovery somewhere to roll back to before the first periodic save.
            checkpointing.save(manager, state, loop_state.to_json())
        logging.info(
            "Training %d steps (%d per epoch, global batch %d on %d devices) from step %d.",
            num_train_steps, steps_per_epoch, training.batch_size, mesh.devices.size, start_step,
        )

        train_fn = partitioning.jit_train_step(
            functools.partial(train_step, learning_rate_fn=learning_rate_fn,
                              aux_loss_weight=config.model.aux_loss_weight, class_weights=weights),
            mesh,
        )
        eval_fn = partitioning.jit_eval_step(eval_step, mesh)
        empty_train_metrics = lambda: jax.device_put(TrainMetrics.empty(), partitioning.replicated(mesh))  # noqa: E731
        train_metrics = empty_train_metrics()
        progress = periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=writer)

        def roll_back(step: int, reason: str):
            """Restores the last checkpoint with one more LR cut; returns (state, loop_state, step, batches)."""
            manager.wait_until_finished()
            restored, restored_loop = checkpointing.restore_latest(manager, state)
            rollbacks = loop_state.rollbacks + 1
            check_rollback_budget(rollbacks, step, config.nan_recovery)
            new_loop = dataclasses.replace(LoopState.from_json(restored_loop), rollbacks=rollbacks)
            restored = restored.replace(lr_scale=jnp.float32(new_loop.lr_scale(config.nan_recovery)))
            back_to = int(jax.device_get(restored.step))
            message = (f"NaN recovery: {reason} at step {step}; rolled back to step {back_to} and multiplied the LR "
                       f"by {config.nan_recovery.lr_factor} (rollback {rollbacks} of at most "
                       f"{config.nan_recovery.max_rollbacks}).")
            logging.warning(message)
            writer.write_texts(step, {"events": message})
            writer.write_scalars(step, {"train_rollbacks": rollbacks})
            return restored, new_loop, back_to, pipeline.train_batches(training.batch_size, start_step=back_to)

        step = start_step
        batches = pipeline.train_batches(training.batch_size, start_step=step)
        regularization = None
        with metric_writers.ensure_flushes(writer):
            while step < num_train_steps:
                values = regularization_at(config, step / steps_per_epoch)
                if regularization is None or values != regularization[0]:
                    regularization = (values, jax.device_put(
                        {k: jnp.float32(v) for k, v in values.items()}, partitioning.replicated(mesh)))
                with jax.profiler.StepTraceAnnotation("train", step_num=step + 1):
                    state, train_metrics = train_fn(state, train_metrics, to_global_batch(next(batches), mesh),
                                                    regularization[1])
                step += 1
                progress(step)
                is_last = step == num_train_steps
                if step % training.log_every_steps == 0 or is_last:
                    scalars = prefixed(train_metrics.compute(), "train")
                    writer.write_scalars(step, scalars)
                    train_metrics = empty_train_metrics()
                    if needs_rollback(int(scalars["train_skip_run"]), None, config.nan_recovery):
                        reason = f"{int(scalars['train_skip_run'])} consecutive non-finite steps"
                        state, loop_state, step, batches = roll_back(step, reason)
                        continue
                if step % eval_every_steps == 0 or is_last:
                    with progress.timed("eval"):
                        eval_scalars = evaluate(state, pipeline, eval_fn, training.eval_batch_size, mesh)
                    writer.write_scalars(step, eval_scalars)
                    logging.info("Step %d: %s", step, {k: round(v, 4) for k, v in eval_scalars.items() if "/" not in k})
                    if needs_rollback(0, eval_scalars["eval_loss"], config.nan_recovery):
                        state, loop_state, step, batches = roll_back(step, "non-finite eval loss")
                        continue
                    loop_state = after_eval(loop_state, eval_scalars, config)
                    state = state.replace(lr_scale=jnp.float32(loop_state.lr_scale(config.nan_recovery)))
                    checkpointing.save(manager, state, loop_state.to_json(), eval_scalars)
                    if config.early_stopping.enabled and loop_state.early_stopping.should_stop(
                            config.early_stopping.patience):
                        logging.warning("Early stopping at step %d: %s has not improved for %d evals.", step,
                                        config.early_stopping.metric, loop_state.early_stopping.bad_evals)
                        break
                elif step % training.checkpoint_every_steps == 0 or stop.requested:
                    checkpointing.save(manager, state, loop_state.to_json())
                if stop.requested:
                    logging.warning("Stopped at step %d on SIGTERM; rerun the same command to resume.", step)
                    break
    return state
