"""Host-side training controls as pure functions over small immutable states: reduce-LR-on-plateau, early
stopping, NaN rollback bookkeeping and progressive regularization.

They run once per evaluation or logging window, never per step, and their states are saved with each
checkpoint so that a resumed run makes the same decisions as an uninterrupted one.
"""

import dataclasses
import math

import ml_collections

MAX_METRICS = ("accuracy", "dice", "iou")
MODES = ("auto", "min", "max")


def metric_mode(metric: str, mode: str = "auto") -> str:
    """'max' for accuracy / Dice / IoU, 'min' for losses, or `mode` when it is given explicitly."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode={mode!r} must be 'auto', 'min' or 'max'.")
    if any(name in metric for name in MAX_METRICS):
        return "max"
    if "loss" in metric:
        return "min"
    raise ValueError(f"Cannot tell whether {metric!r} should rise or fall; set its mode to 'min' or 'max'.")


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in the direction of `mode`."""
    if best is None:
        return True
    return value - best > min_delta if mode == "max" else best - value > min_delta


@dataclasses.dataclass(frozen=True)
class PlateauState:
    """Reduce-on-plateau bookkeeping; `scale` multiplies whatever the LR schedule gives."""

    scale: float = 1.0
    best: float | None = None
    bad_evals: int = 0
    cooldown_left: int = 0


def plateau_update(state: PlateauState, value: float, plateau: ml_collections.ConfigDict) -> PlateauState:
    """Updates the plateau state with one eval `value` of `plateau.metric`; cuts `scale` by `plateau.factor`
    when the metric has not improved (relative `threshold`) for more than `patience` evals, then waits
    `cooldown` evals before counting again. The scale never goes below `min_scale`."""
    mode = metric_mode(plateau.metric, plateau.mode)
    min_delta = plateau.threshold * abs(state.best) if state.best is not None else 0.0
    if improved(value, state.best, mode, min_delta):
        return dataclasses.replace(state, best=value, bad_evals=0,
                                   cooldown_left=max(0, state.cooldown_left - 1))
    if state.cooldown_left > 0:
        return dataclasses.replace(state, bad_evals=0, cooldown_left=state.cooldown_left - 1)
    if state.bad_evals + 1 > plateau.patience:
        return dataclasses.replace(state, scale=max(state.scale * plateau.factor, plateau.min_scale), bad_evals=0,
                                   cooldown_left=plateau.cooldown)
    return dataclasses.replace(state, bad_evals=state.bad_evals + 1)


@dataclasses.dataclass(frozen=True)
class EarlyStoppingState:
    """Best value of the monitored metric and evals since it last improved."""

    best: float | None = None
    bad_evals: int = 0

    def should_stop(self, patience: int) -> bool:
        """True once the metric has not improved for more than `patience` evals."""
        return self.bad_evals > patience


def early_stopping_update(state: EarlyStoppingState, value: float,
                          early_stopping: ml_collections.ConfigDict) -> EarlyStoppingState:
    """Updates early stopping with one eval `value` of `early_stopping.metric` (improvement > `min_delta`)."""
    mode = metric_mode(early_stopping.metric, early_stopping.mode)
    if improved(value, state.best, mode, early_stopping.min_delta):
        return EarlyStoppingState(best=value, bad_evals=0)
    return dataclasses.replace(state, bad_evals=state.bad_evals + 1)


def needs_rollback(consecutive_skips: int, eval_loss: float | None, nan_recovery: ml_collections.ConfigDict) -> bool:
    """Roll back after `max_consecutive_skips` skipped (non-finite) steps in a row or a non-finite eval loss."""
    if not nan_recovery.enabled:
        return False
    return consecutive_skips >= nan_recovery.max_consecutive_skips or (
        eval_loss is not None and not math.isfinite(eval_loss))


def check_rollback_budget(rollbacks: int, step: int, nan_recovery: ml_collections.ConfigDict) -> None:
    """Raises a RuntimeError saying what to try when more than `max_rollbacks` rollbacks were needed."""
    if rollbacks > nan_recovery.max_rollbacks:
        raise RuntimeError(
            f"Training diverged again at step {step} after {nan_recovery.max_rollbacks} rollbacks, each cutting "
            f"the LR by {nan_recovery.lr_factor}. Lower --config.optimizer.learning_rate, lengthen the warmup "
            "(--config.schedule.warmup_epochs), tighten --config.optimizer.grad_clip_norm, or check the data for "
            "NaN/Inf (python main.py --mode=preflight)."
        )


def piecewise_value(schedule, base: float, epoch: float) -> float:
    """The value of a `((start_epoch, value), ...)` piecewise-constant schedule at `epoch` (`base` before the
    first start)."""
    value = base
    for start, scheduled in sorted(schedule):
        if epoch >= start:
            value = scheduled
    return float(value)


def regularization_at(config: ml_collections.ConfigDict, epoch: float) -> dict[str, float]:
    """Dropout rate and label smoothing at `epoch` (progressive regularization); fed to the jitted step as
    values, so changing them never recompiles."""
    reg = config.regularization
    return {
        "dropout_rate": piecewise_value(reg.dropout_schedule, config.model.dropout, epoch),
        "label_smoothing": piecewise_value(reg.label_smoothing_schedule, config.training.label_smoothing, epoch),
    }
