"""`train_and_evaluate(config, workdir)`: the training loop that ties builders, steps, writers and checkpoints.

Config flows one way: config → `build_experiment` (input, model, task, optimizer) → pure jitted steps → metric
writers, diagnostics records and checkpoints. Re-running the same command in the same workdir resumes exactly
where it stopped.
"""

import dataclasses
import logging
import os
import signal
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from visioncore_jax.data import InputPipeline, to_global_batch
from visioncore_jax.diagnostics import analyzer, report
from visioncore_jax.diagnostics import records as diagnostics_records
from visioncore_jax.optim import optimizer_metrics
from visioncore_jax.train import checkpointing, partitioning, writers
from visioncore_jax.train.controls import LoopState, after_eval, check_rollback_budget, needs_rollback
from visioncore_jax.train.experiment import Experiment, build_experiment, jitted_steps
from visioncore_jax.train.metrics import EvalMetrics, TrainMetrics, prefixed
from visioncore_jax.train.state import TrainState
from visioncore_jax.train.statistics import forward_order, module_names
from visioncore_jax.train.steps import empty_statistics


class _StopRequest:
    """Turns SIGTERM into a flag the loop checks after each step, so it can save and exit cleanly. In a run of
    several processes SIGTERM is left to JAX's preemption service (see `_Trainer._stop_requested`)."""

    def __init__(self, workdir: str):
        self.requested = False
        self._previous = None
        self._workdir = workdir

    def __enter__(self):
        if jax.process_count() > 1:
            # The service sets the stop step to 1 + the last step any process reported when the notice arrives; a
            # resumed run reports where it will start before its set-up, so a notice during set-up stops it after
            # its first step (not at step 1, which it never reaches).
            multihost_utils.reached_preemption_sync_point(checkpointing.latest_saved_step(self._workdir))
        elif threading.current_thread() is threading.main_thread():
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


def evaluate(state: TrainState, experiment: Experiment, eval_fn) -> tuple[dict, np.ndarray]:
    """One pass over the eval split; returns the eval scalars (`eval_loss`, `eval_accuracy` and the task's
    confusion-matrix summary) and the [true, predicted] confusion counts."""
    info, mesh = experiment.info, experiment.mesh
    metrics = jax.device_put(EvalMetrics.zeros(info.num_classes), partitioning.replicated(mesh))
    for batch in experiment.pipeline.eval_batches(experiment.config.training.eval_batch_size):
        metrics = eval_fn(state, metrics, to_global_batch(batch, mesh))
    computed = jax.device_get(metrics.compute())
    confusion = computed["confusion"]
    return prefixed(computed, "eval") | experiment.task.summary(confusion, info.class_names), confusion


def _leaves(tree) -> list[np.ndarray]:
    """The leaves of a device pytree as host arrays (a checkpointed log window; flat, so that orbax need not
    store the metric names)."""
    return [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(tree))]


def _from_leaves(template, leaves: list | None):
    """`template` with the saved `leaves` (from `_leaves`), or `template` itself when there are none."""
    if leaves is None:
        return template
    treedef = jax.tree.structure(template)
    if treedef.num_leaves != len(leaves):
        raise ValueError(f"The checkpointed log window has {len(leaves)} arrays, this run's has "
                         f"{treedef.num_leaves}; use a new --workdir for a different configuration.")
    return jax.tree.unflatten(treedef, [np.asarray(leaf) for leaf in leaves])


class _Diagnostics:
    """The loop's diagnostics: the on-device aggregate of the in-step statistics, and the records written
    at each evaluation (TensorBoard scalars and histograms, `workdir/diagnostics/*.jsonl`)."""

    def __init__(self, experiment: Experiment, state: TrainState, workdir: str, start_step: int, writer):
        self.enabled = bool(experiment.config.diagnostics.enabled)
        self._experiment, self._writer = experiment, writer
        self._order = forward_order(experiment.model, experiment.example_inputs())
        # Sorted as the jitted step's statistics are: the index of the first non-finite module points here.
        self._modules = tuple(sorted(module_names(state.params)))
        self._records = diagnostics_records.RecordWriter(workdir, start_step,
                                                         enabled=self.enabled and jax.process_index() == 0)
        self._empty = None
        self.events: list[dict] = []
        self.period_start = start_step
        self.pending: list[np.ndarray] | None = None  # the leaves of a partial aggregate restored from a checkpoint

    def fresh(self, state: TrainState, batch: dict, hyperparams: dict) -> dict | None:
        """A new empty aggregate on the devices (None when diagnostics are off); its keys are traced once from
        the train step. New buffers each time: the jitted step donates the aggregate it is given."""
        if not self.enabled:
            return None
        if self._empty is None:
            self._empty = jax.device_get(empty_statistics(state, batch, hyperparams,
                                                          task=self._experiment.task))
        aggregate, self.pending = _from_leaves(self._empty, self.pending), None
        return jax.device_put(aggregate, partitioning.replicated(self._experiment.mesh))

    def to_json(self) -> dict:
        """The period's host-side state (start, events) for a checkpoint."""
        return {"period_start": self.period_start, "events": self.events}

    def load_json(self, data: dict) -> None:
        """Inverse of `to_json`."""
        self.period_start, self.events = data["period_start"], list(data["events"])

    def restart(self, step: int) -> None:
        """Starts a new period at `step` (after a record or a rollback), dropping records after it."""
        self.period_start = step
        self._records.truncate_after(step)

    def write(self, step: int, summary, state: TrainState, eval_scalars: dict, confusion: np.ndarray) -> None:
        """Writes the train and eval records of the period ending at `step`."""
        experiment, config = self._experiment, self._experiment.config
        opt_stats = jax.device_get(optimizer_metrics(state.opt_state))
        if self.enabled:
            record = diagnostics_records.train_record(
                jax.device_get(summary), self._modules, self._order, step=step, first_step=self.period_start,
                steps_per_epoch=experiment.steps_per_epoch, num_train_steps=experiment.num_train_steps,
                peak_learning_rate=float(config.optimizer.learning_rate),
                grad_clip_norm=float(config.optimizer.grad_clip_norm), lr_scale=float(state.lr_scale),
                num_classes=experiment.info.num_classes, skipped_steps=int(opt_stats["skipped_steps"]),
                longest_skip_run=int(opt_stats["longest_skip_run"]), events=self.events,
                optimizer=str(config.optimizer.name))
            self._records.write(record)
            self._write_tensorboard(step, record)
        self._records.write(diagnostics_records.eval_record(
            eval_scalars, confusion, experiment.info.class_names, task=experiment.info.task, step=step,
            steps_per_epoch=experiment.steps_per_epoch, train_label_counts=experiment.info.train_label_counts,
            num_examples=experiment.info.num_eval_examples))
        self.events = []
        self.period_start = step

    def _write_tensorboard(self, step: int, record: dict) -> None:
        """Per-module and per-pathway scalars, and histograms across modules."""
        scalars = {}
        for module, stats in record["modules"].items():
            scalars[f"diagnostics/grad_norm/{module}"] = stats["grad_norm"]["mean"]
            scalars[f"diagnostics/update_ratio/{module}"] = stats["update_ratio"]["mean"]
        for pathway, stats in record["pathways"].items():
            scalars[f"diagnostics/pathway_grad_share/{pathway}"] = stats["grad_share"]["mean"]
        for block, stats in record["activations"].items():
            scalars[f"diagnostics/zero_fraction/{block}"] = stats["zero_fraction"]["mean"]
        for gate, stats in record["gates"].items():
            scalars[f"diagnostics/gate_saturation/{gate}"] = stats["saturated_fraction"]["mean"]
        self._writer.write_scalars(step, scalars)
        histograms = {
            "diagnostics/module_log10_grad_norm": [s["grad_norm"]["mean"] for s in record["modules"].values()],
            "diagnostics/module_log10_update_ratio": [s["update_ratio"]["mean"] for s in record["modules"].values()],
        }
        histograms = {k: np.log10(np.maximum(np.asarray(v, np.float64), 1e-30)) for k, v in histograms.items()}
        histograms = {k: v[np.isfinite(v)] for k, v in histograms.items()}  # a diverged module has no place there
        self._writer.write_histograms(step, {k: v for k, v in histograms.items() if v.size})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, model: nn.Module | None = None,
                       pipeline: InputPipeline | None = None, experiment: Experiment | None = None) -> TrainState:
    """Trains and evaluates the configured model, writing TensorBoard events, diagnostics records and
    checkpoints to `workdir`; at the end, the diagnostics analyzer's findings and report.

    `model` / `pipeline` replace the configured ones when given; `experiment` is one already built from
    `config` (e.g. after preflight checks on it). Returns the final train state. Interrupted
    runs (SIGTERM, a killed process) resume from the latest checkpoint when the same command is run again, with
    the same data order and randomness. A SIGTERM at any point, set-up included, ends the run after its
    current step with a checkpoint.
    """
    with _StopRequest(workdir) as stop:
        if experiment is None:
            experiment = build_experiment(config, model=model, pipeline=pipeline)
        elif model is not None or pipeline is not None:
            raise ValueError("Pass either a built experiment or model/pipeline overrides, not both.")
        os.makedirs(workdir, exist_ok=True)
        # The manager is closed (pending saves finished) however the run ends, errors included.
        with checkpointing.create_manager(workdir, config.training.max_checkpoints_to_keep) as manager:
            trainer = _Trainer(experiment, workdir, manager, stop)
            state = trainer.run()
        if trainer.finished and config.diagnostics.enabled and jax.process_index() == 0:
            _report(workdir, trainer.writer, plots=config.diagnostics.report)
        return state


def _report(workdir: str, writer, plots: bool) -> None:
    """Analyzes the finished run: logs the findings, writes findings.json and (with `plots`) report.md and its
    images."""
    run = analyzer.load_records(workdir)
    findings = analyzer.analyze_records(run)
    analyzer.write_findings(workdir, findings)
    logging.info("Diagnostics of %s:\n%s", workdir, analyzer.format_findings(findings))
    if not plots:
        return
    images = report.render_images(run.train, run.eval, run.config)
    path = report.write_report(workdir, run.train, run.eval, findings, config=run.config, images=images)
    if run.train:
        report.write_report_images(writer, run.train[-1].step, images)
        writer.flush()
    logging.info("Diagnostics report: %s", path)


class _Trainer:
    """The step loop of one `train_and_evaluate` call: train steps, log windows, evaluations with their
    records and controls (plateau, early stopping, NaN rollback), checkpoints."""

    def __init__(self, experiment: Experiment, workdir: str, manager, stop: _StopRequest):
        self.experiment, self.config, self.manager, self.stop = experiment, experiment.config, manager, stop
        self.mesh = experiment.mesh
        state = experiment.init_state()
        self.state, restored = checkpointing.restore_latest(manager, state)
        self.loop_state = LoopState.from_json(restored.loop) if restored else LoopState()
        self.step = int(jax.device_get(self.state.step))
        if jax.process_index() == 0:
            # Events after the restored step are rewritten by this run: drop them (before a new file opens).
            writers.truncate_events_after(workdir, self.step)
        self.writer = writers.create_writer(workdir, writes_events=jax.process_index() == 0)
        self.diagnostics = _Diagnostics(experiment, self.state, workdir, self.step, self.writer)
        self.train_fn, self.eval_fn = jitted_steps(experiment)
        self.finished = False
        self.last_train_loss = float("nan")
        self.window = None  # the leaves of a partial train-metrics window restored from a checkpoint
        if restored is None:
            _write_config_once(self.config, workdir)
            logging.info("Parameters per module:\n%s", writers.parameter_summary(self.state.params))
            self.writer.write_hparams(writers.headline_hparams(self.config))
            # A step-0 checkpoint gives NaN recovery somewhere to roll back to before the first periodic save.
            self._save(self._empty_metrics(), None)
        else:
            self._load_log_state(restored)

    def _empty_metrics(self) -> TrainMetrics:
        return jax.device_put(TrainMetrics.empty(), partitioning.replicated(self.mesh))

    def _save(self, metrics: TrainMetrics, statistics, eval_scalars: dict | None = None) -> None:
        """Checkpoints the state with everything a resumed run needs to log exactly what an uninterrupted one
        logs: the controls, the partial log window and diagnostics period. Events written so far are flushed
        first, so that a checkpoint never gets ahead of the event files."""
        self.writer.flush()
        loop = self.loop_state.to_json() | {"log": {"last_train_loss": self.last_train_loss,
                                                    "diagnostics": self.diagnostics.to_json()}}
        window = {"metrics": _leaves(metrics)} | ({"statistics": _leaves(statistics)} if statistics else {})
        checkpointing.save(self.manager, self.state, loop, eval_scalars, window=window)

    def _load_log_state(self, restored: checkpointing.Restored) -> None:
        """Continues the log window and diagnostics period saved with a checkpoint (older checkpoints have
        none: the windows then restart at the restored step)."""
        log = restored.loop.get("log")
        if log is None or restored.window is None:
            return
        self.last_train_loss = log["last_train_loss"]
        self.diagnostics.load_json(log["diagnostics"])
        self.window = restored.window["metrics"]
        self.diagnostics.pending = restored.window.get("statistics")

    def _restored_metrics(self) -> TrainMetrics:
        """The restored partial window (once), else an empty one."""
        metrics, self.window = _from_leaves(TrainMetrics.empty(), self.window), None
        return jax.device_put(metrics, partitioning.replicated(self.mesh))

    def _stop_requested(self) -> bool:
        """Whether to save and stop after this step on SIGTERM. With several processes, JAX's preemption service
        (set up by `jax.distributed.initialize`, which installs its own SIGTERM notifier in every process) makes
        all of them agree on the first step every host can stop at, so they save and stop together; until a
        notice arrives the check is local, so the step loop keeps dispatching ahead."""
        if jax.process_count() == 1:
            return self.stop.requested
        if multihost_utils.reached_preemption_sync_point(self.step):
            logging.warning("SIGTERM (a preemption notice) reached a process of this run: every process saves "
                            "at step %d and stops.", self.step)
            return True
        return False

    def _hyperparams(self) -> dict:
        """The runtime hyperparameters of the next step (LR, progressive regularization), on the devices."""
        return partitioning.put_hyperparams(self.experiment.hyperparams(self.step), self.mesh)

    def run(self) -> TrainState:
        """Trains from the restored step to the end (or early stop / SIGTERM); returns the final state."""
        experiment, training = self.experiment, self.config.training
        num_train_steps = experiment.num_train_steps
        logging.info("Training %d steps (%d per epoch, global batch %d on %d devices) from step %d.",
                     num_train_steps, experiment.steps_per_epoch, training.batch_size, self.mesh.devices.size,
                     self.step)
        progress = periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=self.writer)
        batches = experiment.pipeline.train_batches(training.batch_size, start_step=self.step)
        metrics, statistics = self._restored_metrics(), None
        with metric_writers.ensure_flushes(self.writer):
            while self.step < num_train_steps:
                hyperparams = self._hyperparams()
                batch = to_global_batch(next(batches), self.mesh)
                if statistics is None:
                    statistics = self.diagnostics.fresh(self.state, batch, hyperparams)
                with jax.profiler.StepTraceAnnotation("train", step_num=self.step + 1):
                    self.state, metrics, statistics = self.train_fn(self.state, metrics, statistics, batch,
                                                                    hyperparams)
                self.step += 1
                progress(self.step)
                is_last = self.step == num_train_steps
                if self.step % training.log_every_steps == 0 or is_last:
                    skip_run = self._log_window(metrics)
                    metrics = self._empty_metrics()
                    if needs_rollback(skip_run, None, self.config.nan_recovery):
                        # Back to a checkpoint saved before the run of skipped steps began.
                        batches = self._roll_back(f"{skip_run} consecutive non-finite steps", self.step - skip_run)
                        metrics, statistics = self._restored_metrics(), None
                        continue
                stop = self._stop_requested()
                if self.step % experiment.eval_every_steps == 0 or is_last:
                    with progress.timed("eval"):
                        outcome = self._evaluate(statistics, metrics)
                    statistics = None
                    if outcome == "rollback":
                        batches = self._roll_back("non-finite eval loss", self.step - 1)
                        metrics = self._restored_metrics()
                        continue
                    if outcome == "stop":
                        break
                elif self.step % training.checkpoint_every_steps == 0 or stop:
                    self._save(metrics, statistics)
                if stop:
                    logging.warning("Stopped at step %d on SIGTERM; rerun the same command to resume.", self.step)
                    return self.state
        self.finished = True
        return self.state

    def _log_window(self, metrics: TrainMetrics) -> int:
        """Writes the window's train scalars; returns the current run of skipped steps."""
        scalars = prefixed(metrics.compute(), "train")
        self.writer.write_scalars(self.step, scalars)
        self.last_train_loss = scalars["train_loss"]
        return int(scalars["train_skip_run"])

    def _evaluate(self, statistics, metrics: TrainMetrics) -> str:
        """Evaluates, writes the records and feeds the controls; returns 'rollback', 'stop' or 'continue'."""
        eval_scalars, confusion = evaluate(self.state, self.experiment, self.eval_fn)
        self.writer.write_scalars(self.step, eval_scalars)
        if needs_rollback(0, eval_scalars["eval_loss"], self.config.nan_recovery):
            return "rollback"
        self.diagnostics.write(self.step, statistics, self.state, eval_scalars, confusion)
        # The controls' own scale, not the state's float32 copy of it (0.3 there is 0.30000001 > 0.3: every eval
        # after a cut would log another one).
        old_scale = self.loop_state.lr_scale(self.config.nan_recovery)
        self.loop_state = after_eval(self.loop_state, eval_scalars | {"train_loss": self.last_train_loss},
                                     self.config)
        new_scale = self.loop_state.lr_scale(self.config.nan_recovery)
        if new_scale < old_scale:
            self.diagnostics.events.append({"step": self.step, "kind": "plateau_cut", "lr_scale": new_scale,
                                            "message": f"plateau on {self.config.plateau.metric}: LR scale "
                                                       f"{old_scale:.3g} -> {new_scale:.3g}"})
        # A global array like the rest of the state: orbax cannot save a host-local one on several hosts.
        self.state = self.state.replace(lr_scale=jax.device_put(jnp.float32(new_scale),
                                                                partitioning.replicated(self.mesh)))
        self._save(metrics, None, eval_scalars)
        early_stopping = self.config.early_stopping
        if early_stopping.enabled and self.loop_state.early_stopping.should_stop(early_stopping.patience):
            logging.warning("Early stopping at step %d: %s has not improved for %d evals.", self.step,
                            early_stopping.metric, self.loop_state.early_stopping.bad_evals)
            return "stop"
        return "continue"

    def _roll_back(self, reason: str, last_good: int):
        """Restores the newest checkpoint at or before `last_good` (the last step before the trouble began) with
        one more LR cut, and deletes the checkpoints after it (written while diverging); returns the batches
        from the restored step."""
        nan_recovery = self.config.nan_recovery
        rollbacks = self.loop_state.rollbacks + 1
        check_rollback_budget(rollbacks, self.step, nan_recovery)
        self.manager.wait_until_finished()
        restored, saved = checkpointing.restore_latest(self.manager, self.state, before=last_good)
        if saved is None:  # the checkpoints before the streak were all rotated out: the newest is the best left
            restored, saved = checkpointing.restore_latest(self.manager, self.state)
        for step in self.manager.all_steps():
            if step > saved.step:
                self.manager.delete(step)
        self.loop_state = dataclasses.replace(LoopState.from_json(saved.loop), rollbacks=rollbacks)
        lr_scale = self.loop_state.lr_scale(nan_recovery)
        self.state = restored.replace(lr_scale=jax.device_put(jnp.float32(lr_scale),
                                                              partitioning.replicated(self.mesh)))
        back_to = saved.step
        message = (f"NaN recovery: {reason} at step {self.step}; rolled back to step {back_to} and multiplied the "
                   f"LR by {nan_recovery.lr_factor} (rollback {rollbacks} of at most {nan_recovery.max_rollbacks}).")
        logging.warning(message)
        # TensorBoard, like the records, keeps the trajectory the model follows: the diverged steps go, each step
        # is written once, and the rollback is logged at the step it returned to.
        self.writer.rewind(back_to)
        self.writer.write_texts(back_to, {"events": message})
        self.writer.write_scalars(back_to, {"train_rollbacks": rollbacks})
        events = [e for e in self.diagnostics.events if e["step"] <= back_to]
        self.diagnostics.restart(back_to)
        self._load_log_state(saved)  # the log window and diagnostics period as they were at `back_to`
        self.diagnostics.events += [e for e in events if e not in self.diagnostics.events] + [
            {"step": back_to, "kind": "rollback", "lr_scale": lr_scale, "message": message}]
        self.step = back_to
        return self.experiment.pipeline.train_batches(self.config.training.batch_size, start_step=back_to)
