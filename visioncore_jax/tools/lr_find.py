"""The LR range test (Smith 2017): train from the initial state while the LR grows exponentially, record the
loss, and suggest an LR.

Rule: the loss is smoothed with a bias-corrected exponential moving average (factor 0.9); the sweep stops when
the smoothed loss exceeds 4x its minimum or turns non-finite; the suggestion is the LR at the minimum of the
smoothed loss divided by 10 (the "valley / 10" rule: the minimum sits where the LR is already about to
diverge, one decade below is fast and stable).
"""

import dataclasses
import json
import math
import os

import jax
import numpy as np
from matplotlib.figure import Figure

from visioncore_jax.data import to_global_batch
from visioncore_jax.train import partitioning
from visioncore_jax.train.experiment import Experiment, jitted_steps
from visioncore_jax.train.metrics import TrainMetrics

SMOOTHING = 0.9
DIVERGENCE_FACTOR = 4.0
SUGGESTION_DIVISOR = 10.0


@dataclasses.dataclass(frozen=True)
class LRRangeResult:
    """Learning rates tried, raw and smoothed losses, and the suggested LR (NaN when nothing was learned)."""

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    stopped_early: bool

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def exponential_sweep(min_lr: float, max_lr: float, steps: int):
    """`lr(step) = min_lr · (max_lr / min_lr)^(step / (steps − 1))`."""
    return lambda step: min_lr * (max_lr / min_lr) ** (step / max(steps - 1, 1))


def smoothed_losses(losses: list[float]) -> list[float]:
    """Bias-corrected EMA of `losses` (non-finite values stay non-finite)."""
    average, out = 0.0, []
    for index, loss in enumerate(losses, start=1):
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        out.append(average / (1 - SMOOTHING**index))
    return out


def suggest(learning_rates: list[float], smoothed: list[float]) -> float:
    """LR at the smoothed loss's minimum / 10; NaN when the loss never fell below its start."""
    values = np.asarray(smoothed, np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return math.nan
    best = int(np.nanargmin(np.where(finite, values, np.inf)))
    if best == 0:
        return math.nan
    return float(learning_rates[best] / SUGGESTION_DIVISOR)


def lr_range_test(experiment: Experiment, steps: int | None = None, min_lr: float | None = None,
                  max_lr: float | None = None) -> LRRangeResult:
    """Sweeps the LR over `steps` training steps of the configured model and optimizer (defaults from
    `config.diagnostics.lr_find_*`), from the initial state; robust to NaN and divergence."""
    settings = experiment.config.diagnostics
    steps = steps or settings.lr_find_steps
    min_lr, max_lr = min_lr or settings.lr_find_min, max_lr or settings.lr_find_max
    if not 0 < min_lr < max_lr or steps < 2:
        raise ValueError(f"The LR range test needs 0 < min ({min_lr}) < max ({max_lr}) and >= 2 steps ({steps}); "
                         "set config.diagnostics.lr_find_min / lr_find_max / lr_find_steps.")
    # The sweep counts optimizer updates: with gradient accumulation (k steps per update) it spans the
    # ceil(steps / k) updates of the test, and each step records the LR it actually applied.
    updates = -(-steps // experiment.config.optimizer.accumulation_steps)
    sweeping = experiment.with_schedule(exponential_sweep(min_lr, max_lr, updates))
    mesh = experiment.mesh
    state = sweeping.init_state()
    step_fn, _ = jitted_steps(sweeping)
    batches = experiment.pipeline.train_batches(experiment.config.training.batch_size)
    learning_rates, losses, best, stopped = [], [], math.inf, False
    for step in range(steps):
        # The sweep's LR with the run's regularization at its start.
        hyperparams = partitioning.put_hyperparams(
            experiment.hyperparams(0, learning_rate=sweeping.learning_rate_fn(step)), mesh)
        metrics = jax.device_put(TrainMetrics.empty(), partitioning.replicated(mesh))
        state, metrics, _ = step_fn(state, metrics, None, to_global_batch(next(batches), mesh), hyperparams)
        computed = metrics.compute()
        learning_rates.append(float(computed["learning_rate"]))
        losses.append(float(computed["loss"]))
        smoothed = smoothed_losses(losses)[-1]
        best = min(best, smoothed) if math.isfinite(smoothed) else best
        if not math.isfinite(smoothed) or smoothed > DIVERGENCE_FACTOR * best:
            stopped = True
            break
    smoothed = smoothed_losses(losses)
    return LRRangeResult(learning_rates, losses, smoothed, suggest(learning_rates, smoothed), stopped)


def write_lr_find(result: LRRangeResult, directory: str, configured_lr: float) -> tuple[str, str]:
    """Writes `lr_find.json` and `lr_find.png` (loss vs LR, log x) to `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(result.learning_rates, result.losses, alpha=0.3, label="loss")
    ax.plot(result.learning_rates, result.smoothed, label="smoothed loss")
    if math.isfinite(result.suggestion):
        ax.axvline(result.suggestion, color="green", linestyle="--", label=f"suggested {result.suggestion:.2g}")
    ax.axvline(configured_lr, color="red", linestyle=":", label=f"configured {configured_lr:.2g}")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), DIVERGENCE_FACTOR * min(finite)) * 1.1)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    ax.legend()
    fig.tight_layout()
    png, path = os.path.join(directory, "lr_find.png"), os.path.join(directory, "lr_find.json")
    fig.savefig(png, dpi=100)
    with open(path, "w") as f:
        json.dump({**result.to_json(), "configured_learning_rate": configured_lr}, f, indent=1)
    return path, png
