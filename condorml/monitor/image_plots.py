"""The report's grids of test images, drawn like :mod:`condorml.monitor.plots`' figures: the
first test images (titled with the ensemble's prediction where there is one) and the images the
ensemble got wrong, with their true and predicted classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError
from condorml.monitor.gather import MISCLASSIFIED_IMAGES
from condorml.monitor.plots import Plot, _figure, _finish, _plot, _short
from condorml.monitor.testimages import images_by_id, sample_images
from condorml.results.predictions import CAT_DOG, is_cat_dog

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from condorml.monitor.gather import ReportData


def plot_sample_images(
    samples: list[tuple[str, Any]],
    probs: Mapping[str, Any],
    labels: Mapping[str, int] | None = None,
    classes: Sequence[str] = CAT_DOG,
) -> Figure:
    """A grid of test images titled with the ensemble's prediction, green/red when right/wrong.

    ``probs``: per image id, the probability of dog (cat/dog: titled "p(dog)") or of every
    class (titled with the predicted class and its probability); an image without one is
    titled with its id (and true class) only. ``labels``: the true class index per image id.
    """
    import numpy as np

    titles = {}
    for fileid, _ in samples:
        prob, truth = probs.get(fileid), None if labels is None else labels.get(fileid)
        lines, guess = [fileid], None
        if prob is not None and np.ndim(prob) == 0:  # the probability of dog
            lines.append(f"p(dog) {float(prob):.3f}")
            guess = int(float(prob) > 0.5)  # as argmax: a tie is cat
        elif prob is not None:
            values = np.asarray(prob, dtype=float)
            guess = int(values.argmax())
            lines.append(f"predicted: {_short(classes[guess], 18)} {values[guess]:.3f}")
        if truth is not None:
            shown = f"truth: {_short(classes[int(truth)], 18)}"
            cat_dog = guess is not None and np.ndim(prob) == 0
            lines[-1:] = [f"{lines[-1]}, {shown}"] if cat_dog else [lines[-1], shown]
        right = None if guess is None or truth is None else guess == int(truth)
        titles[fileid] = (
            "\n".join(lines),
            {None: "black", True: "tab:green", False: "tab:red"}[right],
        )
    return plot_image_grid(samples, titles)


def plot_misclassified(samples: list[tuple[str, Any]], mistakes: pd.DataFrame) -> Figure:
    """A grid of test images the ensemble got wrong, each titled with its id, its true class and
    the predicted class with the ensemble's probability of it."""
    table = mistakes.set_index("fileid")
    titles = {}
    for fileid, _ in samples:
        row = table.loc[fileid]
        text = (f"{fileid}\ntrue: {_short(row['true'], 18)}\n"
                f"predicted: {_short(row['predicted'], 18)} {float(row['probability']):.3f}")  # fmt: skip
        titles[fileid] = (text, "tab:red")
    return plot_image_grid(samples, titles)


def plot_image_grid(
    samples: list[tuple[str, Any]], titles: Mapping[str, tuple[str, str]]
) -> Figure:
    """Images in rows of four, each titled with ``titles[id]``: (text, colour)."""
    columns = min(4, len(samples))
    rows = math.ceil(len(samples) / columns)
    lines = max((titles.get(i, (i, ""))[0].count("\n") + 1 for i, _ in samples), default=1)
    fig = _figure(2.4 * columns, (2.3 + 0.2 * lines) * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes:
        axis.set_axis_off()
    for axis, (fileid, image) in zip(axes, samples, strict=False):
        axis.imshow(image)
        text, color = titles.get(fileid, (fileid, "black"))
        axis.set_title(text, color=color, fontsize=11)
    return _finish(fig)


# The lost time's colours in the goodput plot, by cause (in LOST_CAUSES order)
def draw_samples(data: ReportData) -> tuple[list[Plot], list[str]]:
    """A grid of the first test images, titled with what the ensemble predicts where it does."""
    if data.images is None:
        return [], []
    ensemble = data.ensemble
    try:
        samples, unreadable = sample_images(
            data.images, None if ensemble is None else set(ensemble.index)
        )
    except CondormlError as err:
        return [], [f"sample grid skipped: {err}"]
    if not samples:
        missing = f"no test image with a prediction in {data.images}: sample grid skipped"
        return [], unreadable or [missing]
    classes = data.classes or CAT_DOG
    probs: dict[str, Any] = {}
    if ensemble is None:
        title = "Sample test images"  # no prediction to show
    elif is_cat_dog(classes):
        title, probs = None, ensemble["dog"].to_dict()
    else:
        title = "Sample test images with the ensemble's predicted class and its probability"
        probs = {fileid: ensemble.loc[fileid].to_numpy() for fileid, _ in samples}
    labels = None if data.labels is None else data.labels.to_dict()
    caption = f"The first {len(samples)} test images by id, from {data.images}."
    if labels is not None and probs:
        caption += " Green: predicted right; red: wrong."
    fig = plot_sample_images(samples, probs, labels, classes)
    return [_plot("sample_images", fig, caption, dpi=72, title=title)], unreadable


def draw_misclassified(data: ReportData) -> tuple[list[Plot], list[str]]:
    """A grid of the test images the ensemble got wrong, most confident first."""
    if data.images is None or data.mistakes is None or data.mistakes.empty:
        return [], []
    worst = data.mistakes.head(MISCLASSIFIED_IMAGES)
    try:
        samples, unreadable = images_by_id(data.images, list(worst["fileid"]))
    except CondormlError as err:
        return [], [f"misclassified images skipped: {err}"]
    if not samples:
        missing = f"no misclassified image found in {data.images}: misclassified images skipped"
        return [], unreadable or [missing]
    scored = len(data.scored or ())
    caption = (f"The {len(samples)} test images the ensemble got wrong with the highest "
               f"probability of its (wrong) prediction, of {len(data.mistakes)} mistakes on "
               f"{scored} scored images, from {data.images}: each titled with its id, its true "
               "class, and the predicted class with the ensemble's probability of it. "
               "misclassified.csv beside this page lists every mistake.")  # fmt: skip
    fig = plot_misclassified(samples, data.mistakes)
    return [_plot("misclassified", fig, caption, dpi=72)], unreadable
