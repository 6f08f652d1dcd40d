"""Importing PyTorch checkpoints without torch: state dicts built in NumPy with the originals' key names and
shapes, converted, and the JAX models' outputs compared with reference forwards written in torch's NCHW/OIHW
layout (jax.lax on the unconverted arrays)."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from configs import test as test_config
from tests.conftest import read_scalars
from visioncore_jax.tools import convert, evaluate
from visioncore_jax.train import train_and_evaluate
from visioncore_jax.train.experiment import build_experiment

RNG = np.random.default_rng(0)


def torch_resnet_state_dict(style, num_blocks, base, num_classes, pathways=("color", "brightness")):
    """Random weights under the key names and shapes of the original MultiChannelResNetNetwork (style 'dual',
    basic blocks) or of a torchvision-style ResNet with a 3x3 stem ('torchvision', one RGB pathway)."""
    state = {}

    def conv(module, out, inp, k):
        for pathway in pathways:
            key = f"{module}.{pathway}_weight" if style == "dual" else f"{module}.weight"
            state[key] = RNG.normal(size=(out, inp if pathway != "brightness" or inp != 3 else 1, k, k)) * 0.2

    def bn(module, c):
        for pathway in pathways:
            prefix = f"{module}.{pathway}_bn" if style == "dual" else module
            state[f"{prefix}.weight"], state[f"{prefix}.bias"] = 1 + 0.1 * RNG.normal(size=c), RNG.normal(size=c)
            state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"] = RNG.normal(size=c), RNG.uniform(
                0.5, 2, size=c)
            state[f"{prefix}.num_batches_tracked"] = np.array(7)

    conv("conv1", base, 3, 3)
    bn("bn1", base)
    inplanes = base
    for stage, count in enumerate(num_blocks, start=1):
        planes = base * 2 ** (stage - 1)
        for index in range(count):
            block = f"layer{stage}.modules_list.{index}" if style == "dual" else f"layer{stage}.{index}"
            conv(f"{block}.conv1", planes, inplanes, 3)
            bn(f"{block}.bn1", planes)
            conv(f"{block}.conv2", planes, planes, 3)
            bn(f"{block}.bn2", planes)
            if index == 0 and (stage > 1 or inplanes != planes):
                conv(f"{block}.downsample.{'conv' if style == 'dual' else 0}", planes, inplanes, 1)
                bn(f"{block}.downsample.{'bn' if style == 'dual' else 1}", planes)
            inplanes = planes
    if style == "dual":
        state["shared_classifier.weight"] = RNG.normal(size=(num_classes, 2 * inplanes)) * 0.1
        state["shared_classifier.bias"] = RNG.normal(size=num_classes)
        for pathway in pathways:
            state[f"{pathway}_head.weight"] = RNG.normal(size=(num_classes, inplanes)) * 0.1
            state[f"{pathway}_head.bias"] = RNG.normal(size=num_classes)
    else:
        state["fc.weight"], state["fc.bias"] = RNG.normal(size=(num_classes, inplanes)), RNG.normal(size=num_classes)
    return {k: np.asarray(v, np.float32) for k, v in state.items()}


def reference_features(state, x, name, num_blocks, maxpool):
    """The original's forward of one pathway, in torch's layout: NCHW input, OIHW weights, eval-mode BN."""
    def conv(x, module, stride, pad):
        return jax.lax.conv_general_dilated(x, state[name(module, "weight")], (stride, stride), [(pad, pad)] * 2,
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def bn(x, module):
        field = lambda f: state[name(module, f, bn=True)][None, :, None, None]  # noqa: E731
        return (x - field("running_mean")) / jnp.sqrt(field("running_var") + 1e-5) * field("weight") + field("bias")

    x = jax.nn.relu(bn(conv(x, "conv1", 1, 1), "bn1"))
    if maxpool:
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2),
                                  [(0, 0), (0, 0), (1, 1), (1, 1)])
    for stage, count in enumerate(num_blocks, start=1):
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1
            block = next(b for b in (f"layer{stage}.modules_list.{index}", f"layer{stage}.{index}")
                         if any(k.startswith(b + ".") for k in state))
            y = jax.nn.relu(bn(conv(x, f"{block}.conv1", stride, 1), f"{block}.bn1"))
            y = bn(conv(y, f"{block}.conv2", 1, 1), f"{block}.bn2")
            if f"{block}.downsample.conv" in {k.rsplit(".", 1)[0] for k in state}:
                x = bn(conv(x, f"{block}.downsample.conv", stride, 0), f"{block}.downsample.bn")
            elif any(k.startswith(f"{block}.downsample.0.") for k in state):
                x = bn(conv(x, f"{block}.downsample.0", stride, 0), f"{block}.downsample.1")
            x = jax.nn.relu(y + x)
    return jnp.mean(x, axis=(2, 3))


def nchw(x):
    return jnp.transpose(x, (0, 3, 1, 2))


def assert_logits_close(actual, expected):
    """Equal to float32 rounding at the logits' scale: an element's rounding error grows with the largest
    activations that fed it (here logits up to ~200), not with the element's own size."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def dual_config(num_blocks=(1, 1, 1, 1), aux=False):
    config = test_config.get_config()
    config.model.num_blocks, config.model.width, config.model.reduce_architecture = num_blocks, 16, True
    config.model.aux_loss_weight = 0.3 if aux else 0.0
    return config


@pytest.mark.parametrize("aux", [False, True])
def test_dual_resnet_logits_equal_the_originals_forward(aux):
    blocks = (2, 1, 1, 1)
    state = torch_resnet_state_dict("dual", blocks, base=8, num_classes=5)
    model, variables = convert.convert_resnet(dual_config(blocks, aux), state)
    x = RNG.uniform(size=(2, 12, 12, 3)).astype(np.float32)  # even sizes: stride-2 padding must be torch's
    luma = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    out = model.apply(variables, {"color": jnp.asarray(x), "brightness": jnp.asarray(luma)}, train=False)

    def name(pathway):
        return lambda module, field, bn=False: f"{module}.{pathway}_bn.{field}" if bn else f"{module}.{pathway}_{field}"
    color = reference_features(state, nchw(x), name("color"), blocks, maxpool=False)
    brightness = reference_features(state, nchw(luma), name("brightness"), blocks, maxpool=False)
    logits = jnp.concatenate([color, brightness], -1) @ state["shared_classifier.weight"].T + state[
        "shared_classifier.bias"]
    assert_logits_close(out["logits"], logits)
    assert ("aux_logits" in out) == aux  # the original's (untrained) per-pathway heads, imported when asked
    if aux:
        assert_logits_close(out["aux_logits"]["brightness"], brightness @ state["brightness_head.weight"].T
                            + state["brightness_head.bias"])


def test_torchvision_resnet_with_maxpool_equals_its_forward(tmp_path):
    blocks = (1, 1, 1, 1)
    state = torch_resnet_state_dict("torchvision", blocks, base=8, num_classes=4, pathways=("color",))
    path = str(tmp_path / "resnet.safetensors")
    save_file(state, path)
    config = dual_config(blocks)
    config.model.name, config.model.reduce_architecture, config.model.width = "resnet", False, 8
    model, variables = convert.convert_resnet(config, convert.read_state_dict(path))
    x = RNG.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    out = model.apply(variables, {"color": jnp.asarray(x)}, train=False)["logits"]
    name = lambda module, field, bn=False: f"{module}.{field}"  # noqa: E731
    features = reference_features(state, nchw(x), name, blocks, maxpool=True)
    assert_logits_close(out, features @ state["fc.weight"].T + state["fc.bias"])


def test_every_bad_key_is_listed_in_one_error(tmp_path):
    state = torch_resnet_state_dict("dual", (1, 1, 1, 1), base=8, num_classes=5)
    del state["layer2.modules_list.0.bn1.color_bn.running_var"]
    state["layer9.conv1.color_weight"] = np.zeros((1,), np.float32)
    state["layer3.modules_list.0.conv2.brightness_weight"] = np.zeros((32, 16, 3, 3), np.float32)
    np.savez(tmp_path / "bad.npz", **state)
    with pytest.raises(convert.ConversionError) as error:
        convert.convert_resnet(dual_config(), convert.read_state_dict(str(tmp_path / "bad.npz")))
    message = str(error.value)
    assert message.startswith("1 missing, 1 unexpected, 1 of the wrong shape")
    assert "missing: layer2.modules_list.0.bn1.color_bn.running_var (for batch_stats/color/stage2_block0/" in message
    assert "unexpected: layer9.conv1.color_weight" in message
    assert "wrong shape: layer3.modules_list.0.conv2.brightness_weight: (32, 16, 3, 3)" in message
    with pytest.raises(convert.ConversionError, match="unknown format '.ckpt'"):
        convert.read_state_dict(str(tmp_path / "model.ckpt"))
    (tmp_path / "model.pth").write_bytes(b"")
    if importlib.util.find_spec("torch") is None:  # the project never depends on torch: a clear way out
        with pytest.raises(convert.ConversionError, match="needs PyTorch, which is not installed; .* safetensors"):
            convert.read_state_dict(str(tmp_path / "model.pth"))


def test_layout_conventions():
    w = RNG.normal(size=(5, 3, 3, 2)).astype(np.float32)  # OIHW
    x = RNG.normal(size=(1, 3, 7, 7)).astype(np.float32)  # NCHW
    torch_style = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    ours = jax.lax.conv_general_dilated(np.transpose(x, (0, 2, 3, 1)), convert.oihw_to_hwio(w), (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(np.transpose(ours, (0, 3, 1, 2)), torch_style, rtol=1e-5, atol=1e-5)
    assert convert.flax_bn_momentum(0.05) == pytest.approx(0.95)  # the original's CIFAR momentum
    gates = np.repeat(np.array(["r", "z", "n"]), 2)
    assert "".join(convert.torch_gru_gates_to_ours(gates)) == "zzrrnn"


def torch_gru(state, x, h, suffix):
    """torch.nn.GRU's equations in NumPy on its own weights (gates r, z, n)."""
    def part(name, gate):
        return np.split(state[f"{name}{suffix}"], 3, axis=0)[gate]

    outputs = []
    for t in range(x.shape[1]):
        gi = [x[:, t] @ part("weight_ih", g).T + part("bias_ih", g) for g in range(3)]
        gh = [h @ part("weight_hh", g).T + part("bias_hh", g) for g in range(3)]
        r, z = 1 / (1 + np.exp(-(gi[0] + gh[0]))), 1 / (1 + np.exp(-(gi[1] + gh[1])))
        h = (1 - z) * np.tanh(gi[2] + r * gh[2]) + z * h
        outputs.append(h)
    return np.stack(outputs, 1), h


@pytest.mark.parametrize("suffix", ["_l0", ""])  # torch.nn.GRU, torch.nn.GRUCell
def test_torch_gru_into_a_1x1_convgru(suffix):
    batch, steps, channels, hidden = 2, 4, 3, 5
    state = {f"{n}{suffix}": RNG.normal(size=s).astype(np.float32) * 0.5 for n, s in (
        ("weight_ih", (3 * hidden, channels)), ("weight_hh", (3 * hidden, hidden)), ("bias_ih", (3 * hidden,)),
        ("bias_hh", (3 * hidden,)))}
    model, params = convert.convert_gru(state)
    x, h0 = RNG.normal(size=(batch, steps, channels)), RNG.normal(size=(batch, hidden))
    gru = model.clone(return_sequences=True, return_state=True)
    final, sequence = gru.apply({"params": params}, jnp.asarray(x[:, :, None, None], jnp.float32),
                                jnp.asarray(h0[:, None, None], jnp.float32))
    expected_sequence, expected_final = torch_gru(state, x, h0, suffix)
    np.testing.assert_allclose(sequence[:, :, 0, 0], expected_sequence, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final[:, 0, 0], expected_final, rtol=1e-5, atol=1e-5)
    state["weight_ih_l1"] = state[f"weight_ih{suffix}"]  # a second layer: not a single ConvGRU
    with pytest.raises(convert.ConversionError, match="unexpected: weight_ih_l1"):
        convert.convert_gru(state)


@pytest.mark.slow
def test_converted_workdir_evaluates_and_fine_tunes(tfds_data_dir, tmp_path):
    """Convert → `--mode=eval` → `main.py` resumes from it: a converted head biased to class 0 predicts class 0
    everywhere, and the first fine-tuning losses start from that model (far above a fresh one's ln K)."""
    config = test_config.get_config()
    config.data.data_dir = tfds_data_dir
    experiment = build_experiment(config)
    num_classes = experiment.info.num_classes
    state = torch_resnet_state_dict("dual", tuple(config.model.num_blocks), base=config.model.width // 2,
                                    num_classes=num_classes)
    state["shared_classifier.bias"][0] = 60.0
    np.savez(tmp_path / "original.npz", **state)
    workdir = str(tmp_path / "imported")
    convert.convert(str(tmp_path / "original.npz"), config, workdir)

    result = evaluate.evaluate_workdir(config, workdir)
    confusion = np.asarray(result["confusion"])
    assert result["step"] == 0 and confusion.sum() == experiment.info.num_eval_examples
    assert confusion[:, 1:].sum() == 0  # every prediction is class 0
    np.testing.assert_allclose(result["metrics"]["eval_accuracy"], confusion[0, 0] / confusion.sum(), rtol=1e-6)
    assert [row["recall"] for row in result["per_class"]][:2] == [1.0, 0.0]
    with open(os.path.join(workdir, "eval", "0.json")) as f:
        assert json.load(f)["confusion"] == result["confusion"]
    with pytest.raises(ValueError, match=r"--step=3 is not a checkpoint .* there are \[0\]"):
        evaluate.evaluate_workdir(config, workdir, step=3)

    train_and_evaluate(config, workdir)
    first_loss = read_scalars(workdir)["train_loss"][0][1]
    assert first_loss > 5 * np.log(num_classes)
