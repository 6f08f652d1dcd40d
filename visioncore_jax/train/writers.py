"""Where a run's metrics go: every scalar, histogram and image to TensorBoard; the text log gets the top-level
scalars and progress only (per-module, per-class and histogram values would bury them); hparams hold the
experiment's headline settings against its headline metrics.

clu's default writer logs every histogram bucket and every scalar, and TensorBoard's hparams plugin turns every
scalar tag into an hparams metric unless the metrics are declared, so both are narrowed here.
"""

import glob
import logging
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
from clu import metric_writers
from flax import traverse_util
from tensorboard.plugins.hparams import api as hparams_api

from visioncore_jax.train.statistics import module_of

# The config fields that tell experiments apart in TensorBoard's hparams tab.
HPARAM_FIELDS = (
    "seed", "data.name", "model.name", "model.width", "model.num_blocks", "optimizer.name",
    "optimizer.learning_rate", "optimizer.weight_decay", "optimizer.grad_clip_norm", "schedule.name",
    "training.batch_size", "training.num_epochs", "training.num_train_steps", "training.label_smoothing",
    "training.dtype",
)
HPARAM_METRICS = ("eval_accuracy", "eval_loss", "train_loss", "eval_mean_dice")


class _ProgressLog(metric_writers.LoggingWriter):
    """The text log: top-level scalars (names without '/') and texts; histograms, images and hparams go to
    TensorBoard alone."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        top_level = {k: v for k, v in scalars.items() if "/" not in k}
        if top_level:
            super().write_scalars(step, top_level)

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_images(self, step, images):
        pass

    def write_hparams(self, hparams):
        pass


class _Events(metric_writers.SummaryWriter):
    """TensorBoard event files, with the hparams metrics declared (see the module docstring)."""

    def __init__(self, logdir: str):
        super().__init__(logdir)
        self._logdir = logdir

    def rewind(self, step: int) -> None:
        """Drops every event after `step` and continues in a new file."""
        self._summary_writer.close()
        truncate_events_after(self._logdir, step)
        self._summary_writer = tf.summary.create_file_writer(self._logdir)

    def write_hparams(self, hparams: Mapping[str, Any]):
        with self._summary_writer.as_default():
            hparams_api.hparams_config(hparams=[hparams_api.HParam(name) for name in hparams],
                                       metrics=[hparams_api.Metric(name) for name in HPARAM_METRICS])
            hparams_api.hparams(dict(hparams))


class RunWriter(metric_writers.AsyncMultiWriter):
    """The run's asynchronous writer: TensorBoard events in `workdir` (only where `writes_events`, i.e. process 0)
    and the text log; `rewind` takes the events back to a step."""

    def __init__(self, workdir: str, writes_events: bool):
        self._events = _Events(workdir) if writes_events else None
        super().__init__([_ProgressLog()] + ([self._events] if self._events else []))

    def rewind(self, step: int) -> None:
        """Drops the events after `step` (a NaN rollback trains those steps again), after writing what is queued."""
        self.flush()
        if self._events is not None:
            self._events.rewind(step)


def create_writer(workdir: str, *, writes_events: bool) -> RunWriter:
    """The run's writer (see `RunWriter`)."""
    return RunWriter(workdir, writes_events)


def truncate_events_after(workdir: str, step: int) -> None:
    """Drops the events after `step` from `workdir`'s TensorBoard event files (and a record cut short by a
    kill), so that a run resumed from the checkpoint at `step` does not write any step twice. Call it before
    the writer opens its file. TensorBoard's own purge on a restart (`SessionLog.START`) is not used: not
    every reader honours it, and the stale events would stay in the files."""
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        kept, dropped = [], 0
        try:
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
                if tf.compat.v1.Event.FromString(record).step <= step:
                    kept.append(record)
                else:
                    dropped += 1
        except tf.errors.DataLossError:
            dropped += 1  # the last record was cut short; nothing follows it
        if not dropped:
            continue
        with tf.io.TFRecordWriter(path + ".tmp") as writer:
            for record in kept:
                writer.write(record)
        os.replace(path + ".tmp", path)
        logging.info("Dropped %d events after step %d from %s (rewritten by the resumed run).", dropped, step,
                     os.path.basename(path))


def headline_hparams(config: ml_collections.ConfigDict) -> dict[str, bool | int | float | str]:
    """The `HPARAM_FIELDS` of `config` that it has, as scalars (tuples as strings)."""
    flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
    return {k: flat[k] if isinstance(flat[k], (bool, int, float, str)) else str(flat[k])
            for k in HPARAM_FIELDS if k in flat}


def parameter_summary(params) -> str:
    """A compact table of parameter counts per module (the top two levels of the tree), and the total."""
    counts: dict[str, int] = {}
    for path, leaf in traverse_util.flatten_dict(params).items():
        counts[module_of(path)] = counts.get(module_of(path), 0) + int(np.prod(np.shape(leaf)))
    width = max(len(name) for name in counts)
    rows = [f"{name:<{width}}  {count:>12,}" for name, count in counts.items()]
    return "\n".join([*rows, f"{'total':<{width}}  {sum(counts.values()):>12,}"])
