"""The scores a report shows, as tables: every member's and the ensemble's (with
:func:`condorml.results.evaluate.score`, as ``condorml evaluate`` computes them), per class, the
ensemble's confusion matrix, its most confused classes and its mistakes, the ensemble-size curve
and the calibration. Pure functions of probabilities and labels; :mod:`.gather` feeds them.

pandas and numpy are imported inside the functions, so that importing this module stays fast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from condorml.results.evaluate import Scores, score, top_confusions
from condorml.results.predictions import CAT_DOG, is_cat_dog

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CALIBRATION_BINS = 10
CONFUSED_PAIRS = 10  # the most confused (true, predicted) pairs a report lists
CURVE_POINTS = 100  # about how many ensemble sizes the report's curve is scored at


def mean_probs(probs: Sequence[Any], classes: Sequence[str] | None = None) -> np.ndarray:
    """The ensemble of members' probabilities: their mean, per image and class, over the members
    that predicted the image (NaN rows are skipped).

    ``probs`` holds one (images, classes) array per member, or one array of the probability of
    the second of two classes. For cat/dog the probability of cat is 1 - the mean probability
    of dog, exactly as the collect step writes ``dog_probs.csv``.
    """
    import numpy as np

    stacked = np.stack([np.asarray(p, dtype=float) for p in probs])
    with warnings.catch_warnings():  # an image no member predicted stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stacked, axis=0)
    if mean.ndim == 2 and classes is not None and is_cat_dog(classes):
        mean[:, 0] = 1.0 - mean[:, 1]
    return mean


def member_scores(
    probs: Mapping[str, Any], y: Any, classes: Sequence[str] = CAT_DOG
) -> dict[str, Scores]:
    """``condorml evaluate``'s scores of every member (an (images, classes) array each, the
    same images) and, last, of their mean as ``"ensemble"``.

    Raises
    ------
    CondormlError
        If a probability is not one (NaN, outside [0, 1]).
    """
    labels = [int(v) for v in y]
    every = {member: score(labels, p, classes) for member, p in probs.items()}
    every["ensemble"] = score(labels, mean_probs(list(probs.values()), classes), classes)
    return every


def scores_on_own_images(
    probs: Mapping[str, pd.DataFrame], labels: pd.Series, classes: Sequence[str]
) -> dict[str, Scores]:
    """Each frame's scores (images by classes, NaN rows where there is no prediction) over its
    own images that have a label: a member's over what it predicted, the ensemble's over what
    any of its members predicted, as ``condorml evaluate`` scores a predictions CSV."""
    scored = {}
    for name, frame in probs.items():
        rows = frame.dropna()
        ids = rows.index.intersection(labels.index, sort=False)
        if len(ids):
            scored[name] = score(
                labels.loc[ids].astype(int).tolist(), rows.loc[ids].to_numpy(), classes
            )
    return scored


def score_table(scores: Mapping[str, Scores]) -> pd.DataFrame:
    """One row per member (and the ensemble): accuracy, log loss, macro-F1, top-5 accuracy (more
    than 5 classes), ROC AUC (two classes) and the number of images scored."""
    import pandas as pd

    rows = []
    for name, s in scores.items():
        row: dict[str, Any] = {"member": name, "accuracy": s.accuracy, "log_loss": s.log_loss,
                               "macro_f1": s.macro_f1}  # fmt: skip
        if s.top5_accuracy is not None:
            row["top5_accuracy"] = s.top5_accuracy
        if len(s.classes) == 2:
            row["roc_auc"] = s.roc_auc
        rows.append({**row, "images": s.n})
    return pd.DataFrame(rows)


def per_class_table(scores: Mapping[str, Scores]) -> pd.DataFrame:
    """One row per member (and the ensemble) and class: precision, recall, F1, support (the
    images of that class scored)."""
    import pandas as pd

    rows = [{"member": name, "class": cls, "precision": c.precision, "recall": c.recall,
             "f1": c.f1, "support": c.support}
            for name, s in scores.items() for cls, c in s.per_class.items()]  # fmt: skip
    return pd.DataFrame(rows, columns=["member", "class", "precision", "recall", "f1", "support"])


def confusion_frame(scores: Scores) -> pd.DataFrame:
    """The confusion matrix as a frame: rows the true class, columns the predicted class."""
    import pandas as pd

    classes = list(scores.classes)
    return pd.DataFrame(
        scores.confusion,
        index=pd.Index(classes, name="true"),
        columns=pd.Index(classes, name="predicted"),
    )


def confused_pairs(scores: Scores, k: int = CONFUSED_PAIRS) -> pd.DataFrame:
    """The ``k`` most frequent mistakes: true class, predicted class, images, and their fraction
    of the true class's images; most first."""
    import pandas as pd

    support = {name: c.support for name, c in scores.per_class.items()}
    rows = [{"true": t, "predicted": p, "images": n,
             "fraction_of_true": n / support[t] if support.get(t) else math.nan}
            for t, p, n in top_confusions(scores, k)]  # fmt: skip
    return pd.DataFrame(rows, columns=["true", "predicted", "images", "fraction_of_true"])


def mistakes(ids: Sequence[str], y: Any, probs: Any, classes: Sequence[str]) -> pd.DataFrame:
    """The images whose most probable class (the first of a tie, as ``score``) is not the true
    one: fileid, true, predicted, probability (of the predicted class); most confident first."""
    import numpy as np
    import pandas as pd

    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:  # the probability of the second of two classes
        p = np.stack([1.0 - p, p], axis=1)
    y = np.asarray(y, dtype=int)
    guess = p.argmax(axis=1)
    wrong = np.flatnonzero(guess != y)
    names = np.asarray(list(classes), dtype=object)
    frame = pd.DataFrame({
        "fileid": np.asarray(list(ids), dtype=object)[wrong], "true": names[y[wrong]],
        "predicted": names[guess[wrong]], "probability": p[wrong, guess[wrong]],
    })  # fmt: skip
    return frame.sort_values("probability", ascending=False, kind="stable", ignore_index=True)


def ensemble_curve(
    probs: Mapping[str, Any], y: Any, order: list[str], classes: Sequence[str] = CAT_DOG
) -> pd.DataFrame:
    """Scores of the mean of the first k members of ``order`` (best first), for the k of
    :func:`curve_sizes` (every k up to :data:`CURVE_POINTS`), each over the images of ``y`` those k members predicted (an image none of them predicted, all
    NaN, is left out of that k's scores).

    ``probs[member]``: an (images, classes) array, or the probability of the second of two
    classes; NaN where the member has no prediction.
    """
    import numpy as np
    import pandas as pd

    labels = np.asarray([int(v) for v in y])
    sizes = curve_sizes(len(order))
    rows = []
    # mean_probs of the first k members, for every k from running sums: the same additions in
    # the same order as np.nanmean's over the stacked k arrays, without summing them again per
    # k (quadratic in the members: seconds at 1,000)
    total: np.ndarray | None = None
    count: np.ndarray | None = None
    for k in range(1, len(order) + 1):
        added = np.asarray(probs[order[k - 1]], dtype=float)
        missing = np.isnan(added)
        added = np.where(missing, 0.0, added)
        total = added.copy() if total is None else total + added
        count = (~missing).astype(np.intp) if count is None else count + ~missing
        if k not in sizes:
            continue
        mean = _running_mean(total, count, classes)
        known = ~np.isnan(mean.reshape(len(mean), -1)).any(axis=1)
        scores = score(labels[known].tolist(), mean[known], classes)
        rows.append({"k": k, "added": order[k - 1], "accuracy": scores.accuracy,
                     "log_loss": scores.log_loss, "images": scores.n})  # fmt: skip
    return pd.DataFrame(rows)


def curve_sizes(n: int, points: int = CURVE_POINTS) -> set[int]:
    """The ensemble sizes the curve is scored at: every k from 1 to n when n <= ``points``, else
    about ``points`` sizes, every k at first and spaced evenly on a log scale after, n included.

    Scoring every k of 1,000 members took most of a report's time; the curve's shape shows at
    these sizes.
    """
    import numpy as np

    if n <= points:
        return set(range(1, n + 1))
    dense = points // 4
    spaced = np.geomspace(dense + 1, n, points - dense)
    return set(range(1, dense + 1)) | {round(float(k)) for k in spaced} | {n}


def _running_mean(total: Any, count: Any, classes: Sequence[str] | None) -> np.ndarray:
    """:func:`mean_probs` from the sums and counts of its members' non-NaN values."""
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):  # no member predicted it: NaN, silently
        mean = np.true_divide(total, count)
    if mean.ndim == 2 and classes is not None and is_cat_dog(classes):
        mean[:, 0] = 1.0 - mean[:, 1]
    return mean


def calibration_table(
    p: Any, y: Any, bins: int = CALIBRATION_BINS, positive: str = "dog"
) -> pd.DataFrame:
    """Two classes: per equal-width bin of the probability ``p`` of the second class, ``positive``
    (non-empty bins): images, mean probability, and the fraction of images of that class
    (``fraction_dogs`` for cat/dog, as always; else ``fraction_<class>``)."""
    import numpy as np

    column = "fraction_dogs" if positive == "dog" else f"fraction_{positive}"
    y = np.asarray(y, dtype=int)
    return _binned(p, y == 1, bins, "mean_prob", column)


def confidence_table(probs: Any, y: Any, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Any number of classes: per equal-width bin of the confidence (the probability of the
    predicted class; non-empty bins): images, mean confidence, fraction predicted correctly."""
    import numpy as np

    p = np.asarray(probs, dtype=float)
    correct = p.argmax(axis=1) == np.asarray(y, dtype=int)
    return _binned(p.max(axis=1), correct, bins, "mean_confidence", "fraction_correct")


def _binned(values: Any, hits: Any, bins: int, mean_name: str, fraction_name: str) -> pd.DataFrame:
    """Per equal-width bin of ``values`` in [0, 1] (non-empty ones): images, the values' mean and
    the fraction of ``hits``."""
    import numpy as np
    import pandas as pd

    values, hits = np.asarray(values, dtype=float), np.asarray(hits, dtype=bool)
    index = np.minimum((values * bins).astype(int), bins - 1)  # 1.0 goes to the last bin
    rows = []
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            rows.append({
                "bin_low": b / bins, "bin_high": (b + 1) / bins, "images": int(chosen.sum()),
                mean_name: float(values[chosen].mean()), fraction_name: float(hits[chosen].mean()),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "images", mean_name, fraction_name])
