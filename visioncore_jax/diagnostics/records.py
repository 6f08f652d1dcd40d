"""Host side of the in-step statistics: aggregates → versioned JSONL records (schema in `schema.py`)."""

import json
import os

import numpy as np

from visioncore_jax.diagnostics.schema import EVAL_FILE, MAX_CONFUSION_CLASSES, SCHEMA_VERSION, TRAIN_FILE


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


def _float(value) -> float:
    """A JSON-safe float (json writes NaN / Infinity as bare tokens, which Python reads back)."""
    return float(value)


def _summaries(summary: dict) -> dict[str, dict[str, float]]:
    """`{stat path: {mean, min, max, first, last}}` from a host copy of an on-device aggregate."""
    count = max(float(summary["count"]), 1.0)
    return {key: {"mean": _float(summary["sum"][key] / count), "min": _float(summary["min"][key]),
                  "max": _float(summary["max"][key]), "first": _float(summary["first"][key]),
                  "last": _float(summary["last"][key])}
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


def train_record(summary: dict, module_names: tuple[str, ...], order: tuple[str, ...], *, step: int,
                 first_step: int, steps_per_epoch: int,
                 num_train_steps: int, peak_learning_rate: float, grad_clip_norm: float, lr_scale: float,
                 num_classes: int, skipped_steps: int, longest_skip_run: int, events: list[dict]) -> dict:
    """The train record of one period from the host copy of its aggregate (`jax.device_get` of it);
    `module_names` index the aggregate's first non-finite module, `order` is the model's forward call order."""
    flat = _summaries(summary)
    first_step_nonfinite = float(summary["first_nonfinite_step"])
    first_nonfinite = None
    if first_step_nonfinite >= 0:
        module_index = int(summary["first_nonfinite_module"])
        first_nonfinite = {"step": int(first_step_nonfinite),
                           "module": module_names[module_index] if 0 <= module_index < len(module_names) else None}
    return {
        "schema_version": SCHEMA_VERSION, "kind": "train", "step": step, "epoch": step / steps_per_epoch,
        "first_step": first_step, "num_steps": int(summary["count"]), "steps_per_epoch": steps_per_epoch,
        "num_train_steps": num_train_steps, "peak_learning_rate": peak_learning_rate,
        "grad_clip_norm": grad_clip_norm, "lr_scale": lr_scale, "num_classes": num_classes,
        "scalars": {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("scalars/")},
        "skipped_steps": skipped_steps, "longest_skip_run": longest_skip_run,
        "first_nonfinite": first_nonfinite,
        "modules": _nest(flat, "modules", order),
        "pathways": _nest(flat, "pathways", order),
        "activations": _nest(flat, "activations", order),
        "gates": _nest(flat, "gates", order),
        "events": events,
    }


def eval_record(scalars: dict, confusion: np.ndarray, class_names, *, task: str, step: int,
                steps_per_epoch: int) -> dict:
    """The eval record at `step` from the eval scalars and the [true, predicted] confusion counts."""
    confusion = np.asarray(confusion, np.float64)
    total = max(confusion.sum(), 1.0)
    record = {
        "schema_version": SCHEMA_VERSION, "kind": "eval", "step": step, "epoch": step / steps_per_epoch,
        "task": task, "loss": _float(scalars["eval_loss"]), "accuracy": _float(scalars["eval_accuracy"]),
        "balanced_accuracy": _float(scalars["eval_balanced_accuracy"]), "class_names": list(class_names),
        "per_class_accuracy": (np.diag(confusion) / np.maximum(confusion.sum(1), 1)).tolist(),
        "predicted_histogram": (confusion.sum(0) / total).tolist(),
        "label_histogram": (confusion.sum(1) / total).tolist(),
    }
    if len(class_names) <= MAX_CONFUSION_CLASSES:
        record["confusion"] = confusion.astype(np.int64).tolist()
    if task == "segmentation":
        record["dice_per_class"] = [scalars[f"eval_dice/{name}"] for name in class_names]
        record["iou_per_class"] = [scalars[f"eval_iou/{name}"] for name in class_names]
        record["mean_dice"], record["mean_iou"] = scalars["eval_mean_dice"], scalars["eval_mean_iou"]
    return record


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

    def write(self, record: dict) -> None:
        """Appends one record to the file of its kind."""
        if not self._enabled:
            return
        name = TRAIN_FILE if record["kind"] == "train" else EVAL_FILE
        with open(os.path.join(self._dir, name), "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

