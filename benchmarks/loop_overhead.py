r"""Framework overhead: images/s of the bare jitted train step on one in-memory batch vs the full
`train_and_evaluate` loop (input pipeline, sharding, metrics, logging, checkpoints) on the embedded dataset.

Both are measured in one process on the same model. The loop's steady-state rate is taken from the difference
of two runs of different lengths, so compilation, the end-of-run eval and the final checkpoint cancel out.

  python -m benchmarks.loop_overhead --config=configs/default.py --steps=40
"""

import functools
import tempfile
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from visioncore_jax.data import build_input, to_global_batch
from visioncore_jax.models import build_model
from visioncore_jax.optim import build_optimizer
from visioncore_jax.optim.stability import regularization_at
from visioncore_jax.train import partitioning, train_and_evaluate
from visioncore_jax.train.metrics import TrainMetrics
from visioncore_jax.train.state import create_train_state
from visioncore_jax.train.steps import train_step

config_flags.DEFINE_config_file("config", "configs/default.py", "Config to benchmark.", lock_config=True)
flags.DEFINE_integer("steps", 40, "Timed steps (the loop runs `steps` and `2 * steps`).")
FLAGS = flags.FLAGS


def bare_step_images_per_sec(config, steps: int) -> float:
    """Images/s of the jitted train step alone, re-feeding one device-resident batch."""
    mesh = partitioning.make_mesh()
    pipeline = build_input(config)
    batch = to_global_batch(next(pipeline.train_batches(config.training.batch_size)), mesh)
    model = build_model(config, pipeline.info.num_classes)
    tx, schedule = build_optimizer(config, steps_per_epoch=100, total_steps=10_000)
    example = {k: v[:1] for k, v in batch.items() if k != "label"}
    state = partitioning.jit_replicated(create_train_state, mesh, model=model, tx=tx, example_inputs=example,
                                        seed=0)()
    metrics = jax.device_put(TrainMetrics.empty(), partitioning.replicated(mesh))
    step = partitioning.jit_train_step(functools.partial(train_step, learning_rate_fn=schedule), mesh)
    regularization = jax.device_put(regularization_at(config, 0.0), partitioning.replicated(mesh))
    state, metrics = step(state, metrics, batch, regularization)  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, metrics, batch, regularization)
    jax.block_until_ready(state)
    return steps * config.training.batch_size / (time.perf_counter() - start)


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
    bare = bare_step_images_per_sec(config, FLAGS.steps)
    loop = loop_images_per_sec(config, FLAGS.steps)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; batch {config.training.batch_size}")
    print(f"bare jitted step:       {bare:9.1f} images/s")
    print(f"train_and_evaluate:     {loop:9.1f} images/s")
    print(f"loop / bare:            {loop / bare:9.3f}")


if __name__ == "__main__":
    app.run(main)
