"""The analyzer's rules on synthetic records of the schema: each fault makes its finding the top one, a healthy run
produces no warning or error, missing or non-finite fields never raise; and `analyze(workdir)` end to end."""

import json
import math
import pathlib
import re
import warnings

import numpy as np
import pytest

from configs import default
from tests.fault_zoo import apply_recommendation, assert_recommendations_apply
from visioncore_jax.diagnostics import advice, analyzer, rules
from visioncore_jax.diagnostics.rules import RULES, data, evidence, gradients, lr, numerics, regularization
from visioncore_jax.diagnostics.schema import FINDINGS_FILE, SCHEMA_VERSION, EvalRecord, RunRecords

K = 10
STEPS_PER_EPOCH = 100
PEAK_LR = 3e-3
DUAL_MODULES = ("color/stem_conv", "color/stage1", "brightness/stem_conv", "brightness/stage1", "head")
PLAIN_MODULES = ("conv0", "conv1", "conv2", "conv3", "conv4", "head")
BLOCKS = ("color/stage1", "brightness/stage1")
UNIFORM = [1 / K] * K
CATALOG = ("exploding_gradients", "initial_loss_high", "lr_too_high", "lr_too_low", "lr_decayed_too_early",
           "lr_schedule_exhausted", "loss_plateau", "over_regularization", "vanishing_gradients",
           "params_not_updating", "pathway_imbalance", "clipping_dominates", "nan_skips", "overfitting", "nonfinite",
           "dead_units", "saturated_gates", "chance_level", "one_class_collapse")


# ---- Synthetic records. ----

def summary(mean: float, **fields) -> dict:
    """A schema Summary with `mean` for every field unless given (`first=`, `last=`, `max=`...)."""
    return {**dict.fromkeys(("mean", "min", "max", "first", "last"), mean), **fields}


def warmup_cosine(n: int, peak: float = PEAK_LR) -> list[float]:
    """Mean LR per epoch record: one epoch of linear warmup, then cosine decay to 0 over the rest."""
    return [peak / 2] + [peak * 0.5 * (1 + math.cos(math.pi * (i - 0.5) / (n - 1))) for i in range(1, n)]


def healthy_numbers(n: int) -> dict:
    """Per-record numbers of a healthy run: loss ln K → ~0.4, accuracy rising, update ratio ~1e-3 at the peak LR,
    ReLU zero fraction ~0.5, no clipping or skips, eval tracking train."""
    loss = [0.4 + (math.log(K) - 0.4) * math.exp(-4.5 * i / n) for i in range(n)]
    accuracy = [0.88 - 0.75 * math.exp(-4.5 * i / n) for i in range(n)]
    lr = warmup_cosine(n)
    return dict(
        loss=loss, accuracy=accuracy, lr=lr, update_ratio=[2e-3 * x / PEAK_LR for x in lr], grad_norm=1.0,
        module_grad_norm=dict(zip(DUAL_MODULES, (0.4, 0.3, 0.3, 0.2, 0.8), strict=True)), zero_fraction=0.5,
        brightness_share=0.4, gate_saturation=None, clipped=0.0, nonfinite=0.0, skipped=0, lr_scale=1.0,
        events=None, reg_loss=0.02, eval_loss=[x + 0.05 for x in loss], eval_accuracy=[a - 0.02 for a in accuracy],
        predicted=UNIFORM, labels=UNIFORM, modules=DUAL_MODULES, pathways=True, peak_lr=PEAK_LR, clip=5.0)


def at(value, i: int):
    """The record `i` entry of a per-record list, or a constant."""
    return value[i] if isinstance(value, list) else value


def histogram_at(value: list, i: int) -> list:
    """The record `i` histogram of a per-record list of histograms, or a constant histogram."""
    return value[i] if isinstance(value[0], list) else value


def train_record(spec: dict, i: int, skipped_before: int) -> dict:
    """Record `i` (epoch i + 1) of the run described by `spec`."""
    step = (i + 1) * STEPS_PER_EPOCH
    loss, reg, skipped = at(spec["loss"], i), at(spec["reg_loss"], i), at(spec["skipped"], i)
    ratio = at(spec["update_ratio"], i)
    norms = {m: at(v, i) for m, v in spec["module_grad_norm"].items()}
    record = {
        "schema_version": SCHEMA_VERSION, "kind": "train", "step": step, "epoch": step / STEPS_PER_EPOCH,
        "first_step": step - STEPS_PER_EPOCH, "num_steps": STEPS_PER_EPOCH, "steps_per_epoch": STEPS_PER_EPOCH,
        "num_train_steps": spec["n"] * STEPS_PER_EPOCH, "peak_learning_rate": spec["peak_lr"],
        "grad_clip_norm": spec["clip"], "lr_scale": at(spec["lr_scale"], i), "num_classes": K,
        "scalars": {
            "loss": summary(loss), "reg_loss": summary(reg),
            "accuracy": summary(at(spec["accuracy"], i)), "learning_rate": summary(at(spec["lr"], i)),
            "grad_norm": summary(at(spec["grad_norm"], i)), "clipped": summary(at(spec["clipped"], i)),
            "nonfinite_grads": summary(at(spec["nonfinite"], i)),
            "skipped": summary(skipped / STEPS_PER_EPOCH, max=float(skipped > 0))},
        "skipped_steps": skipped_before + skipped, "longest_skip_run": int(skipped > 0), "first_nonfinite": None,
        "modules": {m: {"grad_norm": summary(norms.get(m, 0.5)), "param_norm": summary(10.0),
                        "update_norm": summary(10.0 * ratio), "update_ratio": summary(ratio)}
                    for m in spec["modules"]},
        "activations": {b: {"mean": summary(0.3), "std": summary(0.5),
                            "zero_fraction": summary(at(spec["zero_fraction"], i))} for b in BLOCKS},
        "events": at(spec["events"], i) or [],
    }
    if spec["pathways"]:
        share = at(spec["brightness_share"], i)
        record["pathways"] = {"color": {"grad_norm": summary(1.0), "grad_share": summary(1 - share)},
                              "brightness": {"grad_norm": summary(share ** 0.5), "grad_share": summary(share)}}
    if spec["gate_saturation"] is not None:
        record["gates"] = {"gru/update_gate": {"mean": summary(0.5),
                                               "saturated_fraction": summary(at(spec["gate_saturation"], i))}}
    return record


def eval_record(spec: dict, i: int) -> dict:
    """The eval record at the end of epoch i + 1."""
    step = (i + 1) * STEPS_PER_EPOCH
    accuracy, predicted = at(spec["eval_accuracy"], i), histogram_at(spec["predicted"], i)
    return {
        "schema_version": SCHEMA_VERSION, "kind": "eval", "step": step, "epoch": step / STEPS_PER_EPOCH,
        "task": "classification", "loss": at(spec["eval_loss"], i), "accuracy": accuracy,
        "balanced_accuracy": accuracy, "class_names": [f"class{c}" for c in range(K)],
        "per_class_accuracy": [accuracy] * K, "predicted_histogram": predicted,
        "label_histogram": histogram_at(spec["labels"], i),
        "confusion": (np.eye(K, dtype=int) * 25 + 1).tolist(),
    }


def make_run(n: int = 10, config: dict | None = None, patch=None, **numbers) -> RunRecords:
    """A run of `n` epoch records: the healthy numbers with `numbers` replacing some; `config` holds dotted
    overrides of the default config; `patch(train, eval)` edits the built records in place."""
    spec = {**healthy_numbers(n), **numbers, "n": n}
    train, skipped = [], 0
    for i in range(n):
        train.append(train_record(spec, i, skipped))
        skipped = train[-1]["skipped_steps"]
    evals = [eval_record(spec, i) for i in range(n)]
    if patch:
        patch(train, evals)
    return RunRecords.from_json(train, evals, config_dict(config or {}))


def config_dict(overrides: dict) -> dict:
    """configs/default.py as the nested dict of config.json, with dotted `overrides`."""
    config = json.loads(json.dumps(default.get_config().to_dict()))
    for key, value in overrides.items():
        *parents, name = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return config


def falling(start: float, end: float, n: int = 10) -> list[float]:
    """A geometric series from `start` to `end`."""
    return list(np.geomspace(start, end, n))


def problems(findings) -> list:
    """The warnings and errors."""
    return [f for f in findings if f.severity != "info"]


def analyze(run: RunRecords):
    """All findings, with NumPy warnings turned into errors (rules must not emit any)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return analyzer.analyze_records(run)


# ---- One fault per catalog id. ----

def first_nonfinite_at(index: int, module: str):
    """A patch marking record `index` as holding the first non-finite gradient, in `module`."""
    def patch(train, evals):
        train[index]["first_nonfinite"] = {"step": train[index]["first_step"] + 7, "module": module}
    return patch


def nan_data_from_epoch_4() -> RunRecords:
    """From epoch 4 every batch holds NaN pixels: every step is skipped and the loss stays NaN, with no climb
    before it (no LR finding explains it)."""
    nan = [2.3, 2.2, 2.1] + [math.nan] * 7
    return make_run(loss=nan, eval_loss=[2.4, 2.3, 2.2] + [math.nan] * 7, nonfinite=[0.0] * 3 + [1e4] * 7,
                    skipped=[0] * 3 + [STEPS_PER_EPOCH] * 7, patch=first_nonfinite_at(3, "color/stage1"))


def diverged_sgd_lr_50() -> RunRecords:
    """SGD lr 50 without clipping: the loss climbs from 2.3 to 9, then every step is non-finite."""
    nan = [2.3, 4.0, 9.0] + [math.nan] * 7
    return make_run(loss=nan, eval_loss=[2.4, 2.3, 1e9] + [math.nan] * 7, nonfinite=[0.0] * 3 + [1e4] * 7,
                    skipped=[0] * 3 + [STEPS_PER_EPOCH] * 7, peak_lr=50.0, clip=0.0, lr=warmup_cosine(10, 50.0),
                    update_ratio=[0.05, 0.4, 3.0] + [math.nan] * 7, zero_fraction=0.95,
                    config={"optimizer.name": "sgd", "optimizer.learning_rate": 50.0, "optimizer.grad_clip_norm": 0.0},
                    patch=first_nonfinite_at(3, "color/stage1"))


def nan_in_a_few_batches() -> RunRecords:
    """Three NaN batches (the last in the very last step of the run); the guard skipped them and training went on."""
    def patch(train, evals):
        first_nonfinite_at(2, "color/stem_conv")(train, evals)
        train[-1]["scalars"]["loss"]["last"] = math.nan

    bad = {2, 5, 9}
    return make_run(loss=[math.nan if i in bad else x for i, x in enumerate(healthy_numbers(10)["loss"])],
                    nonfinite=[150.0 if i in bad else 0.0 for i in range(10)],
                    skipped=[int(i in bad) for i in range(10)], patch=patch)


BRIGHTNESS = ("brightness/stem_conv", "brightness/stage1")


def frozen(modules):
    """A patch giving `modules` zero updates (a stop_gradient: zero gradient, so zero update)."""
    def patch(train, evals):
        for record in train:
            for module in modules:
                record["modules"][module].update(update_norm=summary(0.0), update_ratio=summary(0.0))
    return patch


# Overfitting: train loss to ~0 and accuracy 1.0 while the eval loss rises from epoch 3.
FAULTS_OVERFIT = dict(loss=falling(2.2, 0.003), accuracy=[0.2, 0.6, 0.9] + [1.0] * 7,
                      eval_loss=[2.2, 1.9, 1.8, 2.3, 2.8, 3.2, 3.4, 3.4, 3.5, 3.5],
                      eval_accuracy=[0.18, 0.3, 0.35] + [0.3] * 7)
FAULTS = {
    "nonfinite": nan_data_from_epoch_4,
    "lr_too_high": lambda: make_run(
        loss=[2.3, 3.1, 2.2, 2.9, 2.5, 3.3, 2.4, 2.8, 2.6, 2.7], accuracy=0.11, eval_accuracy=0.1,
        update_ratio=0.3, peak_lr=0.1, lr=warmup_cosine(10, 0.1),
        config={"optimizer.name": "adam", "optimizer.learning_rate": 0.1}),
    "lr_too_low": lambda: make_run(
        loss=list(np.linspace(2.31, 2.30, 10)), accuracy=0.1, eval_accuracy=0.1, lr=warmup_cosine(10, 1e-7),
        update_ratio=1e-7, peak_lr=1e-7, config={"optimizer.name": "adam", "optimizer.learning_rate": 1e-7}),
    "lr_decayed_too_early": lambda: make_run(
        lr=[x * s for x, s in zip(warmup_cosine(10), [1, 0.5, 0.25] + [0.125] * 7, strict=True)],
        lr_scale=[1, 0.5, 0.25] + [0.125] * 7,
        events=[[], [{"step": 150, "kind": "plateau_cut", "lr_scale": 0.5, "message": "cut"}],
                [{"step": 250, "kind": "plateau_cut", "lr_scale": 0.25, "message": "cut"}],
                [{"step": 350, "kind": "plateau_cut", "lr_scale": 0.125, "message": "cut"}]] + [[]] * 6,
        config={"plateau.enabled": True, "plateau.patience": 0, "plateau.metric": "train_loss"}),
    "lr_schedule_exhausted": lambda: make_run(
        lr=[PEAK_LR * 0.01 ** i for i in range(10)], loss=[2.3, 1.95] + [1.9] * 8, accuracy=[0.2, 0.3] + [0.32] * 8,
        update_ratio=[2e-3 * 0.01 ** i for i in range(10)],
        config={"schedule.name": "exponential", "schedule.decay_rate": 0.01, "schedule.warmup_epochs": 0.0}),
    "chance_level": lambda: make_run(
        loss=[2.45] + [2.31, 2.30, 2.32, 2.30, 2.31, 2.30, 2.31, 2.30, 2.30], accuracy=0.1, eval_accuracy=0.1,
        eval_loss=2.31),
    "one_class_collapse": lambda: make_run(
        loss=falling(2.3, 1.9), accuracy=falling(0.1, 0.3), eval_accuracy=0.1, eval_loss=2.2,
        predicted=[0.98] + [0.02 / (K - 1)] * (K - 1)),
    "initial_loss_high": lambda: make_run(
        loss=falling(76.0, 2.2), accuracy=falling(0.1, 0.3), eval_accuracy=falling(0.1, 0.3),
        eval_loss=falling(30.0, 2.3)),
    "vanishing_gradients": lambda: make_run(
        modules=PLAIN_MODULES, pathways=False, loss=[2.35] + [2.32] * 9, accuracy=0.1, eval_accuracy=0.1,
        module_grad_norm=dict(zip(PLAIN_MODULES, (1e-10, 3e-9, 5e-8, 6e-7, 1e-4, 0.3), strict=True))),
    "exploding_gradients": lambda: make_run(
        grad_norm=[9.5e8] + [3e8] * 9, loss=falling(3e8, 2e7), accuracy=0.09,
        eval_accuracy=0.09, eval_loss=falling(9e7, 2e7), clip=0.0, config={"optimizer.grad_clip_norm": 0.0},
        module_grad_norm=dict(zip(DUAL_MODULES, (7e6, 2e7, 3e7, 4e7, 6e8), strict=True))),
    "dead_units": lambda: make_run(zero_fraction=0.999, loss=2.31, accuracy=0.1, eval_accuracy=0.1),
    "saturated_gates": lambda: make_run(
        gate_saturation=0.83, loss=falling(2.4, 2.1), accuracy=falling(0.1, 0.2), eval_accuracy=falling(0.1, 0.2),
        config={"model.gru": {"recurrent_norm": False}}),
    "params_not_updating": lambda: make_run(
        module_grad_norm={**healthy_numbers(10)["module_grad_norm"], **dict.fromkeys(BRIGHTNESS, 0.0)},
        brightness_share=0.0, patch=frozen(BRIGHTNESS)),
    "pathway_imbalance": lambda: make_run(brightness_share=3e-6),
    "clipping_dominates": lambda: make_run(clip=1e-4, clipped=1.0, grad_norm=1.5,
                                           config={"optimizer.grad_clip_norm": 1e-4, "optimizer.name": "sgd"}),
    "over_regularization": lambda: make_run(
        accuracy=[0.07, 0.12, 0.1, 0.1, 0.14, 0.08, 0.11, 0.1, 0.12, 0.09], loss=falling(2.4, 2.3),
        reg_loss=falling(122.0, 113.0), eval_accuracy=0.1, eval_loss=2.3,
        config={"optimizer.weight_decay": 0.5, "model.dropout": 0.9, "training.label_smoothing": 0.6}),
    "overfitting": lambda: make_run(**FAULTS_OVERFIT, config={"model.dropout": 0.0, "optimizer.weight_decay": 0.0}),
    "nan_skips": nan_in_a_few_batches,
    "loss_plateau": lambda: make_run(
        lr=[PEAK_LR] * 5 + [1e-9] * 5, update_ratio=[2e-3] * 5 + [1e-9] * 5,
        loss=list(np.geomspace(2.3, 1.2, 5)) + [1.21, 1.2, 1.22, 1.2, 1.21],
        accuracy=list(np.linspace(0.15, 0.6, 5)) + [0.6] * 5,
        config={"schedule.name": "constant", "optimizer.learning_rate": 1e-9}),  # resumed with LR 1e-9
}


def test_rules_follow_the_catalog_and_every_one_has_a_fault_a_priority_and_a_documented_row():
    assert tuple(RULES) == CATALOG
    assert set(FAULTS) == set(RULES) and set(rules.PRIORITY) == set(RULES)
    docs = (pathlib.Path(__file__).parents[1] / "docs" / "diagnostics.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|", docs.split("## Preflight checks")[0], flags=re.MULTILINE)
    assert tuple(rows) == CATALOG
    modules = (lr, gradients, data, regularization, numerics, evidence)
    for constant in re.findall(r"`([A-Z][A-Z_]+)`", docs.split("## Preflight checks")[0]):
        assert any(hasattr(module, constant) for module in modules), constant
    # The table's family, kind and explains columns are the rules' declarations.
    for row in re.findall(r"^\| `(\w+)` \| ([\w ]+) \| (\w+) \|.*\| ([^|]+) \|$", docs, flags=re.MULTILINE):
        spec = rules.SPECS[row[0]]
        assert (row[1], row[2]) == (spec.family, spec.kind), row[0]
        assert [x.strip() for x in row[3].split(",") if x.strip() != "-"] == list(spec.explains), row[0]


@pytest.mark.parametrize("finding_id", CATALOG)
def test_fault_makes_its_finding_the_top_one(finding_id):
    run = FAULTS[finding_id]()
    findings = analyze(run)
    report = analyzer.format_findings(findings)
    assert findings and findings[0].id == finding_id, report
    top = findings[0]
    assert top.severity in ("warning", "error") and top.summary and top.explanation and top.evidence, report
    assert top.recommendations and top.steps, report
    assert_recommendations_apply(findings, run.config)
    json.dumps([f.to_json() for f in findings], allow_nan=True)


def test_findings_carry_where_and_the_run_s_own_numbers():
    nonfinite = analyze(FAULTS["nonfinite"]())[0]
    assert nonfinite.severity == "error" and nonfinite.module == "color/stage1"
    assert nonfinite.evidence["first_nonfinite_step"] == 307
    assert nonfinite.recommendations == ("--mode=preflight",)  # the run clips already; no LR reflex
    # Adam lr 0.1: ratio 0.3 at LR 0.05 (the warmup record) is 0.6 at the peak; 1e-3 / 0.6 x 0.1.
    assert analyze(FAULTS["lr_too_high"]())[0].recommendations[0] == "--config.optimizer.learning_rate=0.000167"
    # Adam lr 1e-7: ratio 1e-7 at LR 5e-8 is 2e-7 at the peak; 1e-3 / 2e-7 x 1e-7.
    assert analyze(FAULTS["lr_too_low"]())[0].recommendations[0] == "--config.optimizer.learning_rate=0.0005"
    exhausted = analyze(FAULTS["lr_schedule_exhausted"]())[0]
    assert exhausted.evidence["step"] == 200 and "--config.schedule.decay_rate=0.741" in exhausted.recommendations
    assert exhausted.evidence["explains"] == ["loss_plateau"]
    assert analyze(FAULTS["dead_units"]())[0].module in BLOCKS
    assert analyze(FAULTS["params_not_updating"]())[0].evidence["modules"] == list(BRIGHTNESS)
    assert analyze(FAULTS["pathway_imbalance"]())[0].module == "brightness"
    assert analyze(FAULTS["clipping_dominates"]())[0].recommendations == ("--config.optimizer.grad_clip_norm=1.5",)
    assert set(analyze(FAULTS["over_regularization"]())[0].evidence["heavy"]) == {
        "optimizer.weight_decay", "model.dropout", "training.label_smoothing"}
    assert analyze(FAULTS["vanishing_gradients"]())[0].module == "conv0"
    plateau = analyze(FAULTS["loss_plateau"]())[0]
    assert plateau.steps == (600, 1000) and plateau.recommendations[0] == "--config.optimizer.learning_rate=0.003"


def test_a_collapse_onto_one_class_explains_the_train_eval_gap():
    # Training labels dominated by one class: train accuracy climbs by predicting it, eval loss rises, and every
    # eval prediction is that class. Overfitting's rule fires too, but a memorizing model's predictions spread.
    predicted = [0.98] + [0.02 / (K - 1)] * (K - 1)
    collapsed = analyze(make_run(**FAULTS_OVERFIT, predicted=predicted))
    assert collapsed[0].id == "one_class_collapse" and collapsed[0].evidence["explains"] == ["overfitting"]
    assert {f.id: f.explained_by for f in collapsed}["overfitting"] == "one_class_collapse"
    assert analyze(make_run(**FAULTS_OVERFIT))[0].id == "overfitting"  # predictions spread: memorizing


def test_overfitting_advice_addresses_a_sliced_split_and_missing_augmentation_first():
    def advice(**config):
        base = {"model.dropout": 0.0, "optimizer.weight_decay": 0.0}
        return analyze(make_run(**FAULTS_OVERFIT, config={**base, **config}))[0]

    # Zoo run overfitting/1: 128 images of train, no shifts, AdamW (decoupled decay: 5e-4 would do nothing).
    sliced = advice(**{"data.train_split": "train[:128]", "data.crop_padding": 0})
    assert sliced.recommendations == (
        "--config.data.train_split=train", "--config.data.crop_padding=4", "--config.model.dropout=0.3",
        "--config.optimizer.weight_decay=0.01", "--config.early_stopping.enabled=True")
    assert "slice of train" in sliced.explanation
    # The eval data is drawn from the same split: the rest of it may be the eval images, so no whole split.
    held = advice(**{"data.train_split": "train[:80%]", "data.eval_split": "train[80%:]"})
    assert held.recommendations[0] == "--config.model.dropout=0.3"
    sgd = advice(**{"optimizer.name": "sgd"})
    assert "--config.optimizer.weight_decay=0.0005" in sgd.recommendations


def test_overfitting_asks_for_more_data_only_when_the_split_is_small_per_class():
    def explanation(batch_size):  # 100 steps per epoch: batch 4 is 400 examples (40 per class), 128 is 1,280
        config = {"model.dropout": 0.0, "optimizer.weight_decay": 0.0, "training.batch_size": batch_size}
        return analyze(make_run(**FAULTS_OVERFIT, config=config))[0].explanation

    assert "40 examples per class the training split is small: more data is the fix" in explanation(4)
    large = explanation(128)
    assert "1280 examples per class the training split is not small" in large and "more data" not in large.lower()


def test_clipping_under_adam_is_a_warning_only_when_the_updates_shrank():
    def clipped(optimizer, ratio, **numbers):
        return analyze(make_run(clip=1e-3, clipped=1.0, grad_norm=1.5, update_ratio=ratio, **numbers,
                                config={"optimizer.grad_clip_norm": 1e-3, "optimizer.name": optimizer}))

    # Zoo run clipping_dominates/1: AdamW clipped to 1e-3 on every step kept a peak update ratio of 0.024.
    harmless = next(f for f in clipped("adamw", 2e-3) if f.id == "clipping_dominates")
    assert harmless.severity == "info" and "adamw divides the gradient's scale out" in harmless.explanation
    # Clipped so far that the updates sank below the healthy band (to Adam's eps): the clip is the cause.
    starved = clipped("adam", 1e-6, loss=2.3, accuracy=0.1, eval_accuracy=0.1, eval_loss=2.3)
    assert [(f.id, f.severity) for f in starved[:2]] == [("clipping_dominates", "warning"), ("lr_too_low", "info")]
    assert starved[0].evidence["explains"] == ["lr_too_low"]
    # SGD's update is LR x clip norm: a warning whatever the ratio.
    assert clipped("sgd", 2e-3)[0].severity == "warning"


def test_clip_advice_stays_at_or_below_the_default_clip_norm():
    # Zoo run clipping_dominates/2 (ConvGRU, SGD, clip 1e-5): median norm 28.8 on weights the clip kept at their
    # initialization; clipped at 28.8 the first spikes went through and it stayed at chance, at 5 it learned.
    def advice(norm):
        run = make_run(clip=1e-5, clipped=1.0, grad_norm=norm, loss=2.1, accuracy=0.12, eval_accuracy=0.1,
                       config={"optimizer.grad_clip_norm": 1e-5, "optimizer.name": "sgd"})
        return next(f for f in analyze(run) if f.id == "clipping_dominates").recommendations

    assert advice(28.8) == ("--config.optimizer.grad_clip_norm=5",)
    assert advice(2.13) == ("--config.optimizer.grad_clip_norm=2.13",)
    assert advice(0.3) == ("--config.optimizer.grad_clip_norm=1",)


def test_exploding_gradients_that_grow_during_a_finite_run():
    findings = analyze(make_run(grad_norm=falling(1.0, 1e5)))
    assert findings[0].id == "exploding_gradients" and findings[0].evidence["peak_grad_norm"] == pytest.approx(1e5)



def test_vanishing_gradients_after_updates_beyond_10_percent_are_the_lrs():
    """The same gradient profile as the vanishing fault is the architecture's when updates stay small, and the
    LR's symptom (lr_too_high fires, vanishing stays silent) after steps that moved the weights by 25x."""
    profile = dict(modules=PLAIN_MODULES, pathways=False, accuracy=0.1, eval_accuracy=0.1,
                   module_grad_norm=dict(zip(PLAIN_MODULES, (1e-10, 3e-9, 5e-8, 6e-7, 1e-4, 0.3), strict=True)))
    assert analyze(make_run(loss=[2.35] + [2.32] * 9, **profile))[0].id == "vanishing_gradients"
    thrown = analyze(make_run(loss=[2.45, 1.5e11] + [3.8] * 8, update_ratio=[25.0] + [2e-3] * 9, **profile))
    assert thrown[0].id == "lr_too_high" and "vanishing_gradients" not in [f.id for f in thrown]

def test_one_class_collapse_needs_the_last_evals_to_agree():
    collapsed = [0.98] + [0.02 / (K - 1)] * (K - 1)
    assert not problems(analyze(make_run(predicted=[UNIFORM] * 9 + [collapsed])))
    # Imbalanced labels: predicting the majority class is no collapse.
    assert not problems(analyze(make_run(predicted=collapsed, labels=collapsed)))


# ---- Healthy runs: no warning or error. ----

@pytest.mark.parametrize("variant", [
    {}, {"pathways": False, "modules": PLAIN_MODULES}, {"gate_saturation": 0.03}, {"n": 40}, {"n": 2},
    {"clipped": 0.3, "grad_norm": 6.0},
])
def test_healthy_run_has_no_warning_or_error(variant):
    variant = dict(variant)
    run = make_run(variant.pop("n", 10), **variant)
    assert not problems(analyze(run)), analyzer.format_findings(analyze(run))


def test_healthy_end_of_run_flattening_under_cosine_is_no_plateau():
    n = 20
    loss = [max(0.4, 2.3 - 0.25 * i) for i in range(n)]  # at its best, flat over the last 60% of the run
    run = make_run(n, loss=loss, eval_loss=[x + 0.05 for x in loss])
    assert not problems(analyze(run)), analyzer.format_findings(analyze(run))


def as_json(records) -> list[dict]:
    """Typed records as the JSON dicts of their files."""
    return [json.loads(json.dumps(r.to_json(), allow_nan=True)) for r in records]


def strip(run: RunRecords, *keys) -> RunRecords:
    """`run` without the given top-level record keys."""
    def drop(records):
        return [{k: v for k, v in r.items() if k not in keys} for r in as_json(records)]
    return RunRecords.from_json(drop(run.train), drop(run.eval), run.config)


def nan_everywhere(value):
    """Every number in `value` replaced by NaN."""
    if isinstance(value, dict):
        return {k: v if k in ("schema_version", "kind", "step") else nan_everywhere(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_everywhere(v) for v in value]
    return math.nan if isinstance(value, float | int) and not isinstance(value, bool) else value


OPTIONAL_KEYS = ("scalars", "modules", "pathways", "activations", "gates", "events", "first_nonfinite",
                 "num_train_steps", "peak_learning_rate", "lr_scale", "num_classes", "predicted_histogram",
                 "label_histogram", "class_names", "balanced_accuracy", "accuracy", "loss", "skipped_steps")


@pytest.mark.parametrize("finding_id", CATALOG)
def test_rules_never_raise_on_missing_or_non_finite_fields(finding_id):
    rule = RULES[finding_id]
    faulty, healthy = FAULTS[finding_id](), make_run()
    sparse = [
        RunRecords(train=(), eval=(), config={}),
        RunRecords(train=healthy.train[:1], eval=(), config={}),
        RunRecords.from_json([{"schema_version": SCHEMA_VERSION, "kind": "train", "step": 1}],
                             [{"schema_version": SCHEMA_VERSION, "kind": "eval", "step": 1}], {}),
        strip(faulty, *OPTIONAL_KEYS),
        RunRecords.from_json(nan_everywhere(as_json(faulty.train)), nan_everywhere(as_json(faulty.eval)),
                             faulty.config),
        RunRecords(train=faulty.train, eval=(), config={}),
    ]
    for key in OPTIONAL_KEYS:
        sparse.append(strip(faulty, key))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for run in sparse:
            for finding in rule(run):
                assert finding.id == finding_id
    # All-NaN numbers: only the non-finite rule, and the plateau cuts (events are no numbers) may speak.
    assert not [f for f in rule(sparse[4]) if f.id not in ("nonfinite", "lr_decayed_too_early")]


# ---- analyze(workdir) end to end. ----

def write_run(workdir, run: RunRecords) -> None:
    """The files a training run leaves: diagnostics/{train,eval}.jsonl and config.json."""
    directory = workdir / "diagnostics"
    directory.mkdir(parents=True, exist_ok=True)
    for name, records in (("train.jsonl", run.train), ("eval.jsonl", run.eval)):
        (directory / name).write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in as_json(records)))
    (workdir / "config.json").write_text(json.dumps(run.config))


def test_analyze_workdir_round_trip_writes_findings_json(tmp_path):
    run = FAULTS["nan_skips"]()
    write_run(tmp_path, run)
    findings = analyzer.analyze(str(tmp_path))
    assert [f.id for f in findings] == [f.id for f in analyze(run)] == ["nan_skips"]
    written = json.loads((tmp_path / "diagnostics" / FINDINGS_FILE).read_text())
    assert written["schema_version"] == SCHEMA_VERSION
    assert [f["id"] for f in written["findings"]] == ["nan_skips"]
    assert written["findings"][0]["evidence"]["skipped_steps"] == 3
    assert analyzer.load_records(str(tmp_path)).config["optimizer"]["learning_rate"] == PEAK_LR

    healthy = tmp_path / "healthy"
    write_run(healthy, make_run())
    assert analyzer.analyze(str(healthy), write=False) == []
    assert not (healthy / "diagnostics" / FINDINGS_FILE).exists()


def test_analyze_tolerates_a_partial_last_line_and_a_missing_eval_file(tmp_path):
    run = FAULTS["nonfinite"]()
    write_run(tmp_path, run)
    with open(tmp_path / "diagnostics" / "train.jsonl", "a") as f:
        f.write(json.dumps(as_json(run.train)[-1])[:57])  # a run in progress, killed mid-write
    (tmp_path / "diagnostics" / "eval.jsonl").unlink()
    (tmp_path / "config.json").unlink()
    records = analyzer.load_records(str(tmp_path))
    assert len(records.train) == 10 and records.eval == () and records.config == {}
    assert analyzer.analyze(str(tmp_path))[0].id == "nonfinite"


def test_analyze_rejects_missing_files_other_schema_versions_and_corrupt_lines(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.jsonl does not exist.*--config.diagnostics.enabled"):
        analyzer.analyze(str(tmp_path))
    run = make_run()
    write_run(tmp_path, run)
    lines = (tmp_path / "diagnostics" / "train.jsonl").read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(f'"schema_version": {SCHEMA_VERSION}', f'"schema_version": {SCHEMA_VERSION + 1}')
    (tmp_path / "diagnostics" / "train.jsonl").write_text("".join(lines))
    with pytest.raises(ValueError, match=f"train.jsonl:4 has schema_version {SCHEMA_VERSION + 1}"):
        analyzer.analyze(str(tmp_path))
    lines = (tmp_path / "diagnostics" / "train.jsonl").read_text().splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"
    (tmp_path / "diagnostics" / "train.jsonl").write_text("".join(lines))
    with pytest.raises(ValueError, match="train.jsonl:4 is not valid JSON"):
        analyzer.analyze(str(tmp_path))


def test_format_findings():
    assert analyzer.format_findings([]).startswith("No problems found")
    text = analyzer.format_findings(analyze(FAULTS["nonfinite"]()))
    assert "[ERROR] nonfinite steps 0-1000" in text and "try 1: --mode=preflight" in text
    assert "evidence: skipped_steps=700" in text


# ---- Issue 9's categories: causes before symptoms, evidence-based advice, valid recommendations. ----

def ids(findings, severities=("warning", "error")) -> list[str]:
    """The ids of the findings at the given severities, in rank order."""
    return [f.id for f in findings if f.severity in severities]


def test_recommendations_apply_to_the_config_and_typos_or_wrong_types_fail():
    config = config_dict({})
    before, after = apply_recommendation(config, "--config.optimizer.learning_rate=0.5 --mode=lr_find")
    assert before.optimizer.learning_rate == PEAK_LR and after.optimizer.learning_rate == 0.5
    with pytest.raises(Exception, match="learning_rat"):
        apply_recommendation(config, "--config.optimizer.learning_rat=0.5")
    with pytest.raises(Exception):  # noqa: B017  (absl wraps the type error in its own exception)
        apply_recommendation(config, "--config.training.label_smoothing=high")


def test_divergence_inside_the_first_period_is_lr_too_high_and_explains_its_symptoms():
    # Adam LR 0.5 on a recurrent model, 8 classes: 2.10 at step 1, period mean 15.9 (max 40), then 4.44; gates
    # saturated, eval at chance. The period means fall, but the loss climbed from its step-1 value.
    def patch(train, evals):
        train[0]["scalars"]["loss"] = summary(15.9, first=2.10, max=40.0, last=9.0)

    run = make_run(loss=[15.9] + list(np.linspace(8.0, 4.44, 9)), accuracy=0.12, eval_accuracy=0.121,
                   eval_loss=4.5, gate_saturation=0.9, update_ratio=0.05, peak_lr=0.5, lr=warmup_cosine(10, 0.5),
                   config={"optimizer.name": "adam", "optimizer.learning_rate": 0.5,
                           "model.gru": {"recurrent_norm": True}}, patch=patch)
    findings = analyze(run)
    assert ids(findings) == ["lr_too_high"], analyzer.format_findings(findings)
    top = findings[0]
    assert top.evidence["step1_loss"] == 2.10 and top.evidence["climbed_to"] == 40.0
    assert {"saturated_gates"} <= set(top.evidence["explains"])
    folded = {f.id: f for f in findings if f.explained_by == "lr_too_high"}
    assert folded["saturated_gates"].severity == "info"
    # The advice is an LR from the evidence (0.05 at 0.25 applied is 0.1 at the peak: 0.5 x 1e-3 / 0.1), not /10.
    assert top.recommendations[0] == "--config.optimizer.learning_rate=0.005"


def test_a_diverged_sgd_run_is_blamed_on_its_lr_not_on_the_dead_units_it_left():
    findings = analyze(diverged_sgd_lr_50())
    assert ids(findings) == ["lr_too_high"], analyzer.format_findings(findings)
    assert {"nonfinite", "dead_units"} <= set(findings[0].evidence["explains"])
    # The largest LR whose period kept the loss near its start: the first record's warmup LR (max of its period).
    assert findings[0].evidence["stable_lr"] == pytest.approx(25.0)
    assert "--config.optimizer.learning_rate=25" in findings[0].recommendations


def test_gradients_that_grow_after_lr_sized_jumps_are_the_lr_s_symptom():
    # The zoo's SGD LR 50 run that stayed finite: a healthy first gradient (1.89), updates of 4.3x the weights in
    # the first period, then gradient norms of 3e3 and a loss of 1e7 that recovers to 3.2. The LR threw the
    # weights there; gradients that grow while updates stay ~1e-3 are exploding_gradients (the test above).
    def patch(train, evals):
        train[0]["scalars"]["grad_norm"].update(first=1.89)
        train[0]["scalars"]["loss"].update(first=2.45, max=1.1e7)

    run = make_run(6, loss=[1.9e6, 6.1e6, 671.0, 1.2e4, 11.7, 3.16], grad_norm=[1896.0, 3285.0, 13.6, 8.3, 0.77, 0.36],
                   update_ratio=[4.3, 0.21, 0.014, 0.011, 0.006, 0.001], accuracy=0.1, eval_accuracy=0.1,
                   eval_loss=2.9, peak_lr=50.0, lr=warmup_cosine(6, 50.0), clip=0.0, zero_fraction=0.95,
                   config={"optimizer.name": "sgd", "optimizer.learning_rate": 50.0, "optimizer.grad_clip_norm": 0.0},
                   patch=patch)
    findings = analyze(run)
    assert ids(findings) == ["lr_too_high"], analyzer.format_findings(findings)
    assert "exploding_gradients" not in [f.id for f in findings]


def test_a_user_lr_tiny_from_the_start_is_lr_too_low_not_the_schedule():
    run = make_run(loss=list(np.linspace(2.31, 2.30, 10)), accuracy=0.1, eval_accuracy=0.1, lr=1e-8,
                   update_ratio=3e-8, peak_lr=1e-8,
                   config={"schedule.name": "constant", "optimizer.learning_rate": 1e-8})
    findings = analyze(run)
    assert ids(findings) == ["lr_too_low"], analyzer.format_findings(findings)


def test_lr_too_low_advice_scales_with_the_evidence_and_never_repeats_the_current_lr():
    def run_at(lr, ratio):
        return make_run(loss=list(np.linspace(2.31, 2.30, 10)), accuracy=0.1, eval_accuracy=0.1, lr=lr,
                        update_ratio=ratio, peak_lr=lr,
                        config={"schedule.name": "constant", "optimizer.learning_rate": lr})

    first = analyze(run_at(1e-7, 1e-6))[0]
    assert first.recommendations[0] == "--config.optimizer.learning_rate=0.0001"  # x1000, from the ratio
    # At the advised LR the ratio is still tiny (this model needs more): the advice moves on, it does not repeat.
    second = analyze(run_at(1e-4, 2e-6))[0]
    assert second.id == "lr_too_low" and second.recommendations[0] == "--config.optimizer.learning_rate=0.05"


ADAM_1E_7 = {"optimizer.name": "adam", "optimizer.learning_rate": 1e-7}


@pytest.mark.parametrize("step1_loss", [2.43, 2.90])
def test_lr_too_low_compares_period_means_not_the_step1_batch(step1_loss):
    # The zoo's PlainCNN at Adam LR 1e-7: updates 5e-7 of the weights, period means 2.63..2.72, a step-1 batch
    # 8% below (or above) them; every eval predicts one class. The step-1 batch is no baseline for a 5% band, and
    # a loss above it with such updates is batch noise: the LR is the cause, the collapse its symptom.
    def patch(train, evals):
        train[0]["scalars"]["loss"]["first"] = step1_loss

    run = make_run(6, loss=[2.648, 2.693, 2.630, 2.642, 2.720, 2.645], accuracy=0.1, eval_accuracy=0.1,
                   eval_loss=2.65, lr=warmup_cosine(6, 1e-7), update_ratio=[4.9e-7, 3.9e-7, 2.8e-7, 1.7e-7, 7e-8, 9e-9],
                   peak_lr=1e-7, predicted=[1.0] + [0.0] * (K - 1), config=ADAM_1E_7, patch=patch)
    findings = analyze(run)
    assert ids(findings) == ["lr_too_low"], analyzer.format_findings(findings)
    assert "one_class_collapse" in findings[0].evidence["explains"]
    assert findings[0].evidence["first_period_loss"] == 2.648 and findings[0].evidence["last_loss"] == 2.645


def test_tiny_updates_that_still_lower_the_loss_are_no_lr_too_low():
    # Near miss: the same tiny updates (a fine-tune at a small LR), but the period means fall 7%: it learns.
    run = make_run(6, loss=list(np.linspace(2.30, 2.14, 6)), lr=warmup_cosine(6, 1e-7), update_ratio=5e-7,
                   peak_lr=1e-7, config=ADAM_1E_7,
                   patch=lambda train, evals: train[0]["scalars"]["loss"].update(first=2.0))
    assert "lr_too_low" not in ids(analyze(run)), analyzer.format_findings(analyze(run))


def test_an_exponential_decay_within_each_period_is_an_exhausted_schedule():
    # Decay 1e-3 per epoch record: each period's LR falls 1000x from its first step, so its mean (14% of its max)
    # never shows the peak; the largest LR of the first period does.
    def patch(train, evals):
        for i, record in enumerate(train):
            top = PEAK_LR * 1e-3 ** i
            record["scalars"]["learning_rate"] = summary(top * 0.999 / math.log(1e3), max=top, first=top,
                                                         last=top * 1e-3 ** 0.99, min=top * 1e-3 ** 0.99)

    run = make_run(8, loss=[2.3, 1.95] + [1.9] * 6, accuracy=[0.2, 0.3] + [0.32] * 6, update_ratio=[2e-3] + [1e-6] * 7,
                   config={"schedule.name": "exponential", "schedule.decay_rate": 1e-3, "schedule.warmup_epochs": 0.0},
                   patch=patch)
    findings = analyze(run)
    assert ids(findings) == ["lr_schedule_exhausted"], analyzer.format_findings(findings)
    top = findings[0]
    assert top.evidence["step"] == 100 and top.evidence["schedule_factor"] == pytest.approx(1e-3)
    assert "--config.schedule.decay_rate=0.688" in top.recommendations  # 0.05 ** (1 / 8)


@pytest.mark.parametrize("lr", [
    # SGDR: the first cycle's trough (0.5% of the peak) lies before half of the run, then the LR restarts.
    [1.0, 0.5, 0.005, 1.0, 0.93, 0.75, 0.5, 0.25, 0.07, 0.005],
    # A decay that reaches 1% only in the second half of the run.
    [0.4 ** i for i in range(10)],
])
def test_a_schedule_that_restarts_or_decays_late_is_not_exhausted(lr):
    run = make_run(lr=[PEAK_LR * x for x in lr], update_ratio=[2e-3 * x for x in lr])
    assert not problems(analyze(run)), analyzer.format_findings(analyze(run))


def test_a_run_resumed_with_a_tiny_lr_is_no_exhausted_schedule():
    def patch(train, evals):
        for record in train[5:]:
            record["peak_learning_rate"] = 1e-9  # the resumed run's config

    run = make_run(lr=[PEAK_LR] * 5 + [1e-9] * 5, update_ratio=[2e-3] * 5 + [1e-9] * 5,
                   loss=list(np.geomspace(2.3, 1.2, 5)) + [1.21, 1.2, 1.22, 1.2, 1.21],
                   accuracy=list(np.linspace(0.15, 0.6, 5)) + [0.6] * 5, patch=patch,
                   config={"schedule.name": "constant", "optimizer.learning_rate": 1e-9})
    findings = analyze(run)
    assert "lr_schedule_exhausted" not in [f.id for f in findings]
    assert ids(findings)[0] == "loss_plateau"


def test_an_absurd_first_loss_is_a_finding_even_below_the_gradient_threshold():
    run = make_run(loss=falling(40.0, 2.2), grad_norm=[328.0] + [2.0] * 9,
                   patch=lambda train, evals: train[0]["scalars"]["loss"].update(first=76.0))
    findings = analyze(run)
    assert ids(findings) == ["initial_loss_high"], analyzer.format_findings(findings)
    assert findings[0].evidence["step1_loss"] == 76.0 and findings[0].evidence["step1_grad_norm"] == 328.0


def test_params_not_updating_names_the_zero_lr_multiplier_and_removes_only_it():
    def patch(train, evals):
        for record in train:
            record["modules"]["head"].update(update_norm=summary(0.0), update_ratio=summary(0.0))

    config = {"optimizer.lr_multipliers": [["head/.*", 0.0], ["color/.*", 2.0]]}
    findings = analyze(make_run(config=config, patch=patch))
    top = findings[0]
    assert top.id == "params_not_updating" and top.evidence["zero_lr_multipliers"] == ["head/.*"]
    assert "never received a non-zero gradient" not in top.summary and "LR multiplier 0" in top.summary
    _, after = apply_recommendation(make_run(config=config).config, top.recommendations[0])
    assert [tuple(x) for x in after.optimizer.lr_multipliers] == [("color/.*", 2.0)]


def test_saturated_gates_never_recommends_a_setting_the_config_has():
    run = make_run(gate_saturation=0.83, loss=falling(2.4, 2.1), accuracy=falling(0.1, 0.2),
                   eval_accuracy=falling(0.1, 0.2),
                   config={"model.gru": {"recurrent_norm": True, "hidden_clamp": -1.0}})
    recommendations = analyze(run)[0].recommendations
    assert "--config.model.gru.recurrent_norm=True" not in recommendations
    assert "--config.model.gru.hidden_clamp=5.0" in recommendations


def test_one_class_collapse_from_data_gets_data_advice_not_an_lr():
    top = analyze(FAULTS["one_class_collapse"]())[0]
    assert top.recommendations[0] == "--config.training.class_weighting=cube_root_inverse"
    assert not any("learning_rate" in r for r in top.recommendations)


def test_dead_units_from_initialization_outrank_the_parameters_they_starve():
    def patch(train, evals):
        for record in train:
            record["modules"]["color/stage1"].update(grad_norm=summary(0.0), update_norm=summary(0.0),
                                                     update_ratio=summary(0.0))

    findings = analyze(make_run(zero_fraction=0.999, loss=2.31, accuracy=0.1, eval_accuracy=0.1, patch=patch))
    assert ids(findings) == ["dead_units"], analyzer.format_findings(findings)
    assert findings[0].recommendations == ("--mode=preflight",)
    assert {"params_not_updating", "chance_level"} <= set(findings[0].evidence["explains"])
    # Nothing moves because nothing passes gradient: the tiny updates are no LR problem.
    findings = analyze(make_run(zero_fraction=0.999, loss=2.31, accuracy=0.1, eval_accuracy=0.1, update_ratio=1e-7))
    assert ids(findings) == ["dead_units"] and "lr_too_low" in findings[0].evidence["explains"]


def test_units_that_went_sparse_while_the_loss_kept_falling_are_info_not_a_warning():
    # Zoo repair trial lr_too_high/1 at Adam LR 0.12 (ConvGRU): encoders above 90% zeros for the last records while
    # the loss kept falling and eval accuracy reached 0.91.
    sparse = [0.5] * 6 + [0.93] * 4
    learning = analyze(make_run(zero_fraction=sparse))
    assert not [f for f in learning if f.severity != "info"], analyzer.format_findings(learning)
    dead = next(f for f in learning if f.id == "dead_units")
    assert dead.severity == "info" and dead.evidence["loss_fall_while_dead"] > 0.05
    # The same zeros with the loss stuck since they appeared: a warning.
    stuck = analyze(make_run(zero_fraction=sparse, loss=falling(2.3, 1.5)[:6] + [1.5] * 4))
    assert [(f.id, f.severity) for f in stuck if f.id == "dead_units"] == [("dead_units", "warning")]
    # Gone sparse only in the last record: no evidence that learning went on, a warning.
    late = analyze(make_run(zero_fraction=[0.5] * 9 + [0.93]))
    assert [(f.id, f.severity) for f in late if f.id == "dead_units"] == [("dead_units", "warning")]


@pytest.mark.parametrize("steps,update_ratio", [(6, 2e-3), (40, 2e-3), (16, 0.017)])
def test_a_run_too_short_to_learn_is_never_called_chance_level(steps, update_ratio):
    # configs/test.py: 6 steps, one record at the end; loss still at ln K, accuracy at chance. 16 steps at a high
    # ratio travel 0.15, but two records are no trend.
    def patch(train, evals):
        for record in train:
            record.update(num_steps=steps // 2, num_train_steps=steps)
        for i, record in enumerate(train + evals):
            record["step"] = (i % 2 + 1) * steps // 2

    run = make_run(2, loss=[2.31, 2.30], accuracy=0.1, eval_accuracy=0.1, eval_loss=2.30, update_ratio=update_ratio,
                   patch=patch)
    assert not problems(analyze(run)), analyzer.format_findings(analyze(run))


def test_model_changes_must_fit_the_task_and_the_data():
    clips = config_dict({"data.name": "embedded_clips", "model.name": "conv_gru",
                         "model.gru": {"recurrent_norm": True}, "model.conv": {}, "model.encoder_widths": [8]})
    assert advice.checked("--config.model.name=dual_resnet", clips) is None
    images = config_dict({})
    assert advice.checked("--config.model.name=resnet", images) == "--config.model.name=resnet"
    assert advice.checked("--config.model.name=unet", images) is None
    assert advice.checked("--config.model.name=resnet", config_dict({"model.aux_loss_weight": 0.3})) is None
    # Paired fields come together; the value the run has is never recommended; typos and wrong types are dropped.
    assert advice.checked("--config.schedule.warmup_epochs=2.0", config_dict({"schedule.warmup_steps": 50})) == (
        "--config.schedule.warmup_epochs=2.0 --config.schedule.warmup_steps=-1")
    assert advice.checked(f"--config.optimizer.learning_rate={PEAK_LR}", images) is None
    assert advice.checked("--config.optimizer.learning_rat=0.1", images) is None
    assert advice.checked("--config.model.dropout=high", images) is None
    assert advice.checked("--mode=preflight", images) == "--mode=preflight"


def test_version_1_records_are_converted_and_other_versions_refused(tmp_path):
    run = make_run(config={"optimizer.name": "adamw"})
    write_run(tmp_path, run)
    path = tmp_path / "diagnostics" / "train.jsonl"
    old = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        loss = record["scalars"]["loss"]
        record["scalars"]["data_loss"] = loss
        record["scalars"]["loss"] = {k: v + 0.5 for k, v in loss.items()}  # v1: data + L2
        record["schema_version"] = 1
        old.append(json.dumps(record))
    path.write_text("\n".join(old) + "\n")
    records = analyzer.load_records(str(tmp_path))
    assert records.train[0].scalar("loss").mean == run.train[0].scalar("loss").mean
    assert "reg_loss" not in records.train[0].scalars  # AdamW's decay is decoupled: no loss term


def test_lr_too_high_without_evidence_of_a_smaller_lr_asks_for_the_range_test():
    # The loss climbed in the first period, but the update ratios are modest and no period was stable: no LR in
    # the records to recommend, so the advice is the LR range test, never a guessed factor.
    run = make_run(loss=[6.0] + list(np.linspace(5.0, 4.0, 9)), update_ratio=5e-4,
                   patch=lambda train, evals: train[0]["scalars"]["loss"].update(first=2.3, max=9.0))
    top = analyze(run)[0]
    assert top.id == "lr_too_high" and top.recommendations == ("--mode=lr_find",)


def _low_lr_run(loss: list[float], ratios: list[float], predicted=None) -> RunRecords:
    """AdamW at LR 1e-5 over 6 periods of a cosine schedule: each period's median update ratio given."""
    return make_run(6, loss=loss, accuracy=0.1, eval_accuracy=0.1, lr=warmup_cosine(6, 1e-5), update_ratio=ratios,
                    peak_lr=1e-5, predicted=predicted or [1.0 / K] * K,
                    config={"optimizer.name": "adamw", "optimizer.learning_rate": 1e-5})


SHRINKING_RATIOS = [2.5e-5, 1.5e-5, 7.9e-6, 4.3e-6, 1.7e-6, 2.9e-7]  # the zoo's AdamW 1e-5 dual ResNet


def test_updates_below_the_healthy_range_and_no_progress_at_all_are_lr_too_low():
    # The peak ratio (2.5e-5) is above LOW_UPDATE_RATIO but below the healthy range, the loss did not fall at
    # all and the predictions collapsed: the LR is the cause, the collapse its symptom.
    run = _low_lr_run([2.47, 2.56, 2.48, 2.50, 2.42, 2.53], SHRINKING_RATIOS,
                      predicted=[0.91] + [0.01] * (K - 1))
    findings = problems(analyze(run))
    assert ids(findings)[0] == "lr_too_low", analyzer.format_findings(findings)
    assert findings[0].evidence["median_update_ratio"] == pytest.approx(2.5e-5)


def test_small_updates_that_lower_the_loss_or_reach_the_healthy_range_are_no_lr_too_low():
    # Near misses: the same ratios with the loss falling 3% (progress, if slow), and a flat loss with ratios of
    # 2e-4 per step (inside the healthy range: a flat loss then has other causes).
    slow = _low_lr_run(list(np.linspace(2.47, 2.40, 6)), SHRINKING_RATIOS)
    assert "lr_too_low" not in ids(analyze(slow)), analyzer.format_findings(analyze(slow))
    moving = _low_lr_run([2.47, 2.56, 2.48, 2.50, 2.42, 2.53], [2e-4] * 6)
    assert "lr_too_low" not in ids(analyze(moving)), analyzer.format_findings(analyze(moving))


def _skewed_training(predicted: list[float], train_labels: list[float]):
    """A patch giving every eval these prediction shares and the training split these label shares."""
    def patch(train, evals):
        for record in evals:
            record.update(predicted_histogram=predicted, train_label_histogram=train_labels)
    return patch


def _skew_evidence(run) -> dict:
    """The evidence of `run`'s only problem, which must be the skewed-split `one_class_collapse` with class
    weighting as its first advice."""
    findings = problems(analyze(run))
    assert ids(findings) == ["one_class_collapse"], analyzer.format_findings(findings)
    assert findings[0].recommendations[0].startswith("--config.training.class_weighting=inverse ")
    return findings[0].evidence


ZEROS_69 = [0.69] + [0.0344] * (K - 1)  # the zoo's skewed digits folder: 69% zeros in training, balanced eval


def test_a_skewed_training_split_gets_inverse_class_weights_in_a_range_that_holds_them_then_cube_root():
    # The zoo's 69%-zeros digits folder: inverse weights 1 / (10 x 0.69) = 0.145 and 1 / (10 x 0.0344) = 2.91; the
    # default range 0.7-1.3 would clip them to a ratio under 2 (zoo run one_class_collapse/0: no change in 60 steps).
    run = make_run(loss=falling(1.5, 0.77), accuracy=list(np.linspace(0.59, 0.72, 10)), eval_accuracy=0.23,
                   patch=_skewed_training([0.32, 0.52, 0.12, 0.04] + [0.0] * (K - 4), ZEROS_69))
    top = problems(analyze(run))[0]
    assert top.recommendations[:2] == (
        "--config.training.class_weighting=inverse --config.training.class_weight_range='(0.14,3)'",
        "--config.training.class_weighting=cube_root_inverse")
    assert_recommendations_apply([top], run.config)
    # One class winning on a training split that is not skewed: the cube-root weights, nothing wider.
    assert analyze(FAULTS["one_class_collapse"]())[0].recommendations[0] == \
        "--config.training.class_weighting=cube_root_inverse"


def test_predictions_that_follow_a_skewed_training_split_are_the_data_cause_without_one_class_winning():
    # Train accuracy climbs, eval accuracy stays low; the predictions are spread over three classes (no single
    # class reaches 80%) and far from the balanced eval labels, while the training split is 69% zeros.
    predicted = [0.32, 0.52, 0.12, 0.04] + [0.0] * (K - 4)
    evidence = _skew_evidence(make_run(loss=falling(1.5, 0.77), accuracy=list(np.linspace(0.59, 0.72, 10)),
                                       eval_accuracy=0.23, patch=_skewed_training(predicted, ZEROS_69)))
    assert evidence["train_eval_label_variation"] == pytest.approx(0.59, abs=1e-3)
    assert evidence["prediction_label_variation"] == pytest.approx(0.66, abs=1e-3)


def test_predictions_closer_to_the_skewed_training_mix_than_to_the_eval_labels_are_the_data_cause():
    # The zoo's held-out dual ResNet on the skewed digits: 44% / 13% / 20% ..., 0.47 from the balanced eval labels
    # (not far in absolute terms) but 0.38 from the training mix: more than halfway towards the training prior.
    predicted = [0.44, 0.13, 0.20, 0.10, 0.01, 0.0, 0.0, 0.07, 0.05, 0.0]
    evidence = _skew_evidence(make_run(loss=falling(1.5, 0.9), eval_accuracy=0.26,
                                       patch=_skewed_training(predicted, ZEROS_69)))
    assert evidence["prediction_label_variation"] == pytest.approx(0.47, abs=1e-3)
    assert evidence["prediction_train_variation"] == pytest.approx(0.378, abs=1e-3)


def test_predictions_short_of_halfway_to_the_training_mix_or_off_towards_other_classes_are_no_finding():
    # 40% of the way from the eval labels to the skewed training mix: nearer the images than the prior.
    partly = (0.6 * np.asarray(UNIFORM) + 0.4 * np.asarray(ZEROS_69)).tolist()
    assert "one_class_collapse" not in ids(analyze(make_run(patch=_skewed_training(partly, ZEROS_69))))
    # Far from the eval labels (0.8) but onto two minority classes, farther still from the training mix (0.93):
    # the skewed split does not explain these predictions.
    elsewhere = [0.0, 0.0, 0.5, 0.5] + [0.0] * (K - 4)
    assert "one_class_collapse" not in ids(analyze(make_run(patch=_skewed_training(elsewhere, ZEROS_69))))


def test_a_skewed_training_split_whose_predictions_match_the_eval_labels_is_no_finding():
    # Near misses: the same skewed training split, but the model predicts the eval classes in about their shares
    # (class weighting worked); and predictions as skewed as above with a balanced training split.
    balanced_predictions = make_run(patch=_skewed_training([0.12] + [0.0978] * (K - 1), ZEROS_69))
    assert "one_class_collapse" not in ids(analyze(balanced_predictions))
    balanced_training = make_run(patch=_skewed_training([0.32, 0.52, 0.12, 0.04] + [0.0] * (K - 4), [0.1] * K))
    assert "one_class_collapse" not in ids(analyze(balanced_training))


def test_eval_records_carry_the_training_label_shares_and_the_eval_size():
    from visioncore_jax.diagnostics import records

    scalars = {"eval_loss": 1.0, "eval_accuracy": 0.5, "eval_balanced_accuracy": 0.5}
    record = records.eval_record(scalars, np.array([[3, 1], [1, 3]]), ("a", "b"), task="classification", step=10,
                                 steps_per_epoch=10, train_label_counts=(30, 10), num_examples=8)
    assert record["train_label_histogram"] == [0.75, 0.25] and record["label_histogram"] == [0.5, 0.5]
    assert EvalRecord.from_json(record).num_examples == 8
    del record["num_examples"]  # a record written before the field
    assert EvalRecord.from_json(record).num_examples == 0


def test_isolated_nan_batches_to_the_last_step_are_nan_skips_not_a_divergence():
    # A NaN batch every 6th step, the last step among them: the final train loss is NaN and 2 of the last 10 steps
    # were skipped (0.2 as float32: 0.2000000003), but never two in a row and the eval loss is finite.
    def patch(train, evals):
        train[-1]["scalars"]["loss"]["last"] = math.nan
        train[-1]["scalars"]["skipped"]["mean"] = float(np.float32(0.2))

    run = make_run(skipped=[17] * 10, nonfinite=[1e4] * 10, patch=patch)
    findings = problems(analyze(run))
    assert ids(findings) == ["nan_skips"], analyzer.format_findings(findings)
    assert findings[0].evidence["longest_skip_run"] == 1
