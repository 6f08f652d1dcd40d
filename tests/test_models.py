"""Models: exact parameter counts, pathway independence, initialisation, dropout, dtypes, config errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from configs import cifar100_mc
from configs import test as test_config
from tests.conftest import init_variables
from visioncore_jax.models import build_model
from visioncore_jax.models.layers import Dropout, kaiming_fan_out

INPUTS = {"color": jnp.zeros((2, 32, 32, 3)), "brightness": jnp.zeros((2, 32, 32, 1))}


def count_params(model):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), INPUTS, train=False))
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))


def test_cifar100_preset_has_the_originals_parameter_count():
    config = cifar100_mc.get_config()
    assert count_params(build_model(config, 100)) == 5_640_804
    config.model.aux_loss_weight = 0.5
    assert count_params(build_model(config, 100)) == 5_640_804 + 2 * (256 * 100 + 100)


def test_single_pathway_count_matches_closed_form():
    config = test_config.get_config()
    config.model.name, config.model.num_blocks, config.model.width = "resnet", (1, 1), 8
    w = 4  # reduce_architecture halves the width
    bn = lambda c: 2 * c  # noqa: E731
    stem = 9 * 3 * w + bn(w)
    stage1 = 2 * (9 * w * w + bn(w))
    stage2 = 9 * w * 2 * w + bn(2 * w) + 9 * 2 * w * 2 * w + bn(2 * w) + w * 2 * w + bn(2 * w)
    head = 2 * w * 10 + 10
    assert count_params(build_model(config, 10)) == stem + stage1 + stage2 + head


def test_pathways_have_disjoint_parameters_and_do_not_mix():
    config = test_config.get_config()
    model = build_model(config, 10)
    variables = init_variables(model, INPUTS, train=False)
    assert set(variables["params"]) == {"color", "brightness", "head"}
    assert variables["params"]["brightness"]["stem_conv"]["kernel"].shape[2] == 1
    assert variables["params"]["color"]["stem_conv"]["kernel"].shape[2] == 3
    rng = np.random.default_rng(0)
    inputs = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in INPUTS.items()}

    @jax.jit  # one compiled forward: op-by-op dispatch of a ResNet costs seconds
    def features(inputs):
        _, state = model.apply(variables, inputs, train=False, capture_intermediates=True)
        inter = state["intermediates"]
        return inter["color"]["__call__"][0], inter["brightness"]["__call__"][0]

    color_a, brightness_a = features(inputs)
    color_b, brightness_b = features({**inputs, "color": inputs["color"] * 3.0 + 1.0})
    np.testing.assert_array_equal(brightness_a, brightness_b)
    assert np.abs(color_a - color_b).max() > 1e-3

    def loss(params):
        return model.apply({**variables, "params": params}, inputs, train=False)["logits"].sum()

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for pathway in ("color", "brightness"):
        assert float(jnp.abs(grads[pathway]["stem_conv"]["kernel"]).sum()) > 0


def test_conv_init_is_kaiming_fan_out():
    kernel = kaiming_fan_out(jax.random.PRNGKey(0), (3, 3, 64, 128))
    # variance_scaling corrects its truncated normal so that the std is exactly sqrt(2 / fan_out).
    np.testing.assert_allclose(float(jnp.std(kernel)), np.sqrt(2.0 / (3 * 3 * 128)), rtol=0.02)


def test_dropout_with_traced_rate():
    x = jnp.ones((200_000,))
    layer = Dropout()
    rng = {"dropout": jax.random.PRNGKey(1)}
    np.testing.assert_array_equal(layer.apply({}, x, 0.0, train=True, rngs=rng), x)
    y = jax.jit(lambda rate: layer.apply({}, x, rate, train=True, rngs=rng))(jnp.float32(0.3))
    assert abs(float(jnp.mean(y == 0)) - 0.3) < 0.01
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.7], rtol=1e-6)
    np.testing.assert_array_equal(layer.apply({}, x, 0.5, train=False), x)


def test_train_mode_updates_batch_stats_and_bfloat16_keeps_float32_params():
    config = test_config.get_config()
    config.training.dtype = "bfloat16"
    model = build_model(config, 10)
    variables = init_variables(model, INPUTS, train=False)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    inputs = {k: v + 1.0 for k, v in INPUTS.items()}
    apply = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    outputs, updates = jax.jit(apply)(variables, inputs, rngs={"dropout": jax.random.PRNGKey(0)})
    assert outputs["logits"].dtype == jnp.float32
    before = variables["batch_stats"]["color"]["stem_bn"]["mean"]
    assert not np.allclose(before, updates["batch_stats"]["color"]["stem_bn"]["mean"])
