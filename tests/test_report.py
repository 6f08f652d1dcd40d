"""The diagnostics report: markdown layout, findings order, PNG plots, robustness to missing fields, and the
TensorBoard images."""

import math
import re

import matplotlib.image
import numpy as np
import pytest
from clu import metric_writers
from tensorboard.backend.event_processing import event_accumulator

from visioncore_jax.diagnostics import report
from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import CATALOG
from visioncore_jax.diagnostics.schema import SCHEMA_VERSION, EvalRecord, TrainRecord

MODULES = ("color/stage1", "brightness/stage1", "head/Dense_0")
BLOCKS = ("color/stage1_block0", "brightness/stage1_block0")
CLASSES = ("cat", "dog", "bird")
STEPS_PER_EPOCH = 10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OVERRIDE = "--config.optimizer.learning_rate=0.003"


def summary(value: float) -> dict:
    """A schema Summary around `value`."""
    return {"mean": value, "min": 0.5 * value, "max": 2 * value, "first": value, "last": value}


def train_record(step: int, modules=MODULES, blocks=BLOCKS) -> dict:
    """A train record of the schema with `modules` and activations of `blocks`."""
    t = step / STEPS_PER_EPOCH
    return {
        "schema_version": SCHEMA_VERSION, "kind": "train", "step": step, "epoch": t,
        "first_step": step - STEPS_PER_EPOCH, "num_steps": STEPS_PER_EPOCH, "steps_per_epoch": STEPS_PER_EPOCH,
        "num_train_steps": 100, "peak_learning_rate": 1e-2, "grad_clip_norm": 1.0, "lr_scale": 1.0,
        "num_classes": len(CLASSES),
        "scalars": {"loss": summary(1.9 / (1 + t)), "reg_loss": summary(0.1),
                    "accuracy": summary(min(0.3 + 0.1 * t, 1.0)), "learning_rate": summary(1e-2 * 0.8 ** t),
                    "grad_norm": summary(1.0), "clipped": summary(0.0), "nonfinite_grads": summary(0.0),
                    "skipped": summary(0.0)},
        "skipped_steps": 0, "longest_skip_run": 0, "first_nonfinite": None,
        "modules": {m: {"grad_norm": summary(0.1 * (i + 1)), "param_norm": summary(10.0),
                        "update_norm": summary(1e-2 * (i + 1)), "update_ratio": summary(1e-3 * (i + 1))}
                    for i, m in enumerate(modules)},
        "pathways": {},
        "activations": {b: {"mean": summary(0.5), "std": summary(1.0), "zero_fraction": summary(0.4 + 0.01 * t)}
                        for b in blocks},
        "gates": {},
        "events": [{"step": step, "kind": "plateau_cut", "lr_scale": 0.5, "message": "cut"}] if step == 30 else [],
    }


def eval_record(step: int) -> dict:
    """A classification eval record of the schema."""
    return {"schema_version": SCHEMA_VERSION, "kind": "eval", "step": step, "epoch": step / STEPS_PER_EPOCH,
            "task": "classification", "loss": 2.5 / (1 + step / 10), "accuracy": 0.3 + step / 200,
            "balanced_accuracy": 0.3, "class_names": list(CLASSES), "per_class_accuracy": [0.9, 0.5, 0.1],
            "predicted_histogram": [0.5, 0.3, 0.2], "label_histogram": [1 / 3, 1 / 3, 1 / 3],
            "confusion": [[9, 1, 0], [4, 5, 1], [6, 3, 1]]}


TRAIN = [TrainRecord.from_json(train_record(step)) for step in (10, 20, 30, 40)]
EVAL = [EvalRecord.from_json(eval_record(step)) for step in (10, 20, 30, 40)]
CONFIG = {"optimizer": {"name": "sgd", "learning_rate": 1e-2, "accumulation_steps": 1, "weight_decay": 5e-4},
          "schedule": {"name": "exponential", "decay_rate": 0.8, "staircase": False, "warmup_epochs": 0.0,
                       "warmup_steps": -1, "min_learning_rate": 0.0},
          "model": {"name": "resnet"}}
FINDINGS = [
    Finding(id="loss_plateau", severity="warning", summary="The loss stopped improving.", explanation="Flat.",
            evidence={"plateau_loss": 0.51234567, "records": 3}, recommendations=("--config.schedule.name=cosine",),
            steps=(20, 40)),
    Finding(id="lr_too_high", severity="error", summary="The learning rate is too high.", explanation="Spiky.",
            evidence={"lr": 0.03, "spikes": [20, 30]}, recommendations=(OVERRIDE, "--config.schedule.warmup=5"),
            steps=(10, 40), module="head/Dense_0"),
    Finding(id="info_note", severity="info", summary="Just so you know.", explanation="Nothing wrong.",
            evidence={}, recommendations=()),
]


def linked_plots(text: str) -> list[str]:
    """The relative image links of a report."""
    return re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", text)


def code_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced code block of a report."""
    return [block.splitlines() for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """(workdir, report text) of a report with every figure and the three findings."""
    workdir = tmp_path_factory.mktemp("workdir")
    path = report.write_report(str(workdir), TRAIN, EVAL, FINDINGS, config=CONFIG)
    assert path == str(workdir / "diagnostics" / "report.md")
    return workdir, (workdir / "diagnostics" / "report.md").read_text()


def test_findings_come_first_most_severe_first(full_report):
    _, text = full_report
    findings, plots = text.index("## Findings"), text.index("![")
    assert findings < text.index("## Run") < plots
    headings = re.findall(r"^### .*$", text, re.MULTILINE)
    assert [h.split("`")[1] for h in headings] == ["lr_too_high", "loss_plateau", "info_note"]
    assert "ERROR" in headings[0] and "The learning rate is too high." in headings[0]
    assert report.HEALTHY not in text
    assert "- plateau_loss: `0.5123`" in text and "- spikes: `[20, 30]`" in text


def test_recommendations_are_pasteable_code(full_report):
    _, text = full_report
    blocks = code_blocks(text)
    assert any(OVERRIDE in block for block in blocks)
    assert any("--config.schedule.name=cosine" in block for block in blocks)


def test_run_summary_table(full_report):
    _, text = full_report
    assert "| steps | 40 |" in text and "| epochs | 4.00 |" in text
    assert "| best eval accuracy | 0.5000 (step 40) |" in text and "| final eval accuracy | 0.5000 |" in text
    assert f"| final learning rate | {1e-2 * 0.8 ** 4:.3g} |" in text
    assert "| final train loss (data, period mean) | 0.3800 |" in text  # the data loss, not data + L2
    assert "| final L2 term (optimized by the optimizer) | 0.1000 |" in text


def test_config_summary_and_the_rules_checked(full_report):
    _, text = full_report
    assert "| `optimizer.name` | `sgd` |" in text and "| `schedule.name` | `exponential` |" in text
    rules_section = text[text.index("## Rules checked"):]
    for rule in CATALOG:
        assert f"| `{rule.id}` | {rule.family} | {rule.kind} |" in rules_section


def test_the_lr_is_drawn_per_step_from_the_schedule_and_matches_the_records():
    steps, rates = report.scheduled_learning_rates(TRAIN, CONFIG)
    assert list(steps) == list(range(1, 41))
    # Exponential 0.8 per epoch of 10 steps: step s applies 1e-2 x 0.8^((s - 1) / 10); the plateau cut at step 30
    # (lr_scale 0.5) halves the LR of steps 31..40.
    expected = 1e-2 * 0.8 ** ((steps - 1) / 10) * np.where(steps > 30, 0.5, 1.0)
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    assert report.scheduled_learning_rates(TRAIN, {}) is None


def test_legends_sit_outside_the_data_and_bands_say_what_they_mean():
    figures = report.render_figures(TRAIN, EVAL, CONFIG)
    for name, fig in figures.items():
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                fig.canvas.draw()
                box = legend.get_window_extent()
                assert box.x0 >= ax.get_window_extent().x1 - 1, name
    labels = [t.get_text() for t in figures["update_ratio"].axes[0].get_legend().get_texts()]
    assert "healthy at the LR applied (1e-4..1e-2 x LR / peak)" in labels
    loss_labels = [t.get_text() for t in figures["curves"].axes[0].get_legend().get_texts()]
    assert "L2 term (optimized: not in the data loss)" in loss_labels and "step-1 loss" in loss_labels


def test_every_linked_plot_is_a_valid_png(full_report):
    workdir, text = full_report
    links = linked_plots(text)
    assert [link.removeprefix("plots/").removesuffix(".png") for link in links] == list(report.FIGURES)
    for link in links:
        path = workdir / "diagnostics" / link
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
        assert f"![{path.stem}]({link})\n\n*{report.FIGURES[path.stem][1]}*" in text


@pytest.mark.parametrize("findings", [[], FINDINGS[2:]], ids=["none", "info_only"])
def test_healthy_message_without_warnings_or_errors(tmp_path, findings):
    text = open(report.write_report(str(tmp_path), TRAIN, EVAL, findings)).read()
    assert report.HEALTHY in text and text.index(report.HEALTHY) < text.index("![")


def test_figure_to_array_is_uint8_rgb():
    array = report.figure_to_array(report.render_figures(TRAIN, EVAL)["curves"])
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert array.shape[0] > 100 and array.shape[1] > 100 and array.min() < array.max()


def test_update_ratio_legend_is_limited_for_many_modules():
    modules = tuple(f"stage{i}/block{i}" for i in range(report.MAX_LEGEND + 3))
    figures = report.render_figures([TrainRecord.from_json(train_record(step, modules=modules)) for step in (10, 20)],
                                    [])
    labels = [text.get_text() for text in figures["update_ratio"].axes[0].get_legend().get_texts()]
    assert labels[1:] == [f"{name} of {len(modules)}" for name in ("min", "median", "max")]  # after the band
    assert len(figures["grad_norm_heatmap"].axes) == 2  # the heatmap and its colorbar


def test_records_without_optional_fields_still_report(tmp_path):
    train = [train_record(step, modules=(), blocks=()) for step in (10, 20)]
    del train[0]["scalars"]["accuracy"]
    train[1]["scalars"]["loss"] = summary(math.nan)
    train = [TrainRecord.from_json(r) for r in train]
    text = open(report.write_report(str(tmp_path), train, [], FINDINGS[:1])).read()
    assert linked_plots(text) == ["plots/curves.png", "plots/learning_rate.png"]
    assert "| final train loss (data, period mean) | nan |" in text and "best eval accuracy" not in text
    assert "No config.json in the workdir." in text
    for link in linked_plots(text):
        assert (tmp_path / "diagnostics" / link).read_bytes()[:8] == PNG_SIGNATURE


def test_sparse_and_empty_records_do_not_raise(tmp_path):
    train = [{"step": 10, "scalars": {"loss": {"mean": math.inf}}, "modules": {"a/b": {}}, "activations": {"c": {}}},
             {"step": 20, "modules": {"a/b": {"grad_norm": summary(0.0)}}}]
    evals = [{"step": 20, "loss": 3.0, "accuracy": math.nan, "per_class_accuracy": [math.nan, 0.5],
              "class_names": ["x"]}]
    train, evals = [TrainRecord.from_json(r) for r in train], [EvalRecord.from_json(r) for r in evals]
    text = open(report.write_report(str(tmp_path), train, evals, [])).read()
    assert linked_plots(text) == ["plots/curves.png", "plots/per_class_accuracy.png"]
    text = open(report.write_report(str(tmp_path), [], [], [])).read()
    assert report.HEALTHY in text and "No records yet." in text and not linked_plots(text)
    assert not list((tmp_path / "diagnostics" / "plots").iterdir())  # the earlier report's plots are gone


def test_write_report_images_to_tensorboard(tmp_path):
    figures = report.render_images(TRAIN, EVAL)
    writer = metric_writers.SummaryWriter(str(tmp_path))
    report.write_report_images(writer, 40, figures)
    writer.close()
    accumulator = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()["tensors"]
    assert {f"diagnostics/{name}" for name in figures} <= set(tags)
    assert all(event.step == 40 for event in accumulator.Tensors("diagnostics/curves"))
