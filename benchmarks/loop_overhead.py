r"""Framework overhead: images/s of the bare jitted train step on one in-memory batch vs the full
`train_and_evaluate` loop (input pipeline, sharding, metrics, logging, checkpoints) on the embedded dataset.

Both are measured in one process on the same model. The loop's steady-state rate is taken from the difference
of two runs of different lengths, so compilation, the end-of-run eval and the final checkpoint cancel out.

  python -m benchmarks.loop_overhead --config=configs/default.py --steps=40
"""

import tempfile
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from benchmarks.step_timing import StepTimer
from visioncore_jax.train import train_and_evaluate
from visioncore_jax.train.experiment import build_experiment

config_flags.DEFINE_config_file("config", "configs/default.py", "Config to benchmark.", lock_config=True)
flags.DEFINE_integer("steps", 40, "Timed steps (the loop runs `steps` and `2 * steps`).")
FLAGS = flags.FLAGS


def loop_images_per_sec(config, steps: int) -> float:
    """Steady-state images/s of `train_and_evaluate`, from runs of `steps` and `2 * steps` steps."""
    durations = []
    for num_steps in (steps, 2 * steps):
        run_config = config.copy_and_resolve_references()
        run_config.training.update(num_epochs=-1, num_train_steps=num_steps, log_every_steps=10)
        run_config.schedule.warmup_epochs = 0.0  # the schedule does not change the cost; short runs need no warmup
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            jax.block_until_ready(train_and_evaluate(run_config, workdir))
            durations.append(time.perf_counter() - start)
    return steps * config.training.batch_size / (durations[1] - durations[0])


def main(argv):
    del argv
    config = FLAGS.config
    # The loop runs with its default diagnostics (on); the bare step is compared both ways.
    timer = StepTimer(build_experiment(config))
    bare = timer.images_per_sec(FLAGS.steps, statistics=False)
    bare_with_statistics = timer.images_per_sec(FLAGS.steps, statistics=True)
    loop = loop_images_per_sec(config, FLAGS.steps)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; batch {config.training.batch_size}")
    print(f"bare jitted step:       {bare:9.1f} images/s")
    print(f"  with statistics:      {bare_with_statistics:9.1f} images/s")
    print(f"train_and_evaluate:     {loop:9.1f} images/s")
    print(f"loop / bare:            {loop / bare:9.3f}")


if __name__ == "__main__":
    app.run(main)
