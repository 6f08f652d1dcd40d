"""`workdir/diagnostics/report.md`: the analyzer's findings first, then a run summary and plots of the recorded
statistics (PNG files beside the report, also sent to TensorBoard as images).

Figures are `matplotlib.figure.Figure` objects drawn on the Agg canvas, never pyplot: no global figure state and
no change to the process's matplotlib backend. Records follow `schema.py`; a missing field or a NaN value leaves
a gap in a plot (or the plot out), never an exception.
"""

import json
import math
import os
import warnings
from collections.abc import Callable

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from visioncore_jax.diagnostics.findings import Finding

HEALTHY = "No warnings or errors: the run looks healthy."
MAX_LEGEND = 12  # more series than this: the min / median / max across them instead of one legend entry each
MAX_TICK_LABELS = 60  # more modules / classes than this: no per-item tick labels
MAX_X_TICKS = 20
HEALTHY_UPDATE_RATIO = (1e-4, 1e-2)
DPI = 100


def _get(record, *keys):
    """The value at `keys` in nested dicts; None when a level is missing."""
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record


def _number(value) -> float:
    """`value` as a float; NaN when it is not a number."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _series(records: list[dict], *keys) -> np.ndarray:
    """The value at `keys` of each record (NaN where missing)."""
    return np.asarray([_number(_get(record, *keys)) for record in records], np.float64)


def _rows(records: list[dict], field: str, names: list[str], statistic: str) -> np.ndarray:
    """[name, record] means of `field/<name>/<statistic>` (e.g. modules/head/grad_norm)."""
    rows = [_series(records, field, name, statistic, "mean") for name in names]
    return np.asarray(rows, np.float64).reshape(len(names), len(records))


def _names(records: list[dict], field: str) -> list[str]:
    """The keys of `field` (e.g. 'modules') over all records, in order of first appearance."""
    return list(dict.fromkeys(name for record in records for name in (_get(record, field) or {})))


def _vector(record: dict, key: str, length: int | None = None) -> np.ndarray:
    """A per-class list of `record` as floats (NaN where not a number), cut or NaN-padded to `length`."""
    values = [_number(v) for v in (_get(record, key) or [])]
    length = len(values) if length is None else length
    return np.asarray((values + [math.nan] * length)[:length], np.float64)


def _has_data(*arrays: np.ndarray) -> bool:
    """Whether any of the arrays holds a finite value."""
    return any(np.isfinite(array).any() for array in arrays)


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas, laid out automatically."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _log_y_if_positive(ax: Axes, values: np.ndarray) -> None:
    """A log y axis when some value can be drawn on one (matplotlib warns on a log axis with no positive data)."""
    if (np.isfinite(values) & (values > 0)).any():
        ax.set_yscale("log")


def _plot_series(ax: Axes, steps: np.ndarray, names: list[str], rows: np.ndarray) -> None:
    """One labelled line per name, or, above MAX_LEGEND names, faint unlabelled lines and the min / median / max
    across names."""
    if len(names) <= MAX_LEGEND:
        for name, row in zip(names, rows, strict=True):
            ax.plot(steps, row, marker=".", label=name)
    else:
        ax.plot(steps, rows.T, color="grey", alpha=0.25, linewidth=0.6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # records where every name is NaN
            statistics = {"min": np.nanmin(rows, 0), "median": np.nanmedian(rows, 0), "max": np.nanmax(rows, 0)}
        for statistic, row in statistics.items():
            ax.plot(steps, row, marker=".", linewidth=2, label=f"{statistic} of {len(names)}")
    ax.legend(fontsize=7)


def _step_ticks(ax: Axes, steps: np.ndarray) -> None:
    """Up to MAX_X_TICKS x ticks at record indices, labelled with the records' steps."""
    positions = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), MAX_X_TICKS)).round().astype(int))
    labels = [f"{steps[i]:.0f}" if np.isfinite(steps[i]) else "?" for i in positions]
    ax.set_xticks(positions, labels, fontsize=7, rotation=90)


def _curves(train_records: list[dict], eval_records: list[dict], key: str) -> list[tuple]:
    """(label, steps, values, style) of the train and eval `key` ('loss' or 'accuracy')."""
    return [("train (period mean)", _series(train_records, "step"), _series(train_records, "scalars", key, "mean"),
             ".-"),
            ("eval", _series(eval_records, "step"), _series(eval_records, key), "o-")]


def _curves_figure(train_records: list[dict], eval_records: list[dict]) -> Figure | None:
    """Loss (left) and accuracy (right) vs step: train period means and eval values."""
    panels = {key: _curves(train_records, eval_records, key) for key in ("loss", "accuracy")}
    if not _has_data(*(values for curves in panels.values() for _, _, values, _ in curves)):
        return None
    fig = _new_figure(11, 4)
    for ax, (title, curves) in zip(fig.subplots(1, 2), panels.items(), strict=True):
        for label, steps, values, style in curves:
            if _has_data(values):
                ax.plot(steps, values, style, markersize=4, label=label)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return fig


def _learning_rate_figure(train_records: list[dict], eval_records: list[dict]) -> Figure | None:
    """Mean LR of each record vs step (log y), with plateau cuts and rollbacks as dotted vertical lines."""
    learning_rates = _series(train_records, "scalars", "learning_rate", "mean")
    if not _has_data(learning_rates):
        return None
    fig = _new_figure(7, 3.5)
    ax = fig.subplots()
    ax.plot(_series(train_records, "step"), learning_rates, marker=".")
    for event in (event for record in train_records for event in (_get(record, "events") or [])):
        if math.isfinite(step := _number(_get(event, "step"))):
            ax.axvline(step, color="red", linestyle=":", linewidth=1)
    _log_y_if_positive(ax, learning_rates)
    ax.set(title="learning rate (mean per record)", xlabel="step")
    ax.grid(alpha=0.3)
    return fig


def _grad_norm_heatmap_figure(train_records: list[dict], eval_records: list[dict]) -> Figure | None:
    """log10 mean gradient norm, modules (record order) x records; zero or non-finite cells are grey."""
    modules = _names(train_records, "modules")
    grid = _rows(train_records, "modules", modules, "grad_norm")
    positive = np.isfinite(grid) & (grid > 0)
    if not positive.any():
        return None
    fig = _new_figure(10, min(2 + 0.22 * len(modules), 16))
    ax = fig.subplots()
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    logs = np.ma.masked_invalid(np.log10(np.where(positive, grid, np.nan)))
    image = ax.imshow(logs, aspect="auto", cmap=colormap, interpolation="nearest")
    if len(modules) <= MAX_TICK_LABELS:
        ax.set_yticks(range(len(modules)), modules, fontsize=7)
    _step_ticks(ax, _series(train_records, "step"))
    ax.set(title="log10 gradient norm per module (period mean)", xlabel="step")
    fig.colorbar(image, ax=ax, label="log10 grad norm")
    return fig


def _update_ratio_figure(train_records: list[dict], eval_records: list[dict]) -> Figure | None:
    """Mean update / parameter norm ratio per module vs step (log y) over the shaded healthy band."""
    modules = _names(train_records, "modules")
    ratios = _rows(train_records, "modules", modules, "update_ratio")
    if not _has_data(ratios):
        return None
    fig = _new_figure(8, 4)
    ax = fig.subplots()
    ax.axhspan(*HEALTHY_UPDATE_RATIO, color="green", alpha=0.12)
    _plot_series(ax, _series(train_records, "step"), modules, ratios)
    ax.set_yscale("log")
    ax.set(title="update / parameter norm ratio per module", xlabel="step")
    return fig


def _dead_units_figure(train_records: list[dict], eval_records: list[dict]) -> Figure | None:
    """Mean fraction of exactly-zero outputs per block vs step."""
    blocks = _names(train_records, "activations")
    zero_fractions = _rows(train_records, "activations", blocks, "zero_fraction")
    if not _has_data(zero_fractions):
        return None
    fig = _new_figure(8, 4)
    ax = fig.subplots()
    _plot_series(ax, _series(train_records, "step"), blocks, zero_fractions)
    ax.set(title="fraction of zero block outputs", xlabel="step", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    return fig


def _per_class_figure(train_records: list[dict], eval_records: list[dict]) -> Figure | None:
    """The last eval record: accuracy and share of predictions per class as bars, share of labels as ticks."""
    last = eval_records[-1] if eval_records else {}
    accuracy = _vector(last, "per_class_accuracy")
    if not _has_data(accuracy):
        return None
    count = len(accuracy)
    class_names = list(_get(last, "class_names") or [])
    names = [str(class_names[i]) if i < len(class_names) else str(i) for i in range(count)]
    positions = np.arange(count)
    fig = _new_figure(min(max(6, 2 + 0.35 * count), 16), 4)
    ax = fig.subplots()
    ax.bar(positions - 0.2, np.nan_to_num(accuracy), 0.4, label="accuracy (recall)")
    ax.bar(positions + 0.2, np.nan_to_num(_vector(last, "predicted_histogram", count)), 0.4,
           label="share of predictions")
    labels = _vector(last, "label_histogram", count)
    if _has_data(labels):
        ax.hlines(labels, positions - 0.4, positions + 0.4, colors="black", label="share of labels")
    if count <= MAX_TICK_LABELS:
        ax.set_xticks(positions, names, fontsize=7, rotation=90)
    ax.set(title=f"per class, eval at step {_number(_get(last, 'step')):.0f}", ylim=(0, 1.05))
    ax.legend(fontsize=7)
    return fig


FIGURES: dict[str, tuple[Callable[[list[dict], list[dict]], Figure | None], str]] = {
    "curves": (_curves_figure, "Loss and accuracy: train period means (train mode) and eval."),
    "learning_rate": (_learning_rate_figure, "Learning rate used by the steps (schedule x plateau / rollback scale); "
                                             "dotted red lines mark plateau cuts and rollbacks."),
    "grad_norm_heatmap": (_grad_norm_heatmap_figure, "log10 gradient norm per module over time (grey: zero or "
                                                     "non-finite)."),
    "update_ratio": (_update_ratio_figure, "Update / parameter norm ratio per module; the shaded band 1e-4..1e-2 "
                                           "is the usual healthy range."),
    "dead_units": (_dead_units_figure, "Fraction of exactly-zero block outputs (dead ReLU units) per block."),
    "per_class_accuracy": (_per_class_figure, "Last eval: accuracy and share of predictions per class (black "
                                              "lines: share of labels)."),
}


def render_figures(train_records: list[dict], eval_records: list[dict]) -> dict[str, Figure]:
    """The report's figures by name (the keys of FIGURES); a figure whose data the records lack is left out."""
    figures = {name: build(train_records, eval_records) for name, (build, _) in FIGURES.items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def figure_to_array(fig: Figure) -> np.ndarray:
    """The rendered figure as uint8 RGB [H, W, 3] (for TensorBoard images)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def _compact(value) -> str:
    """A short rendering of an evidence value."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _where(finding: Finding) -> str:
    """Steps, epochs and module of a finding, when it has them."""
    parts = []
    if finding.steps:
        parts.append(f"steps {finding.steps[0]}-{finding.steps[1]}")
    if finding.epochs:
        parts.append(f"epochs {finding.epochs[0]:.2f}-{finding.epochs[1]:.2f}")
    if finding.module:
        parts.append(f"module `{finding.module}`")
    return ", ".join(parts)


def _finding_markdown(number: int, finding: Finding) -> list[str]:
    """One finding: heading, where, explanation, evidence list and the overrides to paste."""
    lines = [f"### {number}. {finding.severity.upper()} `{finding.id}`: {finding.summary}", ""]
    if where := _where(finding):
        lines += [f"*{where}*", ""]
    lines += [finding.explanation, ""]
    if finding.evidence:
        lines += ["Evidence:", "", *(f"- {key}: `{_compact(value)}`" for key, value in finding.evidence.items()), ""]
    if finding.recommendations:
        lines += ["Try (best first):", "", "```", *finding.recommendations, "```", ""]
    return lines


def _findings_markdown(findings: list[Finding]) -> list[str]:
    """The findings section, most severe first (the given order among equally severe ones)."""
    ordered = sorted(findings, key=lambda finding: -finding.rank)
    counts = {severity: sum(f.severity == severity for f in ordered) for severity in ("error", "warning", "info")}
    lines = ["## Findings", ""]
    if counts["error"] or counts["warning"]:
        lines += [f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info.", ""]
    else:
        lines += [HEALTHY, ""]
    for number, finding in enumerate(ordered, start=1):
        lines += _finding_markdown(number, finding)
    return lines


def _format(value, spec: str) -> str:
    """`value` formatted with `spec`; 'n/a' when it is not a number."""
    return format(float(value), spec) if isinstance(value, (int, float)) else "n/a"


def _summary_rows(train_records: list[dict], eval_records: list[dict]) -> list[tuple[str, str]]:
    """(name, value) rows of the run summary table."""
    last_train = train_records[-1] if train_records else {}
    last_eval = eval_records[-1] if eval_records else {}
    last = last_train or last_eval
    rows = [("steps", _format(_get(last, "step"), ".0f")), ("epochs", _format(_get(last, "epoch"), ".2f"))]
    if train_records:
        rows += [("final train loss", _format(_get(last_train, "scalars", "loss", "mean"), ".4f")),
                 ("final train accuracy", _format(_get(last_train, "scalars", "accuracy", "mean"), ".4f")),
                 ("final learning rate", _format(_get(last_train, "scalars", "learning_rate", "last"), ".3g"))]
    if eval_records:
        accuracies = _series(eval_records, "accuracy")
        best = "n/a"
        if _has_data(accuracies):
            index = int(np.nanargmax(accuracies))
            best = f"{accuracies[index]:.4f} (step {_format(_get(eval_records[index], 'step'), '.0f')})"
        rows += [("best eval accuracy", best), ("final eval accuracy", _format(_get(last_eval, "accuracy"), ".4f"))]
        rows += [(f"final eval {key.replace('_', ' ')}", _format(last_eval[key], ".4f"))
                 for key in ("mean_dice", "mean_iou") if key in last_eval]
    return rows


def _summary_markdown(train_records: list[dict], eval_records: list[dict]) -> list[str]:
    """The run summary section: a two-column table."""
    if not train_records and not eval_records:
        return ["## Run", "", "No records yet.", ""]
    rows = _summary_rows(train_records, eval_records)
    return ["## Run", "", "| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]


def _plots_markdown(names: list[str]) -> list[str]:
    """The plots section: each image (relative link) with its caption."""
    lines = ["## Plots", ""]
    if not names:
        return lines + ["No plots: the records hold nothing to plot yet.", ""]
    for name in names:
        lines += [f"![{name}](plots/{name}.png)", "", f"*{FIGURES[name][1]}*", ""]
    return lines


def write_report(workdir: str, train_records: list[dict], eval_records: list[dict], findings: list[Finding]) -> str:
    """Writes `workdir/diagnostics/report.md` and its `plots/<name>.png`; returns the report's path."""
    directory = os.path.join(workdir, "diagnostics")
    plots = os.path.join(directory, "plots")
    os.makedirs(plots, exist_ok=True)
    figures = render_figures(train_records, eval_records)
    for name in FIGURES:
        path = os.path.join(plots, f"{name}.png")
        if name in figures:
            figures[name].savefig(path, dpi=DPI)
        elif os.path.exists(path):
            os.remove(path)  # a stale plot of an earlier report
    lines = [f"# Diagnostics report: `{os.path.abspath(workdir)}`", ""]
    lines += _findings_markdown(findings) + _summary_markdown(train_records, eval_records)
    lines += _plots_markdown(list(figures))
    path = os.path.join(directory, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def write_report_images(writer, step: int, figures: dict[str, Figure]) -> None:
    """Writes each figure as the image `diagnostics/<name>` at `step` through a clu metric writer."""
    writer.write_images(step, {f"diagnostics/{name}": figure_to_array(fig)[None] for name, fig in figures.items()})
