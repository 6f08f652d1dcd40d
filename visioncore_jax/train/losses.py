"""Losses (cross-entropy, soft Dice) and class weights."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The power of the inverse class frequency each weighting applies ('none': all ones).
WEIGHTING_POWERS = {"cube_root_inverse": 1 / 3, "inverse": 1.0}
CLASS_WEIGHTINGS = ("none", *WEIGHTING_POWERS)


def class_weights(counts, weighting: str, clip_range=(0.7, 1.3)) -> np.ndarray:
    """Per-class loss weights from the training label histogram `counts`.

    `cube_root_inverse` (seed 004): `(N / (K · n_c))^(1/3)`, i.e. the cube root of the inverse class frequency
    normalised so that a balanced dataset gets 1 everywhere, clipped to `clip_range`; `inverse`: `N / (K · n_c)`,
    clipped likewise (unclipped, it makes the expected training loss that of a class-balanced split: the
    correction for a training split skewed against a balanced eval split); `none`: all ones. A class absent from
    training gets the upper bound.
    """
    counts = np.asarray(counts, np.float64)
    if weighting == "none":
        return np.ones_like(counts, np.float32)
    low, high = clip_range
    with np.errstate(divide="ignore"):
        weights = (counts.sum() / (len(counts) * counts)) ** WEIGHTING_POWERS[weighting]
    return np.clip(weights, low, high).astype(np.float32)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float | jax.Array = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def weighted_mean(values: jax.Array, labels: jax.Array, weights: Sequence[float] | jax.Array | None) -> jax.Array:
    """Mean of per-example `values` weighted by their class's weight, `sum(w·v) / sum(w)` (as torch's
    CrossEntropyLoss with `weight`); the plain mean when `weights` is None."""
    if weights is None:
        return values.mean()
    example_weights = jnp.asarray(weights, jnp.float32)[labels]
    return jnp.sum(example_weights * values) / jnp.sum(example_weights)


def soft_dice_loss(logits: jax.Array, labels: jax.Array, smooth: float = 1.0) -> jax.Array:
    """`1 − mean over classes of (2·Σ p·y + s) / (Σ p + Σ y + s)` with softmax probabilities `p` and one-hot
    labels `y` summed over the batch and all pixels. The smoothing `s` keeps a class absent from both
    prediction and labels at Dice 1 instead of 0/0."""
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    axes = tuple(range(logits.ndim - 1))
    intersection = jnp.sum(probabilities * one_hot, axes)
    dice = (2 * intersection + smooth) / (jnp.sum(probabilities, axes) + jnp.sum(one_hot, axes) + smooth)
    return 1.0 - dice.mean()
