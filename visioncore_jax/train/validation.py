"""Validation of `config.training`, run before any data is read or anything is compiled."""

import ml_collections

from visioncore_jax.train.losses import CLASS_WEIGHTINGS

DTYPES = ("float32", "bfloat16")


def validate_training(training: ml_collections.ConfigDict) -> None:
    """Raises a ValueError naming the key and a valid value for every inconsistent `config.training` field."""
    if training.dtype not in DTYPES:
        raise ValueError(f"config.training.dtype={training.dtype!r} is not one of {list(DTYPES)}.")
    for key in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
                "max_checkpoints_to_keep"):
        if training[key] < 1:
            raise ValueError(f"config.training.{key}={training[key]} must be >= 1.")
    if training.eval_every_epochs <= 0:
        raise ValueError(f"config.training.eval_every_epochs={training.eval_every_epochs} must be > 0.")
    if training.class_weighting not in CLASS_WEIGHTINGS:
        raise ValueError(f"config.training.class_weighting={training.class_weighting!r} is not one of "
                         f"{list(CLASS_WEIGHTINGS)}.")
    if not 0.0 <= training.label_smoothing < 1.0:
        raise ValueError(f"config.training.label_smoothing={training.label_smoothing} must be in [0, 1).")
