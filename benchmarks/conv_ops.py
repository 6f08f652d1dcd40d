r"""Time one 3x3 convolution's forward pass, input gradient and weight gradient at the CIFAR-100 dual ResNet-18's
layer shapes (batch 64, stride 1, padding 1, fp32 or `--dtype=bfloat16`), in JAX (this project's XLA flags) or in
PyTorch.

  python -m benchmarks.conv_ops --rounds=5
  # torch is not a dependency: run the same module with a scratch venv's Python (see torch_original_step.py)
  /tmp/torchab/venv/bin/python -m benchmarks.conv_ops --framework=torch --threads=2 --rounds=5

Alternate the two processes on an idle machine. Each line prints the median over rounds of the mean time of
`--calls` calls, in ms; `gflops` is the convolution's 2·N·H·W·Cin·Cout·9 floating-point operations over the
weight gradient's time. torch is timed through `aten.convolution_backward` with one output requested at a time,
the call its autograd makes; JAX through `jax.vjp` of `lax.conv_general_dilated`, jitted alone.
"""

import argparse
import statistics

from benchmarks.timing import mean_ms

SHAPES = ((32, 32), (16, 64), (8, 128), (4, 256))  # (height = width, channels in = out), one per stage
BATCH = 64


def _median_ms(fn, calls: int, rounds: int, sync) -> float:
    """Median over `rounds` of the mean wall time of `calls` calls of `fn`, after 3 untimed calls."""
    for _ in range(3):
        sync(fn())
    return statistics.median(mean_ms(fn, calls, sync) for _ in range(rounds))


def jax_inputs(size: int, channels: int, dtype: str = "float32"):
    """(x [64, size, size, channels], w [3, 3, channels, channels], dy like x): random JAX arrays of `dtype`."""
    import jax

    key_x, key_w, key_dy = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(key_x, (BATCH, size, size, channels), dtype)
    return x, jax.random.normal(key_w, (3, 3, channels, channels), dtype), jax.random.normal(key_dy, x.shape, dtype)


def jax_ops(size: int, channels: int, dtype: str = "float32"):
    """(forward, input gradient, weight gradient, sync) closures of a JAX NHWC/HWIO convolution on `jax_inputs`."""
    import jax
    from jax import lax

    x, w, dy = jax_inputs(size, channels, dtype)

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))

    forward = jax.jit(conv)
    input_grad = jax.jit(lambda w, dy: jax.vjp(lambda x_: conv(x_, w), x)[1](dy)[0])
    weight_grad = jax.jit(lambda x, dy: jax.vjp(lambda w_: conv(x, w_), w)[1](dy)[0])
    return (lambda: forward(x, w), lambda: input_grad(w, dy), lambda: weight_grad(x, dy),
            jax.block_until_ready)


def torch_ops(size: int, channels: int, dtype: str = "float32"):
    """(forward, input gradient, weight gradient, sync) closures of a torch NCHW convolution (oneDNN on CPU)."""
    import torch

    dtype = getattr(torch, dtype)
    x = torch.randn(BATCH, channels, size, size, dtype=dtype)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype)
    dy = torch.randn(BATCH, channels, size, size, dtype=dtype)

    def backward(mask):
        return torch.ops.aten.convolution_backward(dy, x, w, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, mask)

    return (lambda: torch.nn.functional.conv2d(x, w, padding=1), lambda: backward((True, False, False)),
            lambda: backward((False, True, False)), lambda result: result)


def main() -> None:
    """Prints one line per layer shape."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--framework", choices=("jax", "torch"), default="jax")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (torch only).")
    parser.add_argument("--calls", type=int, default=10, help="Calls per round.")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds; the median is reported.")
    args = parser.parse_args()
    if args.framework == "torch":
        import torch

        torch.set_num_threads(args.threads)
        make, version = torch_ops, f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    else:
        import jax

        import visioncore_jax  # noqa: F401  (its XLA:CPU flags; they must be set before the backend starts)

        make, version = jax_ops, f"jax {jax.__version__}, {jax.devices()[0].device_kind}"
    print(f"{version}; batch {BATCH}, {args.dtype}, 3x3 stride 1; ms per call (median of {args.rounds} rounds)")
    for size, channels in SHAPES:
        forward, input_grad, weight_grad, sync = make(size, channels, args.dtype)
        times = [_median_ms(fn, args.calls, args.rounds, sync) for fn in (forward, input_grad, weight_grad)]
        flops = 2 * BATCH * size * size * channels * channels * 9
        print(f"{size}x{size}x{channels}: forward {times[0]:.2f}  input grad {times[1]:.2f}  "
              f"weight grad {times[2]:.2f} ms ({flops / times[2] / 1e6:.0f} GFLOP/s)", flush=True)


if __name__ == "__main__":
    main()
