"""Evidence helpers shared by the rules: series over typed records, the run's config, the loss trajectory, LR and
update-ratio evidence, the non-finite state, and config overrides. Pure functions of a `RunRecords`."""

import math
from collections.abc import Callable, Sequence

import numpy as np

from visioncore_jax.diagnostics.schema import RunRecords, TrainRecord, format_number

# A healthy update moves the weights by about 1e-3 of their norm per step (the rule of thumb the update-ratio
# band of the report shows); an LR suggested from an observed ratio aims there. Adam-family updates scale
# linearly with the LR, and SGD's do at a fixed gradient, so LR x target / observed is the LR that hits it.
TARGET_UPDATE_RATIO = 1e-3
# Minimum evidence for "the run did not learn" claims (chance level, over-regularization): the weights must have
# travelled, summed over steps, by 10% of their norm (measured: configs/test.py's 6-step run travels 0.035 in one
# record, still at ln K), over at least 3 records after the first 20% of the run: a flat trend needs three points
# (two always fit a line; a 16-step, 2-record dual ResNet run at LR 1e-2 travels 0.15, still at ln K).
MIN_TRAVEL = 0.1
MIN_LATE_RECORDS = 3
LATE_SHARE = 0.2


def series(records: Sequence, value: Callable) -> np.ndarray:
    """`value(record)` for each record as float64 (NaN where it is not a number)."""
    return np.asarray([value(r) for r in records], np.float64)


def scalar_series(records: Sequence[TrainRecord], name: str, stat: str = "mean") -> np.ndarray:
    """One statistic (`mean`, `first`, `max`, ...) of scalar `name` per train record."""
    return series(records, lambda r: getattr(r.scalar(name), stat))


def module_series(records: Sequence[TrainRecord], field: str, path: str, name: str,
                  stat: str = "mean") -> np.ndarray:
    """One statistic of `field[path][name]` (e.g. modules/head/grad_norm) per train record."""
    return series(records, lambda r: getattr(getattr(r, field).get(path, {}).get(name) or _nan, stat))


class _Nan:
    """A Summary stand-in whose every statistic is NaN."""

    def __getattr__(self, name):
        return math.nan


_nan = _Nan()


def finite_stat(reduce: Callable, values) -> float:
    """`reduce` over the finite entries of `values`; NaN (and no NumPy warning) when there are none."""
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    return float(reduce(values)) if values.size else math.nan


def steps_of(records: Sequence) -> tuple[int, int] | None:
    """(first, last) step covered by `records` (train records start at their `first_step`)."""
    if not records:
        return None
    first = records[0].first_step if isinstance(records[0], TrainRecord) else records[0].step
    return first, records[-1].step


def config_value(run: RunRecords, key: str, default=None):
    """The value of dotted `key` in the run's config (config.json); `default` when it is missing."""
    node = run.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def override(key: str, value) -> str:
    """A config override as pasted on the command line."""
    return f"--config.{key}={value}"


def fmt(value: float) -> str:
    """A number as a config override value (3 significant digits, the schema's one number formatter)."""
    return format_number(float(value), 3)


def num_classes(run: RunRecords) -> int:
    """K from the train records, else from the eval records' class names; 0 when unknown."""
    if run.train and run.train[-1].num_classes > 0:
        return run.train[-1].num_classes
    return len(run.eval[-1].class_names) if run.eval else 0


def num_train_steps(run: RunRecords) -> int:
    """The planned length of the run in steps (the last step when not recorded)."""
    planned = run.train[-1].num_train_steps if run.train else 0
    return planned if planned > 0 else max(run.train[-1].step if run.train else 1, 1)


def configured_lr(run: RunRecords) -> float:
    """The configured peak LR: the last record's (current even after a resume with a changed config), else the
    config's."""
    recorded = run.train[-1].peak_learning_rate if run.train else math.nan
    return recorded if math.isfinite(recorded) else as_number(config_value(run, "optimizer.learning_rate"))


def as_number(value) -> float:
    """A config value as a float (NaN when it is none)."""
    try:
        return float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def lr_override(run: RunRecords, learning_rate: float) -> tuple[str, ...]:
    """The LR override for `learning_rate` (none when it is not a positive number)."""
    ok = math.isfinite(learning_rate) and learning_rate > 0
    return (override("optimizer.learning_rate", fmt(learning_rate)),) if ok else ()


def update_ratios(run: RunRecords) -> np.ndarray:
    """Per record, the median over updated modules of the mean update/parameter ratio."""
    medians = []
    for record in run.train:
        values = [s["update_ratio"].mean for s in record.modules.values() if "update_ratio" in s]
        values = [v for v in values if math.isfinite(v) and v > 0]
        medians.append(float(np.median(values)) if values else math.nan)
    return np.asarray(medians, np.float64)


def travel(run: RunRecords) -> float:
    """How far the weights moved, summed over steps, relative to their norm (0 when unknown)."""
    steps = series(run.train, lambda r: r.num_steps or 1)
    return float(np.nansum(update_ratios(run) * steps)) if run.train else 0.0


def late_records(run: RunRecords) -> tuple[TrainRecord, ...]:
    """The train records after the first LATE_SHARE of the run."""
    return tuple(r for r in run.train if r.step > LATE_SHARE * num_train_steps(run))


def had_chance_to_learn(run: RunRecords) -> bool:
    """Minimum evidence before claiming a run did not learn: the weights travelled MIN_TRAVEL and at least
    MIN_LATE_RECORDS records lie after the first LATE_SHARE of the run."""
    return travel(run) >= MIN_TRAVEL and len(late_records(run)) >= MIN_LATE_RECORDS


def step1_loss(run: RunRecords) -> float:
    """The loss of the run's first step (NaN when the records do not start at step 0)."""
    return run.train[0].scalar("loss").first if run.train and run.train[0].starts_run else math.nan


def label_entropy(run: RunRecords) -> float:
    """The entropy of the label distribution in nats (the loss of predicting the label shares): from the last
    eval's label histogram, else ln K; NaN when K is unknown."""
    if run.eval and run.eval[-1].label_histogram:
        shares = np.asarray(run.eval[-1].label_histogram, np.float64)
        shares = shares[np.isfinite(shares) & (shares > 0)]
        if shares.size and abs(shares.sum() - 1) < 1e-3:
            return float(-(shares * np.log(shares)).sum())
    k = num_classes(run)
    return math.log(k) if k >= 2 else math.nan


def loss_start(run: RunRecords) -> float:
    """The loss the run started from: the step-1 loss when recorded, else the first record's first value, else
    its mean."""
    for value in (step1_loss(run), *(getattr(run.train[0].scalar("loss"), s) for s in ("first", "mean"))):
        if math.isfinite(value):
            return value
    return math.nan


def nonfinite_state(run: RunRecords) -> dict:
    """Shared evidence of non-finite steps (JSON-able)."""
    last = run.train[-1]
    losses = scalar_series(run.train, "loss")
    first = next((r.first_nonfinite for r in run.train if r.first_nonfinite), None)
    return dict(skipped_steps=last.skipped_steps, skipped_share=last.skipped_steps / max(last.step, 1),
                nonfinite_entries=finite_stat(np.sum, scalar_series(run.train, "nonfinite_grads", "max")),
                nonfinite_loss_records=int(np.sum(~np.isfinite(losses))),
                rollbacks=sum(e.kind == "rollback" for r in run.train for e in r.events),
                final_loss=last.scalar("loss").last,
                last_period_skip_fraction=last.scalar("skipped").mean,
                longest_skip_run=last.longest_skip_run,
                final_eval_loss=run.eval[-1].loss if run.eval else None,
                first_nonfinite_step=first.step if first else None,
                first_nonfinite_module=first.module if first else None)


# nonfinite: more than this share of steps skipped, the loss still non-finite at the end, or a NaN rollback (10
# skips in a row) is a divergence, not a few bad batches (nan_skips: the NaN-injection fault skips 3 of 60 steps).
# A non-finite final train loss is no divergence when the skips are isolated: at most this share of the last
# period, or never more than ISOLATED_SKIP_RUN in a row (zoo: a NaN batch every 6th step, the last step among
# them: final loss NaN, 2 of the last 10 steps skipped - 0.2 in float32 is 0.2000000003 - eval loss finite).
NONFINITE_SKIP_SHARE = 0.2
ISOLATED_SKIP_RUN = 2


def diverged(state: dict) -> bool:
    """Non-finite values that persisted: many skips, a rollback, a non-finite eval loss at the end, or a
    non-finite final train loss that is not from isolated skipped batches."""
    isolated_skip = (state["last_period_skip_fraction"] <= NONFINITE_SKIP_SHARE + 1e-6
                     or 0 < state["longest_skip_run"] <= ISOLATED_SKIP_RUN)
    return (state["skipped_share"] > NONFINITE_SKIP_SHARE or state["rollbacks"] > 0
            or (not math.isfinite(state["final_loss"]) and not isolated_skip)
            or (state["final_eval_loss"] is not None and not math.isfinite(state["final_eval_loss"])))


def lr_for_ratio(run: RunRecords, observed_ratio: float, applied_lr: float = math.nan) -> float:
    """The configured LR that would move the weights by TARGET_UPDATE_RATIO per step at the schedule's peak, from
    the ratio observed while `applied_lr` was applied (the configured peak when not given); NaN when unknown."""
    lr = configured_lr(run)
    if math.isfinite(applied_lr) and applied_lr > 0:
        observed_ratio = observed_ratio * lr / applied_lr
    if not (math.isfinite(lr) and lr > 0 and math.isfinite(observed_ratio) and observed_ratio > 0):
        return math.nan
    return lr * TARGET_UPDATE_RATIO / observed_ratio
