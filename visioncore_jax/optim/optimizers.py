"""The optimizer chain built from `config.optimizer`: clip (with stats) → optimizer → NaN-skip around it all.

The chain produces the updates of learning rate 1; the train step multiplies them by its LR, a runtime input
computed on the host from the schedule. Every optimizer here applies its LR last (after momentum, Adam's moments,
decoupled weight decay, LAMB's trust ratio), so this equals the LR inside the chain. The clip norm and the weight
decay are runtime inputs too: the chain takes them as extra arguments of `update` (`optimizer_hyperparams`). Runs
or repair trials that differ only in LR, schedule, clip norm or weight decay share one compiled program.
"""

import jax.numpy as jnp
import ml_collections
import optax

from visioncore_jax.optim.schedules import build_schedule
from visioncore_jax.optim.transforms import (
    add_decayed_weights,
    clip_by_global_norm_with_stats,
    kernel_mask,
    scale_by_module,
    skip_nonfinite,
)

# The settings of `config.optimizer` the chain takes at update time (extra arguments of `tx.update`), not when built.
RUNTIME_SETTINGS = ("grad_clip_norm", "weight_decay")


def _unit_learning_rate(count):
    """LR 1 for every update. A schedule rather than the constant 1.0 so the optimizer state keeps the update
    count optax's scheduled optimizers carry (checkpoints of earlier versions restore unchanged)."""
    del count
    return jnp.ones((), jnp.float32)


def optimizer_hyperparams(opt: ml_collections.ConfigDict) -> dict[str, float]:
    """The values of `config.optimizer` (`opt`) that the chain takes at update time (`RUNTIME_SETTINGS`):
    `tx.update(grads, state, params, **optimizer_hyperparams(opt))`."""
    return {name: float(opt[name]) for name in RUNTIME_SETTINGS}


def _base_optimizer(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """SGD / Adam / AdamW / LAMB at LR 1 with weight decay masked to kernels, taken at update time.

    AdamW and LAMB are optax's own chains (`optax.adamw`, `optax.lamb`) with their decay step replaced by one that
    reads the `update` argument; their states, and so their checkpoints, are the same."""
    schedule = _unit_learning_rate
    decay = add_decayed_weights(mask=kernel_mask)
    if opt.name == "sgd":
        return optax.chain(decay, optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
    if opt.name == "adam":
        # Plain Adam with L2 regularization added to the gradient (torch.optim.Adam's weight_decay).
        return optax.chain(decay, optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
    adam = optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if opt.name == "adamw":
        return optax.chain(adam, decay, optax.scale_by_learning_rate(schedule))
    return optax.chain(adam, decay, optax.scale_by_trust_ratio(), optax.scale_by_learning_rate(schedule))


OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")


def build_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns `(tx, schedule)`; `schedule(step)` is the learning rate used by train step number `step`, by
    which the train step multiplies the updates of `tx` (see the module docstring).

    Chain: clip-by-global-norm (recording the pre-clip norm) → the optimizer at LR 1 → per-module LR
    multipliers; with `accumulation_steps = k > 1` it is wrapped in `optax.MultiSteps` (one update per k train
    steps; the schedule then counts updates); all of it inside the NaN-skip guard, so a non-finite gradient
    leaves the parameters and every optimizer state untouched.
    """
    k = config.optimizer.accumulation_steps
    return optimizer_and_learning_rate(config, build_schedule(config, max(1, steps_per_epoch // k),
                                                              max(1, total_steps // k)))


def learning_rate_of_steps(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.Schedule:
    """The LR applied at train step `step` when `schedule` counts optimizer updates: with
    `accumulation_steps = k`, one update per k steps, so step `s` uses `schedule(s // k)`."""
    k = config.optimizer.accumulation_steps
    return lambda step: schedule(step // k)


def optimizer_and_learning_rate(config: ml_collections.ConfigDict,
                                schedule: optax.Schedule) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(tx, learning_rate_fn)`: the configured chain at LR 1, and the LR of each train step when `schedule`
    (of updates) drives it (see `learning_rate_of_steps`)."""
    return optimizer_chain(config), learning_rate_of_steps(config, schedule)


# One chain object per optimizer config in a process: jitted steps key their compiled programs on the identity of
# the train state's `tx`, so runs with the same optimizer settings (repair trials, tests) reuse them in memory.
_CHAINS: dict[str, optax.GradientTransformation] = {}


def optimizer_chain(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The configured optimizer chain at LR 1 (see `build_optimizer`); built from `config.optimizer` alone, the
    same object for equal settings (the learning rate and `RUNTIME_SETTINGS` aside: the train step applies them)."""
    settings = config.optimizer.to_dict()
    for name in ("learning_rate", *RUNTIME_SETTINGS):
        del settings[name]
    key = repr(sorted(settings.items()))
    if key not in _CHAINS:
        _CHAINS[key] = _chain(config.optimizer)
    return _CHAINS[key]


def _chain(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """clip (with stats) → optimizer at LR 1 → per-module multipliers [→ MultiSteps], inside the NaN-skip."""
    tx = optax.chain(
        clip_by_global_norm_with_stats(),
        _base_optimizer(opt),
        scale_by_module(tuple(opt.lr_multipliers)),
    )
    if opt.accumulation_steps > 1:
        steps = optax.MultiSteps(tx, every_k_schedule=opt.accumulation_steps)
        tx = optax.GradientTransformationExtraArgs(steps.init, steps.update)  # its update passes extra args on
    return skip_nonfinite(tx)


def optimizer_metrics(opt_state: optax.OptState) -> dict:
    """Scalars recorded in the optimizer state by the last update (usable inside jit)."""
    names = ("grad_norm", "clipped", "skipped_steps", "current_skip_run", "longest_skip_run")
    return {name: optax.tree_utils.tree_get(opt_state, name) for name in names}
