r"""Compile time and step time of the ConvGRU at T = 8, 16, 64: `nn.scan` (ours) at several `unroll` values vs
a Python loop over time.

A Python loop unrolls T copies of the cell into the XLA program, so its compile time grows with T; the scan
compiles `unroll` copies. All compute the same function (checked here); timings are of a jitted forward +
backward, in alternating rounds.

  python -m benchmarks.convgru_scan [--unrolls=1,2,4,8,16 --matmul_unrolls=1,2 --max_loop_steps=64]
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from visioncore_jax.models.recurrent import ConvGRU, ConvGRUCell, GateConv

BATCH, SIZE, CHANNELS, HIDDEN = 8, 16, 16, 16
ROUNDS = 5
flags.DEFINE_list("unrolls", ["1", "2", "4", "8", "16"], "unroll values of the scan (with nn.Conv).")
flags.DEFINE_list("matmul_unrolls", ["1", "2"], "unroll values of the scan with the im2col recurrent conv.")
flags.DEFINE_integer("max_loop_steps", 64, "Time the Python loop only up to this T (its compile grows with T).")


class UnrolledConvGRU(nn.Module):
    """The same GRU as `ConvGRU` (defaults), run with a Python loop: for this comparison only."""

    hidden: int

    @nn.compact
    def __call__(self, x):
        batch, steps, height, width, channels = x.shape
        x_proj = GateConv(3 * self.hidden, 3, name="input")(x.reshape(batch * steps, height, width, channels))
        x_proj = x_proj.reshape(batch, steps, height, width, 3 * self.hidden)
        cell, h = ConvGRUCell(self.hidden, name="cell"), jnp.zeros((batch, height, width, self.hidden))
        for t in range(steps):
            h, _ = cell(h, x_proj[:, t])
        return h


def compile_step(model, params, x) -> tuple[float, object]:
    """(compile seconds, compiled jit(value_and_grad)) of the model's summed squared output."""
    loss = lambda p: jnp.sum(model.apply({"params": p}, x) ** 2)  # noqa: E731
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(params))  # warm-up
    return seconds, compiled


def median_step_times(compiled: dict, params, rounds: int) -> dict:
    """Median seconds per call of each compiled step, timed in alternating rounds (fair under shared load)."""
    times = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, step in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(step(params))
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv):
    del argv
    print(f"{jax.devices()[0].device_kind}; batch {BATCH}, {SIZE}x{SIZE}, {CHANNELS} -> {HIDDEN} channels")
    print("    T | variant                | compile   | step (median of alternating rounds)")
    for steps in (8, 16, 64):
        x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, steps, SIZE, SIZE, CHANNELS))
        params = ConvGRU(HIDDEN).init(jax.random.PRNGKey(1), x)["params"]
        models = {f"scan unroll={u}": ConvGRU(HIDDEN, unroll=int(u), recurrent_matmul=False)
                  for u in flags.FLAGS.unrolls if int(u) <= steps}
        models |= {f"scan im2col unroll={u}": ConvGRU(HIDDEN, unroll=int(u), recurrent_matmul=True)
                   for u in flags.FLAGS.matmul_unrolls if int(u) <= steps}
        if steps <= flags.FLAGS.max_loop_steps:
            models["python loop"] = UnrolledConvGRU(HIDDEN)
        reference = UnrolledConvGRU(HIDDEN).apply({"params": params}, x)
        compile_seconds, compiled = {}, {}
        for name, model in models.items():
            np.testing.assert_allclose(model.apply({"params": params}, x), reference, rtol=1e-4, atol=1e-5)
            compile_seconds[name], compiled[name] = compile_step(model, params, x)
        step_seconds = median_step_times(compiled, params, ROUNDS)
        for name in models:
            print(f"{steps:5d} | {name:22s} | {compile_seconds[name]:7.2f} s | {step_seconds[name] * 1e3:7.1f} ms",
                  flush=True)


if __name__ == "__main__":
    app.run(main)
