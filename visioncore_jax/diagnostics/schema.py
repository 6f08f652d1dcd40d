"""The diagnostics record schema (version 2): typed records of `workdir/diagnostics/{train,eval}.jsonl`, how they
are read and written, and the one set of coercion and formatting helpers used by rules, report and analyzer.

One JSON object per line, one line per record period (by default one epoch: a train record and an eval record
at each evaluation, both with the same `step`). Records after a restored checkpoint's step are truncated on
resume, so a file never holds two runs or a step twice. Only process 0 writes.

Every record has `schema_version` (SCHEMA_VERSION), `kind` ('train' | 'eval'), `step` (optimizer steps done at
the end of the period) and `epoch` (step / steps_per_epoch). The fields of each kind are the dataclasses below
(`TrainRecord`, `EvalRecord`); `Summary` = {mean, min, max, first, last} of a statistic over the period's steps
(non-finite values stay NaN / Infinity in the JSON).

Train record scalars (`TrainRecord.scalars`):
  loss            the data loss: cross-entropy (+ Dice for segmentation, + weighted aux heads) as optimized
  reg_loss        weight_decay / 2 * sum of squared decayed (kernel) weights; present only when the optimizer
                  optimizes it (sgd, adam: the decay is added to the gradient); AdamW/LAMB decay is decoupled,
                  no loss term, so it is not recorded
  accuracy        training accuracy in train mode (dropout on)
  learning_rate   LR applied by the step (schedule * lr_scale): first/last are the period's first and last step
  grad_norm       global gradient norm before clipping
  clipped         1 when clipping scaled the step, else 0 (mean = clipping fraction)
  nonfinite_grads count of non-finite gradient entries
  skipped         1 when the NaN-skip guard skipped the step
`modules`: {path: {grad_norm, param_norm, update_norm, update_ratio}}, path = the top two levels of the
parameter tree ('color/stage2', 'head'); update_ratio = update_norm / param_norm of the applied update.
`pathways`: {name: {grad_norm, grad_share}} for two-pathway models. `activations`: {block: {mean, std,
zero_fraction}}. `gates`: {gate: {mean, saturated_fraction}} (sigmoid outside [0.01, 0.99], tanh |x| > 0.98).

Version 1 records (loss = data + L2 term, a separate `data_loss`) are converted on reading: `loss` becomes the
data loss; the L2 term is kept only where the run's optimizer optimizes it.
"""

import dataclasses
import json
import math
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
MAX_CONFUSION_CLASSES = 100
TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
FINDINGS_FILE = "findings.json"
# Optimizers that add weight_decay * w to the gradient (optim/optimizers.py): the L2 term is part of the objective.
# AdamW and LAMB decay the weights directly (decoupled): no loss term.
L2_IN_OBJECTIVE = ("sgd", "adam")


# ---- One set of coercion and formatting helpers. ----

def as_float(value) -> float:
    """`value` as a float; NaN when it is missing or not a number (bools are no numbers)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def as_int(value, default: int = 0) -> int:
    """`value` as an int; `default` when it is missing or not a finite number."""
    number = as_float(value)
    return int(number) if math.isfinite(number) else default


def format_number(value, digits: int = 4) -> str:
    """A number with `digits` significant digits; other values as short JSON (cut at 120 characters)."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def per_class_recall(confusion) -> np.ndarray:
    """Recall of each class from [true, predicted] counts (0 for a class without examples)."""
    confusion = np.asarray(confusion, np.float64)
    return np.diag(confusion) / np.maximum(confusion.sum(1), 1)


# ---- Typed records. ----

@dataclasses.dataclass(frozen=True)
class Summary:
    """One statistic over a period's steps."""

    mean: float = math.nan
    min: float = math.nan
    max: float = math.nan
    first: float = math.nan
    last: float = math.nan

    @classmethod
    def from_json(cls, value) -> "Summary":
        """A Summary from its JSON dict (NaN for what is missing or not a number)."""
        value = value if isinstance(value, dict) else {}
        return cls(**{f.name: as_float(value.get(f.name)) for f in dataclasses.fields(cls)})


MISSING = Summary()
Stats = dict[str, Summary]  # statistic name -> Summary, e.g. {'grad_norm': ..., 'update_ratio': ...}


def _stats_map(value) -> dict[str, Stats]:
    """`{path: {stat: Summary}}` from JSON, keeping the order of the paths."""
    value = value if isinstance(value, dict) else {}
    return {str(path): {str(stat): Summary.from_json(s) for stat, s in stats.items()}
            for path, stats in value.items() if isinstance(stats, dict)}


@dataclasses.dataclass(frozen=True)
class Event:
    """A loop-control event inside a period: a plateau cut or a rollback."""

    step: int
    kind: str
    lr_scale: float = math.nan
    message: str = ""


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """The first step of a period with a non-finite gradient, and the first module holding one."""

    step: int
    module: str | None = None


@dataclasses.dataclass(frozen=True)
class TrainRecord:
    """The in-step statistics of one period (first_step + 1 .. step)."""

    step: int
    epoch: float = math.nan
    first_step: int = 0
    num_steps: int = 0
    steps_per_epoch: int = 0
    num_train_steps: int = 0
    peak_learning_rate: float = math.nan   # configured optimizer.learning_rate
    grad_clip_norm: float = math.nan        # configured threshold (0 = no clipping)
    lr_scale: float = math.nan              # plateau / rollback multiplier at the end of the period
    num_classes: int = 0
    optimizer: str = ""                     # configured optimizer.name ('' when unknown: version 1)
    scalars: dict[str, Summary] = dataclasses.field(default_factory=dict)
    skipped_steps: int = 0                  # whole run so far
    longest_skip_run: int = 0
    first_nonfinite: NonFinite | None = None
    modules: dict[str, Stats] = dataclasses.field(default_factory=dict)
    pathways: dict[str, Stats] = dataclasses.field(default_factory=dict)
    activations: dict[str, Stats] = dataclasses.field(default_factory=dict)
    gates: dict[str, Stats] = dataclasses.field(default_factory=dict)
    events: tuple[Event, ...] = ()

    def scalar(self, name: str) -> Summary:
        """The Summary of scalar `name` (all NaN when not recorded)."""
        return self.scalars.get(name, MISSING)

    @property
    def starts_run(self) -> bool:
        """Whether the period starts at step 0 (its `loss.first` is the step-1 loss)."""
        return self.first_step == 0

    def to_json(self) -> dict:
        """The JSON dict of one line of train.jsonl."""
        record = dataclasses.asdict(self)
        return {"schema_version": SCHEMA_VERSION, "kind": "train", **record}

    @classmethod
    def from_json(cls, value: dict) -> "TrainRecord":
        """A TrainRecord from a (current version) JSON dict; missing fields get their defaults."""
        first = value.get("first_nonfinite")
        step = as_int(value.get("step"))
        return cls(
            step=step, epoch=as_float(value.get("epoch")), first_step=as_int(value.get("first_step"), step),
            num_steps=as_int(value.get("num_steps")), steps_per_epoch=as_int(value.get("steps_per_epoch")),
            num_train_steps=as_int(value.get("num_train_steps")),
            peak_learning_rate=as_float(value.get("peak_learning_rate")),
            grad_clip_norm=as_float(value.get("grad_clip_norm")), lr_scale=as_float(value.get("lr_scale")),
            num_classes=as_int(value.get("num_classes")), optimizer=str(value.get("optimizer") or ""),
            scalars={str(k): Summary.from_json(v) for k, v in (value.get("scalars") or {}).items()}
            if isinstance(value.get("scalars"), dict) else {},
            skipped_steps=as_int(value.get("skipped_steps")), longest_skip_run=as_int(value.get("longest_skip_run")),
            first_nonfinite=NonFinite(as_int(first.get("step")), first.get("module"))
            if isinstance(first, dict) else None,
            modules=_stats_map(value.get("modules")), pathways=_stats_map(value.get("pathways")),
            activations=_stats_map(value.get("activations")), gates=_stats_map(value.get("gates")),
            events=tuple(Event(as_int(e.get("step")), str(e.get("kind", "")), as_float(e.get("lr_scale")),
                               str(e.get("message", "")))
                         for e in (value.get("events") or []) if isinstance(e, dict)))


def _floats(value) -> tuple[float, ...]:
    """A JSON list as floats (NaN where not a number); empty when not a list."""
    return tuple(as_float(v) for v in value) if isinstance(value, list) else ()


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """One evaluation at `step`."""

    step: int
    epoch: float = math.nan
    task: str = "classification"
    loss: float = math.nan
    accuracy: float = math.nan
    balanced_accuracy: float = math.nan
    class_names: tuple[str, ...] = ()
    per_class_accuracy: tuple[float, ...] = ()   # recall of each class (pixels for segmentation)
    predicted_histogram: tuple[float, ...] = ()  # share of predictions per class
    label_histogram: tuple[float, ...] = ()      # share of labels per class
    train_label_histogram: tuple[float, ...] = ()  # share of each class in the training split (pixels for seg.)
    confusion: tuple[tuple[int, ...], ...] | None = None  # [true, predicted]; None above MAX_CONFUSION_CLASSES
    dice_per_class: tuple[float, ...] = ()       # segmentation only
    iou_per_class: tuple[float, ...] = ()
    mean_dice: float = math.nan
    mean_iou: float = math.nan
    num_examples: int = 0  # examples (images, clips) evaluated; 0 in records written before the field

    @property
    def chance_accuracy_metric(self) -> float:
        """Balanced accuracy when recorded (a constant predictor scores exactly 1/K), else accuracy."""
        return self.balanced_accuracy if math.isfinite(self.balanced_accuracy) else self.accuracy

    def to_json(self) -> dict:
        """The JSON dict of one line of eval.jsonl (segmentation fields only for segmentation)."""
        record = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if self.confusion is None:
            del record["confusion"]
        else:
            record["confusion"] = [list(row) for row in self.confusion]
        if self.task != "segmentation":
            for key in ("dice_per_class", "iou_per_class", "mean_dice", "mean_iou"):
                del record[key]
        return {"schema_version": SCHEMA_VERSION, "kind": "eval", **record}

    @classmethod
    def from_json(cls, value: dict) -> "EvalRecord":
        """An EvalRecord from a JSON dict; missing fields get their defaults."""
        confusion = value.get("confusion")
        return cls(
            step=as_int(value.get("step")), epoch=as_float(value.get("epoch")),
            task=str(value.get("task") or "classification"), loss=as_float(value.get("loss")),
            accuracy=as_float(value.get("accuracy")), balanced_accuracy=as_float(value.get("balanced_accuracy")),
            class_names=tuple(str(n) for n in value.get("class_names") or []),
            per_class_accuracy=_floats(value.get("per_class_accuracy")),
            predicted_histogram=_floats(value.get("predicted_histogram")),
            label_histogram=_floats(value.get("label_histogram")),
            train_label_histogram=_floats(value.get("train_label_histogram")),
            confusion=tuple(tuple(as_int(c) for c in row) for row in confusion)
            if isinstance(confusion, list) and all(isinstance(r, list) for r in confusion) else None,
            dice_per_class=_floats(value.get("dice_per_class")), iou_per_class=_floats(value.get("iou_per_class")),
            mean_dice=as_float(value.get("mean_dice")), mean_iou=as_float(value.get("mean_iou")),
            num_examples=as_int(value.get("num_examples")))


def _upgrade_v1(value: dict) -> dict:
    """A version-1 train record in version-2 terms: `loss` is the data loss; the L2 term stays (the reader drops
    it when the run's optimizer does not optimize it)."""
    scalars = dict(value.get("scalars") or {})
    if "data_loss" in scalars:
        scalars["loss"] = scalars.pop("data_loss")
    return {**value, "scalars": scalars}


def read_record(value, where: str) -> TrainRecord | EvalRecord:
    """A typed record from one parsed JSON line at `where` (file:line); version 1 is converted, any other
    version is refused with one line saying what to do."""
    version = value.get("schema_version") if isinstance(value, dict) else None
    if version not in (1, SCHEMA_VERSION):
        raise ValueError(f"{where} has schema_version {version!r}; this version of visioncore_jax reads versions 1 "
                         f"and {SCHEMA_VERSION}. Analyze it with the version that wrote it.")
    if value.get("kind") == "eval":
        return EvalRecord.from_json(value)
    return TrainRecord.from_json(_upgrade_v1(value) if version == 1 else value)


def drop_unoptimized_l2(record: TrainRecord, optimizer: str) -> TrainRecord:
    """`record` without its L2 term when `optimizer` (the record's own, else the config's) does not optimize it
    (version-1 records carried it for every optimizer)."""
    name = record.optimizer or optimizer
    if "reg_loss" not in record.scalars or not name or name in L2_IN_OBJECTIVE:
        return record
    return dataclasses.replace(record, scalars={k: v for k, v in record.scalars.items() if k != "reg_loss"})


@dataclasses.dataclass(frozen=True)
class RunRecords:
    """A run's train and eval records (in step order) and its config as a nested dict (config.json, {} when the
    workdir has none)."""

    train: tuple[TrainRecord, ...]
    eval: tuple[EvalRecord, ...]
    config: dict[str, Any]

    @classmethod
    def from_json(cls, train: list[dict], eval: list[dict], config: dict) -> "RunRecords":  # noqa: A002
        """Typed records from JSON dicts (as written to the files)."""
        optimizer = str((config.get("optimizer") or {}).get("name") or "") if isinstance(config, dict) else ""
        return cls(tuple(drop_unoptimized_l2(read_record(r, "train record"), optimizer) for r in train),
                   tuple(read_record(r, "eval record") for r in eval), config if isinstance(config, dict) else {})
