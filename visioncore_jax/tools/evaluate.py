"""Evaluates a workdir's checkpoint (best, latest or a given step) on the eval split: the metrics, a per-class
table and the confusion matrix, written to `workdir/eval/<step>.json` (`python main.py --mode=eval`)."""

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from visioncore_jax.errors import InputError
from visioncore_jax.train import checkpointing
from visioncore_jax.train.experiment import build_experiment, jitted_steps
from visioncore_jax.train.loop import evaluate

CHOICES = ("best", "latest")


def checkpoint_step(manager: ocp.CheckpointManager, which: str, step: int | None) -> int:
    """The step to evaluate: `step` when given (it must exist), else the best (by eval accuracy; the latest
    when no checkpoint has metrics yet, e.g. a converted one) or the latest checkpoint."""
    steps = manager.all_steps()
    if not steps:
        raise InputError(f"No checkpoint in {manager.directory}: train (main.py) or convert "
                         "(python -m visioncore_jax.convert) into this workdir first.")
    if step is not None and step >= 0:
        if step not in steps:
            raise InputError(f"--step={step} is not a checkpoint in {manager.directory}; there are {sorted(steps)}.")
        return step
    if which not in CHOICES:
        raise InputError(f"--checkpoint={which!r} is not one of {list(CHOICES)}.")
    best = manager.best_step() if which == "best" else None
    return best if best is not None else manager.latest_step()


def restore_model_variables(manager: ocp.CheckpointManager, step: int, state) -> dict:
    """`{'params', 'batch_stats'}` of checkpoint `step`, restored into the structure of `state`."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.checkpoint_items())
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except (ValueError, KeyError, TypeError) as error:
        raise checkpointing.IncompatibleCheckpointError(
            f"The checkpoint at step {step} in {manager.directory} does not fit the configured model "
            f"({type(error).__name__}: {str(error)[:300]}); pass the --config it was trained or converted with."
        ) from error
    return {"params": restored["state"]["params"], "batch_stats": restored["state"]["batch_stats"]}


def per_class_table(confusion: np.ndarray, class_names) -> list[dict]:
    """Precision, recall, F1 and support of each class from [true, predicted] counts (0 where undefined)."""
    true_positive = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(1), confusion.sum(0)
    precision = true_positive / np.maximum(predicted, 1)
    recall = true_positive / np.maximum(support, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return [dict(name=str(name), precision=float(p), recall=float(r), f1=float(f), support=int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)]


def format_table(result: dict) -> str:
    """The evaluation as text: the scalar metrics, then one row per class."""
    lines = [f"Checkpoint step {result['step']} of {result['workdir']}:"]
    lines += [f"  {name}: {value:.4f}" for name, value in result["metrics"].items() if "/" not in name]
    lines.append(f"  {'class':24s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}")
    lines += [f"  {row['name'][:24]:24s} {row['precision']:9.4f} {row['recall']:7.4f} {row['f1']:6.4f} "
              f"{row['support']:8d}" for row in result["per_class"]]
    return "\n".join(lines)


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str, which: str = "best",
                     step: int | None = None) -> dict:
    """Evaluates the chosen checkpoint of `workdir` on the eval split; writes and returns `{'step', 'metrics',
    'per_class', 'confusion', ...}` (`workdir/eval/<step>.json`)."""
    with checkpointing.create_manager(workdir, config.training.max_checkpoints_to_keep) as manager:
        chosen = checkpoint_step(manager, which, step)
        experiment = build_experiment(config)
        state = experiment.init_state()
        state = state.replace(**restore_model_variables(manager, chosen, state))
    _, eval_fn = jitted_steps(experiment)
    scalars, confusion = evaluate(state, experiment, eval_fn)
    result = dict(workdir=workdir, step=chosen, checkpoint=which if step is None or step < 0 else "step",
                  metrics=scalars, per_class=per_class_table(confusion, experiment.info.class_names),
                  class_names=[str(n) for n in experiment.info.class_names],
                  confusion=np.asarray(confusion).astype(int).tolist())
    if jax.process_index() == 0:
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        with open(os.path.join(workdir, "eval", f"{chosen}.json"), "w") as f:
            json.dump(result, f, indent=1)
    return result
