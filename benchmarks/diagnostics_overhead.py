r"""Cost of the in-step diagnostics statistics: images/s of the jitted train step with statistics on vs off,
in one process on one device-resident batch, alternating on/off rounds so drift affects both equally.

  python -m benchmarks.diagnostics_overhead --config=configs/default.py --steps=50 --rounds=3
  python -m benchmarks.diagnostics_overhead --config=configs/video_convgru.py --steps=50 --rounds=3
"""

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks.step_timing import StepTimer
from visioncore_jax.train.experiment import build_experiment

config_flags.DEFINE_config_file("config", "configs/default.py", "Config to benchmark.", lock_config=True)
flags.DEFINE_integer("steps", 50, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating off/on rounds; the median of each is reported.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config = FLAGS.config
    timer = StepTimer(build_experiment(config))
    off, on = [], []
    for _ in range(FLAGS.rounds):
        off.append(timer.images_per_sec(FLAGS.steps, statistics=False))
        on.append(timer.images_per_sec(FLAGS.steps, statistics=True))
    off_rate, on_rate = float(np.median(off)), float(np.median(on))
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; model {config.model.name}; "
          f"batch {config.training.batch_size}; {FLAGS.rounds} rounds of {FLAGS.steps} steps")
    print(f"statistics off: {off_rate:9.1f} images/s  (rounds: {np.round(off, 1).tolist()})")
    print(f"statistics on:  {on_rate:9.1f} images/s  (rounds: {np.round(on, 1).tolist()})")
    print(f"step-time overhead: {100 * (off_rate / on_rate - 1):+.2f}%")


if __name__ == "__main__":
    app.run(main)
