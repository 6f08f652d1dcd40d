r"""Plots the LR trajectory of a config, or of every schedule side by side, to a PNG.

  python -m visioncore_jax.optim.plot_schedules --config=configs/default.py --out=lr.png
  python -m visioncore_jax.optim.plot_schedules --config=configs/default.py --all --out=schedules.png

The run length comes from the config (`num_epochs` or `num_train_steps`); `--steps_per_epoch` sets the
epoch length, since the dataset is not read.
"""

from absl import app, flags
from ml_collections import config_flags

from visioncore_jax.optim.schedule_plot import plot
from visioncore_jax.optim.schedules import SCHEDULES

config_flags.DEFINE_config_file("config", "configs/default.py", "Config whose schedule to plot.", lock_config=True)
flags.DEFINE_string("out", "lr_schedule.png", "Output PNG path.")
flags.DEFINE_bool("all", False, "Plot every schedule with this config's settings, one panel each.")
flags.DEFINE_integer("steps_per_epoch", 100, "Steps per epoch used to convert epoch durations.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    names = SCHEDULES if FLAGS.all else (FLAGS.config.schedule.name,)
    plot(FLAGS.config, names, FLAGS.steps_per_epoch, FLAGS.out)
    print(f"Wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
