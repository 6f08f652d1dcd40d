"""visioncore_jax: a JAX/Flax training framework for vision models that explains why a model is not learning."""

import os

__version__ = "0.1.0"

# XLA:CPU speed defaults, added to XLA_FLAGS unless the user set the same flag. XLA reads XLA_FLAGS when JAX
# creates its first backend, so they apply to every program that imports visioncore_jax before computing (main.py,
# the benchmarks, the tests); CPU-only flags, ignored by GPU and TPU backends.
# - YNNPACK convolutions off (XLA's Eigen convolutions instead): this jaxlib (0.10.2) hands convolutions to
#   YNNPACK by default, whose weight-gradient convolutions are up to 15x slower on CIFAR shapes; the forward,
#   input-gradient and weight-gradient convolutions of the ResNet-18 layer shapes took 1233 ms with YNNPACK vs
#   461 ms without (BENCHMARKS.md, "Closing the CPU gap").
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def _add_cpu_xla_flags() -> None:
    """Appends the CPU_XLA_FLAGS that XLA_FLAGS does not set already."""
    flags = os.environ.get("XLA_FLAGS", "")
    added = [flag for flag in CPU_XLA_FLAGS if flag.split("=")[0] not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()


_add_cpu_xla_flags()
