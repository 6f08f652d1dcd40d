"""Shared test set-up: 8 host CPU devices for real data-parallel sharding, and shared fixtures."""

import os

# Must be set before JAX initialises its backends: every test sees 8 CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
    """One TFDS data dir per test session, so the embedded dataset is prepared once."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))
