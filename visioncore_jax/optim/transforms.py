"""Gradient transformations that record what they did, so the train step can report it, and that take their
settings at update time, so runs differing only in them share one compiled train step.

Hand-written where optax's versions drop the information we log: `optax.clip_by_global_norm` does not keep the
pre-clip norm, and `optax.apply_if_finite` neither keeps the longest run of skipped steps nor skips forever (it
applies non-finite updates after `max_consecutive_errors`). `optax.add_decayed_weights` and
`optax.clip_by_global_norm` bake their value into the compiled program as a constant; here it is an extra argument
of `update` (optax's `GradientTransformationExtraArgs`, passed down by `optax.chain`, `optax.masked` and
`optax.MultiSteps`).
"""

import re
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from visioncore_jax.errors import InputError


def all_finite(tree) -> jax.Array:
    """True when every element of every array in `tree` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


class ClipStatsState(NamedTuple):
    """The pre-clip global gradient norm of the last step and whether clipping scaled it (1.0) or not (0.0)."""

    grad_norm: jax.Array
    clipped: jax.Array


def update_argument(extra_args: dict, name: str) -> jax.Array:
    """The extra argument `name` of an `update` call, as a float32 scalar; a clear error when it is missing."""
    if name not in extra_args:
        raise TypeError(f"This optimizer takes {name!r} at update time: call tx.update(grads, state, params, "
                        f"{name}=...) (the train step passes every value of `optimizer_hyperparams(config)`).")
    return jnp.asarray(extra_args[name], jnp.float32)


def clip_by_global_norm_with_stats() -> optax.GradientTransformationExtraArgs:
    """Scales updates to a global norm of at most the `update` argument `grad_clip_norm` (no clipping when it is
    <= 0) and records the pre-clip norm and whether clipping was active in its state."""

    def init_fn(params):
        del params
        return ClipStatsState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None, **extra_args):
        del state, params
        max_norm = update_argument(extra_args, "grad_clip_norm")
        norm = optax.global_norm(updates)
        clipped = (max_norm > 0) & (norm > max_norm)
        scale = jnp.where(clipped, max_norm / norm, 1.0)
        updates = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
        return updates, ClipStatsState(norm, clipped.astype(jnp.float32))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def add_decayed_weights(mask) -> optax.GradientTransformationExtraArgs:
    """`optax.add_decayed_weights(weight_decay, mask)` with `weight_decay` an argument of `update`: adds
    `weight_decay * param` to the update of every parameter `mask` selects. Its state has the structure of
    optax's (a `MaskedState` around an `EmptyState`), so checkpoints of either restore into the other."""

    def update_fn(updates, state, params=None, **extra_args):
        weight_decay = update_argument(extra_args, "weight_decay")
        return jax.tree.map(lambda u, p: u + weight_decay * p, updates, params), state

    decay = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)
    return optax.masked(decay, mask)


class SkipNonFiniteState(NamedTuple):
    """Counters of skipped (non-finite) updates and the wrapped optimizer's state."""

    skipped_steps: jax.Array
    current_skip_run: jax.Array
    longest_skip_run: jax.Array
    inner_state: optax.OptState


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Wraps `inner` so that a step with any non-finite gradient leaves the parameters and `inner`'s state
    untouched (zero update), counting the skipped steps and the longest run of consecutive skips. Extra arguments
    of `update` pass through to `inner`."""
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        zero = jnp.zeros((), jnp.int32)
        return SkipNonFiniteState(zero, zero, zero, inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        inner_state = jax.tree.map(keep, new_inner, state.inner_state)
        new_updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        run = jnp.where(finite, 0, state.current_skip_run + 1)
        return new_updates, SkipNonFiniteState(
            skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
            current_skip_run=run,
            longest_skip_run=jnp.maximum(state.longest_skip_run, run),
            inner_state=inner_state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def kernel_mask(params) -> dict:
    """True for kernels (ndim > 1), False for biases and norm scales/offsets: weight decay applies to kernels."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def path_of(key_path) -> str:
    """'/'-joined parameter path, e.g. 'color/stage2_block0/Conv_0/kernel'."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def scale_by_module(multipliers: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """Multiplies the update of every parameter whose path fully matches a regex by its multiplier (the first
    matching pattern wins; others keep 1.0): per-module learning rates, e.g. `(('head/.*', 10.0),)`.

    A pattern that matches no parameter is an error at initialisation, never a silently ignored setting.
    """
    compiled = [(re.compile(pattern), float(multiplier)) for pattern, multiplier in multipliers]

    def multiplier_of(key_path) -> float:
        path = path_of(key_path)
        return next((m for pattern, m in compiled if pattern.fullmatch(path)), 1.0)

    def init_fn(params):
        paths = [path_of(key_path) for key_path, _ in jax.tree_util.tree_leaves_with_path(params)]
        for pattern, _ in compiled:
            if not any(pattern.fullmatch(path) for path in paths):
                raise InputError(f"--config.optimizer.lr_multipliers: pattern {pattern.pattern!r} matches no "
                                 f"parameter of this model; a pattern must match a whole path, and paths look like "
                                 f"{paths[:3]}.")
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(lambda p, u: u * multiplier_of(p), updates), state

    return optax.GradientTransformation(init_fn, update_fn)
