"""`workdir/diagnostics/report.md`: the analyzer's findings first, then a run summary and plots of the recorded
statistics (PNG files beside the report, also sent to TensorBoard as images).

Figures are `matplotlib.figure.Figure` objects drawn on the Agg canvas, never pyplot: no global figure state and
no change to the process's matplotlib backend. Records follow `schema.py`; a missing field or a NaN value leaves
a gap in a plot (or the plot out), never an exception.
"""

import math
import os
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.image
import ml_collections
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import CATALOG
from visioncore_jax.diagnostics.schema import EvalRecord, TrainRecord, as_float, format_number
from visioncore_jax.optim.optimizers import learning_rate_of_steps
from visioncore_jax.optim.schedules import build_schedule

HEALTHY = "No warnings or errors: the run looks healthy."
MAX_LEGEND = 12  # more series than this: the min / median / max across them instead of one legend entry each
MAX_TICK_LABELS = 60  # more modules / classes than this: no per-item tick labels
MAX_X_TICKS = 20
HEALTHY_UPDATE_RATIO = (1e-4, 1e-2)  # per step at the schedule's peak LR; scaled down with the LR as it decays
DPI = 100
# The config fields of the report's summary (dotted keys of config.json), in this order.
CONFIG_SUMMARY = ("model.name", "data.name", "optimizer.name", "optimizer.learning_rate", "optimizer.weight_decay",
                  "optimizer.grad_clip_norm", "optimizer.accumulation_steps", "optimizer.lr_multipliers",
                  "schedule.name", "schedule.warmup_epochs", "schedule.warmup_steps", "schedule.min_learning_rate",
                  "training.batch_size", "training.num_train_steps", "training.num_epochs", "training.label_smoothing",
                  "training.class_weighting", "model.dropout", "plateau.enabled", "seed")


def _series(records: Sequence, value: Callable) -> np.ndarray:
    """`value(record)` per record as float64 (NaN where not a number)."""
    return np.asarray([as_float(value(r)) for r in records], np.float64)


def _stat(records: Sequence[TrainRecord], field: str, name: str, statistic: str) -> np.ndarray:
    """The mean of `field[name][statistic]` per record (e.g. modules/head/grad_norm)."""
    return _series(records, lambda r: getattr(getattr(r, field).get(name, {}).get(statistic), "mean", math.nan))


def _rows(records: Sequence[TrainRecord], field: str, names: list[str], statistic: str) -> np.ndarray:
    """[name, record] means of `field/<name>/<statistic>`."""
    rows = [_stat(records, field, name, statistic) for name in names]
    return np.asarray(rows, np.float64).reshape(len(names), len(records))


def _names(records: Sequence[TrainRecord], field: str) -> list[str]:
    """The keys of `field` (e.g. 'modules') over all records, in order of first appearance."""
    return list(dict.fromkeys(name for record in records for name in getattr(record, field)))


def _vector(values: Sequence[float], length: int) -> np.ndarray:
    """A per-class vector cut or NaN-padded to `length`."""
    values = [as_float(v) for v in values]
    return np.asarray((values + [math.nan] * length)[:length], np.float64)


def _has_data(*arrays: np.ndarray) -> bool:
    """Whether any of the arrays holds a finite value."""
    return any(np.isfinite(array).any() for array in arrays)


def _legend_outside(ax: Axes) -> None:
    """The axes' legend to the right of the data, never on it."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0.0)


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
    _legend_outside(ax)


def _step_ticks(ax: Axes, steps: np.ndarray) -> None:
    """Up to MAX_X_TICKS x ticks at record indices, labelled with the records' steps."""
    positions = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), MAX_X_TICKS)).round().astype(int))
    labels = [f"{steps[i]:.0f}" if np.isfinite(steps[i]) else "?" for i in positions]
    ax.set_xticks(positions, labels, fontsize=7, rotation=90)


def _steps(records: Sequence) -> np.ndarray:
    """The step of each record."""
    return _series(records, lambda r: r.step)


def _loss_panel(ax: Axes, train: Sequence[TrainRecord], evals: Sequence[EvalRecord]) -> None:
    """The data loss: period mean, its min..max band and the step-1 loss; eval loss; the L2 term (only recorded
    where the optimizer optimizes it) as its own dashed line."""
    steps = _steps(train)
    loss = {stat: _series(train, lambda r, s=stat: getattr(r.scalar("loss"), s)) for stat in ("mean", "min", "max")}
    if _has_data(loss["mean"]):
        ax.fill_between(steps, loss["min"], loss["max"], alpha=0.2, label="train data loss, period min..max")
        ax.plot(steps, loss["mean"], ".-", markersize=4, label="train data loss, period mean")
    if train and train[0].starts_run and math.isfinite(train[0].scalar("loss").first):
        ax.plot([1], [train[0].scalar("loss").first], "k*", label="step-1 loss")
    eval_loss = _series(evals, lambda r: r.loss)
    if _has_data(eval_loss):
        ax.plot(_steps(evals), eval_loss, "o-", markersize=4, label="eval loss")
    l2 = _series(train, lambda r: r.scalars["reg_loss"].mean if "reg_loss" in r.scalars else math.nan)
    if _has_data(l2):
        ax.plot(steps, l2, "--", label="L2 term (optimized: not in the data loss)")


def _curves_figure(train: Sequence[TrainRecord], evals: Sequence[EvalRecord], config: dict) -> Figure | None:
    """Loss (left: data loss, eval loss, optimized L2 term) and accuracy (right) vs step."""
    accuracy = (_series(train, lambda r: r.scalar("accuracy").mean), _series(evals, lambda r: r.accuracy))
    loss = (_series(train, lambda r: r.scalar("loss").mean), _series(evals, lambda r: r.loss))
    if not _has_data(*accuracy, *loss):
        return None
    fig = _new_figure(12, 4)
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    _loss_panel(loss_ax, train, evals)
    for label, steps, values, style in (("train (period mean, train mode)", _steps(train), accuracy[0], ".-"),
                                        ("eval", _steps(evals), accuracy[1], "o-")):
        if _has_data(values):
            accuracy_ax.plot(steps, values, style, markersize=4, label=label)
    for ax, title in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    return fig


def scheduled_learning_rates(train: Sequence[TrainRecord], config: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps 1..N, LR applied at each) from the run's config with the optim package's schedule, scaled per record
    by its configured peak (a resumed run may change it) and the plateau / rollback scale from its events; None
    when the config cannot rebuild the schedule (no config.json, or one from another version)."""
    if not train or not config:
        return None
    last = train[-1]
    try:
        cfg = ml_collections.ConfigDict(config)
        k = max(1, int(cfg.optimizer.accumulation_steps))
        schedule = build_schedule(cfg, max(1, last.steps_per_epoch // k), max(1, last.num_train_steps // k))
        learning_rate = learning_rate_of_steps(cfg, schedule)
        peak = float(cfg.optimizer.learning_rate)
    except (AttributeError, KeyError, TypeError, ValueError):  # a config this version cannot build: no curve
        return None
    steps = np.arange(1, last.step + 1)
    # Train step number s (1-based) runs with the optimizer state's step s - 1.
    rates = np.asarray(jax.jit(jax.vmap(learning_rate))(jnp.asarray(steps - 1)), np.float64)
    scale, previous = np.ones_like(rates), 0
    current = 1.0
    for record in train:
        in_period = (steps > previous) & (steps <= record.step)
        ratio = record.peak_learning_rate / peak if math.isfinite(record.peak_learning_rate) else 1.0
        scale[in_period] = ratio * current
        for event in record.events:
            if math.isfinite(event.lr_scale):
                current = event.lr_scale
                scale[(steps > event.step) & (steps <= record.step)] = ratio * current
        previous = record.step
    return steps, rates * scale


def _learning_rate_figure(train: Sequence[TrainRecord], evals: Sequence[EvalRecord], config: dict) -> Figure | None:
    """The LR of every step (from the config's schedule) with the recorded first / last LR of each period, the
    configured peak, and plateau cuts / rollbacks as dotted vertical lines."""
    first = _series(train, lambda r: r.scalar("learning_rate").first)
    last = _series(train, lambda r: r.scalar("learning_rate").last)
    if not _has_data(first, last):
        return None
    fig = _new_figure(9, 3.5)
    ax = fig.subplots()
    scheduled = scheduled_learning_rates(train, config)
    if scheduled is not None:
        ax.plot(*scheduled, linewidth=1.2, label="LR per step (schedule x scale)")
    ax.plot(_series(train, lambda r: r.first_step + 1), first, "o", markersize=4, mfc="none",
            label="recorded: first step of period")
    ax.plot(_steps(train), last, "x", markersize=5, label="recorded: last step of period")
    peak = train[-1].peak_learning_rate
    if math.isfinite(peak) and peak > 0:
        ax.axhline(peak, color="grey", linestyle="--", linewidth=0.8, label=f"configured peak {peak:.3g}")
    for event in (event for record in train for event in record.events):
        ax.axvline(event.step, color="red", linestyle=":", linewidth=1, label=f"{event.kind} (step {event.step})")
    _log_y_if_positive(ax, np.concatenate([first, last]))
    ax.set(title="learning rate applied", xlabel="step")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return fig


def _grad_norm_heatmap_figure(train: Sequence[TrainRecord], evals: Sequence[EvalRecord], config: dict) -> Figure | None:
    """log10 mean gradient norm, modules (record order) x records; zero or non-finite cells are grey."""
    modules = _names(train, "modules")
    grid = _rows(train, "modules", modules, "grad_norm")
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
    _step_ticks(ax, _steps(train))
    ax.set(title="log10 gradient norm per module (period mean)", xlabel="step")
    fig.colorbar(image, ax=ax, label="log10 grad norm")
    return fig


def _update_ratio_figure(train: Sequence[TrainRecord], evals: Sequence[EvalRecord], config: dict) -> Figure | None:
    """Mean update / parameter norm ratio per module vs step (log y) over the healthy band at the LR applied:
    HEALTHY_UPDATE_RATIO at the peak, scaled by each period's mean LR / the peak (the ratio follows the LR)."""
    modules = _names(train, "modules")
    ratios = _rows(train, "modules", modules, "update_ratio")
    if not _has_data(ratios):
        return None
    fig = _new_figure(9, 4)
    ax = fig.subplots()
    steps = _steps(train)
    lrs = _series(train, lambda r: r.scalar("learning_rate").mean)
    peak = train[-1].peak_learning_rate
    if _has_data(lrs) and math.isfinite(peak) and peak > 0:
        share = np.clip(np.nan_to_num(lrs / peak, nan=1.0), 1e-12, None)
        ax.fill_between(steps, HEALTHY_UPDATE_RATIO[0] * share, HEALTHY_UPDATE_RATIO[1] * share, color="green",
                        alpha=0.12, step="mid", label="healthy at the LR applied (1e-4..1e-2 x LR / peak)")
    else:
        ax.axhspan(*HEALTHY_UPDATE_RATIO, color="green", alpha=0.12, label="healthy at the peak LR (1e-4..1e-2)")
    _plot_series(ax, steps, modules, ratios)
    ax.set_yscale("log")
    ax.set(title="update / parameter norm ratio per module (period mean)", xlabel="step")
    return fig


def _dead_units_figure(train: Sequence[TrainRecord], evals: Sequence[EvalRecord], config: dict) -> Figure | None:
    """Mean fraction of exactly-zero outputs per block vs step."""
    blocks = _names(train, "activations")
    zero_fractions = _rows(train, "activations", blocks, "zero_fraction")
    if not _has_data(zero_fractions):
        return None
    fig = _new_figure(9, 4)
    ax = fig.subplots()
    _plot_series(ax, _steps(train), blocks, zero_fractions)
    ax.set(title="fraction of zero block outputs (period mean)", xlabel="step", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    return fig


def _per_class_figure(train: Sequence[TrainRecord], evals: Sequence[EvalRecord], config: dict) -> Figure | None:
    """The last eval record: recall and share of predictions per class as bars, share of labels as ticks."""
    if not evals:
        return None
    last = evals[-1]
    count = len(last.per_class_accuracy)
    recall = _vector(last.per_class_accuracy, count)
    if not _has_data(recall):
        return None
    names = [last.class_names[i] if i < len(last.class_names) else str(i) for i in range(count)]
    positions = np.arange(count)
    fig = _new_figure(min(max(7, 3 + 0.35 * count), 17), 4)
    ax = fig.subplots()
    ax.bar(positions - 0.2, np.nan_to_num(recall), 0.4, label="accuracy (recall)")
    ax.bar(positions + 0.2, np.nan_to_num(_vector(last.predicted_histogram, count)), 0.4,
           label="share of predictions")
    labels = _vector(last.label_histogram, count)
    if _has_data(labels):
        ax.hlines(labels, positions - 0.4, positions + 0.4, colors="black", label="share of labels")
    if count <= MAX_TICK_LABELS:
        ax.set_xticks(positions, names, fontsize=7, rotation=90)
    ax.set(title=f"per class, eval at step {last.step}", ylim=(0, 1.05))
    _legend_outside(ax)
    return fig


Builder = Callable[[Sequence[TrainRecord], Sequence[EvalRecord], dict], Figure | None]
FIGURES: dict[str, tuple[Builder, str]] = {
    "curves": (_curves_figure, "Left: the data loss (what the model fits: no L2 term), train period mean with its "
                               "min..max band and the step-1 loss, and eval loss; a dashed L2 term only where the "
                               "optimizer optimizes it (SGD, Adam). Right: accuracy."),
    "learning_rate": (_learning_rate_figure, "Learning rate applied at every step (the config's schedule x "
                                             "plateau / rollback scale), the recorded first and last LR of each "
                                             "period, and the configured peak; dotted red lines mark plateau cuts "
                                             "and rollbacks."),
    "grad_norm_heatmap": (_grad_norm_heatmap_figure, "log10 gradient norm per module over time (grey: zero or "
                                                     "non-finite)."),
    "update_ratio": (_update_ratio_figure, "Update / parameter norm ratio per module; the green band is the usual "
                                           "healthy range 1e-4..1e-2 at the peak LR, scaled down as the schedule "
                                           "lowers the LR (a decaying LR lowers the ratio by design)."),
    "dead_units": (_dead_units_figure, "Fraction of exactly-zero block outputs (dead ReLU units) per block."),
    "per_class_accuracy": (_per_class_figure, "Last eval: accuracy (recall) and share of predictions per class "
                                              "(black lines: share of labels)."),
}


def render_figures(train_records: Sequence[TrainRecord], eval_records: Sequence[EvalRecord],
                   config: dict | None = None) -> dict[str, Figure]:
    """The report's figures by name (the keys of FIGURES); a figure whose data the records lack is left out."""
    figures = {name: build(train_records, eval_records, config or {}) for name, (build, _) in FIGURES.items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def figure_to_array(fig: Figure) -> np.ndarray:
    """The rendered figure as uint8 RGB [H, W, 3] at DPI (the report's PNG and the TensorBoard image)."""
    fig.set_dpi(DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def render_images(train_records: Sequence[TrainRecord], eval_records: Sequence[EvalRecord],
                  config: dict | None = None) -> dict[str, np.ndarray]:
    """`render_figures`, each drawn once to uint8 RGB: what `write_report` saves and `write_report_images` logs
    (drawing is most of a report's time: a second rendering for TensorBoard doubled it)."""
    return {name: figure_to_array(fig) for name, fig in render_figures(train_records, eval_records, config).items()}


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
    lines = [f"### {number}. {finding.severity.upper()} `{finding.id}` ({finding.kind}): {finding.summary}", ""]
    if where := _where(finding):
        lines += [f"*{where}*", ""]
    lines += [finding.explanation, ""]
    if finding.evidence:
        lines += ["Evidence:", "", *(f"- {key}: `{format_number(value)}`" for key, value in finding.evidence.items()),
                  ""]
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
    return format(float(value), spec) if isinstance(value, int | float) else "n/a"


def _summary_rows(train: Sequence[TrainRecord], evals: Sequence[EvalRecord]) -> list[tuple[str, str]]:
    """(name, value) rows of the run summary table."""
    last = train[-1] if train else evals[-1]
    rows = [("steps", _format(last.step, ".0f")), ("epochs", _format(last.epoch, ".2f"))]
    if train:
        final = train[-1]
        rows += [("step-1 loss (data)", _format(train[0].scalar("loss").first, ".4f")) if train[0].starts_run
                 else ("first recorded loss (data)", _format(train[0].scalar("loss").first, ".4f")),
                 ("final train loss (data, period mean)", _format(final.scalar("loss").mean, ".4f"))]
        if "reg_loss" in final.scalars:
            rows.append(("final L2 term (optimized by the optimizer)", _format(final.scalars["reg_loss"].mean,
                                                                               ".4f")))
        rows += [("final train accuracy", _format(final.scalar("accuracy").mean, ".4f")),
                 ("final learning rate", _format(final.scalar("learning_rate").last, ".3g")),
                 ("configured peak learning rate", _format(final.peak_learning_rate, ".3g"))]
    if evals:
        accuracies = _series(evals, lambda r: r.accuracy)
        best = "n/a"
        if _has_data(accuracies):
            index = int(np.nanargmax(accuracies))
            best = f"{accuracies[index]:.4f} (step {evals[index].step})"
        rows += [("best eval accuracy", best), ("final eval accuracy", _format(evals[-1].accuracy, ".4f")),
                 ("final eval loss", _format(evals[-1].loss, ".4f"))]
        if evals[-1].task == "segmentation":
            rows += [("final eval mean dice", _format(evals[-1].mean_dice, ".4f")),
                     ("final eval mean iou", _format(evals[-1].mean_iou, ".4f"))]
    return rows


def _summary_markdown(train: Sequence[TrainRecord], evals: Sequence[EvalRecord]) -> list[str]:
    """The run summary section: a two-column table."""
    if not train and not evals:
        return ["## Run", "", "No records yet.", ""]
    rows = _summary_rows(train, evals)
    return ["## Run", "", "| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]


def _config_markdown(config: dict) -> list[str]:
    """The config summary: the headline fields of config.json."""
    lines = ["## Config", ""]
    if not config:
        return lines + ["No config.json in the workdir.", ""]
    rows = []
    for key in CONFIG_SUMMARY:
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            rows.append(f"| `{key}` | `{format_number(node)}` |")
    return lines + ["| field | value |", "|---|---|", *rows, ""]


def _rules_markdown() -> list[str]:
    """The rules checked, by family, with their kind (causes rank above the symptoms they explain)."""
    lines = ["## Rules checked", "", "| rule | family | kind | explains |", "|---|---|---|---|"]
    lines += [f"| `{rule.id}` | {rule.family} | {rule.kind} | {', '.join(rule.explains) or '-'} |" for rule in CATALOG]
    return lines + [""]


def _plots_markdown(names: list[str]) -> list[str]:
    """The plots section: each image (relative link) with its caption."""
    lines = ["## Plots", ""]
    if not names:
        return lines + ["No plots: the records hold nothing to plot yet.", ""]
    for name in names:
        lines += [f"![{name}](plots/{name}.png)", "", f"*{FIGURES[name][1]}*", ""]
    return lines


def write_report(workdir: str, train_records: Sequence[TrainRecord], eval_records: Sequence[EvalRecord],
                 findings: list[Finding], config: dict | None = None,
                 images: dict[str, np.ndarray] | None = None) -> str:
    """Writes `workdir/diagnostics/report.md` and its `plots/<name>.png`; returns the report's path. `config`
    is the run's config.json (the config summary and the per-step LR need it); `images` are the plots from
    `render_images` when the caller has them already."""
    directory = os.path.join(workdir, "diagnostics")
    plots = os.path.join(directory, "plots")
    os.makedirs(plots, exist_ok=True)
    images = render_images(train_records, eval_records, config) if images is None else images
    for name in FIGURES:
        path = os.path.join(plots, f"{name}.png")
        if name in images:
            matplotlib.image.imsave(path, images[name])
        elif os.path.exists(path):
            os.remove(path)  # a stale plot of an earlier report
    lines = [f"# Diagnostics report: `{os.path.abspath(workdir)}`", ""]
    lines += _findings_markdown(findings) + _summary_markdown(train_records, eval_records)
    lines += _config_markdown(config or {}) + _plots_markdown(list(images)) + _rules_markdown()
    path = os.path.join(directory, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def write_report_images(writer, step: int, images: dict[str, np.ndarray]) -> None:
    """Writes each plot from `render_images` as the image `diagnostics/<name>` at `step` through a clu metric
    writer."""
    writer.write_images(step, {f"diagnostics/{name}": image[None] for name, image in images.items()})
