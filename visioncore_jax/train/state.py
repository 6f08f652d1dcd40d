"""The training state: parameters, BatchNorm statistics, optimizer state, step and RNG in one pytree."""

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Everything a train step reads and writes; checkpointed as a whole for exact resume.

    `rng` is a raw uint32 key; the key of step `s` is `fold_in(rng, s)`, so randomness after a resume equals
    that of an uninterrupted run. `tx` produces the updates of LR 1 (see `visioncore_jax.optim.optimizers`);
    `lr_scale` multiplies every update on top of the scheduled LR (plateau cuts, NaN rollbacks).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    lr_scale: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def apply_gradients(self, grads, batch_stats, learning_rate: jax.Array, **optimizer_args) -> "TrainState":
        """Applies one optimizer update at `learning_rate` (times `lr_scale`) and the new BatchNorm statistics;
        advances the step. `optimizer_args` are the values `tx` takes at update time (`optimizer_hyperparams`)."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params, **optimizer_args)
        step_size = learning_rate * self.lr_scale
        updates = jax.tree.map(lambda u: u * step_size.astype(u.dtype), updates)
        params = optax.apply_updates(self.params, updates)
        return self.replace(
            step=self.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )

    def checkpoint_items(self) -> dict:
        """The arrays that make up a checkpoint (everything but the functions)."""
        return {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
            "rng": self.rng,
            "lr_scale": self.lr_scale,
        }


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example_inputs: Mapping[str, jax.Array],
    seed: int,
) -> TrainState:
    """Initialises the model on `example_inputs` (shapes only matter) and the optimizer; pure, jit-able."""
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init({"params": init_rng, "dropout": init_rng}, example_inputs, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=state_rng,
        lr_scale=jnp.ones((), jnp.float32),
        apply_fn=model.apply,
        tx=tx,
    )
