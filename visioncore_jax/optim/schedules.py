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

SCHEDULES = ("constant", "warmup_cosine", "cosine_restarts", "onecycle", "polynomial", "exponential")
# torch's OneCycleLR annealing functions, from `start` to `end` as `pct` goes from 0 to 1 (linear written as
# a weighted mean, equal to torch's `(end - start) * pct + start` but exact at pct = 1 in float32).
ANNEAL_STRATEGIES = {
    "cos": lambda start, end, pct: end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0),
    "linear": lambda start, end, pct: start * (1.0 - pct) + end * pct,
}


def duration_in_steps(schedule: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
    """Steps of the duration `name` given as exactly one of `<name>_epochs` / `<name>_steps` (other = -1)."""
    epochs, steps = schedule[f"{name}_epochs"], schedule[f"{name}_steps"]
    if (epochs >= 0) == (steps >= 0):
        raise ValueError(
            f"Set exactly one of config.schedule.{name}_epochs ({epochs}) and config.schedule.{name}_steps "
            f"({steps}); disable the other with -1."
        )
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
    if first < 1 or schedule.cycle_mult < 1 or not 0 < schedule.cycle_peak_decay <= 1 or cycle_warmup >= first:
        raise ValueError(
            f"config.schedule: cosine_restarts needs a first cycle of >= 1 step (got {first}), cycle_mult >= 1 "
            f"(got {schedule.cycle_mult}), 0 < cycle_peak_decay <= 1 (got {schedule.cycle_peak_decay}) and a "
            f"cycle warmup shorter than the first cycle (got {cycle_warmup})."
        )
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
    if not 0 < schedule.pct_start < 1 or schedule.div_factor <= 0 or schedule.final_div_factor <= 0:
        raise ValueError("config.schedule: onecycle needs 0 < pct_start < 1 and positive div_factor / "
                         f"final_div_factor (got {schedule.pct_start}, {schedule.div_factor}, "
                         f"{schedule.final_div_factor}).")
    if schedule.anneal_strategy not in ANNEAL_STRATEGIES:
        raise ValueError(f"config.schedule.anneal_strategy={schedule.anneal_strategy!r} is not one of "
                         f"{list(ANNEAL_STRATEGIES)}.")
    start, rise_end = peak / schedule.div_factor, float(schedule.pct_start * total) - 1
    end = start / schedule.final_div_factor
    phases = [(rise_end, start, peak)]  # (last step of the phase, LR at its start, LR at its end), as torch
    if schedule.three_phase:
        phases += [(float(2 * schedule.pct_start * total) - 2, peak, start), (total - 1.0, start, end)]
    else:
        phases += [(total - 1.0, peak, end)]
    bounds = [0.0] + [phase[0] for phase in phases]
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"config.schedule: onecycle over {total} steps with pct_start={schedule.pct_start} "
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
        if schedule.power <= 0:
            raise ValueError(f"config.schedule.power={schedule.power} must be > 0.")
        # (peak - floor) * (1 - t / T)^power + floor: reaches the floor exactly at the end, unlike the original's
        # max(peak * (1 - t / T)^power, floor), which flattens at the floor before the end.
        return optax.polynomial_schedule(peak, floor, schedule.power, decay_steps)
    if not 0 < schedule.decay_rate <= 1:
        raise ValueError(f"config.schedule.decay_rate={schedule.decay_rate} must be in (0, 1] (per epoch).")
    # peak * decay_rate^(step / steps_per_epoch), or ^floor(epoch) with staircase.
    return optax.exponential_decay(peak, steps_per_epoch, schedule.decay_rate, staircase=schedule.staircase)


def build_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The schedule named by `config.schedule.name`: `schedule(step)` is the LR of update number `step`."""
    schedule, peak, floor = config.schedule, config.optimizer.learning_rate, config.schedule.min_learning_rate
    if schedule.name not in SCHEDULES:
        raise ValueError(f"config.schedule.name={schedule.name!r} is not one of {list(SCHEDULES)}.")
    if peak <= 0 or not 0 <= floor <= peak:
        raise ValueError(f"Need config.optimizer.learning_rate > 0 (got {peak}) and 0 <= "
                         f"config.schedule.min_learning_rate <= learning_rate (got {floor}).")
    warmup = duration_in_steps(schedule, "warmup", steps_per_epoch)
    if not 0 <= warmup < total_steps:
        raise ValueError(f"config.schedule.warmup_* gives {warmup} warmup steps; it must be >= 0 and shorter "
                         f"than the run ({total_steps} steps).")
    main = _main_schedule(schedule, peak, floor, steps_per_epoch, total_steps - warmup)
    if schedule.name == "onecycle" and not schedule.onecycle_floored:
        floored = main  # one-cycle ends at its own minimum, below the floor, unless asked otherwise
    else:
        floored = lambda step: jnp.maximum(main(step), floor)  # noqa: E731
    if warmup == 0:
        return floored
    return optax.join_schedules([linear_warmup(peak, warmup), floored], [warmup])
