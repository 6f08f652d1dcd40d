"""LR and schedule rules: an LR too high (the loss climbs from where it started, or huge updates) or too low (no
movement), a schedule that decayed the LR to nothing early, plateau cuts that came too early, and a stall after
the LR collapsed mid-run. Advice names an LR from the run's own evidence, never a reflex factor."""

import math

import numpy as np

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import evidence as ev
from visioncore_jax.diagnostics.rules.rule import Rule
from visioncore_jax.diagnostics.schema import RunRecords

FAMILY = "LR and schedule"
# lr_too_high: the loss rose above 2x its step-1 value in some period (an optimizer step made the model far worse
# than its initialization: healthy periods never exceed their start by 30%), or updates beyond ~10% of the weights
# per step (largest per-record median; healthy runs 1e-3..2e-2) while the last loss stays above 0.8x the start.
CLIMB_FACTOR = 2.0
HIGH_UPDATE_RATIO = 0.1
HIGH_LR_LOSS_SHARE = 0.8
# An LR counts as stable evidence when the loss of its period stayed below 1.1x the start and it is at most half
# the LR that diverged (else the stable LR says nothing new).
STABLE_LOSS_SHARE = 1.1
STABLE_LR_SHARE = 0.5
# lr_too_low: updates below 1e-5 of the weights at the schedule's peak (healthy: >= 1e-4), the mean loss of the
# last period no more than 5% below the first period's (batch noise of a period mean in small runs is ~2%), and
# the LR applied still >= 10% of the configured peak (else the schedule decayed it: lr_schedule_exhausted). The
# loss test compares period means, not the step-1 loss: one batch is noisier than the 5% band (a zoo run at Adam
# LR 1e-7: step 1 at 2.43, every period mean 2.63..2.72). It is one-sided: a loss that rises while each step
# moves the weights by 1e-7 of their size rises from batch noise, not from learning.
# Or updates below the healthy range (< 1e-4 at the peak) and a loss that did not fall at all (last period mean >=
# the first): zoo run AdamW 1e-5 on the dual ResNet, peak ratio 2.5e-5, period means 2.47 -> 2.53, eval loss
# rising 2.31 -> 2.43 while the predictions collapsed onto one class.
LOW_UPDATE_RATIO = 1e-5
BELOW_HEALTHY_UPDATE_RATIO = 1e-4
LOW_LR_LOSS_CHANGE = 0.05
LOW_LR_NOT_DECAYED = 0.1
# lr_decayed_too_early: cuts in the first half of the run while the loss still fell this much per record, or
# this many cuts in all (a plateau scheduler reacting to noise).
EARLY_CUT_LOSS_DROP = 0.02
MANY_CUTS = 3
# lr_schedule_exhausted: the schedule's own factor (LR applied / (configured peak x plateau scale)) reached >= 50%
# in some step (an LR tiny from the start is the user's LR, not the schedule), then stayed below 1% in every step
# of every record from one that starts before half of the run to the end (a restart, as in SGDR, is no exhausted
# schedule). Judged on each period's largest LR: a period mean misses a peak when the LR decays within the period
# (exponential decay of 0.01 per 10-step epoch: the first period's mean is 27% of its peak).
EXHAUSTED_LR_SHARE = 0.01
EXHAUSTED_RUN_SHARE = 0.5
SCHEDULE_PEAKED = 0.5
# The exponential decay rate recommended instead: the LR ends the run at 5% of its peak.
EXPONENTIAL_END_SHARE = 0.05
# loss_plateau: the last >= 3 records (>= 30% of them) have an LR < 1e-3 of the largest LR before them and the
# mean loss of the stretch's second half is within 5% of its first half's: a stall from a collapsed LR. A cosine
# schedule spends only its last ~2% of records below 1e-3 of its peak.
PLATEAU_BAND = 0.05
PLATEAU_MIN_RECORDS = 3
PLATEAU_RUN_SHARE = 0.3
PLATEAU_LR_SHARE = 1e-3


def _climb(run: RunRecords) -> tuple[int | None, float]:
    """(index of the first period whose loss rose above CLIMB_FACTOR x the start, its largest finite loss)."""
    start = ev.loss_start(run)
    if not (math.isfinite(start) and start > 0):
        return None, math.nan
    for index, record in enumerate(run.train):
        loss = record.scalar("loss")
        peak = ev.finite_stat(np.max, [loss.max, loss.last, loss.mean])
        if peak > CLIMB_FACTOR * start:
            return index, peak
    return None, math.nan


def _stable_lr(run: RunRecords, before: int) -> float:
    """The largest LR applied in a period before `before` whose loss stayed near its start (NaN if none)."""
    start = ev.loss_start(run)
    stable = [r.scalar("learning_rate").max for r in run.train[:before]
              if r.scalar("loss").max <= STABLE_LOSS_SHARE * start]
    return ev.finite_stat(np.max, stable)


def _peak_ratio(run: RunRecords) -> tuple[float, float]:
    """(largest per-record median update ratio, LR applied in that record)."""
    ratios = ev.update_ratios(run)
    if not np.isfinite(ratios).any():
        return math.nan, math.nan
    index = int(np.nanargmax(ratios))
    return float(ratios[index]), run.train[index].scalar("learning_rate").mean


def lr_too_high(run: RunRecords) -> list[Finding]:
    """The loss climbs from its step-1 value (inside the first period too), or huge updates that do not lower
    the loss; recommends the largest LR seen stable, else the LR the update ratios call for."""
    if not run.train:
        return []
    start, last = ev.loss_start(run), run.train[-1].scalar("loss").mean
    ratio, applied = _peak_ratio(run)
    climbed_at, climbed_to = _climb(run)
    state = ev.nonfinite_state(run)
    big_steps = ratio > HIGH_UPDATE_RATIO
    climbing = climbed_at is not None and (big_steps or ev.diverged(state) or not math.isfinite(last)
                                           or last > HIGH_LR_LOSS_SHARE * start)
    if not (climbing or (big_steps and len(run.train) >= 2 and last > HIGH_LR_LOSS_SHARE * start)):
        return []
    lr = ev.configured_lr(run)
    stable = _stable_lr(run, climbed_at if climbed_at is not None else len(run.train))
    suggestion = stable if stable <= STABLE_LR_SHARE * lr else ev.lr_for_ratio(run, ratio, applied)
    source = ("the largest LR whose period kept the loss near its start" if stable <= STABLE_LR_SHARE * lr
              else f"the LR that moves weights by {ev.TARGET_UPDATE_RATIO:g} per step")
    if not suggestion < lr:  # the evidence names no smaller LR: measure one rather than guess a factor
        suggestion, source = math.nan, "not in the records"
    recommendations = ev.lr_override(run, suggestion) + ("--mode=lr_find",)
    if not run.train[-1].grad_clip_norm > 0:
        recommendations += (ev.override("optimizer.grad_clip_norm", 1.0),)
    where = (f"rose from {start:.3g} at step 1 to {climbed_to:.3g} in the period ending at step "
             f"{run.train[climbed_at].step}" if climbed_at is not None else f"went from {start:.3g} to {last:.3g}")
    return [Finding(
        "lr_too_high", "error",
        f"The learning rate {lr:.3g} is too high: the loss {where}; updates reach {ratio:.2g} of the weights per "
        "step (median over modules).",
        "Each step changes the weights by a large fraction of their size, so the optimizer overshoots and the loss "
        f"climbs instead of falling. The suggested LR is {source}; the LR range test measures one.",
        {"learning_rate": lr, "step1_loss": start, "climbed_to": climbed_to, "last_loss": last,
         "median_update_ratio": ratio, "lr_at_largest_ratio": applied, "stable_lr": stable,
         "suggested_lr": suggestion, "diverged": ev.diverged(state)},
        recommendations, steps=ev.steps_of(run.train))]


def lr_too_low(run: RunRecords) -> list[Finding]:
    """Loss barely moves and updates are vanishingly small relative to the weights while the LR applied is near
    its configured peak; recommends the LR the update ratios call for."""
    if len(run.train) < 2:
        return []
    ratio, applied = _peak_ratio(run)
    first, last = run.train[0].scalar("loss").mean, run.train[-1].scalar("loss").mean
    drop = (first - last) / max(abs(first), 1e-12)
    median_lr = ev.finite_stat(np.median, ev.scalar_series(run.train, "learning_rate"))
    peak = ev.configured_lr(run)
    stalled = (ratio < LOW_UPDATE_RATIO and drop < LOW_LR_LOSS_CHANGE) or (ratio < BELOW_HEALTHY_UPDATE_RATIO
                                                                              and drop <= 0)
    if not (stalled and median_lr >= LOW_LR_NOT_DECAYED * peak):
        return []
    suggestion = ev.lr_for_ratio(run, ratio, applied)
    return [Finding(
        "lr_too_low", "error",
        f"The learning rate {peak:.3g} is too low: updates are at most {ratio:.2g} of the weights per step "
        f"(healthy: >= {BELOW_HEALTHY_UPDATE_RATIO:g}) and the mean loss went from {first:.3g} in the first period "
        f"to {last:.3g} in the last.",
        "The optimizer moves the weights by a negligible fraction per step, so the model cannot learn in the time "
        f"given. The suggested LR moves them by about {ev.TARGET_UPDATE_RATIO:g} per step (scaled from the "
        "observed ratio); the LR range test measures one.",
        {"median_update_ratio": ratio, "first_period_loss": first, "last_loss": last, "relative_drop": drop,
         "learning_rate": peak, "median_applied_lr": median_lr, "suggested_lr": suggestion},
        ev.lr_override(run, suggestion) + ("--mode=lr_find",), steps=ev.steps_of(run.train))]


def lr_decayed_too_early(run: RunRecords) -> list[Finding]:
    """Plateau cuts early while the loss still fell, or many cuts (reacting to noise)."""
    cuts = [e.step for r in run.train for e in r.events if e.kind == "plateau_cut"]
    if not cuts:
        return []
    total = ev.num_train_steps(run)
    losses = ev.scalar_series(run.train, "loss")
    steps = [r.step for r in run.train]
    early_falling = []
    for cut in cuts:
        # The record holding the cut against the one before: did the loss still fall when the LR was cut?
        index = next((i for i, step in enumerate(steps) if step >= cut), 0)
        falling = index > 0 and losses[index] < (1 - EARLY_CUT_LOSS_DROP) * losses[index - 1]
        if falling and cut < total / 2:
            early_falling.append(cut)
    if len(cuts) < MANY_CUTS and not early_falling:
        return []
    patience = ev.as_number(ev.config_value(run, "plateau.patience", 0))
    patience = int(patience) if math.isfinite(patience) else 0
    return [Finding(
        "lr_decayed_too_early", "warning",
        f"The plateau scheduler cut the LR {len(cuts)} times (first at step {cuts[0]} of {total}); "
        f"{len(early_falling)} cuts came while the loss was still falling.",
        "Reduce-on-plateau cut the learning rate before training had stalled, so the rest of the run learns with a "
        "fraction of the LR. Too small a patience (or watching a noisy metric such as a per-window train loss) "
        "makes it react to noise.",
        {"cut_steps": cuts, "cuts_while_falling": early_falling,
         "final_lr_scale": run.train[-1].lr_scale, "patience": patience},
        (ev.override("plateau.patience", max(3, patience * 2 + 2)), ev.override("plateau.metric", "eval_loss"),
         ev.override("plateau.enabled", False) + " " + ev.override("schedule.name", "warmup_cosine")),
        steps=(cuts[0], cuts[-1]))]


def _schedule_factors(run: RunRecords) -> np.ndarray:
    """Per record, the schedule's largest factor in the period: the period's largest LR applied / (the record's
    configured peak x plateau scale)."""
    scale = np.nan_to_num(ev.series(run.train, lambda r: r.lr_scale), nan=1.0)
    peaks = ev.series(run.train, lambda r: r.peak_learning_rate)
    peaks = np.where(np.isfinite(peaks) & (peaks > 0), peaks, ev.configured_lr(run))
    return ev.scalar_series(run.train, "learning_rate", "max") / np.maximum(scale * peaks, 1e-30)


def lr_schedule_exhausted(run: RunRecords) -> list[Finding]:
    """After reaching its peak, the schedule kept the LR below 1% of it from before half of the run to the end."""
    if len(run.train) < 2:
        return []
    factors = _schedule_factors(run)
    if not np.isfinite(factors).any() or not np.nanmax(factors) >= SCHEDULE_PEAKED:
        return []
    low = len(factors)  # first record of the trailing stretch in which every step's LR stayed below 1%
    while low > 0 and factors[low - 1] < EXHAUSTED_LR_SHARE:
        low -= 1
    total = ev.num_train_steps(run)
    if low == len(factors) or run.train[low].first_step >= EXHAUSTED_RUN_SHARE * total:
        return []
    step = run.train[low].first_step
    schedule = ev.config_value(run, "schedule.name", "?")
    fixes = (ev.override("schedule.name", "warmup_cosine"),)
    epochs = total / run.train[-1].steps_per_epoch if run.train[-1].steps_per_epoch else math.nan
    if schedule == "exponential" and math.isfinite(epochs) and epochs > 0:
        fixes = (ev.override("schedule.decay_rate", ev.fmt(EXPONENTIAL_END_SHARE ** (1 / epochs))),) + fixes
    return [Finding(
        "lr_schedule_exhausted", "error",
        f"The {schedule} schedule kept the LR below {EXHAUSTED_LR_SHARE:.0%} of the configured peak from step "
        f"{step} to the end, {1 - step / total:.0%} of a {total}-step run.",
        "The schedule's length does not match the run: most of the run trains with an almost-zero learning rate. "
        "Size the decay to the whole run (cosine decays over the run by default) or lengthen it.",
        {"schedule": schedule, "peak_lr": float(ev.configured_lr(run)), "schedule_factor": float(factors[low]),
         "lr_at_step": run.train[low].scalar("learning_rate").max, "step": step, "num_train_steps": total},
        fixes, steps=(step, run.train[-1].step))]


def loss_plateau(run: RunRecords) -> list[Finding]:
    """A long flat stretch at the end of the run under a collapsed learning rate; recommends the LR used
    before the collapse."""
    losses, lrs = ev.scalar_series(run.train, "loss"), ev.scalar_series(run.train, "learning_rate")
    if len(losses) < PLATEAU_MIN_RECORDS + 1 or not np.isfinite(losses).all() or not np.isfinite(lrs).all():
        return []
    start = len(lrs)  # first record of the trailing stretch whose LR collapsed below the earlier peak
    while start > 1 and lrs[start - 1] < PLATEAU_LR_SHARE * np.max(lrs[:start - 1]):
        start -= 1
    stretch = losses[start:]
    if len(stretch) < max(PLATEAU_MIN_RECORDS, PLATEAU_RUN_SHARE * len(losses)):
        return []
    half = len(stretch) // 2
    change = abs(stretch[-half:].mean() - stretch[:half].mean()) / stretch.mean()
    if not change < PLATEAU_BAND:
        return []
    earlier_lr, stretch_lr = float(np.max(lrs[:start])), float(np.max(lrs[start:]))
    steps = (run.train[start].step, run.train[-1].step)
    return [Finding(
        "loss_plateau", "warning",
        f"The loss stayed at {stretch.mean():.3f} (change {change:.1%}) from step {steps[0]} to {steps[1]} "
        f"({len(stretch)} of {len(losses)} records) while the LR was at most {stretch_lr:.2g}, "
        f"{stretch_lr / earlier_lr:.1e} of the {earlier_lr:.2g} used before.",
        "Training stalled: the learning rate collapsed mid-run (a changed config on resume, an aggressive decay or "
        "plateau cut) and the loss stopped improving long before the end.",
        {"plateau_loss": float(stretch.mean()), "relative_change": change, "records": len(stretch),
         "lr_before": earlier_lr, "lr_during": stretch_lr},
        ev.lr_override(run, earlier_lr) + (ev.override("schedule.name", "warmup_cosine"),), steps=steps)]


SYMPTOMS_OF_A_BAD_LR = ("nonfinite", "nan_skips", "dead_units", "saturated_gates", "one_class_collapse",
                        "chance_level", "loss_plateau")
RULES = (
    Rule("lr_too_high", lr_too_high, FAMILY, "cause", SYMPTOMS_OF_A_BAD_LR),
    Rule("lr_too_low", lr_too_low, FAMILY, "cause", ("chance_level", "one_class_collapse")),
    Rule("lr_decayed_too_early", lr_decayed_too_early, FAMILY, "cause", ("loss_plateau",)),
    Rule("lr_schedule_exhausted", lr_schedule_exhausted, FAMILY, "cause",
         ("loss_plateau", "chance_level", "one_class_collapse")),
    Rule("loss_plateau", loss_plateau, FAMILY, "cause", ("chance_level",)),
)
