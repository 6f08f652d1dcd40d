"""Per-example predictions of a trained state on an eval split, in the split's stored order: what a paired
comparison of two models on the same examples needs (verified repair scores every trial on one split)."""

import functools

import jax
import numpy as np
from jax.sharding import Mesh

from visioncore_jax.data import InputPipeline, to_global_batch
from visioncore_jax.train import partitioning
from visioncore_jax.train.state import TrainState
from visioncore_jax.train.steps import predict_step


@functools.lru_cache(maxsize=4)
def _jitted_predict(mesh: Mesh):
    return partitioning.jit_predict_step(predict_step, mesh)


def eval_predictions(state: TrainState, pipeline: InputPipeline, mesh: Mesh,
                     batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`(labels, predictions)` of every example of `pipeline`'s eval split in stored order (padding dropped): class
    indices [N] for classification, [N, H, W] masks for segmentation. One process reads the whole split."""
    if jax.process_count() > 1:
        raise RuntimeError("Per-example predictions are read in a single process; run this outside the "
                           "multi-process job (e.g. python main.py --mode=repair on one host).")
    predict = _jitted_predict(mesh)
    labels, predictions = [], []
    for batch in pipeline.eval_batches(batch_size):
        real = batch["mask"].astype(bool)
        predicted = np.asarray(jax.device_get(predict(state, to_global_batch(batch, mesh))))
        labels.append(batch["label"][real])
        predictions.append(predicted[real])
    return np.concatenate(labels), np.concatenate(predictions)
