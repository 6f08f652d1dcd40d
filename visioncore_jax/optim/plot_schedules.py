r"""Plots the LR trajectory of a config, or of every schedule side by side, to a PNG.

  python -m visioncore_jax.optim.plot_schedules --config=configs/default.py --out=lr.png
  python -m visioncore_jax.optim.plot_schedules --config=configs/default.py --all --out=schedules.png

The run length comes from the config (`num_epochs` or `num_train_steps`); `--steps_per_epoch` sets the
epoch length, since the dataset is not read.
"""

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from visioncore_jax.optim import durations  # noqa: E402
from visioncore_jax.optim.optimizers import build_optimizer  # noqa: E402
from visioncore_jax.optim.schedules import SCHEDULES  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/default.py", "Config whose schedule to plot.", lock_config=True)
flags.DEFINE_string("out", "lr_schedule.png", "Output PNG path.")
flags.DEFINE_bool("all", False, "Plot every schedule with this config's settings, one panel each.")
flags.DEFINE_integer("steps_per_epoch", 100, "Steps per epoch used to convert epoch durations.")
FLAGS = flags.FLAGS


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
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False, sharey=True)
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


def main(argv):
    del argv
    names = SCHEDULES if FLAGS.all else (FLAGS.config.schedule.name,)
    plot(FLAGS.config, names, FLAGS.steps_per_epoch, FLAGS.out)
    print(f"Wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
