"""Images/s of the bare jitted train step of a config, with or without the diagnostics statistics."""

import time

import jax

from visioncore_jax.data import to_global_batch
from visioncore_jax.optim.regularization import regularization_at
from visioncore_jax.train import partitioning
from visioncore_jax.train.experiment import Experiment, jitted_steps, step_options
from visioncore_jax.train.metrics import TrainMetrics
from visioncore_jax.train.steps import empty_statistics


class StepTimer:
    """The compiled train step of `experiment` on one device-resident batch, timed over `steps` calls."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        mesh = experiment.mesh
        self.batch = to_global_batch(next(experiment.pipeline.train_batches(experiment.config.training.batch_size)),
                                     mesh)
        self.regularization = jax.device_put(regularization_at(experiment.config, 0.0), partitioning.replicated(mesh))
        self.train_fn, _ = jitted_steps(experiment)
        self.state = experiment.init_state()
        self.empty = jax.device_get(empty_statistics(self.state, self.batch, self.regularization,
                                                     **step_options(experiment)))

    def images_per_sec(self, steps: int, statistics: bool) -> float:
        """Steady-state images/s over `steps` steps (after one compiling step), statistics on or off."""
        mesh = self.experiment.mesh
        metrics = jax.device_put(TrainMetrics.empty(), partitioning.replicated(mesh))
        stats = jax.device_put(self.empty, partitioning.replicated(mesh)) if statistics else None
        state, metrics, stats = self.train_fn(self.state, metrics, stats, self.batch, self.regularization)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics, stats = self.train_fn(state, metrics, stats, self.batch, self.regularization)
        jax.block_until_ready((state, stats))
        elapsed = time.perf_counter() - start
        self.state = state
        return steps * self.experiment.config.training.batch_size / elapsed
