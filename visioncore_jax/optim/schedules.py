"""Learning-rate schedules built from `config.schedule`, evaluated per optimizer step.

Every schedule peaks at `config.optimizer.learning_rate` (never a hard-coded value), can be preceded by a
linear warmup, and is floored at `min_learning_rate` after the warmup (one-cycle only with
`onecycle_floored`: it has its own minimum, as torch's OneCycleLR). Durations are given in epochs or in
steps, exactly one of each pair (`warmup_epochs` / `warmup_steps`, `cycle_epochs` / `cycle_steps`, ...), the
unused one set to -1. Built from optax's schedule functions; where our definition differs it says so.
"""

import itertools

import jax.numpy as jnp
import ml_collections
import optax

from visioncore_jax.errors import InputError

SCHEDULES = ("constant", "warmup_cosine", "cosine_restarts", "onecycle", "polynomial", "exponential")
# torch's OneCycleLR annealing functions, from `start` to `end` as `pct` goes from 0 to 1 (linear written as
# a weighted mean, equal to torch's `(end - start) * pct + start` but exact at pct = 1 in float32).
ANNEAL_STRATEGIES = {
    "cos": lambda start, end, pct: end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0),
    "linear": lambda start, end, pct: start * (1.0 - pct) + end * pct,
}


def duration_in_steps(schedule: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
    """Steps of the duration `name` given as exactly one of `<name>_epochs` / `<name>_steps` (the other -1, as
    `validate_config` checks)."""
    epochs, steps = schedule[f"{name}_epochs"], schedule[f"{name}_steps"]
    return int(steps) if steps >= 0 else round(epochs * steps_per_epoch)


def linear_warmup(peak: float, warmup_steps: int) -> optax.Schedule:
    """LR `peak * (step + 1) / warmup_steps`: the first step gets `peak / warmup_steps` (neither 0, which would
    waste a step, nor the full LR), the last warmup step `peak`."""
    return lambda step: peak * (jnp.asarray(step, jnp.float32) + 1.0) / warmup_steps


def _sgdr(schedule, peak: float, floor: float, steps_per_epoch: int, decay_steps: int) -> optax.Schedule:
    """SGDR (Loshchilov & Hutter): cosine cycles of length `first * mult^k`, peak `peak * decay^k`, each with an
    optional warmup, as many as the run needs."""
    first = duration_in_steps(schedule, "cycle", steps_per_epoch)
    cycle_warmup = duration_in_steps(schedule, "cycle_warmup", steps_per_epoch)
    if first < 1 or cycle_warmup >= first:  # needs the steps per epoch: not checked by `validate_config`
        raise InputError(f"--config.schedule.cycle_*: cosine_restarts needs a first cycle of >= 1 step (got {first}) "
                         f"and a cycle warmup shorter than it (got {cycle_warmup}).")
    cycles, covered, k = [], 0, 0
    while covered < decay_steps:
        length = round(first * schedule.cycle_mult**k)
        cycles.append(dict(init_value=floor, peak_value=peak * schedule.cycle_peak_decay**k,
                           warmup_steps=cycle_warmup, decay_steps=length, end_value=floor))
        covered, k = covered + length, k + 1
    # optax's warmup_cosine_decay_schedule counts decay_steps including the warmup: a cycle is `length` long.
    return optax.sgdr_schedule(cycles)


def _onecycle(schedule, peak: float, total: int) -> optax.Schedule:
    """torch.optim.lr_scheduler.OneCycleLR step for step: from `peak / div_factor` up to `peak` at step
    `pct_start * total - 1`, then down to `peak / div_factor / final_div_factor` at step `total - 1` (the last
    step trained); with `three_phase`, back to the start at `2 * pct_start * total - 2` before the final fall.

    Hand-written because optax's `cosine_onecycle_schedule` puts the phase ends one step later than torch (the
    peak at `pct_start * total`, the end at `total`, a step never trained) and has no linear or three-phase form.
    Steps past the end keep the final LR (torch raises there).
    """
    start, rise_end = peak / schedule.div_factor, float(schedule.pct_start * total) - 1
    end = start / schedule.final_div_factor
    phases = [(rise_end, start, peak)]  # (last step of the phase, LR at its start, LR at its end), as torch
    if schedule.three_phase:
        phases += [(float(2 * schedule.pct_start * total) - 2, peak, start), (total - 1.0, start, end)]
    else:
        phases += [(total - 1.0, peak, end)]
    bounds = [0.0] + [phase[0] for phase in phases]
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise InputError(f"--config.schedule: onecycle over {total} steps with pct_start={schedule.pct_start} "
                         f"(three_phase={schedule.three_phase}) has a phase shorter than one step; lengthen the "
                         "run or move pct_start away from 0 / 0.5 / 1.")
    anneal = ANNEAL_STRATEGIES[schedule.anneal_strategy]

    def onecycle(step):
        step = jnp.asarray(step, jnp.float32)
        lr = None
        for first, (last, lr_start, lr_end) in reversed(list(zip(bounds[:-1], phases, strict=True))):
            value = anneal(lr_start, lr_end, jnp.clip((step - first) / (last - first), 0.0, 1.0))
            lr = value if lr is None else jnp.where(step <= last, value, lr)
        return lr

    return onecycle


def _main_schedule(schedule, peak: float, floor: float, steps_per_epoch: int, decay_steps: int) -> optax.Schedule:
    """The named schedule over `decay_steps` steps (the run after warmup), starting at `peak`."""
    name = schedule.name
    if name == "constant":
        return optax.constant_schedule(peak)
    if name == "warmup_cosine":
        return optax.cosine_decay_schedule(peak, decay_steps, alpha=floor / peak)
    if name == "cosine_restarts":
        return _sgdr(schedule, peak, floor, steps_per_epoch, decay_steps)
    if name == "onecycle":
        return _onecycle(schedule, peak, decay_steps)
    if name == "polynomial":
        # (peak - floor) * (1 - t / T)^power + floor: reaches the floor exactly at the end, unlike the original's
        # max(peak * (1 - t / T)^power, floor), which flattens at the floor before the end.
        return optax.polynomial_schedule(peak, floor, schedule.power, decay_steps)
    if name == "exponential":
        # peak * decay_rate^(step / steps_per_epoch), or ^floor(epoch) with staircase.
        return optax.exponential_decay(peak, steps_per_epoch, schedule.decay_rate, staircase=schedule.staircase)
    # For callers that skip validate_config (e.g. the schedule plot): an error, never another schedule's curve.
    raise InputError(f"--config.schedule.name={name!r} is not one of {list(SCHEDULES)}.")


def build_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The schedule named by `config.schedule.name` (a config `validate_config` accepted): `schedule(step)` is
    the LR of update number `step`. Raises an InputError when the warmup is not shorter than the run."""
    schedule, peak, floor = config.schedule, config.optimizer.learning_rate, config.schedule.min_learning_rate
    warmup = duration_in_steps(schedule, "warmup", steps_per_epoch)
    if warmup >= total_steps:
        raise InputError(f"--config.schedule.warmup_* gives {warmup} warmup steps; it must be shorter than the run "
                         f"({total_steps} steps).")
    main = _main_schedule(schedule, peak, floor, steps_per_epoch, total_steps - warmup)
    if schedule.name == "onecycle" and not schedule.onecycle_floored:
        floored = main  # one-cycle ends at its own minimum, below the floor, unless asked otherwise
    else:
        floored = lambda step: jnp.maximum(main(step), floor)  # noqa: E731
    if warmup == 0:
        return floored
    return optax.join_schedules([linear_warmup(peak, warmup), floored], [warmup])
