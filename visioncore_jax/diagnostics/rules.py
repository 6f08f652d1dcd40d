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
# lr_schedule_exhausted: LR below 1% of its peak before half of the run; an error before a quarter of it (most
# of the run is wasted).
EXHAUSTED_LR_SHARE = 0.01
EXHAUSTED_RUN_SHARE = 0.5
EXHAUSTED_ERROR_SHARE = 0.25
# chance_level: after the first 20% of the run, loss between 2% below and 15% above ln K (noisy fits of random
# labels sit above it) and accuracy below 1.3 / K (a slow but learning model is more than 2% below ln K
# within a few hundred steps).
CHANCE_AFTER_SHARE = 0.2
CHANCE_LOSS_BELOW, CHANCE_LOSS_ABOVE = 0.02, 0.15
CHANCE_ACCURACY_FACTOR = 1.3
# one_class_collapse: one class gets > 80% of predictions while no class has more than half of the labels.
COLLAPSE_PREDICTED_SHARE = 0.8
COLLAPSE_LABEL_SHARE = 0.5
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
# over_regularization: training accuracy held below this while some regularizer is heavy.
OVER_REG_TRAIN_ACCURACY = 0.5
HEAVY_WEIGHT_DECAY = 0.05
HEAVY_DROPOUT = 0.5
HEAVY_LABEL_SMOOTHING = 0.3
# overfitting: the last eval loss 20% above its minimum, the minimum at least 3 evals back, train loss still
# falling, and train accuracy 15 points above eval accuracy.
OVERFIT_LOSS_RISE = 1.2
OVERFIT_EVALS_SINCE_BEST = 3
OVERFIT_GAP = 0.15
# loss_plateau: the last >= 3 records (>= 30% of them) have an LR < 1e-3 of the largest LR before them and a
# loss flat within a 3% band (batch noise): a stall from a collapsed LR. A cosine schedule spends only its last
# ~2% of records below 1e-3 of its peak, so a healthy end-of-run flattening does not qualify.
PLATEAU_BAND = 0.03
PLATEAU_MIN_RECORDS = 3
PLATEAU_RUN_SHARE = 0.3
PLATEAU_LR_SHARE = 1e-3


# ---- Rules. ----

def _nonfinite_state(run: RunRecords) -> dict:
    """Shared evidence of non-finite steps."""
    last = run.train[-1]
    total_steps = max(int(last["step"]), 1)
    skipped = int(last.get("skipped_steps", 0) or 0)
    nonfinite_entries = float(np.nansum(_series(run.train, "scalars", "nonfinite_grads", "max")))
    last_loss = _float(_get(last, "scalars", "loss", "last"))
    eval_losses = [_float(r.get("loss")) for r in run.eval]
    first = next((r["first_nonfinite"] for r in run.train if r.get("first_nonfinite")), None)
    return dict(skipped_steps=skipped, skipped_share=skipped / total_steps, max_nonfinite_entries=nonfinite_entries,
                final_loss=last_loss, final_eval_loss_finite=bool(not eval_losses or math.isfinite(eval_losses[-1])),
                first_nonfinite=first)


def _diverged(state: dict) -> bool:
    return (state["skipped_share"] > NONFINITE_SKIP_SHARE or not math.isfinite(state["final_loss"])
            or not state["final_eval_loss_finite"])


def nonfinite(run: RunRecords) -> list[Finding]:
    """Loss or gradients became NaN/Inf and stayed so (or most steps were skipped)."""
    if not run.train:
        return []
    state = _nonfinite_state(run)
    if not _diverged(state) or (state["skipped_steps"] == 0 and state["max_nonfinite_entries"] == 0
                                and math.isfinite(state["final_loss"]) and state["final_eval_loss_finite"]):
        return []
    first = state["first_nonfinite"] or {}
    lr, clip = _lr(run), _config(run, "optimizer", "grad_clip_norm", default=0.0)
    recommendations = [_override("optimizer.learning_rate", _fmt(lr / 10))] if math.isfinite(lr) else []
    if not clip:
        recommendations.append(_override("optimizer.grad_clip_norm", 1.0))
    recommendations.append(_override("schedule.warmup_epochs", 1.0))
    return [Finding(
        "nonfinite", "error",
        f"Training diverged: {state['skipped_steps']} steps ({state['skipped_share']:.0%}) had non-finite gradients"
        f", first at step {first.get('step')} in {first.get('module')}.",
        "The loss or gradients overflowed to NaN/Inf and kept doing so: the NaN-skip guard threw those steps away "
        "and the model stopped learning. This is almost always a learning rate too large for the model (often "
        "without gradient clipping or warmup), or a numerically unsafe operation in the model or loss.",
        state, tuple(recommendations), steps=_steps(run.train), module=first.get("module"))]


def nan_skips(run: RunRecords) -> list[Finding]:
    """Some steps skipped by the NaN-skip guard, the run recovered."""
    if not run.train:
        return []
    state = _nonfinite_state(run)
    if state["skipped_steps"] == 0 or _diverged(state):
        return []
    first = state["first_nonfinite"] or {}
    skipped_in = [int(r["step"]) for r in run.train if _float(_get(r, "scalars", "skipped", "max")) > 0]
    return [Finding(
        "nan_skips", "warning",
        f"{state['skipped_steps']} steps were skipped for non-finite gradients (first at step {first.get('step')}, "
        f"in {first.get('module')}); training recovered.",
        "A few batches produced NaN/Inf gradients; the guard kept the parameters, so the run continued. Isolated "
        "skips usually come from bad inputs (NaN pixels, corrupt images) or rare overflow; run the preflight "
        "checks on the data and consider gradient clipping.",
        {**state, "records_with_skips": skipped_in},
        ("--mode=preflight", _override("optimizer.grad_clip_norm", 1.0)), steps=_steps(run.train),
        module=first.get("module"))]


def _module_stat(record: dict, stat: str) -> dict[str, float]:
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
    ratio = float(np.nanmax(_update_ratios(run))) if np.isfinite(_update_ratios(run)).any() else math.nan
    first, last = _loss_change(run)
    if not (ratio > HIGH_UPDATE_RATIO and last > HIGH_LR_LOSS_SHARE * first):
        return []
    lr = _lr(run)
    return [Finding(
        "lr_too_high", "error",
        f"Updates reach {ratio:.2g} of the weights per step (median over modules) and the loss went from "
        f"{first:.3f} to {last:.3f}.",
        "Each step changes the weights by a large fraction of their size, so the optimizer overshoots and the loss "
        "oscillates or climbs instead of falling. Healthy runs update weights by about 1e-3 of their norm per step.",
        {"median_update_ratio": ratio, "first_loss": first, "last_loss": last, "learning_rate": lr},
        (_override("optimizer.learning_rate", _fmt(lr / 10)), "--mode=lr_find",
         _override("optimizer.grad_clip_norm", 1.0)), steps=_steps(run.train))]


def lr_too_low(run: RunRecords) -> list[Finding]:
    """Loss barely moves and updates are vanishingly small relative to the weights."""
    if len(run.train) < 2:
        return []
    ratios = _update_ratios(run)
    ratio = float(np.nanmax(ratios)) if np.isfinite(ratios).any() else math.nan
    first, last = _loss_change(run)
    change = abs(first - last) / max(abs(first), 1e-12)
    lrs = _series(run.train, "scalars", "learning_rate", "mean")
    # A schedule that decayed to nothing is lr_schedule_exhausted, not a too-small configured LR.
    not_decayed = np.nanmedian(lrs) >= LOW_LR_NOT_DECAYED * _float(run.train[-1].get("peak_learning_rate"))
    if not (ratio < LOW_UPDATE_RATIO and change < LOW_LR_LOSS_CHANGE and not_decayed):
        return []
    lr = _lr(run)
    return [Finding(
        "lr_too_low", "error",
        f"Updates are {ratio:.2g} of the weights per step and the loss changed by {change:.1%} over the run.",
        "The optimizer moves the weights by a negligible fraction per step, so the model cannot learn in the time "
        "given. Raise the learning rate (the LR range test suggests one).",
        {"median_update_ratio": ratio, "first_loss": first, "last_loss": last, "relative_change": change,
         "learning_rate": lr},
        (_override("optimizer.learning_rate", _fmt(lr * 100)), "--mode=lr_find"), steps=_steps(run.train))]


def lr_decayed_too_early(run: RunRecords) -> list[Finding]:
    """Plateau cuts early while the loss still fell, or many cuts (reacting to noise)."""
    cuts = [e for r in run.train for e in r.get("events", []) if e.get("kind") == "plateau_cut"]
    if not cuts or not run.train:
        return []
    num_train_steps = int(run.train[-1].get("num_train_steps") or run.train[-1]["step"])
    losses = _series(run.train, "scalars", "loss", "mean")
    steps = [int(r["step"]) for r in run.train]
    early_falling = []
    for cut in cuts:
        index = next((i for i, s in enumerate(steps) if s >= cut["step"]), None)
        falling = index and losses[index] < (1 - EARLY_CUT_LOSS_DROP) * losses[index - 1]
        if falling and cut["step"] < num_train_steps / 2:
            early_falling.append(cut["step"])
    if len(cuts) < MANY_CUTS and not early_falling:
        return []
    patience = _config(run, "plateau", "patience", default=0)
    return [Finding(
        "lr_decayed_too_early", "warning",
        f"The plateau scheduler cut the LR {len(cuts)} times (first at step {cuts[0]['step']} of "
        f"{num_train_steps}); {len(early_falling)} cuts came while the loss was still falling.",
        "Reduce-on-plateau cut the learning rate before training had stalled, so the rest of the run learns with a "
        "fraction of the LR. Too small a patience (or watching a noisy metric such as a per-window train loss) "
        "makes it react to noise.",
        {"cut_steps": [c["step"] for c in cuts], "cuts_while_falling": early_falling,
         "final_lr_scale": run.train[-1].get("lr_scale"), "patience": patience},
        (_override("plateau.patience", max(3, int(patience) * 2 + 2)), _override("plateau.metric", "eval_loss"),
         _override("plateau.enabled", False) + " " + _override("schedule.name", "warmup_cosine")),
        steps=(cuts[0]["step"], cuts[-1]["step"]))]


def lr_schedule_exhausted(run: RunRecords) -> list[Finding]:
    """The scheduled LR fell below 1% of its peak before half of the run."""
    if len(run.train) < 2:
        return []
    scale = np.maximum(_series(run.train, "lr_scale"), 1e-30)
    lrs = _series(run.train, "scalars", "learning_rate", "mean") / np.nan_to_num(scale, nan=1.0)
    if not np.isfinite(lrs).any():
        return []
    peak_index = int(np.nanargmax(lrs))
    peak = lrs[peak_index]
    num_train_steps = int(run.train[-1].get("num_train_steps") or run.train[-1]["step"])
    low = [i for i in range(peak_index, len(lrs)) if lrs[i] < EXHAUSTED_LR_SHARE * peak]
    if not low or run.train[low[0]]["step"] >= EXHAUSTED_RUN_SHARE * num_train_steps:
        return []
    step = int(run.train[low[0]]["step"])
    schedule = _config(run, "schedule", "name", default="?")
    return [Finding(
        "lr_schedule_exhausted", "error" if step < EXHAUSTED_ERROR_SHARE * num_train_steps else "warning",
        f"The {schedule} schedule's LR fell below {EXHAUSTED_LR_SHARE:.0%} of its peak by step {step}, "
        f"{step / num_train_steps:.0%} into a {num_train_steps}-step run.",
        "The schedule's length does not match the run: most of the run trains with an almost-zero learning rate. "
        "Size the decay to the whole run (cosine decays over the run by default) or lengthen it.",
        {"schedule": schedule, "peak_lr": peak, "lr_at_step": lrs[low[0]], "step": step,
         "num_train_steps": num_train_steps},
        (_override("schedule.name", "warmup_cosine"), _override("schedule.decay_rate", 0.9)),
        steps=(step, int(run.train[-1]["step"])))]


def chance_level(run: RunRecords) -> list[Finding]:
    """Loss ≈ ln K and accuracy ≈ 1/K after the warm-up phase."""
    k = _num_classes(run)
    if k < 2 or not run.train:
        return []
    num_train_steps = int(run.train[-1].get("num_train_steps") or run.train[-1]["step"])
    late = [r for r in run.train if r["step"] > CHANCE_AFTER_SHARE * num_train_steps]
    if not late:
        return []
    loss = _float(_get(late[-1], "scalars", "loss", "mean"))
    accuracy = _float(run.eval[-1].get("accuracy")) if run.eval else _float(_get(late[-1], "scalars", "accuracy",
                                                                                  "mean"))
    chance_loss = math.log(k)
    near_chance = (1 - CHANCE_LOSS_BELOW) * chance_loss < loss < (1 + CHANCE_LOSS_ABOVE) * chance_loss
    if not (near_chance and accuracy < CHANCE_ACCURACY_FACTOR / k):
        return []
    return [Finding(
        "chance_level", "error",
        f"Loss {loss:.3f} ≈ ln {k} = {chance_loss:.3f} and accuracy {accuracy:.3f} ≈ 1/{k} at step "
        f"{late[-1]['step']}: the model predicts no better than chance.",
        "The model outputs (nearly) uniform probabilities: nothing about the inputs helps it predict the labels. "
        "Most often the labels do not match the images (shuffled or misaligned labels, wrong label key), the "
        "inputs carry no signal (constant or badly normalized images), or the learning rate is far off.",
        {"loss": loss, "ln_k": chance_loss, "accuracy": accuracy, "chance_accuracy": 1 / k},
        ("--mode=preflight", "--mode=lr_find"), steps=_steps(late))]


def one_class_collapse(run: RunRecords) -> list[Finding]:
    """Eval predictions concentrated on one class while the labels are spread."""
    if not run.eval or "predicted_histogram" not in run.eval[-1]:
        return []
    last = run.eval[-1]
    predicted, labels = np.asarray(last["predicted_histogram"]), np.asarray(last.get("label_histogram", []))
    if not predicted.size or not labels.size:
        return []
    top = int(np.argmax(predicted))
    if not (predicted[top] > COLLAPSE_PREDICTED_SHARE and labels.max() < COLLAPSE_LABEL_SHARE):
        return []
    name = last.get("class_names", [str(top)] * (top + 1))[top]
    return [Finding(
        "one_class_collapse", "warning",
        f"{predicted[top]:.0%} of eval predictions are class {name!r}, which holds {labels[top]:.0%} of the labels.",
        "The model predicts (almost) one class for everything. Typical causes: a huge output bias or logit scale at "
        "initialization, extreme class imbalance without weighting, or a learning rate that drove the head into "
        "one corner.",
        {"class": name, "predicted_share": float(predicted[top]), "label_share": float(labels[top]),
         "largest_label_share": float(labels.max())},
        (_override("training.class_weighting", "cube_root_inverse"),
         _override("optimizer.learning_rate", _fmt(_lr(run) / 3)), "--mode=preflight"),
        steps=(int(last["step"]), int(last["step"])))]


def _gradient_profile(run: RunRecords) -> tuple[list[str], np.ndarray]:
    """Modules in forward order and their median gradient norm over the records."""
    records = run.train[1:] or run.train
    modules = list((records[-1].get("modules") or {}).keys()) if records else []
    norms = np.asarray([np.nanmedian([_float(_get(r, "modules", m, "grad_norm", "mean")) for r in records])
                        for m in modules]) if modules else np.zeros(0)
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
    """A huge gradient norm at the start, growing by orders of magnitude through the layers."""
    if not run.train:
        return []
    first_norm = _float(_get(run.train[0], "scalars", "grad_norm", "first"))
    norms = [_float(_get(run.train[0], "modules", m, "grad_norm", "first")) for m in run.train[0].get("modules", {})]
    finite = [n for n in norms if math.isfinite(n) and n > 0]
    spread = max(finite) / min(finite) if finite else 1.0
    if not (first_norm > EXPLODING_NORM or (not math.isfinite(first_norm) and spread > GRADIENT_RATIO)):
        return []
    return [Finding(
        "exploding_gradients", "error",
        f"The global gradient norm at the first step is {first_norm:.3g} (module norms span {spread:.2g}x).",
        "Gradients are enormous from the very first step: activations grow layer by layer (weights initialized too "
        "large, no normalization), so every update is a jump. Use a variance-preserving initialization, "
        "normalization layers, and gradient clipping.",
        {"first_grad_norm": first_norm, "module_norm_spread": spread},
        (_override("optimizer.grad_clip_norm", 1.0), _override("optimizer.learning_rate", _fmt(_lr(run) / 10))),
        steps=_steps(run.train[:1]))]


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
        {"zero_fraction": dead}, (_override("optimizer.learning_rate", _fmt(_lr(run) / 3)), "--mode=preflight"),
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
        f"{len(saturated)} gates are saturated on more than {SATURATED_FRACTION:.0%} of their entries (worst: "
        f"{worst}, {saturated[worst]:.1%}).",
        "Gates stuck at 0 or 1 have zero gradient: the recurrent or attention mechanism stops adapting. Large gate "
        "weights at initialization or unnormalized gate inputs are the usual cause; normalize the recurrent "
        "projection and clamp the logits.",
        {"saturated_fraction": saturated},
        (_override("model.gru.recurrent_norm", True), _override("optimizer.learning_rate", _fmt(_lr(run) / 3))),
        steps=_steps(run.train[-1:]), module=worst)]


def params_not_updating(run: RunRecords) -> list[Finding]:
    """Modules with zero gradient (or zero update) on every step of the run while others learn."""
    if not run.train:
        return []
    modules = list(run.train[-1].get("modules") or {})
    grad_max = {m: np.nanmax(_series(run.train, "modules", m, "grad_norm", "max")) for m in modules}
    update_max = {m: np.nanmax(_series(run.train, "modules", m, "update_norm", "max")) for m in modules}
    frozen = [m for m in modules if grad_max[m] == 0 or update_max[m] == 0]
    if not frozen or len(frozen) == len(modules):
        return []
    return [Finding(
        "params_not_updating", "error",
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
    shares = {p: float(np.nanmean(_series(records, "pathways", p, "grad_share", "mean"))) for p in pathways}
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
    fraction = float(np.nanmean(_series(run.train, "scalars", "clipped", "mean")))
    norm = float(np.nanmedian(_series(run.train, "scalars", "grad_norm", "mean")))
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


def over_regularization(run: RunRecords) -> list[Finding]:
    """Training accuracy held low while weight decay / dropout / label smoothing are heavy."""
    if not run.train:
        return []
    heavy = {}
    weight_decay = _float(_config(run, "optimizer", "weight_decay", default=0.0))
    dropout = _float(_config(run, "model", "dropout", default=0.0))
    smoothing = _float(_config(run, "training", "label_smoothing", default=0.0))
    if weight_decay >= HEAVY_WEIGHT_DECAY:
        heavy["optimizer.weight_decay"] = weight_decay
    if dropout >= HEAVY_DROPOUT:
        heavy["model.dropout"] = dropout
    if smoothing >= HEAVY_LABEL_SMOOTHING:
        heavy["training.label_smoothing"] = smoothing
    accuracy = _float(_get(run.train[-1], "scalars", "accuracy", "mean"))
    if not heavy or not accuracy < OVER_REG_TRAIN_ACCURACY:
        return []
    k = _num_classes(run)
    defaults = {"optimizer.weight_decay": 1e-4, "model.dropout": 0.1, "training.label_smoothing": 0.0}
    return [Finding(
        "over_regularization", "error" if k and accuracy < CHANCE_ACCURACY_FACTOR / k else "warning",
        f"Training accuracy is {accuracy:.1%} with heavy regularization: "
        + ", ".join(f"{k}={v:g}" for k, v in heavy.items()) + ".",
        "Regularization this strong keeps the model from fitting even the training data: the weights are pulled to "
        "zero, most activations are dropped, or the targets are nearly uniform. Reduce it until training accuracy "
        "rises, then add back only what closes the train/eval gap.",
        {"train_accuracy": accuracy, "heavy": heavy,
         "reg_loss": _float(_get(run.train[-1], "scalars", "reg_loss", "mean")),
         "data_loss": _float(_get(run.train[-1], "scalars", "data_loss", "mean"))},
        tuple(_override(key, defaults[key]) for key in heavy), steps=_steps(run.train))]


def overfitting(run: RunRecords) -> list[Finding]:
    """Training keeps improving while evaluation worsens."""
    if len(run.eval) < OVERFIT_EVALS_SINCE_BEST + 1 or len(run.train) < 2:
        return []
    eval_losses = np.asarray([_float(r.get("loss")) for r in run.eval])
    if not np.isfinite(eval_losses).all():
        return []
    best = int(np.argmin(eval_losses))
    train_losses = _series(run.train, "scalars", "loss", "mean")
    train_at_best = train_losses[min(best, len(train_losses) - 1)]
    gap = _float(_get(run.train[-1], "scalars", "accuracy", "mean")) - _float(run.eval[-1].get("accuracy"))
    if not (len(eval_losses) - 1 - best >= OVERFIT_EVALS_SINCE_BEST
            and eval_losses[-1] > OVERFIT_LOSS_RISE * eval_losses[best]
            and train_losses[-1] < train_at_best and gap > OVERFIT_GAP):
        return []
    best_step = int(run.eval[best]["step"])
    return [Finding(
        "overfitting", "warning",
        f"Eval loss rose from {eval_losses[best]:.3f} (step {best_step}) to {eval_losses[-1]:.3f} while train loss "
        f"fell to {train_losses[-1]:.3f}; train accuracy is {gap:.0%} above eval accuracy.",
        "The model memorizes the training set instead of generalizing. Add data or augmentation, regularize, or stop "
        "at the best eval step (the best checkpoint is kept).",
        {"best_eval_loss": eval_losses[best], "best_step": best_step, "last_eval_loss": eval_losses[-1],
         "train_eval_accuracy_gap": gap},
        (_override("early_stopping.enabled", True), _override("optimizer.weight_decay", 5e-4),
         _override("model.dropout", 0.3), _override("data.crop_padding", 4)),
        steps=(best_step, int(run.eval[-1]["step"])))]


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
    if not stretch.max() <= (1 + PLATEAU_BAND) * stretch.min():
        return []
    earlier_lr, stretch_lr = float(np.max(lrs[:start])), float(np.max(lrs[start:]))
    steps = (int(run.train[start]["step"]), int(run.train[-1]["step"]))
    return [Finding(
        "loss_plateau", "warning",
        f"The loss stayed within {PLATEAU_BAND:.0%} of {stretch.mean():.3f} from step {steps[0]} to {steps[1]} "
        f"({len(stretch)} of {len(losses)} records) while the LR was at most {stretch_lr:.2g}, "
        f"{stretch_lr / earlier_lr:.1e} of the {earlier_lr:.2g} used before.",
        "Training stalled: the learning rate collapsed mid-run (a changed config on resume, an aggressive decay or "
        "plateau cut) and the loss stopped improving long before the end.",
        {"plateau_loss": float(stretch.mean()), "records": len(stretch), "lr_before": earlier_lr,
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
