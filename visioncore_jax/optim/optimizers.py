"""The optimizer chain built from `config.optimizer`: clip (with stats) → optimizer → NaN-skip around it all."""

import ml_collections
import optax

from visioncore_jax.optim.schedules import build_schedule
from visioncore_jax.optim.transforms import clip_by_global_norm_with_stats, kernel_mask, skip_nonfinite


def _base_optimizer(opt: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD / Adam / AdamW / LAMB with decoupled weight decay masked to kernels."""
    if opt.name == "sgd":
        decay = optax.add_decayed_weights(opt.weight_decay, mask=kernel_mask)
        return optax.chain(decay, optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
    if opt.name == "adam":
        # Plain Adam with L2 regularization added to the gradient (torch.optim.Adam's weight_decay).
        decay = optax.add_decayed_weights(opt.weight_decay, mask=kernel_mask)
        return optax.chain(decay, optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
    if opt.name == "adamw":
        return optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                           mask=kernel_mask)
    return optax.lamb(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=kernel_mask)


OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")


def _validate(opt: ml_collections.ConfigDict) -> None:
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"config.optimizer.name={opt.name!r} is not one of {list(OPTIMIZERS)}.")
    if opt.weight_decay < 0:
        raise ValueError(f"config.optimizer.weight_decay={opt.weight_decay} must be >= 0.")
    if not 0 <= opt.momentum < 1:
        raise ValueError(f"config.optimizer.momentum={opt.momentum} must be in [0, 1).")


def build_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns `(tx, schedule)`; `schedule(step)` is the learning rate used by update number `step`."""
    opt = config.optimizer
    _validate(opt)
    schedule = build_schedule(config, steps_per_epoch, total_steps)
    tx = optax.chain(clip_by_global_norm_with_stats(opt.grad_clip_norm), _base_optimizer(opt, schedule))
    return skip_nonfinite(tx), schedule


def optimizer_metrics(opt_state: optax.OptState) -> dict:
    """Scalars recorded in the optimizer state by the last update (usable inside jit)."""
    get = lambda name: optax.tree_utils.tree_get(opt_state, name)  # noqa: E731
    return {name: get(name) for name in ("grad_norm", "clipped", "skipped_steps", "longest_skip_run")}
