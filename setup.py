"""Installs visioncore_jax: `pip install -e .` (add `[test]` for the test suite, `[cuda12]` on NVIDIA GPUs)."""

from setuptools import find_packages, setup

setup(
    name="visioncore_jax",
    version="0.1.0",
    description="JAX/Flax training for vision models that tells you why a model is not learning.",
    packages=find_packages(include=["visioncore_jax", "visioncore_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.6",
        "orbax-checkpoint>=0.12,<0.13",
        "clu>=0.0.12",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "chex>=0.1.90",
        "numpy>=1.26",
        # clu.metric_writers and TFDS dataset preparation import TensorFlow; the CPU build is enough for both.
        "tensorflow-cpu>=2.18",
        "tensorboard>=2.18",
        "tensorflow-datasets>=4.9.8",
        "matplotlib>=3.8",
        # TFDS builders defined outside TFDS (our embedded dataset) need it, but TFDS does not declare it.
        "importlib_resources>=6",
        # Reading .safetensors state dicts in visioncore_jax.convert (PyTorch checkpoints without torch).
        "safetensors>=0.4",
        # JAX's persistent compilation cache needs it to enforce the size cap main.py sets.
        "filelock>=3.12",
    ],
    extras_require={
        # scikit-learn: its digits written as a real third-party image folder (tests, the fault-zoo benchmark).
        "test": ["pytest>=8", "pytest-xdist>=3", "scikit-learn>=1.3"],
        "cuda12": ["jax[cuda12]>=0.10,<0.11"],
    },
)
