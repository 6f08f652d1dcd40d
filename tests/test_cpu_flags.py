"""The XLA:CPU speed defaults that importing visioncore_jax adds to XLA_FLAGS."""

import os

import jax
import jax.numpy as jnp

import visioncore_jax


def test_cpu_flags_are_added_once_and_a_users_choice_is_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    visioncore_jax._add_cpu_xla_flags()
    visioncore_jax._add_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=8 "
                                       "--xla_cpu_experimental_ynn_fusion_type=")
    mine = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    monkeypatch.setenv("XLA_FLAGS", mine)
    visioncore_jax._add_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"] == mine


def test_convolutions_compile_to_xla_not_ynnpack():
    x, w = jnp.ones((64, 32, 32, 32)), jnp.ones((3, 3, 32, 32))
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    assert "ynn_fusion" not in conv.lower(x, w).compile().as_text()
    # The same program with jaxlib's default does use YNNPACK, so the assertion above can fail.
    ynn = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
    assert "ynn_fusion" in conv.lower(x, w).compile(compiler_options=ynn).as_text()
