"""Statistics computed inside the jitted train step, and their on-device aggregation over a record period.

Everything here is pure and traced into the same XLA program as the step: per-module gradient, parameter and
update norms (one reduction per parameter array), per-pathway totals, non-finite gradient counts, and the
block / gate statistics the models sow into the `diagnostics` collection. No extra forward or backward pass,
and nothing leaves the device until a record is written.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
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


def _squared_norms_by_module(tree) -> dict[str, jax.Array]:
    """Sum of squares of every module's arrays, in float32."""
    totals = {}
    for path, leaf in traverse_util.flatten_dict(tree).items():
        value = jnp.sum(jnp.square(leaf.astype(jnp.float32)))
        totals[module_of(path)] = totals.get(module_of(path), 0.0) + value
    return totals


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


def step_statistics(*, grads, params, new_params, sown, data_loss, weight_decay: float) -> dict[str, jax.Array]:
    """Scalars of one step, as a flat dict of float32 arrays keyed by record path.

    `modules/<m>/{grad_norm,param_norm,update_norm,update_ratio}`, `pathways/<p>/{grad_norm,grad_share}`
    (models with both pathways), `scalars/{data_loss,reg_loss,loss,nonfinite_grads}`, `first_nonfinite_module`
    (index into the sorted module names, -1 if none), and the sown `activations/...` and `gates/...`.
    `reg_loss` = weight_decay / 2 · Σ (decayed kernels)²: the L2 penalty the (possibly decoupled) decay implies.
    """
    stats = {}
    grad_sq = _squared_norms_by_module(grads)
    param_sq = _squared_norms_by_module(params)
    update_sq = _squared_norms_by_module(jax.tree.map(lambda new, old: new - old, new_params, params))
    for module in grad_sq:
        param_norm, update_norm = jnp.sqrt(param_sq[module]), jnp.sqrt(update_sq[module])
        stats[f"modules/{module}/grad_norm"] = jnp.sqrt(grad_sq[module])
        stats[f"modules/{module}/param_norm"] = param_norm
        stats[f"modules/{module}/update_norm"] = update_norm
        stats[f"modules/{module}/update_ratio"] = update_norm / (param_norm + NORM_EPSILON)

    pathway_sq = {p: [v for m, v in grad_sq.items() if m.split("/")[0] == p] for p in PATHWAYS}
    if all(pathway_sq.values()):  # a model with both pathways
        pathway_sq = {p: sum(values) for p, values in pathway_sq.items()}
        total = sum(pathway_sq.values()) + NORM_EPSILON
        for pathway, value in pathway_sq.items():
            stats[f"pathways/{pathway}/grad_norm"] = jnp.sqrt(value)
            stats[f"pathways/{pathway}/grad_share"] = value / total

    nonfinite = {m: sum(jnp.sum(~jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree))
                 for m, tree in _by_module(grads).items()}
    counts = jnp.stack([nonfinite[m] for m in sorted(grad_sq)]).astype(jnp.float32)  # indexes sorted names
    stats["first_nonfinite_module"] = jnp.where(counts.sum() > 0, jnp.argmax(counts > 0), -1).astype(jnp.float32)
    decayed = jax.tree.leaves(jax.tree.map(lambda p, keep: jnp.sum(jnp.square(p)) if keep else 0.0, params,
                                           kernel_mask(params)))
    reg_loss = 0.5 * weight_decay * sum(decayed)
    stats["scalars/data_loss"] = data_loss
    stats["scalars/reg_loss"] = reg_loss
    stats["scalars/loss"] = data_loss + reg_loss
    stats["scalars/nonfinite_grads"] = counts.sum()
    stats.update(_sown_stats(sown))
    return {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}


def _by_module(tree) -> dict[str, dict]:
    """Splits a parameter-shaped tree into one sub-tree (a flat dict) per module."""
    groups = {}
    for path, leaf in traverse_util.flatten_dict(tree).items():
        groups.setdefault(module_of(path), {})[path] = leaf
    return groups


# ---- On-device aggregation over a record period (mean / min / max / first / last of each scalar). ----

def empty_summary(stats: dict[str, jax.Array]) -> dict:
    """An empty aggregate with the structure of `stats` (use `jax.eval_shape` output or real values)."""
    zeros = {k: jnp.zeros((), jnp.float32) for k in stats}
    return {
        "count": jnp.zeros((), jnp.float32),
        "sum": zeros,
        "min": {k: jnp.full((), jnp.inf, jnp.float32) for k in stats},
        "max": {k: jnp.full((), -jnp.inf, jnp.float32) for k in stats},
        "first": zeros,
        "last": zeros,
        "first_nonfinite_step": jnp.full((), -1.0, jnp.float32),
        "first_nonfinite_module": jnp.full((), -1.0, jnp.float32),
    }


def accumulate(summary: dict, stats: dict[str, jax.Array], step: jax.Array) -> dict:
    """Adds one step's `stats` (taken at optimizer step `step`, 1-based) to `summary`."""
    is_first = summary["count"] == 0
    seen_nonfinite = summary["first_nonfinite_step"] >= 0
    new_nonfinite = (~seen_nonfinite) & (stats["first_nonfinite_module"] >= 0)
    return {
        "count": summary["count"] + 1,
        "sum": jax.tree.map(jnp.add, summary["sum"], stats),
        "min": jax.tree.map(jnp.minimum, summary["min"], stats),
        "max": jax.tree.map(jnp.maximum, summary["max"], stats),
        "first": jax.tree.map(lambda old, new: jnp.where(is_first, new, old), summary["first"], stats),
        "last": stats,
        "first_nonfinite_step": jnp.where(new_nonfinite, step.astype(jnp.float32), summary["first_nonfinite_step"]),
        "first_nonfinite_module": jnp.where(new_nonfinite, stats["first_nonfinite_module"],
                                            summary["first_nonfinite_module"]),
    }
