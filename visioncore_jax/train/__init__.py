"""Training: state, pure steps, data-parallel partitioning, checkpoints and the loop."""

from visioncore_jax.train.loop import train_and_evaluate
from visioncore_jax.train.state import TrainState, create_train_state

__all__ = ["TrainState", "create_train_state", "train_and_evaluate"]
