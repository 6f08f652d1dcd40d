"""Optimization built from `config.optimizer` and `config.schedule`: schedules, the optimizer chain, stability."""

from visioncore_jax.optim.optimizers import OPTIMIZERS, build_optimizer, optimizer_hyperparams, optimizer_metrics
from visioncore_jax.optim.schedules import SCHEDULES, build_schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_schedule", "optimizer_hyperparams", "optimizer_metrics"]
