"""Pure rules over a run's records (schema in `schema.py`) → findings with evidence and config overrides.

One function per catalog id (docs/diagnostics.md). Thresholds are named constants, chosen so that the healthy
runs of the test suite (default dual-pathway ResNet, single-pathway ResNet, ConvGRU, U-Net) produce no warning;
each says why it sits where it does. Rules never raise on missing or non-finite fields: they just do not fire.
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from visioncore_jax.diagnostics.findings import Finding


@dataclasses.dataclass(frozen=True)
class RunRecords:
    """A run's train and eval records (in step order) and its config as a nested dict (config.json)."""

    train: list[dict]
    eval: list[dict]
    config: dict


# ---- Record access helpers. ----

def _get(mapping, *keys, default=None):
    """`mapping[k1][k2]...`, or `default` when a key is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def _float(value) -> float:
    """`value` as a float, NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _series(records: list[dict], *keys) -> np.ndarray:
    """One value per record (NaN where missing)."""
    return np.asarray([_float(_get(r, *keys)) for r in records], np.float64)


def _finite_stat(reduce: Callable, values) -> float:
    """`reduce` over the finite entries of `values`; NaN (and no NumPy warning) when there are none."""
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    return float(reduce(values)) if values.size else math.nan


def _step(record: dict) -> int:
    """The record's step (0 when missing)."""
    step = _float(record.get("step"))
    return int(step) if math.isfinite(step) else 0


def _config(run: RunRecords, *keys, default=None):
    """A value of the run's config (config.json), `default` when the run has none."""
    return _get(run.config, *keys, default=default)


def _num_classes(run: RunRecords) -> int:
    """K from the train records, else from the eval records' class names; 0 when unknown."""
    k = _float(run.train[-1].get("num_classes")) if run.train else math.nan
    if math.isfinite(k) and k > 0:
        return int(k)
    return len(run.eval[-1].get("class_names") or []) if run.eval else 0


def _num_train_steps(run: RunRecords) -> int:
    """The planned length of the run in steps (the last step when not recorded)."""
    planned = _float(run.train[-1].get("num_train_steps")) if run.train else math.nan
    return int(planned) if math.isfinite(planned) and planned > 0 else max(_step(run.train[-1]), 1)


def _steps(records: list[dict]) -> tuple[int, int] | None:
    """(first, last) step covered by `records`."""
    if not records:
        return None
    first = _float(records[0].get("first_step"))
    return (int(first) if math.isfinite(first) else _step(records[0]), _step(records[-1]))


def _fmt(value: float) -> str:
    """A number as a config override value (3 significant digits)."""
    return f"{value:.3g}"


def _lr(run: RunRecords) -> float:
    """The configured peak LR: the records' (current even after a resume with a changed config), else the
    config's."""
    recorded = _float(run.train[-1].get("peak_learning_rate")) if run.train else math.nan
    return recorded if math.isfinite(recorded) else _float(_config(run, "optimizer", "learning_rate"))


def _override(key: str, value) -> str:
    """A config override as pasted on the command line."""
    return f"--config.{key}={value}"


def _lr_override(run: RunRecords, factor: float) -> tuple[str, ...]:
    """The LR override `factor` x the configured LR (none when the LR is unknown)."""
    lr = _lr(run)
    return (_override("optimizer.learning_rate", _fmt(lr * factor)),) if math.isfinite(lr) and lr > 0 else ()


# ---- Thresholds. ----

# nonfinite: more than this share of steps skipped, the loss still non-finite at the end, or a NaN rollback (10
# skips in a row) is a divergence, not a few bad batches (nan_skips: the NaN-injection fault skips 3 of 60 steps).
NONFINITE_SKIP_SHARE = 0.2
# lr_too_high: Adam/SGD updates beyond ~10% of the weights per step (largest per-record median) destroy what was
# learned (healthy runs: 1e-3..2e-2 early, less later); the loss must also fail to fall (last train loss above
# this share of the first).
HIGH_UPDATE_RATIO = 0.1
HIGH_LR_LOSS_SHARE = 0.8
# lr_too_low: updates below 1e-5 of the weights (the largest per-record median: the peak of the schedule) move
# nothing within a run (healthy: >= 1e-4); the loss changes by less than 5% (batch noise of small runs alone is
# ~2%), and the median LR is still >= 10% of the configured peak (else it is a schedule problem).
LOW_UPDATE_RATIO = 1e-5
LOW_LR_LOSS_CHANGE = 0.05
LOW_LR_NOT_DECAYED = 0.1
# lr_decayed_too_early: cuts in the first half of the run while the loss still fell this much per record, or
# this many cuts in all (a plateau scheduler reacting to noise).
EARLY_CUT_LOSS_DROP = 0.02
MANY_CUTS = 3
# lr_schedule_exhausted: the schedule's LR below 1% of its peak before half of the run (an error: at least half
# of the run is wasted; cosine and step schedules sized to the run get there only near the end).
EXHAUSTED_LR_SHARE = 0.01
EXHAUSTED_RUN_SHARE = 0.5
# The exponential decay rate recommended instead: the LR ends the run at 5% of its peak.
EXPONENTIAL_END_SHARE = 0.05
# chance_level: on every record after the first 20% of the run, loss between 2% below and 15% above ln K (noisy
# fits of random labels sit above it), and the last eval's balanced accuracy below 1.3 / K (a slow but learning
# model leaves the band within a few hundred steps; a model recovering from a bad init comes down from far above).
CHANCE_AFTER_SHARE = 0.2
CHANCE_LOSS_BELOW, CHANCE_LOSS_ABOVE = 0.02, 0.15
CHANCE_ACCURACY_FACTOR = 1.3
# one_class_collapse: the same class gets > 80% of eval predictions in each of the last 2 evals while no class has
# half of the labels (healthy but barely trained 10-class runs: <= 55% at the end, single evals up to 70% mid-run).
COLLAPSE_PREDICTED_SHARE = 0.8
COLLAPSE_EVALS = 2
COLLAPSE_LABEL_SHARE = 0.5
# Labels this skewed (largest / smallest class share) make class weighting worth recommending.
COLLAPSE_IMBALANCE = 2.0
# vanishing / exploding: per-module gradient norms (forward order) differing by more than 1e3 between the
# input and output ends; vanishing also needs the early norms tiny (healthy: 1e-2..1), exploding a global norm
# above 1e3 (healthy: 0.5..5) at the first step, or reached by growing 1e3x in a run that stayed finite (a
# diverged run is `nonfinite`).
GRADIENT_RATIO = 1e3
VANISHING_NORM = 1e-4
EXPLODING_NORM = 1e3
# dead_units: a block whose outputs are zero for > 90% of entries (healthy ReLU blocks: 0.3-0.6).
DEAD_FRACTION = 0.9
ALL_DEAD_FRACTION = 0.99  # a block this dead passes no gradient at all
# saturated_gates: more than half of a gate's entries beyond 0.01 / 0.99 (healthy: < 5%).
SATURATED_FRACTION = 0.5
# pathway_imbalance: one pathway gets < 1% of the squared gradient norm (healthy dual-pathway runs: 30-70%).
PATHWAY_SHARE = 0.01
# clipping_dominates: clipping on > 90% of steps with the pre-clip norm > 10x the threshold.
CLIP_FRACTION = 0.9
CLIP_NORM_FACTOR = 10.0
# over_regularization: training accuracy below 50% and rising less than 5 points over the second half of the run
# (a slowly learning healthy model still climbs), while some regularizer is heavy: weight decay >= 0.05 (5e-4 is
# the usual SGD value, 0.05 the top of the usual AdamW range), or above the default with an L2 penalty at least
# the data loss (healthy runs: ~1%; huge weights under the default decay are an init problem, not this);
# dropout >= 0.5; label smoothing >= 0.3 (0.1 is usual).
OVER_REG_TRAIN_ACCURACY = 0.5
OVER_REG_MIN_RISE = 0.05
HEAVY_WEIGHT_DECAY = 0.05
HEAVY_REG_LOSS_SHARE = 1.0
HEAVY_DROPOUT = 0.5
HEAVY_LABEL_SMOOTHING = 0.3
# The values recommended instead (configs/default.py's).
REGULARIZATION_DEFAULTS = {"optimizer.weight_decay": 1e-4, "model.dropout": 0.1, "training.label_smoothing": 0.0}
# overfitting: the last eval loss 20% above its minimum, the minimum at least 3 evals back, train loss still
# falling, and train accuracy 15 points above eval accuracy.
OVERFIT_LOSS_RISE = 1.2
OVERFIT_EVALS_SINCE_BEST = 3
OVERFIT_GAP = 0.15
# loss_plateau: the last >= 3 records (>= 30% of them) have an LR < 1e-3 of the largest LR before them and the
# mean loss of the stretch's second half is within 5% of its first half's (halves average out batch noise): a
# stall from a collapsed LR. A cosine schedule spends only its last ~2% of records below 1e-3 of its peak, so a
# healthy end-of-run flattening does not qualify.
PLATEAU_BAND = 0.05
PLATEAU_MIN_RECORDS = 3
PLATEAU_RUN_SHARE = 0.3
PLATEAU_LR_SHARE = 1e-3


# ---- Rules. ----

def _nonfinite_state(run: RunRecords) -> dict:
    """Shared evidence of non-finite steps."""
    last = run.train[-1]
    skipped = int(np.nan_to_num(_float(last.get("skipped_steps")), nan=0.0))
    losses = [_float(_get(r, "scalars", "loss", "mean")) for r in run.train]
    eval_losses = [_float(r.get("loss")) for r in run.eval]
    first = next((r["first_nonfinite"] for r in run.train if isinstance(r.get("first_nonfinite"), dict)), {})
    return dict(skipped_steps=skipped, skipped_share=skipped / max(_step(last), 1),
                nonfinite_entries=_finite_stat(np.sum, _series(run.train, "scalars", "nonfinite_grads", "max")),
                nonfinite_loss_records=sum(not math.isfinite(x) for x in losses),
                rollbacks=sum(e.get("kind") == "rollback" for r in run.train for e in _events(r)),
                final_loss=_float(_get(last, "scalars", "loss", "last")),
                last_period_skip_fraction=_float(_get(last, "scalars", "skipped", "mean")),
                final_eval_loss=eval_losses[-1] if eval_losses else None,
                first_nonfinite_step=first.get("step"), first_nonfinite_module=first.get("module"))


def _events(record: dict) -> list[dict]:
    """The record's events (plateau cuts, rollbacks)."""
    return [e for e in record.get("events") or [] if isinstance(e, dict)]


def _diverged(state: dict) -> bool:
    """Non-finite values that persisted: many skips, a rollback, a non-finite eval loss at the end, or a
    non-finite final train loss that is not one isolated skipped batch."""
    isolated_skip = state["last_period_skip_fraction"] <= NONFINITE_SKIP_SHARE
    return (state["skipped_share"] > NONFINITE_SKIP_SHARE or state["rollbacks"] > 0
            or (not math.isfinite(state["final_loss"]) and not isolated_skip)
            or (state["final_eval_loss"] is not None and not math.isfinite(state["final_eval_loss"])))


def nonfinite(run: RunRecords) -> list[Finding]:
    """Loss or gradients became NaN/Inf and stayed so (or most steps were skipped, or the run rolled back)."""
    if not run.train:
        return []
    state = _nonfinite_state(run)
    if not _diverged(state):
        return []
    # Rolled back to a checkpoint (with a smaller LR) and finished finite: the guard worked, the LR is still too high.
    recovered = not _diverged({**state, "rollbacks": 0})
    recommendations = list(_lr_override(run, 0.1))
    if not _float(run.train[-1].get("grad_clip_norm")) > 0:
        recommendations.append(_override("optimizer.grad_clip_norm", 1.0))
    recommendations.append(_override("schedule.warmup_epochs", 1.0))
    where = (f", first at step {state['first_nonfinite_step']} in {state['first_nonfinite_module']}"
             if state["first_nonfinite_step"] is not None else "")
    return [Finding(
        "nonfinite", "warning" if recovered else "error",
        f"Training diverged: {state['skipped_steps']} steps ({state['skipped_share']:.0%}) skipped for non-finite "
        f"gradients{where}" + (f"; {state['rollbacks']} rollbacks" if state["rollbacks"] else "")
        + f"; final loss {state['final_loss']:.4g}.",
        "The loss or gradients overflowed to NaN/Inf and kept doing so: the NaN-skip guard threw those steps away "
        "(or rolled back to a checkpoint with a smaller LR), and the model stopped learning. This is almost always "
        "a learning rate too large for the model (often without gradient clipping or warmup), or a numerically "
        "unsafe operation in the model or loss.",
        state, tuple(recommendations), steps=_steps(run.train), module=state["first_nonfinite_module"])]


def nan_skips(run: RunRecords) -> list[Finding]:
    """Some steps skipped by the NaN-skip guard (or non-finite gradients seen), the run recovered."""
    if not run.train:
        return []
    state = _nonfinite_state(run)
    if (state["skipped_steps"] == 0 and not state["nonfinite_entries"] > 0) or _diverged(state):
        return []
    skipped_in = [_step(r) for r in run.train if _float(_get(r, "scalars", "skipped", "max")) > 0]
    return [Finding(
        "nan_skips", "warning",
        f"{state['skipped_steps']} steps were skipped for non-finite gradients (first at step "
        f"{state['first_nonfinite_step']}, in {state['first_nonfinite_module']}); training recovered.",
        "A few batches produced NaN/Inf gradients; the guard kept the parameters, so the run continued. Isolated "
        "skips usually come from bad inputs (NaN pixels, corrupt images) or rare overflow; run the preflight "
        "checks on the data and consider gradient clipping.",
        {**state, "records_with_skips": skipped_in},
        ("--mode=preflight", _override("optimizer.grad_clip_norm", 1.0)), steps=_steps(run.train),
        module=state["first_nonfinite_module"])]


def _module_stat(record: dict, stat: str) -> dict[str, float]:
    """`{module: mean of stat}` of one record."""
    return {m: _float(_get(s, stat, "mean")) for m, s in (record.get("modules") or {}).items()}


def _update_ratios(run: RunRecords) -> np.ndarray:
    """Per record, the median update/parameter ratio over the modules that were updated."""
    medians = []
    for record in run.train:
        values = [v for v in _module_stat(record, "update_ratio").values() if math.isfinite(v) and v > 0]
        medians.append(float(np.median(values)) if values else math.nan)
    return np.asarray(medians)


def _loss_change(run: RunRecords) -> tuple[float, float]:
    """(first, last) mean train loss."""
    losses = _series(run.train, "scalars", "loss", "mean")
    return (losses[0], losses[-1]) if len(losses) else (math.nan, math.nan)


def lr_too_high(run: RunRecords) -> list[Finding]:
    """Huge update/parameter ratios and a loss that does not fall (or climbs)."""
    if len(run.train) < 2:
        return []
    ratio = _finite_stat(np.max, _update_ratios(run))
    first, last = _loss_change(run)
    if not (ratio > HIGH_UPDATE_RATIO and last > HIGH_LR_LOSS_SHARE * first):
        return []
    return [Finding(
        "lr_too_high", "error",
        f"Updates reach {ratio:.2g} of the weights per step (median over modules) and the loss went from "
        f"{first:.3f} to {last:.3f}.",
        "Each step changes the weights by a large fraction of their size, so the optimizer overshoots and the loss "
        "oscillates or climbs instead of falling. Healthy runs update weights by about 1e-3 of their norm per step.",
        {"median_update_ratio": ratio, "first_loss": first, "last_loss": last, "learning_rate": _lr(run)},
        _lr_override(run, 0.1) + ("--mode=lr_find", _override("optimizer.grad_clip_norm", 1.0)),
        steps=_steps(run.train))]


def lr_too_low(run: RunRecords) -> list[Finding]:
    """Loss barely moves and updates are vanishingly small relative to the weights."""
    if len(run.train) < 2:
        return []
    ratio = _finite_stat(np.max, _update_ratios(run))
    first, last = _loss_change(run)
    change = abs(first - last) / max(abs(first), 1e-12)
    median_lr = _finite_stat(np.median, _series(run.train, "scalars", "learning_rate", "mean"))
    # A schedule that decayed to nothing is lr_schedule_exhausted, not a too-small configured LR.
    not_decayed = median_lr >= LOW_LR_NOT_DECAYED * _lr(run)
    if not (ratio < LOW_UPDATE_RATIO and change < LOW_LR_LOSS_CHANGE and not_decayed):
        return []
    return [Finding(
        "lr_too_low", "error",
        f"Updates are {ratio:.2g} of the weights per step and the loss changed by {change:.1%} over the run.",
        "The optimizer moves the weights by a negligible fraction per step, so the model cannot learn in the time "
        "given. Raise the learning rate (the LR range test suggests one).",
        {"median_update_ratio": ratio, "first_loss": first, "last_loss": last, "relative_change": change,
         "learning_rate": _lr(run), "median_scheduled_lr": median_lr},
        _lr_override(run, 100.0) + ("--mode=lr_find",), steps=_steps(run.train))]


def lr_decayed_too_early(run: RunRecords) -> list[Finding]:
    """Plateau cuts early while the loss still fell, or many cuts (reacting to noise)."""
    cuts = [_step(e) for r in run.train for e in _events(r) if e.get("kind") == "plateau_cut"]
    if not cuts:
        return []
    num_train_steps = _num_train_steps(run)
    losses = _series(run.train, "scalars", "loss", "mean")
    steps = [_step(r) for r in run.train]
    early_falling = []
    for cut in cuts:
        # The record holding the cut against the one before: did the loss still fall when the LR was cut?
        index = next((i for i, step in enumerate(steps) if step >= cut), 0)
        falling = index > 0 and losses[index] < (1 - EARLY_CUT_LOSS_DROP) * losses[index - 1]
        if falling and cut < num_train_steps / 2:
            early_falling.append(cut)
    if len(cuts) < MANY_CUTS and not early_falling:
        return []
    patience = _float(_config(run, "plateau", "patience", default=0))
    patience = int(patience) if math.isfinite(patience) else 0
    return [Finding(
        "lr_decayed_too_early", "warning",
        f"The plateau scheduler cut the LR {len(cuts)} times (first at step {cuts[0]} of {num_train_steps}); "
        f"{len(early_falling)} cuts came while the loss was still falling.",
        "Reduce-on-plateau cut the learning rate before training had stalled, so the rest of the run learns with a "
        "fraction of the LR. Too small a patience (or watching a noisy metric such as a per-window train loss) "
        "makes it react to noise.",
        {"cut_steps": cuts, "cuts_while_falling": early_falling,
         "final_lr_scale": _float(run.train[-1].get("lr_scale")), "patience": patience},
        (_override("plateau.patience", max(3, patience * 2 + 2)), _override("plateau.metric", "eval_loss"),
         _override("plateau.enabled", False) + " " + _override("schedule.name", "warmup_cosine")),
        steps=(cuts[0], cuts[-1]))]


def lr_schedule_exhausted(run: RunRecords) -> list[Finding]:
    """The scheduled LR fell below 1% of its peak before half of the run."""
    if len(run.train) < 2:
        return []
    # The schedule's own LR: the plateau / rollback multiplier is taken out (lr_decayed_too_early covers it).
    scale = np.nan_to_num(_series(run.train, "lr_scale"), nan=1.0)
    lrs = _series(run.train, "scalars", "learning_rate", "mean") / np.maximum(scale, 1e-30)
    if not np.isfinite(lrs).any():
        return []
    peak_index = int(np.argmax(np.where(np.isfinite(lrs), lrs, -np.inf)))
    peak = lrs[peak_index]
    num_train_steps = _num_train_steps(run)
    low = [i for i in range(peak_index, len(lrs)) if lrs[i] < EXHAUSTED_LR_SHARE * peak]
    if not low or _step(run.train[low[0]]) >= EXHAUSTED_RUN_SHARE * num_train_steps:
        return []
    step = _step(run.train[low[0]])
    schedule = _config(run, "schedule", "name", default="?")
    fixes = (_override("schedule.name", "warmup_cosine"),)
    epochs = num_train_steps / _float(run.train[-1].get("steps_per_epoch"))
    if schedule == "exponential" and math.isfinite(epochs) and epochs > 0:
        fixes += (_override("schedule.decay_rate", _fmt(EXPONENTIAL_END_SHARE ** (1 / epochs))),)
    return [Finding(
        "lr_schedule_exhausted", "error",
        f"The {schedule} schedule's LR fell below {EXHAUSTED_LR_SHARE:.0%} of its peak by step {step}, "
        f"{step / num_train_steps:.0%} into a {num_train_steps}-step run.",
        "The schedule's length does not match the run: most of the run trains with an almost-zero learning rate. "
        "Size the decay to the whole run (cosine decays over the run by default) or lengthen it.",
        {"schedule": schedule, "peak_lr": float(peak), "lr_at_step": float(lrs[low[0]]), "step": step,
         "num_train_steps": num_train_steps},
        fixes, steps=(step, _step(run.train[-1])))]


def _eval_accuracy(record: dict) -> float:
    """Balanced accuracy when recorded (a constant predictor scores exactly 1/K), else accuracy."""
    balanced = _float(record.get("balanced_accuracy"))
    return balanced if math.isfinite(balanced) else _float(record.get("accuracy"))


def chance_level(run: RunRecords) -> list[Finding]:
    """Loss ≈ ln K on every record after the warm-up phase, and (balanced) accuracy ≈ 1/K."""
    k = _num_classes(run)
    if k < 2 or not run.train:
        return []
    late = [r for r in run.train if _step(r) > CHANCE_AFTER_SHARE * _num_train_steps(run)]
    if not late:
        return []
    losses = _series(late, "scalars", "loss", "mean")
    accuracy = _eval_accuracy(run.eval[-1]) if run.eval else _float(_get(late[-1], "scalars", "accuracy", "mean"))
    chance_loss = math.log(k)
    near_chance = ((1 - CHANCE_LOSS_BELOW) * chance_loss < losses) & (losses < (1 + CHANCE_LOSS_ABOVE) * chance_loss)
    if not (near_chance.all() and accuracy < CHANCE_ACCURACY_FACTOR / k):
        return []
    return [Finding(
        "chance_level", "error",
        f"Loss {losses[-1]:.3f} ≈ ln {k} = {chance_loss:.3f} on all {len(late)} records after the first "
        f"{CHANCE_AFTER_SHARE:.0%} of the run, and accuracy {accuracy:.3f} ≈ 1/{k}: the model predicts no better "
        "than chance.",
        "The model outputs (nearly) uniform probabilities: nothing about the inputs helps it predict the labels. "
        "Most often the labels do not match the images (shuffled or misaligned labels, wrong label key), the "
        "inputs carry no signal (constant or badly normalized images), or the learning rate is far off.",
        {"loss": float(losses[-1]), "loss_range": [float(losses.min()), float(losses.max())], "ln_k": chance_loss,
         "accuracy": accuracy, "chance_accuracy": 1 / k},
        ("--mode=preflight", "--mode=lr_find"), steps=_steps(late))]


def one_class_collapse(run: RunRecords) -> list[Finding]:
    """Eval predictions concentrated on one class (in each of the last evals) while the labels are spread."""
    recent = run.eval[-COLLAPSE_EVALS:]
    shares = []
    for record in recent:
        predicted = np.nan_to_num(np.asarray(record.get("predicted_histogram") or [], np.float64), nan=0.0)
        labels = np.nan_to_num(np.asarray(record.get("label_histogram") or [], np.float64), nan=1.0)
        if not predicted.size or predicted.shape != labels.shape:
            return []
        shares.append((int(np.argmax(predicted)), float(predicted.max()), labels))
    if not shares:
        return []
    top, _, labels = shares[-1]
    predicted_share = min(share for _, share, _ in shares)
    if not ({c for c, _, _ in shares} == {top} and predicted_share > COLLAPSE_PREDICTED_SHARE
            and labels.max() < COLLAPSE_LABEL_SHARE):
        return []
    last = run.eval[-1]
    names = last.get("class_names") or []
    name = str(names[top]) if top < len(names) else str(top)
    return [Finding(
        "one_class_collapse", "warning",
        f"{predicted_share:.0%} or more of eval predictions are class {name!r} in the last {len(shares)} evals; it "
        f"holds {labels[top]:.0%} of the labels.",
        "The model predicts (almost) one class for everything. Typical causes: a huge output bias or logit scale at "
        "initialization, extreme class imbalance without weighting, or a learning rate that drove the head into "
        "one corner.",
        {"class": name, "predicted_share": predicted_share, "label_share": float(labels[top]),
         "largest_label_share": float(labels.max()), "evals": len(shares)},
        # Class weights only help where the labels are skewed (on balanced labels they are all 1).
        ("--mode=preflight",) + _lr_override(run, 1 / 3)
        + ((_override("training.class_weighting", "cube_root_inverse"),)
           if labels.max() > COLLAPSE_IMBALANCE * labels.min() else ()),
        steps=(_step(run.eval[-len(shares)]), _step(last)))]


def _gradient_profile(run: RunRecords) -> tuple[list[str], np.ndarray]:
    """Modules in forward order and their median gradient norm over the records."""
    records = run.train[1:] or run.train
    modules = list((records[-1].get("modules") or {}).keys()) if records else []
    norms = np.asarray([_finite_stat(np.median, _series(records, "modules", m, "grad_norm", "mean"))
                        for m in modules], np.float64)
    return modules, norms


def vanishing_gradients(run: RunRecords) -> list[Finding]:
    """Early-layer gradients orders of magnitude below the late layers', and tiny."""
    modules, norms = _gradient_profile(run)
    if len(modules) < 3 or not np.isfinite(norms).all():
        return []
    early, late = norms[0], np.max(norms[len(norms) // 2:])
    # A zero gradient is no vanishing gradient but a cut graph or dead units (params_not_updating, dead_units).
    if not (0 < early < VANISHING_NORM and late > GRADIENT_RATIO * early):
        return []
    return [Finding(
        "vanishing_gradients", "error",
        f"Gradient norm at the input end ({modules[0]}: {early:.2g}) is {late / early:.2g}x smaller "
        f"than near the output ({late:.2g}).",
        "Gradients shrink layer by layer on their way back, so the early layers do not learn. Saturating "
        "activations (sigmoid/tanh) in a deep stack without normalization or residual connections are the classic "
        "cause.",
        {"early_module": modules[0], "early_grad_norm": early, "late_max_grad_norm": late,
         "grad_norms": dict(zip(modules, norms.tolist(), strict=True))},
        (_override("model.name", "dual_resnet"), _override("optimizer.name", "adamw")), steps=_steps(run.train),
        module=modules[0])]


def exploding_gradients(run: RunRecords) -> list[Finding]:
    """A huge gradient norm at the first step, or one that grew by orders of magnitude in a run that stayed
    finite."""
    if not run.train:
        return []
    first = run.train[0]
    first_norm = _float(_get(first, "scalars", "grad_norm", "first"))
    norms = [_float(_get(s, "grad_norm", "first")) for s in (first.get("modules") or {}).values()]
    finite = [n for n in norms if math.isfinite(n) and n > 0]
    spread = max(finite) / min(finite) if finite else 1.0
    at_start = first_norm > EXPLODING_NORM or (not math.isfinite(first_norm) and spread > GRADIENT_RATIO)
    peak = _finite_stat(np.max, _series(run.train, "scalars", "grad_norm", "mean"))
    grew = (peak > EXPLODING_NORM and peak > GRADIENT_RATIO * first_norm
            and not _diverged(_nonfinite_state(run)))
    if not (at_start or grew):
        return []
    return [Finding(
        "exploding_gradients", "error",
        f"The global gradient norm is {first_norm:.3g} at the first step and peaks at {peak:.3g} (record mean); "
        f"module norms at the first step span {spread:.2g}x.",
        "Gradients are enormous: activations grow layer by layer (weights initialized too large, no "
        "normalization), so every update is a jump. Use a variance-preserving initialization, normalization layers, "
        "and gradient clipping.",
        {"first_grad_norm": first_norm, "peak_grad_norm": peak, "module_norm_spread": spread},
        (_override("optimizer.grad_clip_norm", 1.0),) + _lr_override(run, 0.1),
        steps=_steps(run.train[:1]) if at_start else _steps(run.train))]


def dead_units(run: RunRecords) -> list[Finding]:
    """Blocks whose ReLU outputs are zero for most entries over the last record period."""
    if not run.train:
        return []
    activations = run.train[-1].get("activations") or {}
    dead = {b: _float(_get(s, "zero_fraction", "mean")) for b, s in activations.items()}
    dead = {b: v for b, v in dead.items() if v > DEAD_FRACTION}
    if not dead:
        return []
    worst = max(dead, key=dead.get)
    # Dead from the first record on (e.g. by initialization): nothing else can be learned there, an error. Units
    # that died later are usually the symptom of something else (a divergence): a warning.
    dead_from_start = _float(_get(run.train[0], "activations", worst, "zero_fraction", "mean")) > ALL_DEAD_FRACTION
    return [Finding(
        "dead_units", "error" if dead_from_start else "warning",
        f"{len(dead)} of {len(activations)} blocks output zero for more than {DEAD_FRACTION:.0%} of their entries "
        f"(worst: {worst}, {dead[worst]:.1%}).",
        "Most ReLU units in these blocks never activate, so they pass no gradient and learn nothing. Large negative "
        "biases, a too-high learning rate that pushed pre-activations negative, or a bad initialization cause it.",
        {"zero_fraction": dead}, _lr_override(run, 1 / 3) + ("--mode=preflight",),
        steps=_steps(run.train[-1:]), module=worst)]


def saturated_gates(run: RunRecords) -> list[Finding]:
    """Sigmoid/tanh gates pinned near 0/1."""
    if not run.train:
        return []
    gates = run.train[-1].get("gates") or {}
    saturated = {g: _float(_get(s, "saturated_fraction", "mean")) for g, s in gates.items()}
    saturated = {g: v for g, v in saturated.items() if v > SATURATED_FRACTION}
    if not saturated:
        return []
    worst = max(saturated, key=saturated.get)
    return [Finding(
        "saturated_gates", "warning",
        f"{len(saturated)} of {len(gates)} gates are saturated on more than {SATURATED_FRACTION:.0%} of their "
        f"entries (worst: {worst}, {saturated[worst]:.1%}).",
        "Gates stuck at 0 or 1 have zero gradient: the recurrent or attention mechanism stops adapting. Large gate "
        "weights at initialization or unnormalized gate inputs are the usual cause; normalize the recurrent "
        "projection and clamp the logits.",
        {"saturated_fraction": saturated},
        # The ConvGRU's normalized recurrent projection where the model has one (config model.gru).
        ((_override("model.gru.recurrent_norm", True),) if _config(run, "model", "gru") else ())
        + _lr_override(run, 1 / 3) + (_override("optimizer.grad_clip_norm", 1.0),),
        steps=_steps(run.train[-1:]), module=worst)]


def params_not_updating(run: RunRecords) -> list[Finding]:
    """Modules with zero gradient (or zero update) on every step of the run while others learn."""
    if not run.train:
        return []
    modules = list(run.train[-1].get("modules") or {})
    grad_max = {m: _finite_stat(np.max, _series(run.train, "modules", m, "grad_norm", "max")) for m in modules}
    update_max = {m: _finite_stat(np.max, _series(run.train, "modules", m, "update_norm", "max")) for m in modules}
    frozen = [m for m in modules if grad_max[m] == 0 or update_max[m] == 0]
    if not frozen or len(frozen) == len(modules):
        return []
    return [Finding(
        "params_not_updating", "warning",
        f"{len(frozen)} of {len(modules)} modules never received a non-zero gradient or update: "
        f"{', '.join(frozen[:5])}{' …' if len(frozen) > 5 else ''}.",
        "These parameters are cut off from the loss (a stop_gradient, a branch whose output is not used, a frozen "
        "module) so they keep their initial values. If that is not intended, the computation graph is broken.",
        {"modules": frozen, "grad_norm_max": {m: grad_max[m] for m in frozen}},
        ("--mode=preflight",), steps=_steps(run.train), module=frozen[0])]


def pathway_imbalance(run: RunRecords) -> list[Finding]:
    """One pathway's share of the gradient is negligible next to the other's."""
    records = run.train[1:] or run.train
    pathways = list((records[-1].get("pathways") or {}) if records else {})
    if len(pathways) < 2:
        return []
    shares = {p: _finite_stat(np.mean, _series(records, "pathways", p, "grad_share", "mean")) for p in pathways}
    weak = min(shares, key=shares.get)
    if not shares[weak] < PATHWAY_SHARE:
        return []
    return [Finding(
        "pathway_imbalance", "warning",
        f"The {weak} pathway gets {shares[weak]:.2%} of the gradient (squared norm share).",
        f"The {weak} pathway barely influences the loss, so it hardly learns: its inputs may be scaled wrongly "
        "(e.g. not normalized), or the other pathway dominates the fused features.",
        {"grad_share": shares},
        (_override("model.aux_loss_weight", 0.3), "--mode=preflight"), steps=_steps(records), module=weak)]


def clipping_dominates(run: RunRecords) -> list[Finding]:
    """Clipping active on nearly every step with the norm far above the threshold."""
    if not run.train:
        return []
    clip = _float(run.train[-1].get("grad_clip_norm"))
    if not clip > 0:
        return []
    fraction = _finite_stat(np.mean, _series(run.train, "scalars", "clipped", "mean"))
    norm = _finite_stat(np.median, _series(run.train, "scalars", "grad_norm", "mean"))
    if not (fraction > CLIP_FRACTION and norm > CLIP_NORM_FACTOR * clip):
        return []
    return [Finding(
        "clipping_dominates", "warning",
        f"Gradient clipping was active on {fraction:.0%} of steps; the median gradient norm {norm:.3g} is "
        f"{norm / clip:.0f}x the threshold {clip:g}.",
        "Every update is rescaled to the clip norm, so the effective learning rate is a small fraction of the "
        "configured one and the update direction ignores the gradient's size.",
        {"clip_fraction": fraction, "median_grad_norm": norm, "grad_clip_norm": clip},
        (_override("optimizer.grad_clip_norm", _fmt(max(1.0, norm))),), steps=_steps(run.train))]


def _heavy_regularizers(run: RunRecords) -> dict[str, float]:
    """The configured regularizers above their thresholds (config key → value); a weight decay above the default
    also counts when its L2 penalty outweighs the data loss."""
    last = run.train[-1]
    reg_loss, data_loss = (_float(_get(last, "scalars", name, "mean")) for name in ("reg_loss", "data_loss"))
    reg_share = reg_loss / data_loss if data_loss > 0 else math.nan
    values = {key: _float(_config(run, *key.split("."), default=0.0)) for key in REGULARIZATION_DEFAULTS}
    limits = {"optimizer.weight_decay": HEAVY_WEIGHT_DECAY, "model.dropout": HEAVY_DROPOUT,
              "training.label_smoothing": HEAVY_LABEL_SMOOTHING}
    heavy = {key: value for key, value in values.items() if value >= limits[key]}
    if reg_share >= HEAVY_REG_LOSS_SHARE and values["optimizer.weight_decay"] > REGULARIZATION_DEFAULTS[
            "optimizer.weight_decay"]:
        heavy["optimizer.weight_decay"] = values["optimizer.weight_decay"]
    return heavy


def over_regularization(run: RunRecords) -> list[Finding]:
    """Training accuracy held low (and not rising) while weight decay / dropout / label smoothing are heavy."""
    if not run.train:
        return []
    heavy = _heavy_regularizers(run)
    accuracies = _series(run.train, "scalars", "accuracy", "mean")
    accuracy = accuracies[-1]
    rise = accuracy - accuracies[len(accuracies) // 2]  # over the second half of the run
    if not heavy or not accuracy < OVER_REG_TRAIN_ACCURACY or rise >= OVER_REG_MIN_RISE:
        return []
    k = _num_classes(run)
    last = run.train[-1]
    return [Finding(
        "over_regularization", "error" if k and accuracy < CHANCE_ACCURACY_FACTOR / k else "warning",
        f"Training accuracy is {accuracy:.1%} (rising {rise:+.1%} over the second half) with heavy "
        "regularization: " + ", ".join(f"{key}={value:g}" for key, value in heavy.items()) + ".",
        "Regularization this strong keeps the model from fitting even the training data: the weights are pulled to "
        "zero, most activations are dropped, or the targets are nearly uniform. Reduce it until training accuracy "
        "rises, then add back only what closes the train/eval gap.",
        {"train_accuracy": accuracy, "accuracy_rise": rise, "heavy": heavy,
         "reg_loss": _float(_get(last, "scalars", "reg_loss", "mean")),
         "data_loss": _float(_get(last, "scalars", "data_loss", "mean"))},
        tuple(_override(key, REGULARIZATION_DEFAULTS[key]) for key in heavy), steps=_steps(run.train))]


def overfitting(run: RunRecords) -> list[Finding]:
    """Training keeps improving while evaluation worsens."""
    if len(run.eval) < OVERFIT_EVALS_SINCE_BEST + 1 or len(run.train) < 2:
        return []
    eval_losses = np.asarray([_float(r.get("loss")) for r in run.eval])
    if not np.isfinite(eval_losses).all():
        return []
    best = int(np.argmin(eval_losses))
    best_step = _step(run.eval[best])
    train_losses = _series(run.train, "scalars", "loss", "mean")
    # The train loss of the period that ended at the best eval (train and eval records share steps).
    at_best = max((i for i, r in enumerate(run.train) if _step(r) <= best_step), default=0)
    gap = _float(_get(run.train[-1], "scalars", "accuracy", "mean")) - _float(run.eval[-1].get("accuracy"))
    if not (len(eval_losses) - 1 - best >= OVERFIT_EVALS_SINCE_BEST
            and eval_losses[-1] > OVERFIT_LOSS_RISE * eval_losses[best]
            and train_losses[-1] < train_losses[at_best] and gap > OVERFIT_GAP):
        return []
    return [Finding(
        "overfitting", "warning",
        f"Eval loss rose from {eval_losses[best]:.3f} (step {best_step}) to {eval_losses[-1]:.3f} while train loss "
        f"fell to {train_losses[-1]:.3f}; train accuracy is {gap:.0%} above eval accuracy.",
        "The model memorizes the training set instead of generalizing. Add data or augmentation, regularize, or stop "
        "at the best eval step (the best checkpoint is kept).",
        {"best_eval_loss": float(eval_losses[best]), "best_step": best_step, "last_eval_loss": float(eval_losses[-1]),
         "train_loss_at_best": float(train_losses[at_best]), "last_train_loss": float(train_losses[-1]),
         "train_eval_accuracy_gap": gap},
        (_override("early_stopping.enabled", True), _override("optimizer.weight_decay", 5e-4),
         _override("model.dropout", 0.3), _override("data.crop_padding", 4)),
        steps=(best_step, _step(run.eval[-1])))]


def loss_plateau(run: RunRecords) -> list[Finding]:
    """A long flat stretch at the end of the run under a collapsed learning rate."""
    losses = _series(run.train, "scalars", "loss", "mean")
    lrs = _series(run.train, "scalars", "learning_rate", "mean")
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
    steps = (_step(run.train[start]), _step(run.train[-1]))
    return [Finding(
        "loss_plateau", "warning",
        f"The loss stayed at {stretch.mean():.3f} (change {change:.1%}) from step {steps[0]} to {steps[1]} "
        f"({len(stretch)} of {len(losses)} records) while the LR was at most {stretch_lr:.2g}, "
        f"{stretch_lr / earlier_lr:.1e} of the {earlier_lr:.2g} used before.",
        "Training stalled: the learning rate collapsed mid-run (a changed config on resume, an aggressive decay or "
        "plateau cut) and the loss stopped improving long before the end.",
        {"plateau_loss": float(stretch.mean()), "relative_change": change, "records": len(stretch),
         "lr_before": earlier_lr,
         "lr_during": stretch_lr},
        (_override("optimizer.learning_rate", _fmt(earlier_lr)), _override("schedule.name", "warmup_cosine")),
        steps=steps)]


# Catalog order. PRIORITY breaks ties between equally severe findings: root causes before their symptoms
# (exploding gradients cause non-finite losses; dead units cause zero gradients; a wrong LR or
# over-regularization explains a chance-level loss; a diverged or stalled run often predicts one class, so
# one_class_collapse comes late).
RULES: dict[str, Callable[[RunRecords], list[Finding]]] = {
    "nonfinite": nonfinite, "lr_too_high": lr_too_high, "lr_too_low": lr_too_low,
    "lr_decayed_too_early": lr_decayed_too_early, "lr_schedule_exhausted": lr_schedule_exhausted,
    "chance_level": chance_level, "one_class_collapse": one_class_collapse,
    "vanishing_gradients": vanishing_gradients, "exploding_gradients": exploding_gradients,
    "dead_units": dead_units, "saturated_gates": saturated_gates, "params_not_updating": params_not_updating,
    "pathway_imbalance": pathway_imbalance, "clipping_dominates": clipping_dominates,
    "over_regularization": over_regularization, "overfitting": overfitting, "nan_skips": nan_skips,
    "loss_plateau": loss_plateau,
}
PRIORITY = ("exploding_gradients", "vanishing_gradients", "dead_units", "saturated_gates", "over_regularization",
            "lr_too_high", "lr_too_low", "lr_schedule_exhausted", "nonfinite", "params_not_updating",
            "pathway_imbalance", "chance_level", "clipping_dominates", "lr_decayed_too_early", "loss_plateau",
            "nan_skips", "one_class_collapse", "overfitting")
