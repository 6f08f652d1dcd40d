"""Learning-rate schedules built from `config.schedule`, evaluated per optimizer step.

Durations are given in epochs (converted with the steps per epoch of the run) so that a schedule always spans
the run it belongs to.
"""

import ml_collections
import optax

SCHEDULES = ("constant", "warmup_cosine")


def _warmup_steps(schedule: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> int:
    warmup = round(schedule.warmup_epochs * steps_per_epoch)
    if schedule.warmup_epochs < 0 or warmup >= total_steps:
        raise ValueError(f"config.schedule.warmup_epochs={schedule.warmup_epochs} gives {warmup} warmup steps; it "
                         f"must be >= 0 and shorter than the run ({total_steps} steps).")
    return warmup


def build_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The schedule named by `config.schedule.name`, peaking at `config.optimizer.learning_rate`.

    `warmup_cosine`: linear warmup from 0 over `warmup_epochs` (the first step's LR is peak / warmup steps,
    not the peak), then cosine decay to `min_learning_rate` at the last step of the run.
    """
    schedule, peak = config.schedule, config.optimizer.learning_rate
    if schedule.name not in SCHEDULES:
        raise ValueError(f"config.schedule.name={schedule.name!r} is not one of {list(SCHEDULES)}.")
    if peak <= 0 or schedule.min_learning_rate < 0 or schedule.min_learning_rate > peak:
        raise ValueError(f"Need 0 <= config.schedule.min_learning_rate ({schedule.min_learning_rate}) <= "
                         f"config.optimizer.learning_rate ({peak}) and a positive learning rate.")
    if schedule.name == "constant":
        return optax.constant_schedule(peak)
    warmup = _warmup_steps(schedule, steps_per_epoch, total_steps)
    # optax's decay_steps includes the warmup: the cosine reaches its end exactly at the last step.
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=total_steps,
        end_value=schedule.min_learning_rate,
    )
