"""Shared test set-up: 8 host CPU devices for real data-parallel sharding, and shared fixtures."""

import os
import tempfile

# Must be set before JAX initialises its backends: every test sees 8 CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Many tests (and the subprocesses some start) compile the same tiny programs: share compiled executables.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "visioncore_jax_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
    """One TFDS data dir per test session, so the embedded dataset is prepared once."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))
