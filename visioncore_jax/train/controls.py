"""The loop's host-side control state (plateau LR, early stopping, NaN rollbacks), checkpointed as JSON."""

import dataclasses

import ml_collections

from visioncore_jax.optim.stability import (
    EarlyStoppingState,
    PlateauState,
    early_stopping_update,
    metric_mode,
    plateau_update,
)

# Metrics the plateau and early-stopping controls can watch: eval scalars, or the mean training loss of the
# last log window before the eval (noisy: for a loss without an eval split worth the name).
CONTROL_METRICS = ("eval_accuracy", "eval_balanced_accuracy", "eval_loss", "eval_mean_dice", "eval_mean_iou",
                   "train_loss")


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


def validate_controls(config: ml_collections.ConfigDict) -> None:
    """Raises a ValueError naming the key for invalid plateau / early stopping / NaN recovery settings."""
    for block in ("plateau", "early_stopping"):
        if config[block].metric not in CONTROL_METRICS:
            raise ValueError(f"config.{block}.metric={config[block].metric!r} is not one of {list(CONTROL_METRICS)}.")
        metric_mode(config[block].metric, config[block].mode)
        if config[block].patience < 0:
            raise ValueError(f"config.{block}.patience={config[block].patience} must be >= 0.")
    if not 0 < config.plateau.factor < 1:
        raise ValueError(f"config.plateau.factor={config.plateau.factor} must be in (0, 1).")
    if not 0 < config.nan_recovery.lr_factor <= 1:
        raise ValueError(f"config.nan_recovery.lr_factor={config.nan_recovery.lr_factor} must be in (0, 1].")
    if config.nan_recovery.max_consecutive_skips < 1:
        raise ValueError("config.nan_recovery.max_consecutive_skips must be >= 1.")


def after_eval(loop_state: LoopState, eval_scalars: dict, config: ml_collections.ConfigDict) -> LoopState:
    """Feeds one evaluation to the enabled plateau and early-stopping controls. A segmentation-only metric
    asked of a classification run is an error naming the metric."""
    for block in ("plateau", "early_stopping"):
        if config[block].enabled and config[block].metric not in eval_scalars:
            raise ValueError(f"config.{block}.metric={config[block].metric!r} is not measured by this run "
                             f"(available: {sorted(k for k in eval_scalars if '/' not in k)}).")
    plateau, early_stopping = loop_state.plateau, loop_state.early_stopping
    if config.plateau.enabled:
        plateau = plateau_update(plateau, eval_scalars[config.plateau.metric], config.plateau)
    if config.early_stopping.enabled:
        early_stopping = early_stopping_update(early_stopping, eval_scalars[config.early_stopping.metric],
                                               config.early_stopping)
    return dataclasses.replace(loop_state, plateau=plateau, early_stopping=early_stopping)
