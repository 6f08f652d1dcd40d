r"""Compile time and step time of the ConvGRU at T = 8, 16, 64: `nn.scan` (ours) vs a Python loop over time.

A Python loop unrolls T copies of the cell into the XLA program, so its compile time grows with T; the scan
compiles one step. Both compute the same function (checked here); timings are of a jitted forward + backward.

  python -m benchmarks.convgru_scan
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app

from visioncore_jax.models.recurrent import ConvGRU, ConvGRUCell, GateConv

BATCH, SIZE, CHANNELS, HIDDEN = 8, 16, 16, 16


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


def measure(model, params, x) -> tuple[float, float, jax.Array]:
    """(compile seconds, median step seconds, output) of jit(value_and_grad) of the model's summed output."""
    loss = lambda p: jnp.sum(model.apply({"params": p}, x) ** 2)  # noqa: E731
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(params))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - start)
    return compile_seconds, float(np.median(times)), model.apply({"params": params}, x)


def main(argv):
    del argv
    print(f"{jax.devices()[0].device_kind}; batch {BATCH}, {SIZE}x{SIZE}, {CHANNELS} -> {HIDDEN} channels")
    print("    T | scan compile | unrolled compile | scan step | unrolled step")
    for steps in (8, 16, 64):
        x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, steps, SIZE, SIZE, CHANNELS))
        params = ConvGRU(HIDDEN).init(jax.random.PRNGKey(1), x)["params"]
        scan = measure(ConvGRU(HIDDEN), params, x)
        unrolled = measure(UnrolledConvGRU(HIDDEN), params, x)
        np.testing.assert_allclose(scan[2], unrolled[2], rtol=1e-4, atol=1e-5)
        print(f"{steps:5d} | {scan[0]:10.2f} s | {unrolled[0]:14.2f} s | {scan[1] * 1e3:6.1f} ms | "
              f"{unrolled[1] * 1e3:10.1f} ms")


if __name__ == "__main__":
    app.run(main)
