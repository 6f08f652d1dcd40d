"""Statistics computed inside the jitted train step, and their on-device aggregation over a record period.

Everything here is pure and traced into the same XLA program as the step: per-module gradient, parameter and
update norms (one stacked reduction per distinct parameter shape and tree), per-pathway totals, non-finite
gradient counts, and the block / gate statistics the models sow into the `diagnostics` collection. No extra
forward or backward pass, and nothing leaves the device until a record is written.
"""

import functools
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from visioncore_jax.diagnostics.records import in_forward_order
from visioncore_jax.models.layers import ACTIVATION_STATS, GATE_STATS
from visioncore_jax.optim.transforms import kernel_mask

PATHWAYS = ("color", "brightness")
NORM_EPSILON = 1e-12


def module_of(path: tuple[str, ...]) -> str:
    """The module a parameter belongs to: the top two levels of its path ('color/stage2_block0'), or the top
    level for a parameter directly under a top-level module ('head/kernel' → 'head')."""
    return "/".join(path[:2] if len(path) > 2 else path[:1])


def forward_order(model: nn.Module, example_inputs) -> tuple[str, ...]:
    """Paths ('color/stage1_block0/Conv_0') of the model's submodules in the order the forward pass calls them
    (traced with `jax.eval_shape`, nothing computed). Parameter trees come back from jit with sorted keys, so
    this is how records list modules input side first."""
    calls = []

    def record_call(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            calls.append("/".join(context.module.path))
        return next_fun(*args, **kwargs)

    key = jax.random.PRNGKey(0)
    with nn.intercept_methods(record_call):
        jax.eval_shape(functools.partial(model.init, train=False), {"params": key, "dropout": key}, example_inputs)
    return tuple(dict.fromkeys(calls))


def module_names(params, order: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The modules of a parameter tree (see `module_of`), in forward order when `order` is given."""
    names = dict.fromkeys(module_of(path) for path in traverse_util.flatten_dict(params))
    return tuple(in_forward_order(names, order))


def per_array_sums(arrays: list[jax.Array], group_by_shape: bool | None = None) -> jax.Array:
    """The sum of every array of `arrays` (in float32, in their order): with `group_by_shape` one reduction per
    distinct shape, else one per array; by default grouped on accelerators, not on CPU.

    Hand-written because a `jnp.sum` per array is one GPU kernel per array (XLA does not group reductions of
    differently shaped arrays; per-array statistics added ~460 kernels to an H200 step of the CIFAR-100 dual
    ResNet-18, +3.8% of it). Arrays of one shape (a ResNet repeats a handful of shapes) are stacked and reduced
    together there (+1.9%); a single concatenation of all of them was slower (+10%). XLA:CPU has no launch cost
    to save and copies the stacks: the same grouping cost +9.6% of that model's CPU step, so CPU keeps one
    reduction per array (BENCHMARKS.md, "Statistics on the H200")."""
    if group_by_shape is None:
        group_by_shape = jax.default_backend() != "cpu"
    if not group_by_shape:
        return jnp.stack([jnp.sum(array.astype(jnp.float32)) for array in arrays])
    groups: dict[tuple, list[int]] = {}
    for index, array in enumerate(arrays):
        groups.setdefault(array.shape, []).append(index)
    sums, order = [], []
    for indices in groups.values():
        stacked = jnp.stack([arrays[i].astype(jnp.float32) for i in indices])
        sums.append(jnp.sum(stacked, axis=tuple(range(1, stacked.ndim))))
        order += indices
    return jnp.concatenate(sums)[np.argsort(order)]


def _sown_stats(sown) -> dict[str, jax.Array]:
    """Flattens the `diagnostics` collection into `activations/<block>/<stat>` and `gates/<gate>/<stat>`
    scalars; repeated sows (time steps of a scan, repeated calls) are averaged."""
    flat = {}
    for key_path, value in jax.tree_util.tree_leaves_with_path(sown):
        # Dict keys only: sow stores its values in a tuple (one entry per call).
        *where, sow_name, stat = [k.key for k in key_path if isinstance(k, jax.tree_util.DictKey)]
        value = jnp.mean(value)
        for kind, suffix in (("activations", ACTIVATION_STATS), ("gates", GATE_STATS)):
            if sow_name.endswith(suffix):
                prefix = sow_name[: -len(suffix)].rstrip("_")
                key = "/".join([kind, *where, prefix] if prefix else [kind, *where]) + "/" + stat
                flat.setdefault(key, []).append(value)
    return {key: jnp.mean(jnp.stack(values)) for key, values in flat.items()}


def step_statistics(*, grads, params, new_params, sown, data_loss, weight_decay) -> "StatVector":
    """Scalars of one step, as a `StatVector` (read like a dict) keyed by record path.

    `modules/<m>/{grad_norm,param_norm,update_norm,update_ratio}`, `pathways/<p>/{grad_norm,grad_share}`
    (models with both pathways), `scalars/{data_loss,reg_loss,loss,nonfinite_grads}`, `first_nonfinite_module`
    (index into the sorted module names, -1 if none), and the sown `activations/...` and `gates/...`.
    `reg_loss` = weight_decay / 2 · Σ (decayed kernels)²: the L2 penalty the (possibly decoupled) decay implies.
    """
    flat_params, flat_grads = traverse_util.flatten_dict(params), traverse_util.flatten_dict(grads)
    paths = list(flat_params)
    modules = tuple(sorted(dict.fromkeys(module_of(path) for path in paths)))
    owner = np.asarray([modules.index(module_of(path)) for path in paths], np.int32)

    def per_module(per_leaf: jax.Array) -> jax.Array:
        return jax.ops.segment_sum(per_leaf, owner, num_segments=len(modules))

    # Updates are new - old rather than the optimizer's updates: sharing those with the statistics changes how
    # XLA fuses the parameter update (rounding), and the loss must not depend on whether statistics are on.
    new_leaves = traverse_util.flatten_dict(new_params)
    old = [flat_params[path].astype(jnp.float32) for path in paths]
    new = [new_leaves[path].astype(jnp.float32) for path in paths]
    grad_leaves = [flat_grads[path].astype(jnp.float32) for path in paths]
    param_leaf_sq = per_array_sums([jnp.square(p) for p in old])
    param_sq = per_module(param_leaf_sq)
    update_norm = jnp.sqrt(per_module(per_array_sums([jnp.square(n - p) for n, p in zip(new, old, strict=True)])))
    grad_sq = per_module(per_array_sums([jnp.square(g) for g in grad_leaves]))
    nonfinite = per_module(per_array_sums([(~jnp.isfinite(g)).astype(jnp.float32) for g in grad_leaves]))
    param_norm = jnp.sqrt(param_sq)
    names = [f"modules/{module}/{stat}" for module in modules
             for stat in ("grad_norm", "param_norm", "update_norm", "update_ratio")]
    module_stats = jnp.stack([jnp.sqrt(grad_sq), param_norm, update_norm, update_norm / (param_norm + NORM_EPSILON)],
                             axis=1).reshape(-1)

    scalars = {}
    pathway_of = np.asarray([module.split("/")[0] for module in modules])
    if all(p in pathway_of for p in PATHWAYS):  # a model with both pathways
        pathway_sq = {p: jnp.sum(grad_sq * (pathway_of == p)) for p in PATHWAYS}
        total = sum(pathway_sq.values()) + NORM_EPSILON
        for pathway, value in pathway_sq.items():
            scalars[f"pathways/{pathway}/grad_norm"] = jnp.sqrt(value)
            scalars[f"pathways/{pathway}/grad_share"] = value / total
    scalars["first_nonfinite_module"] = jnp.where(nonfinite.sum() > 0, jnp.argmax(nonfinite > 0), -1)
    decayed = traverse_util.flatten_dict(kernel_mask(params))
    reg_loss = 0.5 * weight_decay * jnp.sum(param_leaf_sq * np.asarray([decayed[p] for p in paths], np.float32))
    scalars["scalars/data_loss"] = data_loss
    scalars["scalars/reg_loss"] = reg_loss
    scalars["scalars/loss"] = data_loss + reg_loss
    scalars["scalars/nonfinite_grads"] = nonfinite.sum()
    scalars.update(_sown_stats(sown))
    return StatVector(tuple(names), module_stats).extended(scalars)


# ---- On-device aggregation over a record period (mean / min / max / first / last of each scalar). ----

@jax.tree_util.register_pytree_node_class
class StatVector(Mapping):
    """Scalars keyed by record path, held as one float32 vector: the aggregate is a handful of device buffers
    updated by a few vector operations, instead of five buffers and operations per scalar (thousands of tiny
    kernels and copies on CPU). Reads like a dict: `summary["sum"]["scalars/loss"]`."""

    def __init__(self, keys: tuple[str, ...], values):
        self.keys_, self.values = tuple(keys), values
        self._index = {key: index for index, key in enumerate(self.keys_)}

    def __getitem__(self, key: str):
        return self.values[self._index[key]]

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)

    def extended(self, scalars: Mapping[str, jax.Array]) -> "StatVector":
        """A new vector with `scalars` appended (their keys after this one's)."""
        if not scalars:
            return self
        extra = jnp.stack([jnp.asarray(value, jnp.float32) for value in scalars.values()])
        return StatVector(self.keys_ + tuple(scalars), jnp.concatenate([self.values.astype(jnp.float32), extra]))

    def tree_flatten(self):
        """The vector is the only leaf; the keys are static."""
        return (self.values,), self.keys_

    @classmethod
    def tree_unflatten(cls, keys, children):
        """Rebuilds from `tree_flatten`'s output."""
        return cls(keys, children[0])


def empty_summary(stats: dict[str, jax.Array]) -> dict:
    """An empty aggregate with the keys of `stats` (use `jax.eval_shape` output or real values)."""
    keys = tuple(stats)

    def filled(value: float) -> StatVector:
        return StatVector(keys, jnp.full((len(keys),), value, jnp.float32))

    return {
        "count": jnp.zeros((), jnp.float32),
        "sum": filled(0.0),
        "min": filled(jnp.inf),
        "max": filled(-jnp.inf),
        "first": filled(0.0),
        "last": filled(0.0),
        "first_nonfinite_step": jnp.full((), -1.0, jnp.float32),
        "first_nonfinite_module": jnp.full((), -1.0, jnp.float32),
    }


def accumulate(summary: dict, stats: dict[str, jax.Array], step: jax.Array) -> dict:
    """Adds one step's `stats` (taken at optimizer step `step`, 1-based) to `summary`."""
    keys = summary["sum"].keys_
    if isinstance(stats, StatVector) and stats.keys_ == keys:  # the step's own vector: no per-scalar copies
        values = stats.values
    else:
        values = jnp.stack([jnp.asarray(stats[key], jnp.float32) for key in keys])
    is_first = summary["count"] == 0
    seen_nonfinite = summary["first_nonfinite_step"] >= 0
    new_nonfinite = (~seen_nonfinite) & (stats["first_nonfinite_module"] >= 0)
    return {
        "count": summary["count"] + 1,
        "sum": StatVector(keys, summary["sum"].values + values),
        "min": StatVector(keys, jnp.minimum(summary["min"].values, values)),
        "max": StatVector(keys, jnp.maximum(summary["max"].values, values)),
        "first": StatVector(keys, jnp.where(is_first, values, summary["first"].values)),
        "last": StatVector(keys, values),
        "first_nonfinite_step": jnp.where(new_nonfinite, step.astype(jnp.float32), summary["first_nonfinite_step"]),
        "first_nonfinite_module": jnp.where(new_nonfinite, stats["first_nonfinite_module"],
                                            summary["first_nonfinite_module"]),
    }
