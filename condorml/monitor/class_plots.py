"""The report's plots of the classes, drawn like :mod:`condorml.monitor.plots`' (a bare Agg
figure, laid out by its ``_finish``): the ensemble's confusion matrix and the recall of each
class, for any number of classes (numbered cells up to :data:`MAX_ANNOTATED_CLASSES`, the classes
of the lowest recall beyond :data:`MAX_RECALL_CLASSES`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from condorml.monitor.plots import Plot, _figure, _finish, _null_locator, _plot, _short

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from condorml.monitor.gather import ReportData

MAX_ANNOTATED_CLASSES = 20  # a confusion matrix of more classes is drawn normalised, unnumbered
MAX_RECALL_CLASSES = 40  # the per-class recall plot shows at most this many classes


def plot_confusion(confusion: pd.DataFrame) -> Figure:
    """The confusion matrix as a picture: rows the true class, columns the predicted one.

    Up to :data:`MAX_ANNOTATED_CLASSES` classes every cell is numbered with its count; beyond,
    each row is normalised to the fraction of its true class's images and nothing is written
    in the cells (they are too small to read), and at most 50 classes are named on each axis.
    """
    import numpy as np

    counts = confusion.to_numpy(dtype=int)
    n = len(counts)
    names = [_short(c) for c in confusion.index]
    numbered = n <= MAX_ANNOTATED_CLASSES
    if numbered:
        values, side, label = counts, max(3.5, 0.45 * n + 2.0), "images"
    else:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        side, label = 9.0, "fraction of the true class's images"
    fig = _figure(side + 2.5, side + 1.0)
    axis = fig.subplots()
    # more cells than pixels: antialiased resampling keeps sparse mistakes visible
    image = axis.imshow(values, cmap="Blues", vmin=0,
                        interpolation="nearest" if n <= 200 else "antialiased")  # fmt: skip
    fig.colorbar(image, ax=axis, shrink=0.8, label=label)
    shown = list(range(0, n, math.ceil(n / 50)))  # every class up to 50
    axis.set_xticks(shown, [names[i] for i in shown])
    axis.set_yticks(shown, [names[i] for i in shown])
    for ticks in (axis.xaxis, axis.yaxis):
        ticks.set_minor_locator(_null_locator())
    axis.set(xlabel="predicted class", ylabel="true class", title="the ensemble's confusion matrix")
    if numbered:
        dark = values.max() / 2  # white numbers on the dark cells
        size = 10 if n <= 10 else 8
        for (i, j), count in np.ndenumerate(counts):
            axis.text(j, i, str(count), ha="center", va="center", fontsize=size,
                      color="white" if count > dark else "black")  # fmt: skip
    return _finish(fig)


def plot_per_class_recall(per_class: pd.DataFrame) -> Figure:
    """Recall of each class: the ensemble's as a bar, every member's as a point.

    Classes in class order, first on top; more than :data:`MAX_RECALL_CLASSES`: those of the
    lowest ensemble recall, lowest on top.
    """
    import numpy as np

    ensemble = per_class[per_class["member"] == "ensemble"].set_index("class")["recall"]
    classes = list(ensemble.index)
    if len(classes) > MAX_RECALL_CLASSES:
        classes = list(ensemble.sort_values(kind="stable").index[:MAX_RECALL_CLASSES])
    n = len(classes)
    fig = _figure(8, max(2.8, 0.3 * n + 1.6))
    axis = fig.subplots()
    y = np.arange(n)
    axis.barh(y, ensemble.loc[classes], color="tab:orange", alpha=0.7, label="ensemble")
    members = per_class[per_class["member"] != "ensemble"]
    if not members.empty:
        recall = members.pivot(index="class", columns="member", values="recall").loc[classes]
        for k, member in enumerate(recall.columns):
            axis.scatter(recall[member], y, s=16, color="tab:blue", alpha=0.6, zorder=3,
                         label="members" if k == 0 else None)  # fmt: skip
    axis.set_yticks(y, [_short(c) for c in classes])
    axis.yaxis.set_minor_locator(_null_locator())
    axis.set_ylim(n - 0.4, -0.6)  # the first class on top
    axis.set_xlim(0, 1.03)  # a point at 1 stays whole
    axis.set(xlabel="recall: fraction of the class's test images predicted as it",
             title="recall per class")  # fmt: skip
    axis.grid(alpha=0.3, axis="x")
    handles, labels = axis.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize="small",
               frameon=False)  # fmt: skip
    return _finish(fig)


def draw_per_class(data: ReportData) -> tuple[list[Plot], list[str]]:
    """The confusion matrix and the recall per class, when the report has scores."""
    if data.confusion is None or data.per_class is None or data.scored is None:
        return [], []
    n, scored = len(data.confusion), len(data.scored)
    if n <= MAX_ANNOTATED_CLASSES:
        caption = (f"Rows: the true class; columns: the class the ensemble predicted (the one of "
                   f"the highest probability); each cell counts test images, {scored} in all "
                   "(those every member predicted): the diagonal is right.")  # fmt: skip
    else:
        named = "" if n <= 50 else f", every {math.ceil(n / 50)}th class named"
        caption = (f"{n} classes, too many to number: each row is normalised to the fraction of "
                   f"the true class's images the ensemble predicted as each class ({scored} test "
                   f"images every member predicted{named}); confusion.csv beside this page has "
                   "the counts.")  # fmt: skip
    recall = ("Bars: the ensemble's recall of each class (the fraction of the class's test "
              "images it predicted as that class); points: every member's.")  # fmt: skip
    if n > MAX_RECALL_CLASSES:
        recall += (f" The {MAX_RECALL_CLASSES} classes of the lowest ensemble recall of {n}; "
                   "per_class.csv has every class.")  # fmt: skip
    return [
        _plot("confusion_matrix", plot_confusion(data.confusion), caption),
        _plot("per_class_recall", plot_per_class_recall(data.per_class), recall),
    ], []
