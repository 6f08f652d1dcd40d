"""Preflight checks: the catalog's second table (docs/diagnostics.md), run on the configured data and model
before a long run. Each returns a CheckResult (PASS / WARN / FAIL) with the numbers behind it."""

import functools
import json
import logging
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from visioncore_jax.data import to_global_batch
from visioncore_jax.data.preprocessing import LUMA_WEIGHTS
from visioncore_jax.diagnostics.findings import CheckResult
from visioncore_jax.tools.lr_find import lr_range_test, write_lr_find
from visioncore_jax.train import partitioning
from visioncore_jax.train.experiment import Experiment, jitted_steps
from visioncore_jax.train.metrics import TrainMetrics
from visioncore_jax.train.statistics import module_of
from visioncore_jax.train.steps import training_loss

SAMPLE_BATCHES = 4  # training batches inspected by the data checks
# data_range: normalized inputs have |mean| < 1 and std within [0.2, 5]; |x| > 50 means unnormalized pixels.
MAX_ABS_MEAN, STD_RANGE, UNNORMALIZED_ABS = 1.0, (0.2, 5.0), 50.0
# class_imbalance: WARN when the largest class has 10x the examples of the smallest (or > 50% of all).
IMBALANCE_RATIO, DOMINANT_SHARE = 10.0, 0.5
# init_loss: WARN beyond 1.5x the loss of uniform predictions (ln K for balanced classification), FAIL beyond 3x.
INIT_LOSS_WARN, INIT_LOSS_FAIL = 1.5, 3.0
# gradient_reach: modules silent at initialization are probed again after one gradient step of this norm (any
# non-zero step moves a zero-initialised scale off 0; small enough to stay near the initialization).
PROBE_STEP_NORM = 1e-2
# pathway_inputs: brightness must equal the BT.601 luma of the color input within this (pixel units in [0, 1]).
LUMA_TOLERANCE = 1e-3
# The checks at initialisation see the model without dropout or label smoothing.
NO_REGULARIZATION = {"dropout_rate": 0.0, "label_smoothing": 0.0}
# overfit_one_batch: accuracy reached on one fixed batch of OVERFIT_EXAMPLES, in rounds of the configured steps.
OVERFIT_EXAMPLES, OVERFIT_PASS, OVERFIT_WARN, OVERFIT_LR = 32, 0.9, 0.5, 3e-3
# A model that has not fitted the batch yet gets another round while its loss on the batch still falls (by at
# least OVERFIT_MIN_PROGRESS of it per round: the batch is fixed and scored in eval mode, so a smaller change is
# a plateau), up to OVERFIT_MAX_ROUNDS rounds: some healthy families (the VisionCore ResNet, the U-Net) fit one
# batch more slowly than others, and a verdict at a fixed step count called them broken.
OVERFIT_MAX_ROUNDS, OVERFIT_MIN_PROGRESS = 4, 0.02
# lr_range: configured LR vs the LR range test's suggestion.
LR_WARN_FACTOR, LR_FAIL_FACTOR = 10.0, 30.0


class _Context:
    """What the checks share: the experiment, sampled batches, the initial state, one forward/backward pass."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        self.pipeline, self.info, self.config = experiment.pipeline, experiment.info, experiment.config
        batch_size = self.config.training.batch_size
        stream = self.pipeline.train_batches(batch_size)
        self.train_batches = [next(stream) for _ in range(SAMPLE_BATCHES)]
        self.eval_batches = list(self.pipeline.eval_batches(self.config.training.eval_batch_size))
        self.state = experiment.init_state()

    @functools.cached_property
    def _value_and_grad(self):
        """jit(value_and_grad) of the data loss on the first training batch, as a function of the params (one
        jitted function, so the probe step reuses the compilation)."""
        state, task, batch = self.state, self.experiment.task, self.train_batches[0]

        def loss_fn(params):
            loss, (outputs, _) = training_loss(state.apply_fn, params, state.batch_stats, batch, NO_REGULARIZATION,
                                               jax.random.PRNGKey(0), task=task)
            return loss, outputs

        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

    @functools.cached_property
    def outputs_loss_grads(self):
        """Model outputs, data loss and gradients of the first training batch at initialization."""
        (loss, outputs), grads = self._value_and_grad(self.state.params)
        return jax.device_get(outputs), float(loss), jax.device_get(grads)

    @functools.cached_property
    def grads_after_probe_step(self):
        """The same batch's gradients after one gradient-descent step of norm PROBE_STEP_NORM from the
        initialization: a branch behind a zero-initialised scale (a residual block that is the identity at
        initialization) gets its gradient only once that scale has moved."""
        _, _, grads = self.outputs_loss_grads
        norm = max(float(optax.global_norm(grads)), 1e-30)
        params = jax.tree.map(lambda p, g: p - PROBE_STEP_NORM / norm * g, self.state.params, grads)
        _, probed = self._value_and_grad(params)
        return jax.device_get(probed)


def _inputs(batches) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) for k in ("color", "brightness", "label")}


def check_data_nonfinite(ctx: _Context) -> CheckResult:
    """NaN/Inf in the inputs of sampled training batches and the whole eval split."""
    counts = {}
    for name, batches in (("train", ctx.train_batches), ("eval", ctx.eval_batches)):
        for key in ("color", "brightness"):
            counts[f"{name}_{key}"] = int(sum(np.sum(~np.isfinite(b[key])) for b in batches))
    bad = {k: v for k, v in counts.items() if v}
    if bad:
        return CheckResult("data_nonfinite", "FAIL", f"Non-finite input values: {bad}.", counts,
                           ("Find and drop the corrupt images (decode them and test np.isfinite); check the "
                            "normalization statistics (config.data.mean / std) for zeros or NaN.",))
    return CheckResult("data_nonfinite", "PASS", "No NaN/Inf in the sampled inputs.", counts)


def check_data_range(ctx: _Context) -> CheckResult:
    """Inputs normalized (mean near 0, std near 1), not constant, floating point."""
    color = _inputs(ctx.train_batches)["color"]
    finite = color[np.isfinite(color)]
    mean, std = float(finite.mean()), float(finite.std())
    max_abs = float(np.abs(finite).max())
    evidence = {"mean": mean, "std": std, "max_abs": max_abs, "dtype": str(color.dtype)}
    if color.dtype.kind != "f":
        return CheckResult("data_range", "FAIL", f"Inputs have dtype {color.dtype}; the model needs floats.",
                           evidence)
    if std < 1e-6:
        return CheckResult("data_range", "FAIL", f"Inputs are constant (std {std:.2g}).", evidence,
                           ("Check the image decoding and config.data.std.",))
    if max_abs > UNNORMALIZED_ABS:
        return CheckResult("data_range", "FAIL", f"Inputs reach |x| = {max_abs:.1f}: pixels look unnormalized "
                           "(0-255 values).", evidence, ("--config.data.mean=() --config.data.std=()",))
    if abs(mean) > MAX_ABS_MEAN or not STD_RANGE[0] <= std <= STD_RANGE[1]:
        return CheckResult("data_range", "WARN", f"Inputs have mean {mean:.3f} and std {std:.3f}; normalized "
                           "inputs have mean ~0 and std ~1.", evidence, ("--config.data.mean=() --config.data.std=()",))
    return CheckResult("data_range", "PASS", f"Inputs normalized: mean {mean:.3f}, std {std:.3f}.", evidence)


def check_labels_out_of_range(ctx: _Context) -> CheckResult:
    """Every sampled label within [0, K)."""
    k = ctx.info.num_classes
    labels = np.concatenate([b["label"].ravel() for b in ctx.train_batches]
                            + [b["label"][b["mask"] > 0].ravel() for b in ctx.eval_batches])
    evidence = {"min": int(labels.min()), "max": int(labels.max()), "num_classes": k}
    if labels.min() < 0 or labels.max() >= k:
        bad = np.unique(labels[(labels < 0) | (labels >= k)])[:5].tolist()
        return CheckResult("labels_out_of_range", "FAIL", f"Labels {bad} fall outside [0, {k}).",
                           {**evidence, "examples": bad}, ("Make labels 0-based class indices (e.g. subtract 1 "
                                                           "from labels numbered 1..K).",))
    return CheckResult("labels_out_of_range", "PASS", f"Labels within [0, {k}).", evidence)


def check_class_imbalance(ctx: _Context) -> CheckResult:
    """Skew of the training label histogram (whole split)."""
    counts = np.asarray(ctx.info.train_label_counts, np.float64)
    present = counts[counts > 0]
    ratio = float(present.max() / present.min()) if present.size else math.inf
    share = float(counts.max() / max(counts.sum(), 1))
    evidence = {"max_over_min": ratio, "largest_share": share, "counts": counts.astype(int).tolist()[:100]}
    weighting = ctx.config.training.class_weighting
    if (ratio > IMBALANCE_RATIO or share > DOMINANT_SHARE) and ctx.info.task == "classification":
        status = "WARN" if weighting == "none" else "PASS"
        return CheckResult("class_imbalance", status, f"Training classes are imbalanced: largest/smallest = "
                           f"{ratio:.1f}, largest share {share:.0%} (class weighting: {weighting}).", evidence,
                           ("--config.training.class_weighting=cube_root_inverse",))
    return CheckResult("class_imbalance", "PASS", f"Largest/smallest class = {ratio:.1f}.", evidence)


def check_split_class_mismatch(ctx: _Context) -> CheckResult:
    """Classes present in the eval split but absent from training."""
    train = np.asarray(ctx.info.train_label_counts)
    eval_labels = np.concatenate([b["label"][b["mask"] > 0].ravel() for b in ctx.eval_batches])
    eval_counts = np.bincount(eval_labels[(eval_labels >= 0) & (eval_labels < len(train))], minlength=len(train))
    unseen = [ctx.info.class_names[c] for c in np.flatnonzero((eval_counts > 0) & (train == 0))]
    evidence = {"unseen_classes": unseen[:20], "eval_examples_of_unseen": int(eval_counts[train == 0].sum())}
    if unseen:
        return CheckResult("split_class_mismatch", "FAIL", f"{len(unseen)} eval classes never occur in training: "
                           f"{unseen[:5]}.", evidence, ("Split train/eval with a stratified or shuffled split, not "
                                                        "by cutting a class-sorted list.",))
    return CheckResult("split_class_mismatch", "PASS", "Every eval class occurs in training.", evidence)


def _hashes(images: np.ndarray) -> set[int]:
    return {hash(image.tobytes()) for image in images}


def check_split_overlap(ctx: _Context) -> CheckResult:
    """Identical images in the training and eval splits."""
    train = _hashes(ctx.pipeline.unaugmented_examples("train")["raw"])
    eval_raw = ctx.pipeline.unaugmented_examples("eval")["raw"]
    shared = sum(hash(image.tobytes()) in train for image in eval_raw)
    share = shared / max(len(eval_raw), 1)
    evidence = {"eval_examples": len(eval_raw), "also_in_train": shared, "share": share}
    if shared:
        return CheckResult("split_overlap", "FAIL" if share > 0.01 else "WARN", f"{shared} eval images "
                           f"({share:.1%}) also occur in training: eval accuracy overstates generalization.",
                           evidence, ("Use disjoint splits, e.g. --config.data.train_split='train[:90%]' "
                                      "--config.data.eval_split='train[90%:]'.",))
    return CheckResult("split_overlap", "PASS", "No eval image occurs in training.", evidence)


def check_transform_leak(ctx: _Context) -> CheckResult:
    """Eval batches are deterministic and un-augmented; training batches are augmented when configured."""
    first = ctx.eval_batches[0]
    again = next(ctx.pipeline.eval_batches(ctx.config.training.eval_batch_size))
    n = int(first["mask"].sum())
    reference = ctx.pipeline.unaugmented_examples("eval", n)
    eval_repeat = float(np.abs(first["color"][:n] - again["color"][:n]).max())
    eval_vs_raw = float(np.abs(first["color"][:n] - reference["color"]).max())
    data = ctx.config.data
    augments = data.crop_padding > 0 or data.random_flip
    train = ctx.train_batches[0]
    evidence = {"eval_repeat_max_diff": eval_repeat, "eval_vs_unaugmented_max_diff": eval_vs_raw,
                "train_augmentation_configured": bool(augments)}
    if eval_repeat > 1e-5 or eval_vs_raw > 1e-4:
        return CheckResult("transform_leak", "FAIL", f"Eval inputs differ between passes ({eval_repeat:.3g}) or "
                           f"from the un-augmented images ({eval_vs_raw:.3g}): augmentation leaks into eval.",
                           evidence, ("Apply augmentation in the training pipeline only.",))
    if augments:
        train_reference = ctx.pipeline.unaugmented_examples("train", 4096)
        train_hashes = _hashes(train_reference["color"])
        unchanged = np.mean([hash(x.tobytes()) in train_hashes for x in train["color"]])
        evidence["train_unchanged_share"] = float(unchanged)
        if unchanged > 0.9:
            return CheckResult("transform_leak", "WARN", f"{unchanged:.0%} of training inputs equal un-augmented "
                               "images although augmentation is configured.", evidence)
    return CheckResult("transform_leak", "PASS", "Eval is deterministic and un-augmented.", evidence)


def check_pathway_inputs(ctx: _Context) -> CheckResult:
    """Brightness is the luma of the same (identically augmented) color image."""
    batch = ctx.train_batches[0]
    rgb, brightness = ctx.pipeline.denormalize(batch)
    error = float(np.abs(rgb @ np.asarray(LUMA_WEIGHTS, np.float32) - brightness).max())
    evidence = {"max_abs_luma_error": error, "tolerance": LUMA_TOLERANCE}
    if not error <= LUMA_TOLERANCE:
        return CheckResult("pathway_inputs", "FAIL", f"Brightness differs from the luma of the color input by up "
                           f"to {error:.3g}: the pathways see different images (crop, flip or order).", evidence,
                           ("Derive brightness from the augmented RGB image (data.preprocessing.pathway_inputs).",))
    return CheckResult("pathway_inputs", "PASS", f"Brightness = luma(color) within {error:.1g}.", evidence)


def check_init_loss(ctx: _Context) -> CheckResult:
    """The initial loss is near the loss of an uninformed model: the task's own loss (class weights, auxiliary
    heads and a Dice term included) of all-zero logits on the same batch; ln K for plain balanced classification."""
    outputs, loss, _ = ctx.outputs_loss_grads
    uniform = jax.tree.map(np.zeros_like, outputs)
    expected = float(ctx.experiment.task.data_loss(uniform, ctx.train_batches[0]["label"], 0.0))
    ratio = loss / max(expected, 1e-6)
    evidence = {"initial_loss": loss, "expected": expected, "ratio": ratio}
    if not math.isfinite(loss) or ratio > INIT_LOSS_FAIL:
        return CheckResult("init_loss", "FAIL", f"Initial loss {loss:.3g} is {ratio:.1f}x the expected "
                           f"{expected:.3f}: the output layer starts far too confident.", evidence,
                           ("Initialize the classifier with small weights and zero bias; do not scale logits.",))
    if ratio > INIT_LOSS_WARN:
        return CheckResult("init_loss", "WARN", f"Initial loss {loss:.3f} is {ratio:.1f}x the expected "
                           f"{expected:.3f}.", evidence)
    return CheckResult("init_loss", "PASS", f"Initial loss {loss:.3f} vs expected {expected:.3f}.", evidence)


def check_output_probabilities(ctx: _Context) -> CheckResult:
    """The model returns logits, not probabilities (a softmax in the head would be applied twice)."""
    outputs, _, _ = ctx.outputs_loss_grads
    logits = np.asarray(outputs["logits"], np.float64)
    sums = logits.sum(-1)
    looks_like_probabilities = bool(logits.min() >= 0 and logits.max() <= 1 and np.allclose(sums, 1, atol=1e-3))
    evidence = {"min": float(logits.min()), "max": float(logits.max()), "mean_row_sum": float(sums.mean())}
    if looks_like_probabilities:
        return CheckResult("output_probabilities", "FAIL", "Model outputs are in [0, 1] and sum to 1: the model "
                           "applies a softmax, and the loss applies another.", evidence,
                           ("Return raw logits from the model head (no softmax / sigmoid).",))
    return CheckResult("output_probabilities", "PASS", "Model outputs are unnormalized logits.", evidence)


def _module_grad_norms(grads) -> dict[str, float]:
    """Sum of squared gradients per module (the top two levels of the parameter tree)."""
    norms = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        module = module_of(tuple(k.key for k in path))
        norms[module] = norms.get(module, 0.0) + float(np.sum(np.square(leaf, dtype=np.float64)))
    return norms


def _reached(value: float) -> bool:
    return value > 0 and math.isfinite(value)


def check_gradient_reach(ctx: _Context) -> CheckResult:
    """Every module receives a non-zero gradient, at initialization or (behind a zero-initialised scale, as in
    identity-at-init residual blocks) after one small gradient step."""
    _, _, grads = ctx.outputs_loss_grads
    norms = _module_grad_norms(grads)
    silent_at_init = [m for m, v in norms.items() if not _reached(v)]
    probed = _module_grad_norms(ctx.grads_after_probe_step) if silent_at_init else {}
    unreached = [m for m in silent_at_init if not _reached(probed.get(m, 0.0))]
    after_one_step = [m for m in silent_at_init if m not in unreached]
    evidence = {"modules": len(norms), "unreached": unreached[:20], "reached_after_one_step": after_one_step[:20]}
    if unreached:
        return CheckResult("gradient_reach", "FAIL", f"{len(unreached)} of {len(norms)} modules get no gradient, "
                           f"also after one gradient step: {unreached[:5]}.", evidence,
                           ("Connect these modules to the output (or remove them); look for stop_gradient or "
                            "unused branches.",))
    later = (f" ({len(after_one_step)} only after one step: they sit behind a zero-initialised scale)"
             if after_one_step else "")
    return CheckResult("gradient_reach", "PASS", f"All {len(norms)} modules get a gradient{later}.", evidence)


def check_overfit_one_batch(ctx: _Context) -> CheckResult:
    """One small batch can be fitted (Adam, no regularization) in rounds of `config.diagnostics.overfit_steps`
    steps, more rounds only while the batch's loss keeps falling; the same batch drawn twice from the pipeline
    must carry the same labels."""
    experiment, mesh = ctx.experiment, ctx.experiment.mesh
    size = max(OVERFIT_EXAMPLES // mesh.devices.size, 1) * mesh.devices.size
    stream_batch = lambda: next(ctx.pipeline.train_batches(ctx.config.training.batch_size))  # noqa: E731
    first, second = stream_batch(), stream_batch()
    same_images = np.array_equal(first["color"][:size], second["color"][:size])
    labels_changed = same_images and not np.array_equal(first["label"][:size], second["label"][:size])
    batch = to_global_batch({k: v[:size] for k, v in first.items()}, mesh)
    adam = ctx.config.copy_and_resolve_references()
    adam.optimizer.update(name="adam", weight_decay=0.0, grad_clip_norm=0.0, lr_multipliers=(), accumulation_steps=1)
    overfit = experiment.with_schedule(optax.constant_schedule(OVERFIT_LR), optimizer=adam.optimizer)
    state = overfit.init_state()
    step_fn, _ = jitted_steps(overfit)
    hyperparams = partitioning.put_hyperparams({**overfit.hyperparams(0, learning_rate=OVERFIT_LR),
                                                **NO_REGULARIZATION}, mesh)
    round_steps = int(ctx.config.diagnostics.overfit_steps)

    def fitted(state) -> tuple[float, float]:
        outputs = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch, train=False)
        loss = float(experiment.task.data_loss(outputs, batch["label"], 0.0))
        return float(jnp.mean(experiment.task.correct(outputs["logits"], batch["label"]))), loss

    losses, steps = [fitted(state)[1]], 0
    for _ in range(1 if labels_changed else OVERFIT_MAX_ROUNDS):
        for _ in range(round_steps):
            metrics = jax.device_put(TrainMetrics.empty(), partitioning.replicated(mesh))
            state, metrics, _ = step_fn(state, metrics, None, batch, hyperparams)
        steps += round_steps
        accuracy, loss = fitted(state)
        still_falling = loss <= (1 - OVERFIT_MIN_PROGRESS) * losses[-1]
        losses.append(loss)
        if accuracy >= OVERFIT_PASS or not still_falling:
            break
    evidence = {"examples": size, "steps": steps, "accuracy": accuracy, "batch_losses": losses,
                "labels_change_between_draws": labels_changed}
    if labels_changed:
        return CheckResult("overfit_one_batch", "FAIL", "The same images come with different labels on two draws "
                           "of the first batch: labels are not attached to their images.", evidence,
                           ("Keep image and label in one example through shuffling and batching.",))
    if accuracy >= OVERFIT_PASS:
        return CheckResult("overfit_one_batch", "PASS", f"One batch of {size} fitted to {accuracy:.0%} in {steps} "
                           "steps.", evidence)
    status = "WARN" if accuracy >= OVERFIT_WARN else "FAIL"
    if still_falling:
        return CheckResult("overfit_one_batch", status, f"Could fit one batch of {size} only to {accuracy:.0%} in "
                           f"{steps} steps, its loss still falling: the model learns slowly or the LR "
                           f"({OVERFIT_LR:g}, Adam) does not suit it.", evidence,
                           (f"--config.diagnostics.overfit_steps={2 * round_steps}",))
    return CheckResult("overfit_one_batch", status, f"Could fit one batch of {size} only to {accuracy:.0%} in "
                       f"{steps} steps, and its loss on the batch stopped falling: the model or the labels are "
                       "broken.", evidence, ("Check the model's output layer and the labels of the batch.",))


def check_lr_range(ctx: _Context, workdir: str | None = None) -> CheckResult:
    """The LR range test's suggestion vs the configured LR."""
    result = lr_range_test(ctx.experiment)
    configured = float(ctx.config.optimizer.learning_rate)
    if workdir:
        write_lr_find(result, os.path.join(workdir, "diagnostics"), configured)
    evidence = {"suggested": result.suggestion, "configured": configured, "steps": len(result.losses)}
    if not math.isfinite(result.suggestion):
        return CheckResult("lr_range", "WARN", "The LR range test found no LR at which the loss fell.", evidence)
    factor = configured / result.suggestion
    evidence["configured_over_suggested"] = factor
    advice = (f"--config.optimizer.learning_rate={result.suggestion:.2g}",)
    if factor > LR_FAIL_FACTOR:
        return CheckResult("lr_range", "FAIL", f"Configured LR {configured:g} is {factor:.0f}x the suggested "
                           f"{result.suggestion:.2g}.", evidence, advice)
    if factor > LR_WARN_FACTOR or factor < 1 / LR_FAIL_FACTOR:
        return CheckResult("lr_range", "WARN", f"Configured LR {configured:g} is {factor:.2g}x the suggested "
                           f"{result.suggestion:.2g}.", evidence, advice)
    return CheckResult("lr_range", "PASS", f"Configured LR {configured:g} is {factor:.2g}x the suggested "
                       f"{result.suggestion:.2g}.", evidence)


CHECKS: dict[str, Callable[..., CheckResult]] = {
    "data_nonfinite": check_data_nonfinite, "data_range": check_data_range,
    "labels_out_of_range": check_labels_out_of_range, "class_imbalance": check_class_imbalance,
    "split_class_mismatch": check_split_class_mismatch, "split_overlap": check_split_overlap,
    "transform_leak": check_transform_leak, "pathway_inputs": check_pathway_inputs, "init_loss": check_init_loss,
    "output_probabilities": check_output_probabilities, "gradient_reach": check_gradient_reach,
    "overfit_one_batch": check_overfit_one_batch, "lr_range": check_lr_range,
}


def run_preflight(experiment: Experiment, workdir: str | None = None,
                  checks: tuple[str, ...] | None = None) -> list[CheckResult]:
    """Runs the named checks (all by default) and, with a `workdir`, writes `workdir/preflight.json`. A check
    that crashes is reported as FAIL with its error instead of hiding the others."""
    unknown = set(checks or ()) - set(CHECKS)
    if unknown:
        raise ValueError(f"Unknown preflight checks {sorted(unknown)}; valid: {list(CHECKS)}.")
    ctx = _Context(experiment)
    results = []
    for name in checks or CHECKS:
        try:
            result = CHECKS[name](ctx, workdir) if name == "lr_range" else CHECKS[name](ctx)
        except Exception as error:  # a broken check must not hide the others
            logging.exception("Preflight check %s failed to run.", name)
            result = CheckResult(name, "FAIL", f"The check could not run: {type(error).__name__}: {error}", {})
        results.append(result)
        logging.info("preflight %-22s %s  %s", name, result.status, result.message)
    if workdir and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "preflight.json"), "w") as f:
            json.dump({"checks": [r.to_json() for r in results]}, f, indent=2, default=str)
    return results


def format_results(results: list[CheckResult]) -> str:
    """One line per check: status, id, message; then the advice of WARN / FAIL checks."""
    lines = [f"{r.status:4}  {r.id:22} {r.message}" for r in results]
    for r in results:
        lines += [f"  {r.id}: {advice}" for advice in r.recommendations if r.status != "PASS"]
    return "\n".join(lines)


def require_preflight(experiment: Experiment, workdir: str) -> None:
    """Runs every check before training; raises a RuntimeError listing the FAILs (training does not start)."""
    results = run_preflight(experiment, workdir)
    failed = [r for r in results if r.status == "FAIL"]
    if failed:
        raise RuntimeError("Preflight failed (config.preflight=True), training not started:\n"
                           + format_results(results))
