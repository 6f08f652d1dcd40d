"""Import PyTorch checkpoints: the originals' dual-pathway ResNet (`MultiChannelResNetNetwork`), torchvision-style
ResNets and `torch.nn.GRU` / `GRUCell` weights, into this project's models and an orbax workdir.

Every target variable is looked up by name in the state dict and transformed explicitly: convolution kernels
OIHW → HWIO, linear weights [out, in] → [in, out], GRU gates torch (r, z, n) → ours (z, r, n), BatchNorm
running statistics as they are (torch's `momentum` m is flax's `1 - m`: see `flax_bn_momentum`). Keys that are
missing, unexpected or of the wrong shape are reported together in one `ConversionError`.
"""

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from visioncore_jax.models import build_model
from visioncore_jax.models.recurrent import ConvGRU
from visioncore_jax.optim.optimizers import optimizer_chain
from visioncore_jax.train import checkpointing, partitioning
from visioncore_jax.train.controls import LoopState
from visioncore_jax.train.state import TrainState, create_train_state

FORMATS = (".pth", ".pt", ".npz", ".safetensors")
# State-dict entries with no counterpart here: BatchNorm's update counter (flax needs none).
IGNORED = re.compile(r".*\.num_batches_tracked$")
# The originals' per-pathway heads, never trained there: imported only into a model with aux heads.
ORIGINAL_AUX_HEADS = {"aux_head_color": "color_head", "aux_head_brightness": "brightness_head"}
CLASSIFIERS = {"dual_resnet": "shared_classifier", "resnet": "fc"}


class ConversionError(ValueError):
    """The state dict does not fit the configured model; the message lists every offending key."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The flat `{name: array}` state dict in `path` (.pth/.pt with torch if installed, .npz, .safetensors); a
    .pth holding `{'state_dict': ...}` or `{'model_state_dict': ...}` is unwrapped."""
    suffix = os.path.splitext(path)[1]
    if suffix not in FORMATS:
        raise ConversionError(f"--from={path}: unknown format {suffix!r}; use one of {list(FORMATS)}.")
    if not os.path.isfile(path):
        raise ConversionError(f"--from={path} is not a file.")
    if suffix == ".npz":
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(path)
    try:
        import torch  # only for .pth/.pt: never a dependency of the project
    except ImportError as error:
        raise ConversionError(f"Reading {path} needs PyTorch, which is not installed; in an environment that has "
                              "it, save the state dict with safetensors.torch.save_file(...) or numpy.savez(...) "
                              "and convert that file.") from error
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model_state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    return {key: value.detach().cpu().numpy() for key, value in loaded.items()}


def oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
    """A torch Conv2d weight [out, in, kh, kw] as a flax Conv kernel [kh, kw, in, out]."""
    return np.transpose(kernel, (2, 3, 1, 0))


def linear_to_dense(weight: np.ndarray) -> np.ndarray:
    """A torch Linear weight [out, in] as a flax Dense kernel [in, out]."""
    return np.transpose(weight)


def flax_bn_momentum(torch_momentum: float) -> float:
    """Flax's BatchNorm momentum for torch's: torch updates `running = (1 - m) running + m batch`, flax
    `running = m' running + (1 - m') batch`, so m' = 1 - m (torch 0.05 → flax 0.95)."""
    return 1.0 - torch_momentum


def torch_gru_gates_to_ours(weight: np.ndarray) -> np.ndarray:
    """A torch GRU weight or bias with the gates stacked (r, z, n) on axis 0, restacked (z, r, n)."""
    r, z, n = np.split(weight, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def gru_kernel(weight: np.ndarray) -> np.ndarray:
    """torch `weight_ih` / `weight_hh` [3H, in] (r, z, n) as a 1x1 conv kernel [1, 1, in, 3H] (z, r, n)."""
    return torch_gru_gates_to_ours(weight).T[None, None]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a target variable comes from: a state-dict key and the layout transform to apply."""

    key: str
    transform: Callable[[np.ndarray], np.ndarray] = np.asarray


KeyMap = Callable[[tuple[str, ...]], Source]  # (collection, *module path, leaf) -> its source


def convert_variables(state_dict: dict, target: dict, key_map: KeyMap, droppable: tuple[str, ...] = ()) -> dict:
    """Fills the variables `target` (a tree of arrays or shape structs, collections first) from `state_dict`.

    Raises one ConversionError listing all missing, unexpected and wrong-shape keys. Keys starting with a
    `droppable` prefix may be left over (logged).
    """
    flat, used = {}, set()
    missing, wrong_shape = [], []
    for path, leaf in traverse_util.flatten_dict(target).items():
        source = key_map(path)
        if source.key not in state_dict:
            missing.append(f"{source.key} (for {'/'.join(path)}, shape {tuple(leaf.shape)})")
            continue
        used.add(source.key)
        value = np.asarray(source.transform(np.asarray(state_dict[source.key])), np.float32)
        if value.shape != tuple(leaf.shape):
            wrong_shape.append(f"{source.key}: {tuple(np.shape(state_dict[source.key]))} → {value.shape}, "
                               f"{'/'.join(path)} needs {tuple(leaf.shape)}")
        flat[path] = value
    left = sorted(k for k in state_dict if k not in used and not IGNORED.match(k))
    dropped = [k for k in left if k.startswith(droppable)]
    unexpected = [k for k in left if k not in dropped]
    if missing or unexpected or wrong_shape:
        lines = [f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong_shape)} of the wrong shape "
                 "(check that --config describes the checkpoint's architecture):"]
        lines += [f"  missing: {m}" for m in missing] + [f"  unexpected: {u}" for u in unexpected]
        lines += [f"  wrong shape: {w}" for w in wrong_shape]
        raise ConversionError("\n".join(lines))
    if dropped:
        logging.warning("Not imported (no counterpart in the configured model): %s", ", ".join(dropped))
    return traverse_util.unflatten_dict(flat)


def resnet_key_map(style: str, convs_per_block: int) -> KeyMap:
    """Target path → state-dict key of the `dual_resnet` (style 'dual', the original's key names) or the
    single-pathway `resnet` (style 'torchvision')."""
    dual = style == "dual"
    leaves = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
              ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}

    def module(parts: tuple[str, ...]) -> str:
        if parts[0] in ("stem_conv", "stem_bn"):
            return {"stem_conv": "conv1", "stem_bn": "bn1"}[parts[0]]
        stage, index = re.fullmatch(r"stage(\d+)_block(\d+)", parts[0]).groups()
        block = f"layer{stage}.modules_list.{index}" if dual else f"layer{stage}.{index}"
        kind, _, number = parts[1].partition("_")
        if parts[1] == "shortcut_conv":
            return f"{block}.downsample.{'conv' if dual else 0}"
        if kind == "BatchNorm" and int(number) == convs_per_block:  # the norm after the shortcut conv
            return f"{block}.downsample.{'bn' if dual else 1}"
        return f"{block}.{'conv' if kind == 'Conv' else 'bn'}{int(number) + 1}"

    def key_map(path: tuple[str, ...]) -> Source:
        collection, top, leaf = path[0], path[1], path[-1]
        if top == "head" or top in ORIGINAL_AUX_HEADS:
            name = CLASSIFIERS["dual_resnet" if dual else "resnet"] if top == "head" else ORIGINAL_AUX_HEADS[top]
            return Source(f"{name}.{'weight' if leaf == 'kernel' else 'bias'}",
                          linear_to_dense if leaf == "kernel" else np.asarray)
        name = module(path[2:-1])
        if leaf == "kernel":  # convolutions: no bias in these ResNets
            return Source(f"{name}.{top}_weight" if dual else f"{name}.weight", oihw_to_hwio)
        field = leaves[(collection, leaf)]
        return Source(f"{name}.{top}_bn.{field}" if dual else f"{name}.{field}")

    return key_map


def gru_key_map(state_dict: dict, prefix: str = "") -> KeyMap:
    """Target path of a `ConvGRU(kernel_size=1)` → key of a torch.nn.GRU (`*_l0`) or GRUCell state dict."""
    suffix = "_l0" if f"{prefix}weight_ih_l0" in state_dict else ""
    names = {("input", "kernel"): "weight_ih", ("input", "bias"): "bias_ih", ("recurrent", "kernel"): "weight_hh",
             ("recurrent", "bias"): "bias_hh"}

    def key_map(path: tuple[str, ...]) -> Source:
        owner = "input" if path[1] == "input" else path[2]
        name = names.get((owner, path[-1]), "/".join(path[1:]))  # no torch counterpart: reported missing
        return Source(f"{prefix}{name}{suffix}", gru_kernel if path[-1] == "kernel" else torch_gru_gates_to_ours)

    return key_map


def convert_gru(state_dict: dict, prefix: str = "") -> tuple[ConvGRU, dict]:
    """`(ConvGRU(hidden, kernel_size=1), its params)` equal to the single-layer, unidirectional torch.nn.GRU or
    GRUCell whose weights are `state_dict` (keys under `prefix`); the GRU's h0 is the `initial_state`
    argument. Apply to inputs [B, T, 1, 1, C] (or any H, W: the 1x1 GRU runs at every pixel)."""
    weight_ih = state_dict.get(f"{prefix}weight_ih_l0", state_dict.get(f"{prefix}weight_ih"))
    if weight_ih is None:
        raise ConversionError(f"No {prefix}weight_ih_l0 (torch.nn.GRU) or {prefix}weight_ih (GRUCell) in the "
                              f"state dict; its keys: {sorted(state_dict)[:10]}.")
    hidden, channels = weight_ih.shape[0] // 3, weight_ih.shape[1]
    model = ConvGRU(hidden, kernel_size=1)
    target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 1, 1, channels))))
    local = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    return model, convert_variables(local, {"params": target["params"]}, gru_key_map(state_dict, prefix))["params"]


def convert_resnet(config: ml_collections.ConfigDict, state_dict: dict) -> tuple[object, dict]:
    """`(model, variables)` of the configured `dual_resnet` or `resnet` filled from `state_dict`."""
    name = config.model.name
    if name not in CLASSIFIERS:
        raise ConversionError(f"config.model.name={name!r}: conversion supports {list(CLASSIFIERS)} (a torch GRU "
                              "goes into a ConvGRU with visioncore_jax.tools.convert.convert_gru).")
    classifier = f"{CLASSIFIERS[name]}.weight"
    if classifier not in state_dict:
        raise ConversionError(f"No {classifier} in the state dict: is it a {name} checkpoint? Its first keys: "
                              f"{sorted(state_dict)[:8]}.")
    model = build_model(config, int(state_dict[classifier].shape[0]))
    target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example_inputs(config), train=False))
    target = {k: v for k, v in target.items() if k in ("params", "batch_stats")}
    key_map = resnet_key_map("dual" if name == "dual_resnet" else "torchvision",
                             3 if config.model.block == "bottleneck" else 2)
    droppable = tuple(f"{head}." for head in ORIGINAL_AUX_HEADS.values()) if name == "dual_resnet" else ()
    return model, convert_variables(state_dict, target, key_map, droppable)


def example_inputs(config: ml_collections.ConfigDict) -> dict:
    """Zero color and brightness images of `config.data.image_size` (the ResNets pool globally: any size
    gives the same variables), without reading the dataset."""
    size = int(config.data.image_size)
    return {"color": jnp.zeros((1, size, size, 3)), "brightness": jnp.zeros((1, size, size, 1))}


def initial_state(config: ml_collections.ConfigDict, model) -> TrainState:
    """The train state main.py would start `model` with, built without the dataset (the optimizer chain does not
    depend on the schedule: the LR is a train step input), by one program compiled to run once: op by op, the
    initialisers of a ResNet compile one small program per parameter shape."""
    init = jax.jit(functools.partial(create_train_state, model, optimizer_chain(config), example_inputs(config),
                                     config.seed))
    return partitioning.compile_run_once(init)()


def write_workdir(config: ml_collections.ConfigDict, model, variables: dict, workdir: str) -> None:
    """A step-0 orbax checkpoint of `variables` with a fresh optimizer state, and `config.json`, in `workdir`:
    `main.py --workdir` then resumes (fine-tunes) from it, `--mode=eval` evaluates it."""
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "checkpoints")):
        raise ConversionError(f"--workdir={workdir} already has checkpoints; convert into a new workdir.")
    state = initial_state(config, model)
    params = jax.tree.map(jnp.asarray, variables["params"])
    state = state.replace(params=params, batch_stats=jax.tree.map(jnp.asarray, variables.get("batch_stats", {})),
                          opt_state=state.tx.init(params))
    os.makedirs(workdir, exist_ok=True)
    with checkpointing.create_manager(workdir, config.training.max_checkpoints_to_keep) as manager:
        checkpointing.save(manager, state, LoopState().to_json())
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def convert(path: str, config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Converts the checkpoint at `path` for the configured model into `workdir`; returns the variables."""
    state_dict = read_state_dict(path)
    model, variables = convert_resnet(config, state_dict)
    write_workdir(config, model, variables, workdir)
    count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))
    logging.info("Converted %s (%d parameters) into %s.", path, count, workdir)
    return variables
