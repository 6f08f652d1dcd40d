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
