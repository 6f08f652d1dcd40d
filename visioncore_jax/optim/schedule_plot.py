"""The LR trajectory of a config, step by step as training applies it, and its plot (see plot_schedules.py)."""

import jax
import numpy as np
from matplotlib.figure import Figure

from visioncore_jax.optim import durations
from visioncore_jax.optim.optimizers import build_optimizer


def lr_trajectory(config, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, learning rates) of every train step of the configured run: the same durations and the same
    step -> LR function as training (gradient accumulation included)."""
    total = durations.num_train_steps(config.training, steps_per_epoch)
    _, learning_rate_fn = build_optimizer(config, steps_per_epoch, total)
    steps = np.arange(total)
    return steps / steps_per_epoch, np.asarray(jax.vmap(learning_rate_fn)(steps))


def plot(config, names, steps_per_epoch: int, out: str) -> None:
    """Draws one panel per schedule name (with the config's other settings) into `out`."""
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    fig = Figure(figsize=(4 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        variant = config.copy_and_resolve_references()
        variant.schedule.name = name
        epochs, lrs = lr_trajectory(variant, steps_per_epoch)
        ax.plot(epochs, lrs)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("learning rate")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
