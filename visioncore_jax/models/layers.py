"""Small layers shared by the models: initializers and a dropout whose rate may be a traced value."""

import flax.linen as nn
import jax
import jax.numpy as jnp

# He/Kaiming normal over fan-out, the ResNet convention for ReLU networks (torch `kaiming_normal_(mode='fan_out')`).
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Dropout(nn.Module):
    """Inverted dropout with `rate` given at call time as a float or a traced scalar.

    Hand-written because `flax.linen.Dropout` branches in Python on `rate == 0`, which fails for a traced rate;
    progressive regularization feeds the rate into the jitted step as a value so that changing it never
    recompiles. Rate 0 returns the input exactly.
    """

    @nn.compact
    def __call__(self, x: jax.Array, rate: float | jax.Array, *, train: bool) -> jax.Array:
        """Zeroes each element with probability `rate` and rescales the rest by 1 / (1 - rate) in training."""
        if not train:
            return x
        keep_prob = 1.0 - jnp.asarray(rate, jnp.float32)
        keep = jax.random.uniform(self.make_rng("dropout"), x.shape) < keep_prob
        return jnp.where(keep, x / jnp.maximum(keep_prob, 1e-6).astype(x.dtype), jnp.zeros_like(x))


# Collection of the per-block statistics the train step records when diagnostics are on. Sowing is a no-op
# (nothing computed) unless the caller makes this collection mutable.
DIAGNOSTICS = "diagnostics"
ACTIVATION_STATS, GATE_STATS = "activation_stats", "gate_stats"
SATURATION_MARGIN = 0.01  # a sigmoid gate below 0.01 or above 0.99 (tanh beyond ±0.98) is saturated
# Activation and gate statistics are taken on the first examples of the batch only: 16 examples give fractions
# accurate to well under 1%, and reading whole activation tensors again cost ~8% of a CPU step (BENCHMARKS.md).
STATS_EXAMPLES = 16


def sow_activation_stats(module: nn.Module, x: jax.Array, prefix: str = "") -> None:
    """Sows the mean, standard deviation and fraction of exact zeros (dead ReLU outputs) of `x` (on its first
    `STATS_EXAMPLES` examples)."""
    if module.is_mutable_collection(DIAGNOSTICS):
        x = x[:STATS_EXAMPLES].astype(jnp.float32)
        mean, mean_square = x.mean(), jnp.mean(jnp.square(x))  # one pass: XLA fuses the three reductions
        stats = {"mean": mean, "std": jnp.sqrt(jnp.maximum(mean_square - mean**2, 0.0)),
                 "zero_fraction": jnp.mean(x == 0)}
        module.sow(DIAGNOSTICS, prefix + ACTIVATION_STATS, stats)


def sow_gate_stats(module: nn.Module, gate: jax.Array, kind: str = "sigmoid", prefix: str = "") -> None:
    """Sows the mean of a sigmoid (values in [0, 1]) or tanh gate and the fraction of its entries saturated (on
    its first `STATS_EXAMPLES` examples)."""
    if module.is_mutable_collection(DIAGNOSTICS):
        gate = gate[:STATS_EXAMPLES].astype(jnp.float32)
        distance = 1.0 - jnp.abs(gate) if kind == "tanh" else jnp.minimum(gate, 1.0 - gate)
        margin = 2 * SATURATION_MARGIN if kind == "tanh" else SATURATION_MARGIN
        stats = {"mean": gate.mean(), "saturated_fraction": jnp.mean(distance < margin)}
        module.sow(DIAGNOSTICS, prefix + GATE_STATS, stats)
