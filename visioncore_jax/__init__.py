"""visioncore_jax: a JAX/Flax training framework for vision models that explains why a model is not learning."""

__version__ = "0.1.0"
