r"""Where a train step's time goes: the jitted forward pass (training mode, with the loss), forward + backward
(`jax.value_and_grad` of that loss) and the whole train step, in ms per call, for one benchmarked model.

  python -m benchmarks.step_parts --model=cifar100_mc --batch=64 --rounds=3
  # the PyTorch original's same three parts (scratch venv; see torch_original_step.py):
  /tmp/torchab/venv/bin/python -m benchmarks.torch_original_step --source=/tmp/torchab/original/src --parts

`--batch` and `--rounds` are step_speed's flags. The three are compiled first, then timed in turn in each round
(`--calls` calls each); the median round is printed. Backward = forward + backward - forward; optimizer = step -
forward + backward (the step also merges its metrics and checks the gradients are finite).
"""

import jax
from absl import app, flags

from benchmarks.step_speed import MODELS, StepTimer, benchmark_config, build
from benchmarks.timing import mean_ms, print_step_parts, time_in_rounds
from visioncore_jax.train.steps import training_loss

flags.DEFINE_enum("model", "cifar100_mc", list(MODELS), "Benchmarked model.")
flags.DEFINE_string("dtype", "float32", "config.training.dtype.")
flags.DEFINE_integer("calls", 8, "Calls per part per round.")
FLAGS = flags.FLAGS  # also step_speed's --batch (0: the config's) and --rounds


def part_functions(timer: StepTimer):
    """(forward, forward + backward) closures of the train step's loss, without and with its gradient, on the
    timer's batch and current state (the step donates its state, so each call reads `timer.state` anew)."""
    _, _, _, batch, hyperparams = timer.step_args(False)

    def loss_fn(params, batch_stats):
        return training_loss(timer.experiment.model.apply, params, batch_stats, batch, hyperparams,
                             jax.random.PRNGKey(0), task=timer.experiment.task)[0]

    forward, forward_backward = jax.jit(loss_fn), jax.jit(jax.value_and_grad(loss_fn))
    return (lambda: forward(timer.state.params, timer.state.batch_stats),
            lambda: forward_backward(timer.state.params, timer.state.batch_stats))


def main(argv):
    """Prints the median ms of each part and the backward and optimizer shares they imply."""
    del argv
    config = benchmark_config(FLAGS.model, FLAGS.dtype, FLAGS.batch)
    timer = StepTimer(build(config))
    timer.compile(False)
    forward, forward_backward = part_functions(timer)
    batch = config.training.batch_size
    for fn in (forward, forward_backward):
        jax.block_until_ready(fn())
    times = time_in_rounds({
        "forward": lambda: mean_ms(forward, FLAGS.calls, jax.block_until_ready),
        "forward + backward": lambda: mean_ms(forward_backward, FLAGS.calls, jax.block_until_ready),
        "step": lambda: batch / timer.images_per_sec(FLAGS.calls, False) * 1e3,
    }, FLAGS.rounds)
    print(f"{FLAGS.model} {FLAGS.dtype} batch {batch} on {jax.devices()[0].device_kind}, ms per call (median of "
          f"{FLAGS.rounds} rounds of {FLAGS.calls}):")
    print_step_parts(times)


if __name__ == "__main__":
    app.run(main)
