"""Gradients and activations rules: an absurd first loss, exploding or vanishing gradients, dead units, saturated
gates, parameters that never update (a cut graph or an LR multiplier of 0), a pathway without gradient, and
clipping that dominates every step."""

import math
import re
import shlex

import numpy as np

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import evidence as ev
from visioncore_jax.diagnostics.rules.lr import BELOW_HEALTHY_UPDATE_RATIO, HIGH_UPDATE_RATIO, LOW_LR_LOSS_CHANGE
from visioncore_jax.diagnostics.rules.rule import Rule
from visioncore_jax.diagnostics.schema import RunRecords

FAMILY = "gradients and activations"
# initial_loss_high: the step-1 loss above 3x ln K (preflight's FAIL level for `init_loss`): a fresh model with
# sane logits predicts nearly uniformly and scores ln K whatever the label balance (aux heads and Dice add < 1x).
INIT_LOSS_FACTOR = 3.0
# vanishing / exploding: per-module gradient norms (forward order) differing by more than 1e3 between the input
# and output ends; vanishing also needs the early norms tiny (healthy: 1e-2..1), exploding a global norm above
# 1e3 (healthy: 0.5..5) at the first step, or reached by growing 1e3x in a run that stayed finite while no step
# moved the weights by more than lr.HIGH_UPDATE_RATIO of their size: a gradient healthy at the initial weights
# that grows after such jumps grows because the LR threw the weights there (lr_too_high names that cause; a zoo
# run at SGD LR 50: first norm 1.89, updates 4.3x the weights, then norms of 3e3).
GRADIENT_RATIO = 1e3
VANISHING_NORM = 1e-4
EXPLODING_NORM = 1e3
# dead_units: a block whose outputs are zero for > 90% of entries (healthy ReLU blocks: 0.3-0.6).
DEAD_FRACTION = 0.9
ALL_DEAD_FRACTION = 0.99  # a block this dead from the first record on died at initialization
# Blocks that went sparse during training are a warning only while the run stopped learning: when the mean loss of
# the last period is more than lr.LOW_LR_LOSS_CHANGE (5%, beyond a period mean's batch noise) below both the loss
# of the record from which every such block stayed above DEAD_FRACTION and the run's first loss, the zeros did not
# stop the gradient, so the finding is info (zoo: a ConvGRU at Adam LR 0.12 had encoders 92-94% zero from step 45
# while its loss fell 1.20 -> 0.96 and eval accuracy rose to 0.91). After a divergence the loss falls from its
# peak but stays above the first loss (zoo repair trials at SGD LR 50-200: 5.3-133 against 2.1-2.5): a warning.
# saturated_gates: more than half of a gate's entries beyond 0.01 / 0.99 (healthy: < 5%).
SATURATED_FRACTION = 0.5
# The hidden-state clamp recommended for a ConvGRU without one.
GRU_HIDDEN_CLAMP = 5.0
# pathway_imbalance: one pathway gets < 1% of the squared gradient norm (healthy dual-pathway runs: 30-70%).
PATHWAY_SHARE = 0.01
# clipping_dominates: clipping on > 90% of steps with the pre-clip norm > 10x the threshold.
CLIP_FRACTION = 0.9
CLIP_NORM_FACTOR = 10.0
# Optimizers whose update does not shrink with the gradient's scale: Adam / AdamW divide each coordinate by its
# running RMS, LAMB adds a per-layer trust ratio on top. A clip that rescales every step's gradient leaves their
# update size to the LR and only reweights steps (zoo: AdamW with clip norms 1e-3 to 1e-5 kept peak update ratios
# of 0.023, those of healthy runs). Under them the finding is a warning only with evidence of harm, the largest
# per-record median update ratio below the healthy band (BELOW_HEALTHY_UPDATE_RATIO: the clipped gradients sank
# to the optimizer's eps); else info. Under SGD the update is LR x clip norm: always a warning.
SCALE_INVARIANT_OPTIMIZERS = ("adam", "adamw", "lamb")
# Its advice: the median pre-clip norm as the threshold, at least 1 and at most configs/default.py's clip norm, 5.
# The norms were measured on weights the clip kept near their initialization, where a gradient can be far above a
# learning run's: zoo ConvGRU under SGD, 38 at step 1 and a median of 28.8, then 0.6-3.3 once unclipped SGD moved
# the weights. A clip at 28.8 let the first steps' spikes through (eval accuracy at chance after 60 steps, as with
# no clip); at 5 it learned (0.191, chance 0.125). The ResNets' medians (1.9-2.1) are inside the range.
CLIP_ADVICE_RANGE = (1.0, 5.0)


def _clip_advice(run: RunRecords) -> tuple[str, ...]:
    """Gradient clipping at norm 1 when the run has none."""
    return () if run.train and run.train[-1].grad_clip_norm > 0 else (ev.override("optimizer.grad_clip_norm", 1.0),)


def initial_loss_high(run: RunRecords) -> list[Finding]:
    """The step-1 loss far above the label entropy: the model starts confidently wrong (initialization, an
    output bias or logit scale, unnormalized inputs)."""
    k = ev.num_classes(run)
    loss, uniform = ev.step1_loss(run), math.log(k) if k >= 2 else math.nan
    if not (math.isfinite(loss) and uniform > 0 and loss > INIT_LOSS_FACTOR * uniform):
        return []
    grad_norm = run.train[0].scalar("grad_norm").first
    return [Finding(
        "initial_loss_high", "error",
        f"The loss at step 1 is {loss:.3g}, {loss / uniform:.0f}x ln {k} = {uniform:.3g} (the loss of a uniform "
        "prediction).",
        "A freshly initialized model should be unsure: its loss starts near ln K. A much "
        "larger first loss means confident wrong predictions before any learning: outputs scaled up by the "
        "initialization (too large weights, a large output bias or logit scale), inputs far from unit scale, or "
        "probabilities fed to a loss that expects logits. Preflight's init_loss, data_range and "
        "output_probabilities checks point at which.",
        {"step1_loss": loss, "ln_k": uniform, "ratio": loss / uniform, "step1_grad_norm": grad_norm},
        ("--mode=preflight",) + _clip_advice(run), steps=(0, 1))]


def _gradient_profile(run: RunRecords) -> tuple[list[str], np.ndarray]:
    """Modules in forward order and their median gradient norm over the records (the first one left out)."""
    records = run.train[1:] or run.train
    modules = list(records[-1].modules) if records else []
    norms = np.asarray([ev.finite_stat(np.median, ev.module_series(records, "modules", m, "grad_norm"))
                        for m in modules], np.float64)
    return modules, norms


def _weights_thrown(run: RunRecords) -> bool:
    """Some step moved the weights by more than lr.HIGH_UPDATE_RATIO of their size: gradients measured after it
    describe where the LR threw the weights, not the model (lr_too_high names that cause)."""
    return ev.finite_stat(np.max, ev.update_ratios(run)) > HIGH_UPDATE_RATIO


def vanishing_gradients(run: RunRecords) -> list[Finding]:
    """Early-layer gradients orders of magnitude below the late layers', and tiny."""
    modules, norms = _gradient_profile(run)
    if len(modules) < 3 or not np.isfinite(norms).all():
        return []
    early, late = norms[0], np.max(norms[len(norms) // 2:])
    # A zero gradient is no vanishing gradient but a cut graph or dead units (params_not_updating, dead_units).
    if not (0 < early < VANISHING_NORM and late > GRADIENT_RATIO * early) or _weights_thrown(run):
        return []
    return [Finding(
        "vanishing_gradients", "error",
        f"Gradient norm at the input end ({modules[0]}: {early:.2g}) is {late / early:.2g}x smaller "
        f"than near the output ({late:.2g}).",
        "Gradients shrink layer by layer on their way back, so the early layers do not learn. Saturating "
        "activations (sigmoid/tanh) in a deep stack without normalization or residual connections are the classic "
        "cause: use a model with normalization and residual connections.",
        {"early_module": modules[0], "early_grad_norm": early, "late_max_grad_norm": late,
         "grad_norms": dict(zip(modules, norms.tolist(), strict=True))},
        (ev.override("model.name", "resnet"), ev.override("model.name", "dual_resnet"), "--mode=preflight"),
        steps=ev.steps_of(run.train), module=modules[0])]


def exploding_gradients(run: RunRecords) -> list[Finding]:
    """A huge gradient norm at the first step, or one that grew by orders of magnitude in a run that stayed
    finite."""
    if not run.train:
        return []
    first = run.train[0]
    first_norm = first.scalar("grad_norm").first
    norms = [s["grad_norm"].first for s in first.modules.values() if "grad_norm" in s]
    finite = [n for n in norms if math.isfinite(n) and n > 0]
    spread = max(finite) / min(finite) if finite else 1.0
    at_start = first_norm > EXPLODING_NORM or (not math.isfinite(first_norm) and spread > GRADIENT_RATIO)
    peak = ev.finite_stat(np.max, ev.scalar_series(run.train, "grad_norm"))
    grew = (peak > EXPLODING_NORM and peak > GRADIENT_RATIO * first_norm
            and not ev.diverged(ev.nonfinite_state(run)) and not _weights_thrown(run))
    if not (at_start or grew):
        return []
    return [Finding(
        "exploding_gradients", "error",
        f"The global gradient norm is {first_norm:.3g} at the first step and peaks at {peak:.3g} (record mean); "
        f"module norms at the first step span {spread:.2g}x.",
        "Gradients are enormous: activations grow layer by layer (weights initialized too large, no "
        "normalization), so every update is a jump. Use a variance-preserving initialization and normalization "
        "layers; clip the gradient meanwhile.",
        {"first_grad_norm": first_norm, "peak_grad_norm": peak, "module_norm_spread": spread},
        _clip_advice(run) + ("--mode=preflight",),
        steps=ev.steps_of(run.train[:1]) if at_start else ev.steps_of(run.train))]


def _above(run: RunRecords, field: str, stat: str, threshold: float) -> tuple[dict[str, float], int]:
    """({path: mean of `stat`} of the last record's `field` entries above `threshold`, number of entries)."""
    entries = getattr(run.train[-1], field) if run.train else {}
    values = {path: s[stat].mean for path, s in entries.items() if stat in s}
    return {path: v for path, v in values.items() if v > threshold}, len(entries)


def _learned_while_dead(run: RunRecords, blocks) -> tuple[bool, float]:
    """(whether the loss fell beyond noise while every block in `blocks` stayed above DEAD_FRACTION, the relative
    fall of the mean loss from the record where the last of them went above it to the last record)."""
    losses = ev.scalar_series(run.train, "loss")

    def onset(block: str) -> int:
        zeros = [r.activations.get(block, {}).get("zero_fraction") for r in run.train]
        alive = [i for i, z in enumerate(zeros) if z is None or not z.mean > DEAD_FRACTION]
        return alive[-1] + 1 if alive else 0

    start = losses[max(onset(b) for b in blocks)]
    fall = float((start - losses[-1]) / start) if start > 0 else math.nan
    below_start = losses[-1] < (1 - LOW_LR_LOSS_CHANGE) * ev.loss_start(run)
    return bool(fall > LOW_LR_LOSS_CHANGE and below_start), fall


def dead_units(run: RunRecords) -> list[Finding]:
    """Blocks whose ReLU outputs are zero for most entries over the last record period; info when they went
    sparse during training and the loss kept falling (see `_learned_while_dead`)."""
    dead, blocks = _above(run, "activations", "zero_fraction", DEAD_FRACTION)
    if not dead:
        return []
    worst = max(dead, key=dead.get)
    # Dead from the first record on: the initialization (large negative biases, a bad init) killed them, an error.
    # Units that died later are the symptom of something else (usually a divergence), which ranks above it.
    at_start = run.train[0].activations.get(worst, {}).get("zero_fraction")
    from_init = at_start is not None and at_start.mean > ALL_DEAD_FRACTION
    learning, fall = (False, math.nan) if from_init else _learned_while_dead(run, dead)
    cause = ("were dead from the first record on: the initialization (large negative biases, a bad init, "
             "unnormalized inputs) switched them off, so fix the initialization or add normalization"
             if from_init else "died during training, usually after a divergence pushed pre-activations negative")
    explanation = (f"These blocks are sparse, but the mean loss fell {fall:.0%} while they were: the units still "
                   "active pass the gradient and the run keeps learning." if learning else
                   f"Most ReLU units in these blocks never activate, so they pass no gradient and learn nothing. "
                   f"They {cause}.")
    return [Finding(
        "dead_units", "error" if from_init else "info" if learning else "warning",
        f"{len(dead)} of {blocks} blocks output zero for more than {DEAD_FRACTION:.0%} of their entries "
        f"(worst: {worst}, {dead[worst]:.1%}).", explanation,
        {"zero_fraction": dead, "dead_from_first_record": from_init, "loss_fall_while_dead": fall},
        ("--mode=preflight",) if from_init else ("--mode=preflight", "--mode=lr_find"),
        steps=ev.steps_of(run.train[-1:]), module=worst)]


def saturated_gates(run: RunRecords) -> list[Finding]:
    """Sigmoid/tanh gates pinned near 0/1; recommends only the stabilizers the config does not have yet."""
    saturated, gates = _above(run, "gates", "saturated_fraction", SATURATED_FRACTION)
    if not saturated:
        return []
    worst = max(saturated, key=saturated.get)
    fixes = ()
    if isinstance(ev.config_value(run, "model.gru"), dict):
        if ev.config_value(run, "model.gru.recurrent_norm") is False:
            fixes += (ev.override("model.gru.recurrent_norm", True),)
        if not ev.as_number(ev.config_value(run, "model.gru.hidden_clamp", 0)) > 0:
            fixes += (ev.override("model.gru.hidden_clamp", GRU_HIDDEN_CLAMP),)
    return [Finding(
        "saturated_gates", "warning",
        f"{len(saturated)} of {gates} gates are saturated on more than {SATURATED_FRACTION:.0%} of their "
        f"entries (worst: {worst}, {saturated[worst]:.1%}).",
        "Gates stuck at 0 or 1 have zero gradient: the recurrent or attention mechanism stops adapting. Large gate "
        "weights at initialization, unnormalized gate inputs or an unbounded hidden state are the usual cause.",
        {"saturated_fraction": saturated},
        fixes + _clip_advice(run) + ("--mode=preflight",), steps=ev.steps_of(run.train[-1:]), module=worst)]


def _zero_multipliers(run: RunRecords, module: str) -> list[str]:
    """The config's lr_multipliers patterns with multiplier 0 that match parameters of `module`."""
    patterns = ev.config_value(run, "optimizer.lr_multipliers", []) or []
    zero = []
    for entry in patterns:
        if isinstance(entry, list | tuple) and len(entry) == 2 and ev.as_number(entry[1]) == 0:
            try:
                pattern = re.compile(str(entry[0]))
            except re.error:
                continue
            if any(pattern.fullmatch(f"{module}/{leaf}") or pattern.match(module) for leaf in ("kernel", "bias")):
                zero.append(str(entry[0]))
    return zero


def params_not_updating(run: RunRecords) -> list[Finding]:
    """Modules that never updated while others learn: either no gradient reached them (a cut graph) or their
    gradient was non-zero and an LR multiplier of 0 stopped the update."""
    if not run.train:
        return []
    modules = list(run.train[-1].modules)
    grad_max = {m: ev.finite_stat(np.max, ev.module_series(run.train, "modules", m, "grad_norm", "max"))
                for m in modules}
    update_max = {m: ev.finite_stat(np.max, ev.module_series(run.train, "modules", m, "update_norm", "max"))
                  for m in modules}
    frozen = [m for m in modules if grad_max[m] == 0 or update_max[m] == 0]
    if not frozen or len(frozen) == len(modules):
        return []
    no_gradient = [m for m in frozen if grad_max[m] == 0]
    multiplied = {m: _zero_multipliers(run, m) for m in frozen if grad_max[m] > 0}
    patterns = sorted({p for ps in multiplied.values() for p in ps})
    parts = []
    if no_gradient:
        parts.append(f"{len(no_gradient)} never received a non-zero gradient ({', '.join(no_gradient[:5])})")
    if multiplied:
        why = f"LR multiplier 0 for {patterns}" if patterns else "no update although the gradient was non-zero"
        parts.append(f"{len(multiplied)} had gradients up to {max(grad_max[m] for m in multiplied):.3g} but never "
                     f"moved ({', '.join(list(multiplied)[:5])}): {why}")
    explanation = []
    if no_gradient:
        explanation.append("Modules without gradient are cut off from the loss (a stop_gradient, a branch whose "
                           "output is not used), so they keep their initial values.")
    if multiplied:
        explanation.append("Modules with a gradient but no update are frozen by the optimizer: "
                           + ("config.optimizer.lr_multipliers scales their update by 0." if patterns else
                              "something between the gradient and the parameters drops their update."))
    recommendations = ("--mode=preflight",)
    if patterns:
        kept = [list(e) for e in ev.config_value(run, "optimizer.lr_multipliers", [])
                if not (isinstance(e, list | tuple) and str(e[0]) in patterns)]
        value = "(" + "".join(f'("{e[0]}",{float(e[1])!r}),' for e in kept) + ")"
        recommendations = (ev.override("optimizer.lr_multipliers", shlex.quote(value)),) + recommendations
    return [Finding(
        "params_not_updating", "warning",
        f"{len(frozen)} of {len(modules)} modules never updated: " + "; ".join(parts) + ".",
        " ".join(explanation) + " If that is not intended, fix it.",
        {"modules": frozen, "grad_norm_max": {m: grad_max[m] for m in frozen}, "zero_lr_multipliers": patterns},
        recommendations, steps=ev.steps_of(run.train), module=frozen[0])]


def pathway_imbalance(run: RunRecords) -> list[Finding]:
    """One pathway's share of the gradient is negligible next to the other's."""
    records = run.train[1:] or run.train
    pathways = list(records[-1].pathways) if records else []
    if len(pathways) < 2:
        return []
    shares = {p: ev.finite_stat(np.mean, ev.module_series(records, "pathways", p, "grad_share")) for p in pathways}
    weak = min(shares, key=shares.get)
    if not shares[weak] < PATHWAY_SHARE:
        return []
    return [Finding(
        "pathway_imbalance", "warning",
        f"The {weak} pathway gets {shares[weak]:.2%} of the gradient (squared norm share).",
        f"The {weak} pathway barely influences the loss, so it hardly learns: its inputs may be scaled wrongly "
        "(e.g. not normalized), or the other pathway dominates the fused features.",
        {"grad_share": shares},
        ("--mode=preflight", ev.override("model.aux_loss_weight", 0.3)), steps=ev.steps_of(records), module=weak)]


def clipping_dominates(run: RunRecords) -> list[Finding]:
    """Clipping active on nearly every step with the norm far above the threshold; info under a scale-invariant
    optimizer whose updates stayed in the healthy band (see SCALE_INVARIANT_OPTIMIZERS)."""
    if not run.train:
        return []
    clip = run.train[-1].grad_clip_norm
    if not clip > 0:
        return []
    fraction = ev.finite_stat(np.mean, ev.scalar_series(run.train, "clipped"))
    norm = ev.finite_stat(np.median, ev.scalar_series(run.train, "grad_norm"))
    if not (fraction > CLIP_FRACTION and norm > CLIP_NORM_FACTOR * clip):
        return []
    optimizer = ev.config_value(run, "optimizer.name")
    ratio = ev.finite_stat(np.max, ev.update_ratios(run))
    harmless = optimizer in SCALE_INVARIANT_OPTIMIZERS and ratio >= BELOW_HEALTHY_UPDATE_RATIO
    effect = (f"{optimizer} divides the gradient's scale out of each update, so the updates kept the size the LR "
              f"sets (largest median update ratio {ratio:.3g}, healthy >= {BELOW_HEALTHY_UPDATE_RATIO:g}); the clip "
              "only gives every step's gradient the same norm, so the steps with large gradients count no more than "
              "the quiet ones." if harmless else
              "Every update is rescaled to the clip norm, so the effective learning rate is a small fraction of the "
              "configured one and the update direction ignores the gradient's size.")
    return [Finding(
        "clipping_dominates", "info" if harmless else "warning",
        f"Gradient clipping was active on {fraction:.0%} of steps; the median gradient norm {norm:.3g} is "
        f"{norm / clip:.0f}x the threshold {clip:g}.", effect,
        {"clip_fraction": fraction, "median_grad_norm": norm, "grad_clip_norm": clip, "optimizer": optimizer,
         "peak_update_ratio": ratio},
        (ev.override("optimizer.grad_clip_norm", ev.fmt(np.clip(norm, *CLIP_ADVICE_RANGE))),),
        steps=ev.steps_of(run.train))]


RULES = (
    Rule("exploding_gradients", exploding_gradients, FAMILY, "cause",
         ("initial_loss_high", "nonfinite", "nan_skips", "dead_units", "saturated_gates", "one_class_collapse",
          "chance_level", "lr_too_high", "clipping_dominates")),
    Rule("initial_loss_high", initial_loss_high, FAMILY, "cause",
         ("one_class_collapse", "chance_level", "dead_units", "saturated_gates")),
    Rule("vanishing_gradients", vanishing_gradients, FAMILY, "cause", ("chance_level", "one_class_collapse")),
    Rule("params_not_updating", params_not_updating, FAMILY, "cause", ("pathway_imbalance",)),
    Rule("pathway_imbalance", pathway_imbalance, FAMILY, "cause"),
    # Under SGD (or an Adam whose clipped gradients sank to its eps) the clip is what keeps the updates tiny.
    Rule("clipping_dominates", clipping_dominates, FAMILY, "cause",
         ("chance_level", "one_class_collapse", "lr_too_low")),
    # Units dead from the initialization pass no gradient: the weights do not move, whatever the LR.
    Rule("dead_units", dead_units, FAMILY, "symptom",
         ("params_not_updating", "lr_too_low", "chance_level", "one_class_collapse")),
    Rule("saturated_gates", saturated_gates, FAMILY, "symptom", ("chance_level", "one_class_collapse")),
)
