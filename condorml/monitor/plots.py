"""The report's plots: each ``plot_*`` function draws one matplotlib figure from the frames of
a :class:`~condorml.monitor.gather.ReportData`; :func:`make_plots` draws those the data allows.

matplotlib is imported inside the functions, so that importing this module stays fast.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError
from condorml.monitor.gather import ReportData
from condorml.monitor.scoring import CALIBRATION_BINS
from condorml.sweep.accounting import LOST_CAUSES, lost_column
from condorml.sweep.rundir import RunDir

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

# Every plot the report can draw, in page order: file stem -> title
PLOTS = {
    "learning_curves": "Learning curves",
    "hyperparameters": "Final validation accuracy against each swept hyperparameter",
    "ensemble_vs_members": "Ensemble against its members (test set)",
    "ensemble_size": "Ensemble size: members added best first",
    "calibration": "Calibration of the ensemble probabilities",
    "confusion_matrix": "Confusion matrix of the ensemble (test set)",
    "per_class_recall": "Recall per class: the ensemble and its members (test set)",
    "sample_images": "Sample test images with the ensemble's probability of dog",
    "misclassified": "Misclassified test images: the ensemble's most confident mistakes",
    "goodput": "HTCondor: committed and lost execution time of the training jobs",
}


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with the Agg canvas; pyplot (and its global state) is never used.
    # Constrained layout keeps titles, labels and legends ("outside" ones too) inside the figure.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # text is measured (to fit it) with the renderer that draws the PNG
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


# Hyperparameters compared by ratio: drawn on a log axis whenever their values are all positive
_LOG_BY_NATURE = frozenset({"lr", "weight_decay"})
_MIN_FONT_SIZE = 7.0  # a title shrinks to this size to fit its axes, not further
_LABEL_GAP = 2.0  # pixels between two tick labels
_NAME_CHARS = 24  # class names longer than this are shortened in plots (the tables keep them)
MEMBER_BARS = 50  # members drawn in the per-member bar plots; a larger run shows a chosen 50


def log_distributed(spec_file: Path) -> set[str]:
    """The hyperparameters a sweep spec draws from ``log_uniform`` (none if it cannot be read)."""
    from condorml.sweep.spec import load_spec

    try:
        random = load_spec(spec_file, check_paths=False).random
    except (CondormlError, OSError):
        return set()
    return {name for name, d in random.items() if isinstance(d, dict) and "log_uniform" in d}


def _apart(boxes: list[Any], along: str) -> bool:
    """Whether no two of the boxes overlap along ``along`` ("x" or "y")."""
    from itertools import pairwise

    spans = sorted((b.x0, b.x1) if along == "x" else (b.y0, b.y1) for b in boxes)
    return all(a[1] + _LABEL_GAP <= b[0] for a, b in pairwise(spans))


def _tick_labels(axis: Any, along: str) -> list[Any]:
    """The tick labels drawn on one axis (inside its view, not empty)."""
    ticks = axis.xaxis if along == "x" else axis.yaxis
    low, high = sorted(ticks.get_view_interval())
    locations, labels = ticks.get_majorticklocs(), ticks.get_majorticklabels()
    return [label for tick, label in zip(locations, labels, strict=True)
            if low <= tick <= high and label.get_visible() and label.get_text()]  # fmt: skip


def _fit_ticks(fig: Figure, axis: Any, along: str, renderer: Any) -> None:
    """Rotate (x only), then thin, an axis's tick labels until none overlaps the next.

    Thinning keeps the last label (the ensemble, after its members) and every n-th before it.
    """
    labels = _tick_labels(axis, along)
    if _apart([t.get_window_extent(renderer) for t in labels], along):
        return
    if along == "x":
        axis.tick_params(axis="x", labelrotation=90)
        fig.draw_without_rendering()
        labels = _tick_labels(axis, along)
    _thin_ticks(fig, axis, along, renderer, labels)


def _thin_ticks(fig: Figure, axis: Any, along: str, renderer: Any, labels: list[Any]) -> None:
    """Keep the last tick label and every n-th before it, with n as small as leaves no overlap."""
    from itertools import pairwise

    boxes = [t.get_window_extent(renderer) for t in labels]
    if _apart(boxes, along) or len(labels) < 2:
        return
    ticks = axis.xaxis if along == "x" else axis.yaxis
    # every n-th label: n spacings must hold the widest label (across the axis)
    size = max(b.width if along == "x" else b.height for b in boxes) + _LABEL_GAP
    centres = sorted((b.x0 + b.x1) / 2 if along == "x" else (b.y0 + b.y1) / 2 for b in boxes)
    spacing = min(b - a for a, b in pairwise(centres)) or 1.0
    positions = [label.get_position()[0 if along == "x" else 1] for label in labels]
    texts = [label.get_text() for label in labels]
    for every in range(max(2, math.ceil(size / spacing)), len(labels) + 1):
        keep = sorted(range(len(labels) - 1, -1, -every))
        ticks.set_ticks([positions[i] for i in keep], [texts[i] for i in keep])
        ticks.set_minor_locator(_null_locator())
        fig.draw_without_rendering()
        if _apart([t.get_window_extent(renderer) for t in _tick_labels(axis, along)], along):
            return


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _finish(fig: Figure) -> Figure:
    """Lay the figure out so that nothing is clipped or overlaps: titles shrink to their axes'
    width, tick labels that collide are rotated and then thinned."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for axis in fig.axes:
        title = axis.title
        width = axis.get_window_extent(renderer).width
        while title.get_text() and title.get_window_extent(renderer).width > width:
            if title.get_fontsize() <= _MIN_FONT_SIZE:
                break
            title.set_fontsize(title.get_fontsize() - 1)
    fig.draw_without_rendering()
    for axis in fig.axes:
        if axis.axison:
            _fit_ticks(fig, axis, "x", renderer)
            _fit_ticks(fig, axis, "y", renderer)
    return fig


def plot_learning_curves(epochs: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch of every member: train dashed, validation solid."""
    frame = epochs.dropna(subset=["epoch"])
    members = list(dict.fromkeys(frame["member"]))
    fig = _figure(11, 4)
    loss, acc = fig.subplots(1, 2)
    for member, color in zip(members, _colors(len(members)), strict=True):
        rows = frame[frame["member"] == member]
        for axis, metric in ((loss, "loss"), (acc, "acc")):
            axis.plot(rows["epoch"], rows[f"train_{metric}"], "--", color=color, alpha=0.7)
            axis.plot(rows["epoch"], rows[f"val_{metric}"], "-o", color=color, ms=3, label=member)
    for axis, name in ((loss, "loss"), (acc, "accuracy")):
        axis.set(xlabel="epoch", ylabel=name, title=f"{name} (train dashed, validation solid)")
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    if len(members) <= 12:  # beyond that a legend is a wall of names
        fig.legend(*acc.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    return _finish(fig)


def plot_hyperparameters(
    members: pd.DataFrame, swept: list[str], log_scaled: Collection[str] = ()
) -> Figure:
    """Final validation accuracy of every member against each swept hyperparameter.

    A hyperparameter goes on a log axis when its values are all positive and it is in
    ``log_scaled`` (the spec draws it from ``log_uniform``), or a learning rate or weight decay,
    or its values span two decades or more. A few values that members share (a grid) are the ticks.
    """
    import numpy as np
    import pandas as pd

    columns = min(len(swept), 3)
    rows_of_plots = math.ceil(len(swept) / columns)
    fig = _figure(max(4.0 * columns, 5.0), 3.6 * rows_of_plots)
    axes = np.atleast_1d(fig.subplots(rows_of_plots, columns, squeeze=False).ravel())
    for axis in axes[len(swept) :]:
        axis.set_axis_off()
    rows = members.dropna(subset=["val_acc"])
    for axis, name in zip(axes, swept, strict=False):
        values = pd.to_numeric(rows[name], errors="coerce")
        numeric = values.notna().all() and rows[name].dtype != bool
        if numeric:
            axis.scatter(values, rows["val_acc"], alpha=0.8)
            positive = len(values) > 0 and bool((values > 0).all())
            if positive and (name in log_scaled or name in _LOG_BY_NATURE
                             or values.max() / values.min() >= 100):  # fmt: skip
                axis.set_xscale("log")
            distinct = sorted(set(values))
            if len(distinct) <= 8 and len(distinct) < len(values):  # a grid (with seeds)
                axis.set_xticks(distinct, [f"{v:g}" for v in distinct])
                axis.xaxis.set_minor_locator(_null_locator())
        else:
            labels = sorted({str(v) for v in rows[name]})
            axis.scatter([labels.index(str(v)) for v in rows[name]], rows["val_acc"], alpha=0.8)
            axis.set_xticks(range(len(labels)), labels)
            axis.set_xlim(-0.5, len(labels) - 0.5)
        axis.set(xlabel=name, ylabel="final validation accuracy", title=name)
        axis.grid(alpha=0.3)
    return _finish(fig)


def plot_ensemble_vs_members(scores: pd.DataFrame, order: list[str]) -> Figure:
    """Test accuracy and log loss of the members (best validation first; the first
    :data:`MEMBER_BARS` of a larger run) and of the ensemble."""
    order = order[:MEMBER_BARS]
    table = scores.set_index("member").loc[[*order, "ensemble"]]
    fig = _figure(min(max(8.0, 0.25 * len(table) + 4), 16.0), 4.2)  # 16 in: ~100 bars
    colors = ["tab:blue"] * len(order) + ["tab:orange"]
    for axis, metric, label in zip(
        fig.subplots(1, 2), ("accuracy", "log_loss"), ("accuracy", "log loss"), strict=True
    ):
        axis.bar(range(len(table)), table[metric], color=colors)
        axis.axhline(table.at["ensemble", metric], color="tab:orange", ls="--", lw=1)
        axis.set_xticks(range(len(table)), table.index)
        axis.set_xlim(-0.6, len(table) - 0.4)
        # bars start at 0: a zoomed axis would cut them off at the bottom
        axis.set_ylim(0.0, max(float(table[metric].max()) * 1.05, 1e-3))
        axis.set(ylabel=label, title=f"test {label}")
        axis.grid(alpha=0.3, axis="y")
    return _finish(fig)


def plot_ensemble_size(curve: pd.DataFrame) -> Figure:
    """Ensemble accuracy and log loss against its size, members added best first."""
    fig = _figure(10, 3.8)
    best = curve.iloc[0]
    for axis, metric, label in zip(
        fig.subplots(1, 2), ("accuracy", "log_loss"), ("accuracy", "log loss"), strict=True
    ):
        axis.plot(curve["k"], curve[metric], "-o", color="tab:orange", label="ensemble of k")
        label_best = f"best-validation member ({best['added']})"
        axis.axhline(best[metric], color="tab:blue", ls="--", lw=1, label=label_best)
        axis.set(xlabel="members (best validation accuracy first)", ylabel=label)
        axis.set_title(f"test {label}")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
    fig.legend(*axis.get_legend_handles_labels(), loc="outside upper center", ncols=2,
               fontsize="small", frameon=False)  # fmt: skip
    return _finish(fig)


def plot_calibration(calibration: pd.DataFrame, positive: str | None = "dog") -> Figure:
    """Reliability diagram of the ensemble, and its images per bin.

    Two classes (``positive``: the second class): the fraction of images of that class against
    the mean predicted probability of it per bin. Any number (``positive`` None, a
    :func:`~condorml.monitor.scoring.confidence_table`): the fraction predicted correctly against
    the mean confidence (the probability of the predicted class) per bin.
    """
    fig = _figure(9, 3.8)
    curve, counts = fig.subplots(1, 2)
    fraction = next(c for c in calibration.columns if c.startswith("fraction_"))
    if positive is None:
        mean, title = "mean_confidence", "calibration of the confidence"
        x_label, y_label = (
            "mean confidence (probability of the predicted class)",
            "fraction correct",
        )
        binned = "confidence (probability of the predicted class)"
    else:
        shown = _short(positive)
        mean, title = "mean_prob", "calibration"
        x_label = f"mean predicted probability of {shown}"
        y_label = "fraction of dogs" if positive == "dog" else f"fraction of {shown}"
        binned = f"predicted probability of {shown}"
    curve.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    curve.plot(calibration[mean], calibration[fraction], "-o", label="ensemble")
    curve.set(xlim=(0, 1), ylim=(0, 1), xlabel=x_label, ylabel=y_label, title=title)
    curve.grid(alpha=0.3)
    curve.legend(fontsize="small")
    width = calibration["bin_high"] - calibration["bin_low"]
    counts.bar(calibration["bin_low"], calibration["images"], width=width, align="edge",
               edgecolor="white")  # fmt: skip
    counts.set(xlim=(0, 1), ylim=(0, max(float(calibration["images"].max()) * 1.05, 1)),
               xlabel=binned, ylabel="images", title="images per probability bin")  # fmt: skip
    return _finish(fig)


def _short(name: str, chars: int = _NAME_CHARS) -> str:
    """A class name cut to ``chars`` characters (an ellipsis marks the cut)."""
    name = str(name)
    return name if len(name) <= chars else name[: chars - 1] + "\u2026"


_LOST_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown")


def plot_goodput(condor: pd.DataFrame) -> Figure:
    """Per member: committed, lost (by cause), set-up (and still uncommitted) time, evictions;
    in a larger run, the :data:`MEMBER_BARS` members that lost the most time."""
    table = goodput_shown(condor).iloc[::-1]  # first member on top
    fig = _figure(9, max(2.8, 0.35 * len(table) + 1.8))
    axis = fig.subplots()
    y = range(len(table))
    axis.barh(y, table["committed_seconds"], color="tab:green", label="committed")
    left = table["committed_seconds"].copy()
    for column, color, label, always in _goodput_bars(table):
        if always or table[column].sum() > 0:
            axis.barh(y, table[column], left=left, color=color, label=label)
            left = left + table[column]
    names = [f"{member} ({n} eviction{'' if n == 1 else 's'})"
             for member, n in zip(table["member"], table["evictions"], strict=True)]  # fmt: skip
    axis.set_yticks(list(y), names)
    axis.set_ylim(-0.6, len(table) - 0.4)
    axis.set_xlim(0, max(float(left.max()) * 1.03, 1.0))
    axis.set(xlabel="execution time of the training jobs (s)")
    axis.grid(alpha=0.3, axis="x")
    handles, labels = axis.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 3),
               fontsize="small", frameon=False)  # fmt: skip
    return _finish(fig)


def goodput_shown(condor: pd.DataFrame) -> pd.DataFrame:
    """The members the goodput plot shows: all, or the :data:`MEMBER_BARS` that lost the most
    time (then the most evictions), in the table's order."""
    if len(condor) <= MEMBER_BARS:
        return condor
    worst = condor.sort_values(["lost_seconds", "evictions"], ascending=False, kind="stable")
    return condor.loc[sorted(worst.index[:MEMBER_BARS], key=condor.index.get_loc)]


def _goodput_bars(table: pd.DataFrame) -> list[tuple[str, str, str, bool]]:
    """The stacked bars after the committed time: (column, colour, label, always shown).

    Lost time by cause when the table has every cause's column, else in one bar; the first kind
    of lost time is always in the legend ("none lost" is news too).
    """
    if all(lost_column(cause) in table for cause in LOST_CAUSES):
        lost = [(lost_column(cause), color, f"lost to {cause}s")
                for cause, color in zip(LOST_CAUSES, _LOST_COLORS, strict=True)]  # fmt: skip
    else:
        lost = [("lost_seconds", "tab:red", "lost")]
    return [
        *((column, color, label, i == 0) for i, (column, color, label) in enumerate(lost)),
        ("setup_seconds", "tab:blue", "input transfer and set-up", False),
        ("uncommitted_seconds", "tab:grey", "running, not yet checkpointed", False),
    ]


def png(fig: Figure, dpi: int = 100) -> bytes:
    """A figure as PNG bytes (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


@dataclass
class Plot:
    """One rendered plot of the report."""

    name: str  # file stem and HTML id
    title: str
    png: bytes
    caption: str = ""


def make_plots(data: ReportData) -> tuple[list[Plot], list[str]]:
    """Every plot the data allows, in page order (with ``[search]``, the search's after the
    learning curves: :mod:`condorml.monitor.search_plots`; the confusion matrix and the recall per
    class: :mod:`condorml.monitor.class_plots`; the grids of test images:
    :mod:`condorml.monitor.image_plots`), and notes on the ones it does not."""
    # they draw with this module's helpers
    from condorml.monitor.class_plots import draw_per_class
    from condorml.monitor.image_plots import draw_misclassified, draw_samples
    from condorml.monitor.search_plots import draw_search

    plots: list[Plot] = []
    notes: list[str] = []
    drawers = (_learning_curves, draw_search, _hyperparameters, _ensemble, _calibration,
               draw_per_class, draw_samples, draw_misclassified, _goodput)  # fmt: skip
    for draw in drawers:
        more, why = draw(data)
        plots += more
        notes += why
    return plots, notes


_Drawn = tuple[list[Plot], list[str]]  # the plots one drawer made, notes on those it skipped


def _plot(
    name: str, fig: Figure, caption: str = "", dpi: int = 100, title: str | None = None
) -> Plot:
    return Plot(name, title or PLOTS[name], png(fig, dpi), caption)


def _learning_curves(data: ReportData) -> _Drawn:
    if not data.epochs["epoch"].notna().any():
        return [], ["no member finished an epoch: learning curves skipped"]
    caption = ("Every member's loss and accuracy per epoch: a validation curve that rises again "
               "while the training curve falls is overfitting.")  # fmt: skip
    return [_plot("learning_curves", plot_learning_curves(data.epochs), caption)], []


def _hyperparameters(data: ReportData) -> _Drawn:
    if not data.swept:
        return [], []
    if "val_acc" not in data.members or not data.members["val_acc"].notna().any():
        return [], ["no final validation accuracy yet: hyperparameter plot skipped"]
    log_scaled = log_distributed(RunDir(data.run_dir).spec_copy)
    fig = plot_hyperparameters(data.members, data.swept, log_scaled)
    return [_plot("hyperparameters", fig, "One point per member (seeds give the spread).")], []


def _ensemble(data: ReportData) -> _Drawn:
    if data.scores is None or data.ensemble_curve is None:
        return [], []
    order = data.ranked()
    shown = "" if len(order) <= MEMBER_BARS else (
        f" The {MEMBER_BARS} members of {len(order)} with the best validation accuracy "
        "(leaderboard.csv has them all).")  # fmt: skip
    return [
        _plot("ensemble_vs_members", plot_ensemble_vs_members(data.scores, order),
              "Scored on the test images every member predicted." + shown),
        _plot("ensemble_size", plot_ensemble_size(data.ensemble_curve),
              "The ensemble of the k members with the best validation accuracy."),
    ], []  # fmt: skip


def _calibration(data: ReportData) -> _Drawn:
    if data.calibration is None or data.calibration.empty or data.classes is None:
        return [], []
    if len(data.classes) == 2:
        positive = data.classes[1]
        caption = (f"The ensemble's probability of {positive} in {CALIBRATION_BINS} equal bins: "
                   "points on the diagonal mean that a probability of 0.8 is right 80% of the "
                   "time.")  # fmt: skip
    else:
        positive = None
        caption = (f"A reliability diagram of the ensemble's confidence (its probability of the "
                   f"class it predicts) in {CALIBRATION_BINS} equal bins, against the fraction "
                   "of those images it predicted correctly: points on the diagonal mean that a "
                   "confidence of 0.8 is right 80% of the time.")  # fmt: skip
    return [_plot("calibration", plot_calibration(data.calibration, positive), caption)], []


def _goodput(data: ReportData) -> _Drawn:
    if data.condor is None or data.condor["execution_seconds"].sum() <= 0:
        return [], []
    caption = (
        "From the jobs' own event logs: time up to a checkpoint or the job's end is committed; "
        "time since the last checkpoint before an eviction, hold or failure is lost, and a "
        "removal loses all of the job's time (its checkpoints go with it); from a run's input "
        "transfer to its execution is set-up. In all: HTCondor's RemoteWallClockTime."
    )
    if len(data.condor) > MEMBER_BARS:
        caption += (f" The {MEMBER_BARS} members of {len(data.condor)} that lost the most time; "
                    "the leaderboard lists them all.")  # fmt: skip
    return [_plot("goodput", plot_goodput(data.condor), caption)], []
