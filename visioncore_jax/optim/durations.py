"""Run durations in train steps: steps per epoch and the total, from the config's epochs-or-steps fields.

One definition, used by training, the input pipeline, the schedule plot and every tool, so an "epoch" means the
same number of steps everywhere.
"""

import math

import ml_collections


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full batches in one pass over `num_examples` (the last partial batch is dropped, as the pipeline does)."""
    return num_examples // global_batch_size


def num_train_steps(training: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """Total train steps from exactly one of `num_epochs` / `num_train_steps` (the other must be <= 0); a
    fractional last epoch is rounded up to a whole step."""
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
