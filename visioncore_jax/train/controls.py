"""The loop's host-side control state (plateau LR, early stopping, NaN rollbacks), checkpointed as JSON."""

import dataclasses

import ml_collections

from visioncore_jax.optim.stability import EarlyStoppingState, PlateauState, early_stopping_update, plateau_update

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
