"""Helpers shared by the loop-level tests: reading TensorBoard event files back."""

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag written to `workdir`'s event files, as (step, value) pairs in step order."""
    accumulator = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()["tensors"]:
        values = [(event.step, tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]
        if all(value.ndim == 0 and value.dtype.kind in "fiu" for _, value in values):
            series[tag] = [(step, float(value)) for step, value in values]
    return series


def read_texts(workdir: str, tag: str) -> list[str]:
    """The text summaries written under `tag`."""
    accumulator = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return [tf.make_ndarray(e.tensor_proto).item().decode() for e in accumulator.Tensors(tag)]
