"""The loop's host-side controls in one place: reduce-LR-on-plateau, early stopping and NaN rollback, as pure
functions over small immutable states, and the `LoopState` that carries them between evaluations.

They run once per evaluation or logging window, never per step, and their states are saved with each
checkpoint (as JSON) so that a resumed run makes the same decisions as an uninterrupted one.
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


# Metrics the plateau and early-stopping controls can watch: eval scalars, or the mean training loss of the
# last log window before the eval (noisy: for a loss without an eval split worth the name).
CONTROL_METRICS = ("eval_accuracy", "eval_balanced_accuracy", "eval_loss", "eval_mean_dice", "eval_mean_iou",
                   "train_loss")
SEGMENTATION_METRICS = ("eval_mean_dice", "eval_mean_iou")  # measured on segmentation data only


@dataclasses.dataclass(frozen=True)
class LoopState:
    """Decisions the loop carries between evaluations; saved with each checkpoint for an exact resume."""

    plateau: PlateauState = PlateauState()
    early_stopping: EarlyStoppingState = EarlyStoppingState()
    rollbacks: int = 0

    def lr_scale(self, nan_recovery: ml_collections.ConfigDict) -> float:
        """The factor applied on top of the LR schedule: plateau cuts times one `lr_factor` per rollback."""
        return self.plateau.scale * nan_recovery.lr_factor**self.rollbacks

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "LoopState":
        """Inverse of `to_json`."""
        return cls(PlateauState(**data["plateau"]), EarlyStoppingState(**data["early_stopping"]), data["rollbacks"])


def after_eval(loop_state: LoopState, eval_scalars: dict, config: ml_collections.ConfigDict) -> LoopState:
    """Feeds one evaluation to the enabled plateau and early-stopping controls (their metrics were checked
    against the task by `validate_config`)."""
    plateau, early_stopping = loop_state.plateau, loop_state.early_stopping
    if config.plateau.enabled:
        plateau = plateau_update(plateau, eval_scalars[config.plateau.metric], config.plateau)
    if config.early_stopping.enabled:
        early_stopping = early_stopping_update(early_stopping, eval_scalars[config.early_stopping.metric],
                                               config.early_stopping)
    return dataclasses.replace(loop_state, plateau=plateau, early_stopping=early_stopping)
