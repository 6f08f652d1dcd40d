"""Host side of the in-step statistics: aggregates → versioned JSONL records (schema in `schema.py`)."""

import json
import math
import os

import numpy as np

from visioncore_jax.diagnostics.schema import (
    EVAL_FILE,
    L2_IN_OBJECTIVE,
    MAX_CONFUSION_CLASSES,
    TRAIN_FILE,
    EvalRecord,
    Event,
    NonFinite,
    Summary,
    TrainRecord,
    per_class_recall,
)


def in_forward_order(paths, order: tuple[str, ...]) -> list[str]:
    """`paths` sorted by the first forward call at or under each path; a path that is no module (a sown name
    like 'color/stem') takes its parent's place; unknown paths go last, in their order."""
    def first_call(path: str) -> int:
        while path:
            index = next((i for i, call in enumerate(order) if call == path or call.startswith(path + "/")), None)
            if index is not None:
                return index
            path = path.rpartition("/")[0]
        return len(order)

    return sorted(paths, key=first_call)


def diagnostics_dir(workdir: str) -> str:
    """`workdir/diagnostics`."""
    return os.path.join(workdir, "diagnostics")


def _summaries(summary: dict) -> dict[str, dict[str, float]]:
    """`{stat path: {mean, min, max, first, last}}` from a host copy of an on-device aggregate."""
    count = max(float(summary["count"]), 1.0)
    return {key: {"mean": float(summary["sum"][key] / count), "min": float(summary["min"][key]),
                  "max": float(summary["max"][key]), "first": float(summary["first"][key]),
                  "last": float(summary["last"][key])}
            for key in summary["sum"]}


def _nest(flat: dict[str, dict], prefix: str, order: tuple[str, ...]) -> dict:
    """`{'modules/color/stem/grad_norm': s}` → `{'color/stem': {'grad_norm': s}}` for keys under `prefix`, in
    forward order."""
    nested = {}
    for key, value in flat.items():
        if key.startswith(prefix + "/"):
            where, stat = key[len(prefix) + 1:].rsplit("/", 1)
            nested.setdefault(where, {})[stat] = value
    return {where: nested[where] for where in in_forward_order(nested, order)}


def _scalars(flat: dict, optimizer: str) -> dict[str, Summary]:
    """The record's scalars: `loss` is the data loss; `reg_loss` (the L2 term) only where `optimizer` optimizes
    it (schema.L2_IN_OBJECTIVE); the statistics' total `loss` (data + L2) is not recorded."""
    scalars = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("scalars/")}
    if "data_loss" in scalars:
        scalars["loss"] = scalars.pop("data_loss")
    if optimizer not in L2_IN_OBJECTIVE:
        scalars.pop("reg_loss", None)
    return {name: Summary.from_json(summary) for name, summary in scalars.items()}


def _typed(nested: dict) -> dict:
    """`{path: {stat: Summary}}` from the nested JSON-like summaries."""
    return {path: {stat: Summary.from_json(s) for stat, s in stats.items()} for path, stats in nested.items()}


def train_record(summary: dict, module_names: tuple[str, ...], order: tuple[str, ...], *, step: int,
                 first_step: int, steps_per_epoch: int,
                 num_train_steps: int, peak_learning_rate: float, grad_clip_norm: float, lr_scale: float,
                 num_classes: int, skipped_steps: int, longest_skip_run: int, events: list[dict],
                 optimizer: str = "") -> dict:
    """The train record (JSON dict of a `TrainRecord`) of one period from the host copy of its aggregate
    (`jax.device_get` of it); `module_names` index the aggregate's first non-finite module, `order` is the
    model's forward call order, `optimizer` the configured optimizer.name."""
    flat = _summaries(summary)
    first_step_nonfinite = float(summary["first_nonfinite_step"])
    first_nonfinite = None
    if first_step_nonfinite >= 0:
        module_index = int(summary["first_nonfinite_module"])
        first_nonfinite = NonFinite(int(first_step_nonfinite),
                                    module_names[module_index] if 0 <= module_index < len(module_names) else None)
    record = TrainRecord(
        step=step, epoch=step / steps_per_epoch, first_step=first_step, num_steps=int(summary["count"]),
        steps_per_epoch=steps_per_epoch, num_train_steps=num_train_steps, peak_learning_rate=peak_learning_rate,
        grad_clip_norm=grad_clip_norm, lr_scale=lr_scale, num_classes=num_classes, optimizer=optimizer,
        scalars=_scalars(flat, optimizer), skipped_steps=skipped_steps, longest_skip_run=longest_skip_run,
        first_nonfinite=first_nonfinite, modules=_typed(_nest(flat, "modules", order)),
        pathways=_typed(_nest(flat, "pathways", order)), activations=_typed(_nest(flat, "activations", order)),
        gates=_typed(_nest(flat, "gates", order)),
        events=tuple(Event(int(e["step"]), str(e["kind"]), float(e.get("lr_scale", math.nan)),
                           str(e.get("message", ""))) for e in events))
    return record.to_json()


def eval_record(scalars: dict, confusion: np.ndarray, class_names, *, task: str, step: int,
                steps_per_epoch: int, train_label_counts=(), num_examples: int = 0) -> dict:
    """The eval record (JSON dict of an `EvalRecord`) at `step` from the eval scalars, the [true, predicted]
    confusion counts (pixels for segmentation), the training split's label counts and the number of examples
    evaluated."""
    confusion = np.asarray(confusion, np.float64)
    total = max(confusion.sum(), 1.0)
    train_counts = np.asarray(train_label_counts, np.float64)
    segmentation = task == "segmentation"
    record = EvalRecord(
        step=step, epoch=step / steps_per_epoch, task=task, loss=float(scalars["eval_loss"]),
        accuracy=float(scalars["eval_accuracy"]), balanced_accuracy=float(scalars["eval_balanced_accuracy"]),
        class_names=tuple(class_names), per_class_accuracy=tuple(per_class_recall(confusion).tolist()),
        predicted_histogram=tuple((confusion.sum(0) / total).tolist()),
        label_histogram=tuple((confusion.sum(1) / total).tolist()),
        train_label_histogram=tuple((train_counts / max(train_counts.sum(), 1.0)).tolist()),
        confusion=tuple(tuple(row) for row in confusion.astype(np.int64).tolist())
        if len(class_names) <= MAX_CONFUSION_CLASSES else None,
        dice_per_class=tuple(float(scalars[f"eval_dice/{n}"]) for n in class_names) if segmentation else (),
        iou_per_class=tuple(float(scalars[f"eval_iou/{n}"]) for n in class_names) if segmentation else (),
        mean_dice=float(scalars["eval_mean_dice"]) if segmentation else math.nan,
        mean_iou=float(scalars["eval_mean_iou"]) if segmentation else math.nan, num_examples=num_examples)
    return record.to_json()


class RecordWriter:
    """Appends records to `workdir/diagnostics/{train,eval}.jsonl` (process 0 only).

    On creation, drops every record after `start_step` (the restored checkpoint's step) and any partial last
    line, so a resumed run continues the files exactly as an uninterrupted one would have written them; a
    rollback truncates the same way.
    """

    def __init__(self, workdir: str, start_step: int, enabled: bool = True):
        self._dir = diagnostics_dir(workdir)
        self._enabled = enabled
        if enabled:
            os.makedirs(self._dir, exist_ok=True)
            self.truncate_after(start_step)

    def truncate_after(self, step: int) -> None:
        """Removes records with `step` greater than `step` from both files."""
        if not self._enabled:
            return
        for name in (TRAIN_FILE, EVAL_FILE):
            path = os.path.join(self._dir, name)
            if not os.path.exists(path):
                continue
            kept = []
            with open(path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        break  # a partial line from a killed run, and nothing valid can follow it
                    if record["step"] <= step:
                        kept.append(line if line.endswith("\n") else line + "\n")
            with open(path, "w") as f:
                f.writelines(kept)

    def write(self, record: dict | TrainRecord | EvalRecord) -> None:
        """Appends one record (a typed record or its JSON dict) to the file of its kind."""
        if not self._enabled:
            return
        record = record if isinstance(record, dict) else record.to_json()
        name = TRAIN_FILE if record["kind"] == "train" else EVAL_FILE
        with open(os.path.join(self._dir, name), "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

