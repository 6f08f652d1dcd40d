"""Model building blocks against NumPy references and closed forms: RMSNorm, conv blocks, identity residual
blocks, SE/CBAM bounds, and a ConvGRU equal to a textbook GRU."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import vc_resnet
from tests.conftest import init_variables
from visioncore_jax.models import build_model
from visioncore_jax.models.attention import CBAM, SqueezeExcitation
from visioncore_jax.models.conv_block import ConvBlock, ResBlock, activation_init
from visioncore_jax.models.modulation import BehaviorModulatedConvGRU
from visioncore_jax.models.norms import RMSNorm
from visioncore_jax.models.recurrent import ConvGRU, ConvGRUCell, GateConv, PatchConv
from visioncore_jax.models.unet import UNet
from visioncore_jax.train import checkpointing
from visioncore_jax.train.state import create_train_state

RNG = np.random.default_rng(0)


def param_count(tree):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


@pytest.mark.parametrize("axes", [(-1,), (1, 2, 3)])
def test_rmsnorm_matches_numpy(axes):
    x = RNG.normal(size=(2, 4, 4, 6)).astype(np.float32) * 3 + 1
    scale, bias = RNG.normal(size=6).astype(np.float32), RNG.normal(size=6).astype(np.float32)
    layer = RMSNorm(eps=1e-4, axes=axes, use_bias=True)
    y = layer.apply({"params": {"scale": scale, "bias": bias}}, jnp.asarray(x))
    expected = x / np.sqrt(np.mean(x**2, axis=axes, keepdims=True) + 1e-4) * scale + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    y16 = layer.apply({"params": {"scale": scale, "bias": bias}}, jnp.asarray(x, jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), expected, rtol=2e-2, atol=2e-2)
    assert RMSNorm(affine=False).init(jax.random.PRNGKey(0), jnp.asarray(x)) == {}
    # As torch.nn.RMSNorm: no bias unless asked.
    default = RMSNorm(eps=1e-4, axes=axes)
    assert jax.tree.map(np.shape, default.init(jax.random.PRNGKey(0), jnp.asarray(x))) == {"params": {"scale": (6,)}}
    np.testing.assert_allclose(default.apply({"params": {"scale": scale}}, jnp.asarray(x)), expected - bias,
                               rtol=1e-5, atol=1e-5)


class NormOnly(nn.Module):
    use_bias: bool

    @nn.compact
    def __call__(self, inputs, train):
        return RMSNorm(use_bias=self.use_bias)(inputs["color"])


def test_rmsnorm_checkpoint_with_a_bias_fails_clearly_without_one(tmp_path):
    """A checkpoint saved when RMSNorm had a bias does not restore into the bias-free default: the error names
    the bias and says what to do."""
    inputs, tx = {"color": jnp.ones((1, 4, 4, 3))}, optax.sgd(0.1)
    manager = checkpointing.create_manager(str(tmp_path), 1)
    checkpointing.save(manager, create_train_state(NormOnly(True), tx, inputs, 0), {})
    manager.wait_until_finished()
    restored, _ = checkpointing.restore_latest(manager, create_train_state(NormOnly(True), tx, inputs, 1))
    assert set(restored.params["RMSNorm_0"]) == {"scale", "bias"}
    message = r"(?s)only in the checkpoint: params/RMSNorm_0/bias.*Use a new --workdir"
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match=message):
        checkpointing.restore_latest(manager, create_train_state(NormOnly(False), tx, inputs, 1))


def block_params(block, in_channels=8):
    x = jnp.zeros((1, 8, 8, in_channels))
    return jax.eval_shape(lambda: block.init(jax.random.PRNGKey(0), x, train=False))["params"]


def test_conv_parameter_counts_match_closed_forms():
    k, c_in, c_out, groups = 3, 8, 16, 4
    bn = 2 * c_out
    assert param_count(block_params(ConvBlock(c_out, conv_type="standard"))) == k * k * c_in * c_out + bn
    assert param_count(block_params(ConvBlock(c_out, conv_type="depthwise"))) == k * k * c_in + c_in * c_out + bn
    assert param_count(block_params(ConvBlock(c_out, conv_type="grouped", groups=groups))) == (
        k * k * (c_in // groups) * c_out + bn)
    # Weight norm adds one scale per output channel.
    assert param_count(block_params(ConvBlock(c_out, weight_norm=True))) == k * k * c_in * c_out + c_out + bn
    assert param_count(block_params(ConvBlock(c_out, norm="rms"))) == k * k * c_in * c_out + c_out  # no bias


def test_conv_block_rejects_inconsistent_options():
    with pytest.raises(ValueError, match="weight_norm=True works with conv_type='standard' only"):
        block_params(ConvBlock(16, conv_type="depthwise", weight_norm=True))
    with pytest.raises(ValueError, match="groups=3 must divide"):
        block_params(ConvBlock(16, conv_type="grouped", groups=3))
    with pytest.raises(ValueError, match="conv_type='dilated' is not one of"):
        block_params(ConvBlock(16, conv_type="dilated"))


@pytest.mark.parametrize("activation, gain", [("relu", 2.0), ("silu", 2.0 / (1 + 0.01**2))])
def test_init_matches_the_activation(activation, gain):
    kernel = activation_init(activation)(jax.random.PRNGKey(0), (3, 3, 64, 128))
    np.testing.assert_allclose(float(jnp.std(kernel)), np.sqrt(gain / (9 * 128)), rtol=0.02)


@pytest.mark.parametrize("norm", ["batch", "rms", "layer", "group"])
def test_residual_block_is_the_identity_at_init(norm):
    block = ResBlock(8, block={"norm": norm, "activation": "silu", "conv_type": "depthwise"})
    x = jnp.asarray(RNG.normal(size=(2, 8, 8, 8)), jnp.float32)
    variables = block.init(jax.random.PRNGKey(0), x, train=False)
    np.testing.assert_array_equal(block.apply(variables, x, train=False), x)
    y, _ = block.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("module", [SqueezeExcitation(reduction=4, scale=0.3), CBAM(reduction=4, scale=0.3),
                                    CBAM(reduction=64, learnable_scale=True)])
def test_attention_stays_within_scale_of_the_input(module):
    x = jnp.asarray(RNG.normal(size=(4, 8, 8, 16)) * 5, jnp.float32)
    variables = module.init(jax.random.PRNGKey(1), x, train=False)
    y, state = module.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
    scale = module.scale
    assert np.all(np.abs(np.asarray(y - x)) <= scale * np.abs(np.asarray(x)) + 1e-6)
    gate = np.asarray(state["intermediates"]["gate"][0])
    assert gate.min() > 0 and gate.max() < 1 and not np.allclose(y, x)
    zero = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros_like(v) if p[-1].key == "scale" and v.ndim == 0 else v, variables)
    if module.learnable_scale:  # a learnable scale of 0 makes the module the identity
        np.testing.assert_array_equal(module.apply(zero, x, train=False), x)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("reset_before", [False, True])
def test_convgru_with_1x1_kernels_equals_a_textbook_gru(reset_before):
    """torch/cuDNN candidate tanh(W x + b + r(U h + c)), or Cho et al.'s tanh(W x + b + U(r h) + c), from a
    per-example initial state; the final state is returned."""
    batch, steps, channels, hidden = 3, 5, 4, 6
    x = RNG.normal(size=(batch, steps, 1, 1, channels)).astype(np.float32)
    h0 = RNG.normal(size=(batch, 1, 1, hidden)).astype(np.float32)
    gru = ConvGRU(hidden, kernel_size=1, return_sequences=True, return_state=True, reset_before=reset_before)
    variables = gru.init(jax.random.PRNGKey(0), jnp.asarray(x))
    params = jax.tree.map(np.asarray, variables["params"])
    params["input"]["Conv_0"]["bias"] = RNG.normal(size=3 * hidden).astype(np.float32)
    recurrent = ["recurrent", "recurrent_candidate"] if reset_before else ["recurrent"]
    for name in recurrent:
        params["cell"][name]["Conv_0"]["bias"] = RNG.normal(size=params["cell"][name]["Conv_0"]["bias"].shape)
    final, sequence = gru.apply({"params": params}, jnp.asarray(x), jnp.asarray(h0))

    w_x, b_x = params["input"]["Conv_0"]["kernel"][0, 0], params["input"]["Conv_0"]["bias"]
    # The recurrent kernels of all three gates, [hidden, 3 * hidden], in the order (z, r, n).
    w_h = np.concatenate([params["cell"][n]["Conv_0"]["kernel"][0, 0] for n in recurrent], axis=-1)
    b_h = np.concatenate([params["cell"][n]["Conv_0"]["bias"] for n in recurrent], axis=-1)
    gate = lambda w, b, v, g: v @ w[:, g * hidden:(g + 1) * hidden] + b[g * hidden:(g + 1) * hidden]  # noqa: E731
    h = h0[:, 0, 0]
    for t in range(steps):
        xt = x[:, t, 0, 0]
        z = sigmoid(gate(w_x, b_x, xt, 0) + gate(w_h, b_h, h, 0))
        r = sigmoid(gate(w_x, b_x, xt, 1) + gate(w_h, b_h, h, 1))
        recurrent_n = gate(w_h, b_h, r * h, 2) if reset_before else r * gate(w_h, b_h, h, 2)
        h = (1 - z) * np.tanh(gate(w_x, b_x, xt, 2) + recurrent_n) + z * h
        np.testing.assert_allclose(sequence[:, t, 0, 0], h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final[:, 0, 0], h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [dict(learnable_h0=True, recurrent_norm=True, residual=True, hidden_clamp=0.5),
                                     dict(reset_before=True, recurrent_norm=True, unroll=3)])
def test_streaming_two_halves_with_carried_state_equals_the_whole_clip(options):
    x = jnp.asarray(RNG.normal(size=(2, 8, 5, 5, 4)), jnp.float32)
    gru = ConvGRU(4, return_sequences=True, return_state=True, **options)
    params = gru.init(jax.random.PRNGKey(3), x)["params"]
    variables = {"params": jax.tree.map(lambda v: v + 0.1 * jnp.asarray(RNG.normal(size=v.shape), v.dtype), params)}
    final, whole = gru.apply(variables, x)
    middle, first = gru.apply(variables, x[:, :3])
    last, second = gru.apply(variables, x[:, 3:], middle)
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last, final, rtol=1e-5, atol=1e-5)
    # The carried state is per example: another example's state changes only that example's output.
    swapped = middle.at[0].set(middle[1])
    _, other = gru.apply(variables, x[:, 3:], swapped)
    np.testing.assert_allclose(other[1], second[1], rtol=1e-6)
    assert not np.allclose(other[0], second[0])
    with pytest.raises(ValueError, match=r"initial_state has shape \(2, 5, 5\); this ConvGRU needs"):
        gru.apply(variables, x, middle[..., 0])


def test_scan_equals_stepwise_cell_application():
    x = jnp.asarray(RNG.normal(size=(2, 6, 5, 5, 4)), jnp.float32)
    gru = ConvGRU(4, recurrent_norm=True, residual=True, hidden_clamp=0.5, return_sequences=True)
    variables = gru.init(jax.random.PRNGKey(2), x)
    sequence = gru.apply(variables, x)
    params = variables["params"]

    def project(inputs):
        return GateConv(12, 3).apply({"params": params["input"]}, inputs)

    cell = ConvGRUCell(4, recurrent_norm=True, hidden_clamp=0.5)
    h = jnp.zeros((2, 5, 5, 4))
    for t in range(6):
        h, _ = cell.apply({"params": params["cell"]}, h, project(x[:, t]))
        np.testing.assert_allclose(sequence[:, t], h + x[:, t], rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(h).max()) <= 0.5  # the hidden-state clamp


@pytest.mark.parametrize("kernel_size", [1, 2, 3])
def test_patch_conv_equals_nn_conv_with_the_same_parameters(kernel_size):
    x = jnp.asarray(RNG.normal(size=(2, 5, 6, 4)), jnp.float32)
    conv = nn.Conv(6, (kernel_size, kernel_size), padding="SAME")
    params = conv.init(jax.random.PRNGKey(0), x)["params"]
    params = {"kernel": params["kernel"], "bias": jnp.asarray(RNG.normal(size=6), jnp.float32)}
    patch = PatchConv(6, kernel_size)
    assert jax.tree.map(jnp.shape, patch.init(jax.random.PRNGKey(0), x)["params"]) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(patch.apply({"params": params}, x), conv.apply({"params": params}, x), rtol=1e-5,
                               atol=1e-5)
    grads = [jax.grad(lambda p, m=m: jnp.sum(jnp.sin(m.apply({"params": p}, x))))(params) for m in (patch, conv)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *grads)


def test_convgru_gate_convolutions_and_initialisation():
    x = jnp.zeros((1, 3, 4, 4, 8))
    depthwise = ConvGRU(8, conv_type="depthwise").init(jax.random.PRNGKey(0), x)["params"]
    assert param_count(depthwise["cell"]["recurrent"]) == 9 * 8 + 8 * 24 + 24
    grouped = ConvGRU(8, conv_type="grouped", groups=4).init(jax.random.PRNGKey(0), x)["params"]
    assert param_count(grouped["cell"]["recurrent"]) == 9 * 2 * 24 + 24
    kernel = ConvGRU(8, kernel_size=1).init(jax.random.PRNGKey(0), x)["params"]["cell"]["recurrent"]["Conv_0"]
    w = np.asarray(kernel["kernel"][0, 0])  # [8, 24]: orthogonal rows
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-5)
    with pytest.raises(ValueError, match="residual=True needs input channels"):
        ConvGRU(6, residual=True).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_residual_block_with_attention_is_the_identity_at_init(attention):
    block = ResBlock(8, block={"norm": "rms", "activation": "silu"}, attention=attention,
                     attention_options={"reduction": 4, "scale": 0.5})
    x = jnp.asarray(RNG.normal(size=(2, 8, 8, 8)), jnp.float32)
    variables = block.init(jax.random.PRNGKey(0), x, train=False)
    assert "attention" in variables["params"]
    y, _ = block.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(y, x)


@pytest.mark.slow
def test_vc_resnet_builds_from_its_config():
    config = vc_resnet.get_config()
    model = build_model(config, 10)
    inputs = {"color": jnp.zeros((2, 32, 32, 3)), "brightness": jnp.zeros((2, 32, 32, 1))}
    variables = init_variables(model, inputs, train=False)
    assert {"stem", "stage0_block0", "stage2_block0", "head"} <= set(variables["params"])
    assert "attention" in variables["params"]["stage1_block0"]
    outputs = jax.eval_shape(functools.partial(model.apply, train=False), variables, inputs)
    assert outputs["logits"].shape == (2, 10)


def test_behavior_modulation_appends_an_embedded_behavior_to_the_gru_input():
    features = jnp.asarray(RNG.normal(size=(2, 4, 5, 5, 6)), jnp.float32)
    behavior = jnp.asarray(RNG.normal(size=(2, 42)), jnp.float32)
    module = BehaviorModulatedConvGRU(embed_dim=8, gru={"hidden": 6})
    variables = module.init(jax.random.PRNGKey(0), features, behavior)
    params = variables["params"]
    assert params["behavior_embedding"]["kernel"].shape == (42, 8)
    assert params["gru"]["input"]["Conv_0"]["kernel"].shape == (3, 3, 6 + 8, 18)
    out = module.apply(variables, features, behavior)
    # Equal to the ConvGRU run on the features with the embedding concatenated by hand.
    embedded = behavior @ params["behavior_embedding"]["kernel"] + params["behavior_embedding"]["bias"]
    tiled = jnp.broadcast_to(embedded[:, None, None, None, :], (2, 4, 5, 5, 8))
    expected = ConvGRU(6).apply({"params": params["gru"]}, jnp.concatenate([features, tiled], -1))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(module.apply(variables, features, behavior * 0), out)
    with pytest.raises(ValueError, match="does not match features"):
        module.apply(variables, features, jnp.zeros((2, 3, 42)))


def test_unet_segments_with_attention_in_the_encoder():
    model = UNet(num_classes=3, widths=(8, 16, 32), conv={"norm": "batch"}, attention="cbam",
                 attention_options={"reduction": 4})
    inputs = {"color": jnp.asarray(RNG.normal(size=(2, 16, 16, 3)), jnp.float32)}
    variables = init_variables(model, inputs, train=False)
    assert all("attention" in variables["params"][f"encoder{i}"] for i in range(3))
    assert "attention" not in variables["params"]["decoder0"]
    apply = functools.partial(model.apply, train=True, mutable=["batch_stats", "intermediates"])
    outputs, _ = jax.jit(apply)(variables, inputs)
    assert outputs["logits"].shape == (2, 16, 16, 3) and outputs["logits"].dtype == jnp.float32
    with pytest.raises(ValueError, match="divisible by 4"):
        jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                       {"color": jnp.zeros((1, 18, 18, 3))})
