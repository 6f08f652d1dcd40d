"""Gradient transformations that record what they did, so the train step can report it.

Hand-written where optax's versions drop the information we log: `optax.clip_by_global_norm` does not keep the
pre-clip norm, and `optax.apply_if_finite` neither keeps the longest run of skipped steps nor skips forever (it
applies non-finite updates after `max_consecutive_errors`).
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


def clip_by_global_norm_with_stats(max_norm: float) -> optax.GradientTransformation:
    """Scales updates to a global norm of at most `max_norm` (no clipping when `max_norm <= 0`) and records
    the pre-clip norm and whether clipping was active in its state."""

    def init_fn(params):
        del params
        return ClipStatsState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None):
        del state, params
        norm = optax.global_norm(updates)
        if max_norm <= 0:
            return updates, ClipStatsState(norm, jnp.zeros((), jnp.float32))
        clipped = norm > max_norm
        scale = jnp.where(clipped, max_norm / norm, 1.0)
        updates = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
        return updates, ClipStatsState(norm, clipped.astype(jnp.float32))

    return optax.GradientTransformation(init_fn, update_fn)


class SkipNonFiniteState(NamedTuple):
    """Counters of skipped (non-finite) updates and the wrapped optimizer's state."""

    skipped_steps: jax.Array
    current_skip_run: jax.Array
    longest_skip_run: jax.Array
    inner_state: optax.OptState


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Wraps `inner` so that a step with any non-finite gradient leaves the parameters and `inner`'s state
    untouched (zero update), counting the skipped steps and the longest run of consecutive skips."""

    def init_fn(params):
        zero = jnp.zeros((), jnp.int32)
        return SkipNonFiniteState(zero, zero, zero, inner.init(params))

    def update_fn(updates, state, params=None):
        finite = all_finite(updates)
        new_updates, new_inner = inner.update(updates, state.inner_state, params)
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

    return optax.GradientTransformation(init_fn, update_fn)


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
