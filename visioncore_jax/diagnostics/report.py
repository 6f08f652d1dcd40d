"""`workdir/diagnostics/report.md`: the findings first, then a run summary and plots (PNG, also sent to
TensorBoard as images)."""

import io
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from visioncore_jax.diagnostics.findings import Finding  # noqa: E402

CAPTIONS = {
    "curves": "Loss and accuracy, train (period means) and eval.",
    "learning_rate": "Learning rate used by the steps (schedule x plateau / rollback scale).",
    "grad_norm_heatmap": "log10 gradient norm per module (input side at the top) over time.",
    "update_ratio": "Update / parameter norm ratio per module; the band 1e-4..1e-2 is the usual healthy range.",
    "dead_units": "Fraction of exactly-zero block outputs (dead ReLU units) per block.",
    "per_class_accuracy": "Last eval: accuracy per class and share of predictions per class.",
}
MAX_LEGEND = 12


def _values(records, *keys) -> np.ndarray:
    out = []
    for record in records:
        value = record
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(float(value) if isinstance(value, (int, float)) else math.nan)
    return np.asarray(out, np.float64)


def _steps(records) -> np.ndarray:
    return np.asarray([r["step"] for r in records])


def render_figures(train_records: list[dict], eval_records: list[dict]) -> dict[str, Figure]:
    """The report's figures by name; figures without data are left out."""
    figures = {}
    steps = _steps(train_records)
    if train_records or eval_records:
        fig = Figure(figsize=(10, 4))
        loss_ax, acc_ax = fig.subplots(1, 2)
        if train_records:
            loss_ax.plot(steps, _values(train_records, "scalars", "loss", "mean"), label="train")
            acc_ax.plot(steps, _values(train_records, "scalars", "accuracy", "mean"), label="train")
        if eval_records:
            loss_ax.plot(_steps(eval_records), _values(eval_records, "loss"), "o-", label="eval")
            acc_ax.plot(_steps(eval_records), _values(eval_records, "accuracy"), "o-", label="eval")
        loss_ax.set(title="loss", xlabel="step")
        acc_ax.set(title="accuracy", xlabel="step")
        loss_ax.legend()
        acc_ax.legend()
        figures["curves"] = fig
    if train_records:
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        ax.plot(steps, _values(train_records, "scalars", "learning_rate", "mean"))
        ax.set(title="learning rate", xlabel="step", yscale="log")
        figures["learning_rate"] = fig
    modules = list(train_records[-1].get("modules") or {}) if train_records else []
    if modules:
        grid = np.asarray([_values(train_records, "modules", m, "grad_norm", "mean") for m in modules])
        fig = Figure(figsize=(10, 1 + 0.25 * len(modules)))
        ax = fig.subplots()
        image = ax.imshow(np.log10(np.maximum(grid, 1e-30)), aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(modules)), modules, fontsize=7)
        ax.set_xticks(range(len(steps)), steps, fontsize=7, rotation=90)
        ax.set(title="log10 gradient norm per module", xlabel="step")
        fig.colorbar(image, ax=ax)
        figures["grad_norm_heatmap"] = fig

        ratios = np.asarray([_values(train_records, "modules", m, "update_ratio", "mean") for m in modules])
        fig = Figure(figsize=(8, 4))
        ax = fig.subplots()
        ax.axhspan(1e-4, 1e-2, color="green", alpha=0.1)
        if len(modules) <= MAX_LEGEND:
            for module, series in zip(modules, ratios, strict=True):
                ax.plot(steps, series, label=module)
        else:
            for name, series in (("min", np.nanmin(ratios, 0)), ("median", np.nanmedian(ratios, 0)),
                                 ("max", np.nanmax(ratios, 0))):
                ax.plot(steps, series, label=f"{name} over {len(modules)} modules")
        ax.set(title="update / parameter ratio", xlabel="step", yscale="log")
        ax.legend(fontsize=6)
        figures["update_ratio"] = fig
    blocks = list(train_records[-1].get("activations") or {}) if train_records else []
    if blocks:
        fig = Figure(figsize=(8, 4))
        ax = fig.subplots()
        for block in blocks[:MAX_LEGEND]:
            ax.plot(steps, _values(train_records, "activations", block, "zero_fraction", "mean"), label=block)
        ax.set(title="zero fraction of block outputs", xlabel="step", ylim=(0, 1))
        ax.legend(fontsize=6)
        figures["dead_units"] = fig
    if eval_records and eval_records[-1].get("per_class_accuracy"):
        last = eval_records[-1]
        names = last.get("class_names") or [str(i) for i in range(len(last["per_class_accuracy"]))]
        positions = np.arange(len(names))
        fig = Figure(figsize=(max(6, 0.4 * len(names)), 4))
        ax = fig.subplots()
        ax.bar(positions - 0.2, last["per_class_accuracy"], 0.4, label="accuracy")
        ax.bar(positions + 0.2, last.get("predicted_histogram", [0] * len(names)), 0.4, label="predicted share")
        ax.set_xticks(positions, names, rotation=90, fontsize=7)
        ax.set(title=f"per class at step {last['step']}", ylim=(0, 1))
        ax.legend()
        figures["per_class_accuracy"] = fig
    for fig in figures.values():
        fig.tight_layout()
    return figures


def figure_to_array(fig: Figure) -> np.ndarray:
    """The rendered figure as uint8 RGB [H, W, 3]."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    buffer.seek(0)
    rgba = matplotlib.image.imread(buffer, format="png")
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def _findings_markdown(findings: list[Finding]) -> list[str]:
    lines = ["## Findings", ""]
    if not any(f.severity != "info" for f in findings):
        lines += ["No warnings or errors: the run looks healthy.", ""]
    for finding in findings:
        lines += [f"### {finding.severity.upper()}: `{finding.id}`", "", finding.summary, "", finding.explanation, ""]
        lines += [f"- {key}: `{value}`" for key, value in finding.evidence.items()] + [""]
        if finding.recommendations:
            lines += ["Try, in order:", "", "```", *finding.recommendations, "```", ""]
    return lines


def _summary_markdown(train_records: list[dict], eval_records: list[dict]) -> list[str]:
    rows = []
    if train_records:
        last = train_records[-1]
        rows += [("steps", last["step"]), ("epochs", f"{last['epoch']:.2f}"),
                 ("final train loss", f"{_values([last], 'scalars', 'loss', 'mean')[0]:.4f}"),
                 ("final train accuracy", f"{_values([last], 'scalars', 'accuracy', 'mean')[0]:.4f}"),
                 ("final learning rate", f"{_values([last], 'scalars', 'learning_rate', 'last')[0]:.3g}")]
    if eval_records:
        accuracies = _values(eval_records, "accuracy")
        rows += [("best eval accuracy", f"{np.nanmax(accuracies):.4f}"),
                 ("final eval accuracy", f"{accuracies[-1]:.4f}")]
        if "mean_dice" in eval_records[-1]:
            rows.append(("final eval mean Dice", f"{eval_records[-1]['mean_dice']:.4f}"))
    return ["## Run", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def write_report(workdir: str, train_records: list[dict], eval_records: list[dict], findings: list[Finding]) -> str:
    """Writes `report.md` and `plots/*.png` under `workdir/diagnostics`; returns the report's path."""
    directory = os.path.join(workdir, "diagnostics")
    os.makedirs(os.path.join(directory, "plots"), exist_ok=True)
    lines = [f"# Diagnostics report: {os.path.abspath(workdir)}", ""]
    lines += _findings_markdown(findings) + _summary_markdown(train_records, eval_records) + ["## Plots", ""]
    for name, fig in render_figures(train_records, eval_records).items():
        fig.savefig(os.path.join(directory, "plots", f"{name}.png"), dpi=100)
        lines += [f"![{name}](plots/{name}.png)", "", CAPTIONS[name], ""]
    path = os.path.join(directory, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def write_report_images(writer, step: int, figures: dict[str, Figure]) -> None:
    """Writes the figures to TensorBoard as images `diagnostics/<name>` through a clu metric writer."""
    writer.write_images(step, {f"diagnostics/{name}": figure_to_array(fig)[None] for name, fig in figures.items()})
