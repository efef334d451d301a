"""Score predictions against labels with scikit-learn's metrics, for two classes or any N.

Predictions are a ``dog_probs.csv`` (``fileid,prob``: classes cat, dog) or a ``probs.csv``
(``fileid,predicted,<one probability column per class>``). Labels are a CSV ``fileid,label``
(a class name, or a whole-number index into the predictions' classes), the cat/dog CSV
``fileid,is_dog`` (what ``condorml data synth`` writes as ``test_labels.csv``), or a labelled
test set (a folder or ``.zip`` laid out like training data: class folders, a ``labels.csv``,
Kaggle names, torchvision's dataset files).

Only images present in both are scored. Labelled images without a prediction (undecodable ones,
a subset predicted) and predictions without a label are counted, recorded and warned about, not
refused; an empty overlap is an error. A probability outside [0, 1] (or nan), a ``probs.csv``
row that does not sum to 1, a label that is no class of the predictions and a ``fileid`` given
twice in either file are errors naming the file (and the line and the value): they would
otherwise give a nan log loss, a wrong AUC or an image counted twice.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError, DataError
from condorml.fileio import atomic_write_text, check_input_file, check_output_file, read_csv
from condorml.results.predictions import (
    CAT_DOG,
    is_cat_dog,
    prediction_classes,
    probability_matrix,
    read_predictions,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)
THRESHOLD = 0.5  # two classes: the second is predicted above it (0.5: the higher probability)
TOP_K = 5  # top-k accuracy is reported for more than this many classes
SUM_TOLERANCE = 1e-3  # a probs.csv row's probabilities must sum to 1 within this


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class (0 where undefined), and its number of images."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Scores:
    """Evaluation results, as ``metrics.json`` records them.

    ``confusion[i][j]`` counts images of class ``i`` predicted as class ``j``, in the order of
    ``classes``: for cat/dog ``[[TN, FP], [FN, TP]]``. ``roc_auc`` (on the second class's
    probability) and ``threshold`` exist for two classes only; ``roc_auc`` is None too when the
    labels hold only one class. ``top5_accuracy`` is None for 5 classes or fewer. ``macro_f1``
    averages the F1 of the classes present in the labels or the predictions.

    Coverage: ``n`` images were scored (those with both a prediction and a label),
    ``missing_predictions`` labelled images had no prediction and ``unlabelled_predictions``
    predictions had no label; neither of those is in any score.
    """

    n: int
    accuracy: float
    log_loss: float
    roc_auc: float | None
    confusion: list[list[int]]
    threshold: float | None
    missing_predictions: int
    unlabelled_predictions: int = 0
    classes: list[str] = field(default_factory=lambda: list(CAT_DOG))
    macro_f1: float = 0.0
    top5_accuracy: float | None = None
    per_class: dict[str, ClassScores] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, as written to ``metrics.json``."""
        return asdict(self)


def roc_auc(labels: Sequence[int], probs: Sequence[float] | np.ndarray) -> float | None:
    """scikit-learn's ROC AUC of two classes (ties counted half), None with one class only.

    Example
    -------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    from sklearn.metrics import roc_auc_score

    if len(set(labels)) < 2:
        return None  # undefined: scikit-learn warns and returns nan
    return float(roc_auc_score(labels, probs))


def score(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    classes: Sequence[str] = CAT_DOG,
    threshold: float = THRESHOLD,
) -> Scores:
    """The scores of probabilities ``probs`` for true ``labels``.

    Parameters
    ----------
    labels : sequence of int
        Each image's true class, an index into ``classes``.
    probs : sequence of float or array of shape (n, len(classes))
        Each image's probabilities; a 1-D sequence is the probability of the second of two
        classes (of dog, for cat/dog).
    classes : sequence of str
        The class names, in the order of the probabilities.
    threshold : float
        Two classes: the second is predicted where its probability exceeds it. The default,
        0.5, predicts the class of the higher probability (the first of a tie), as for N classes.

    Raises
    ------
    CondormlError
        If there is no image, a label is not an index into ``classes`` or a probability is
        not one (outside [0, 1], nan).
    """
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    classes = [str(c) for c in classes]
    n_classes = len(classes)
    y = np.asarray(labels, dtype=int)
    if y.size == 0:
        raise CondormlError("no image has both a prediction and a label: nothing to evaluate")
    outside = y[(y < 0) | (y >= n_classes)]
    if outside.size:
        raise CondormlError(f"label {int(outside[0])} is not an index into the {n_classes} classes")
    p = _probability_rows(probs, n_classes, len(y))
    if not ((p >= 0.0) & (p <= 1.0)).all():  # nan compares false
        raise CondormlError("a probability outside [0, 1] (or nan): nothing can be scored")
    if n_classes == 2 and threshold != THRESHOLD:
        predicted = (p[:, 1] > threshold).astype(int)
    else:
        # np.argmax takes the first of a tie; for cat/dog that is today's "dog if prob > 0.5"
        # (1 - p > p exactly when p < 0.5 in floating point, both 0.5 at 0.5).
        predicted = p.argmax(axis=1)
    every = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=every, zero_division=0.0
    )
    return Scores(
        n=len(y),
        accuracy=float(accuracy_score(y, predicted)),
        log_loss=float(log_loss(y, _normalised(p), labels=every)),
        roc_auc=roc_auc(y.tolist(), p[:, 1]) if n_classes == 2 else None,
        confusion=confusion_matrix(y, predicted, labels=every).tolist(),
        threshold=float(threshold) if n_classes == 2 else None,
        missing_predictions=0,
        unlabelled_predictions=0,
        classes=classes,
        macro_f1=float(f1_score(y, predicted, average="macro", zero_division=0.0)),
        top5_accuracy=(
            float(top_k_accuracy_score(y, p, k=TOP_K, labels=every)) if n_classes > TOP_K else None
        ),
        per_class={
            name: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
            for i, name in enumerate(classes)
        },
    )


def _probability_rows(probs: Sequence[float] | np.ndarray, n_classes: int, n: int) -> np.ndarray:
    """``probs`` as an (n, classes) float array; a 1-D one is the second of two classes'."""
    import numpy as np

    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:
        if n_classes != 2:
            raise ValueError(f"one probability per image needs two classes, not {n_classes}")
        p = np.stack([1.0 - p, p], axis=1)
    if p.shape != (n, n_classes):
        raise ValueError(f"probabilities of shape {p.shape}, expected ({n}, {n_classes})")
    return p


def _normalised(p: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to exactly 1: the CSV's rounding leaves them off by up to
    :data:`SUM_TOLERANCE`, which scikit-learn's log loss warns about."""
    sums = p.sum(axis=1, keepdims=True)
    return p / sums


def top_confusions(scores: Scores, k: int = 10) -> list[tuple[str, str, int]]:
    """The ``k`` most frequent mistakes as (true class, predicted class, count), most first
    (ties in class order); fewer when fewer pairs are ever confused."""
    pairs = [
        (-count, t, p)
        for t, row in enumerate(scores.confusion)
        for p, count in enumerate(row)
        if t != p and count
    ]
    return [(scores.classes[t], scores.classes[p], -neg) for neg, t, p in sorted(pairs)[:k]]


# --- labels ------------------------------------------------------------------------------------


def read_labels(
    path: Path, what: str = "--labels", classes: Sequence[str] | None = None
) -> pd.Series:
    """Each image's true class, as an index into ``classes``, in a Series indexed by file id.

    Parameters
    ----------
    path : Path
        A CSV ``fileid,label`` (a class name; or a whole number, an index into ``classes``,
        where no class has that name), a CSV ``fileid,is_dog`` (0/1, cat/dog only), or a
        labelled test set (a folder or ``.zip``, see :func:`condorml.job.layouts.prediction_set`).
    what : str
        The option or file role that named it, for messages.
    classes : sequence of str, optional
        The predictions' classes; None: cat, dog.

    Raises
    ------
    CondormlError
        For a missing or unreadable file, missing columns, a label that is no class of
        ``classes``, an id given twice, or a test set without labels; the message starts with
        ``what`` and the path.
    """
    classes = tuple(CAT_DOG if classes is None else classes)
    path = Path(path)
    if path.is_dir() or (path.is_file() and zipfile.is_zipfile(path)):
        return _test_set_labels(path, what, classes)
    truth = read_csv(path, what, dtype=str, keep_default_na=False)
    where = f"{what} {path}"
    if {"fileid", "label"} <= set(truth.columns):
        values = _label_indices(truth, where, classes)
    elif {"fileid", "is_dog"} <= set(truth.columns):
        if not is_cat_dog(classes):
            raise CondormlError(
                f"{where}: is_dog labels are for cat/dog predictions, not for the classes "
                f"{_listed(classes)}; give fileid,label (a class name or index)"
            )
        values = _is_dog(truth, where)
    else:
        raise CondormlError(
            f"{where}: expected the columns fileid,label (or fileid,is_dog for cat/dog)"
        )
    _refuse_duplicates(truth["fileid"], where)
    return values.set_axis(truth["fileid"]).rename("label")


def _is_dog(truth: pd.DataFrame, where: str) -> pd.Series:
    import pandas as pd

    values = pd.to_numeric(truth["is_dog"], errors="coerce")  # 1, 1.0 and " 1" are all a dog
    bad = ~values.isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise CondormlError(
            f"{where}: line {row + 2}, fileid {truth['fileid'].iloc[row]}: is_dog "
            f"{truth['is_dog'].iloc[row]!r} must be 0 or 1"
        )
    return values.astype(int)


def _label_indices(truth: pd.DataFrame, where: str, classes: tuple[str, ...]) -> pd.Series:
    """The ``label`` column as class indices: a name first, else a whole-number index."""
    import pandas as pd

    index = {name: i for i, name in enumerate(classes)}
    found: list[int] = []
    unknown: dict[str, None] = {}  # ordered, unique
    for row, (fileid, text) in enumerate(zip(truth["fileid"], truth["label"], strict=True)):
        label = text.strip()
        if label in index:
            found.append(index[label])
            continue
        if not label:
            raise CondormlError(f"{where}: line {row + 2}, fileid {fileid}: no label")
        if label.isascii() and label.isdigit():
            if int(label) >= len(classes):
                raise CondormlError(
                    f"{where}: line {row + 2}, fileid {fileid}: label {text!r} is not a class "
                    f"index (0 to {len(classes) - 1}) nor a class name"
                )
            found.append(int(label))
            continue
        unknown[label] = None
        found.append(-1)
    if unknown:
        raise CondormlError(_unknown_classes(where, list(unknown), classes))
    return pd.Series(found, dtype=int)


def _test_set_labels(path: Path, what: str, classes: tuple[str, ...]) -> pd.Series:
    """The labels a test set laid out like training data carries, as indices into ``classes``."""
    import pandas as pd

    from condorml.job.layouts import prediction_set

    try:
        images = prediction_set(path)
    except DataError as err:
        raise type(err)(f"{what} {err}") from None
    try:
        if images.labels is None:
            raise CondormlError(
                f"{what} {path}: a test set without labels (images in one folder); labels are "
                "needed: give a fileid,label CSV, or a test set in class folders, with a "
                "labels.csv or with Kaggle names"
            )
        if images.indexed or images.classes is None:
            # bare indices: already the predictions' class indices
            too_big = [label for label in images.labels if label >= len(classes)]
            if too_big:
                raise CondormlError(
                    f"{what} {path}: label {max(too_big)} is not a class index (the predictions "
                    f"have {len(classes)} classes)"
                )
            indices = list(images.labels)
        else:
            index = {name: i for i, name in enumerate(classes)}
            unknown = [name for name in images.classes if name not in index]
            present = {images.classes[label] for label in images.labels}
            unknown = [name for name in unknown if name in present]  # an empty class is harmless
            if unknown:
                raise CondormlError(_unknown_classes(f"{what} {path}", unknown, classes))
            indices = [index[images.classes[label]] for label in images.labels]
        return pd.Series(indices, index=pd.Index(images.ids, name="fileid"), name="label")
    finally:
        images.source.close()


def _unknown_classes(where: str, unknown: list[str], classes: Sequence[str]) -> str:
    return (
        f"{where}: the labels have classes the predictions do not: {_listed(unknown)} "
        f"(the predictions' classes: {_listed(classes)})"
    )


def _listed(names: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _refuse_duplicates(ids: pd.Series, where: str) -> None:
    repeated = ids[ids.duplicated()].unique()
    if len(repeated) == 1:
        raise CondormlError(
            f"{where}: fileid {repeated[0]} is given more than once; each image needs one row"
        )
    if len(repeated):
        shown = ", ".join(repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        raise CondormlError(
            f"{where}: {len(repeated)} fileids are given more than once ({shown}); "
            "each image needs one row"
        )


# --- predictions -------------------------------------------------------------------------------


def _checked_probabilities(preds: pd.DataFrame, path: Path) -> np.ndarray:
    """The (images, classes) probabilities of a predictions frame, each in [0, 1] and (for
    ``probs.csv``) each row summing to 1.

    Raises
    ------
    CondormlError
        Naming the file, the line, the fileid and the value of the first bad row.
    """
    import numpy as np

    classes = prediction_classes(preds)
    cat_dog = "prob" in preds.columns and is_cat_dog(classes)
    try:
        p = probability_matrix(preds)
    except ValueError:
        raise CondormlError(f"{path}: a probability is not a number") from None
    # nan compares false: refused too; for cat/dog only the prob column is in the file
    bad = ~((p >= 0.0) & (p <= 1.0))
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        shown = "prob" if cat_dog else f"P({classes[column]})"
        value = float(preds["prob"].iloc[row]) if cat_dog else float(p[row, column])
        raise CondormlError(
            f"{path}: line {row + 2}, fileid {preds['fileid'].iloc[row]}: {shown} {value!r} "
            "is not a probability (0 to 1)"
        )
    if not cat_dog:
        sums = p.sum(axis=1)
        off = np.abs(sums - 1.0) > SUM_TOLERANCE
        if off.any():
            row = int(off.argmax())
            raise CondormlError(
                f"{path}: line {row + 2}, fileid {preds['fileid'].iloc[row]}: the probabilities "
                f"of the {len(classes)} classes sum to {float(sums[row]):.6g}, not 1 "
                f"(within {SUM_TOLERANCE:g})"
            )
    return p


def evaluate_file(predictions: Path, labels: Path, output: Path | None = None) -> Scores:
    """Score a predictions CSV against labels, optionally writing ``metrics.json``.

    The images in both are scored; labelled images without a prediction and predictions
    without a label are counted in the result (and ``metrics.json``) and logged as a warning.

    Parameters
    ----------
    predictions : Path
        A ``dog_probs.csv`` or a ``probs.csv``.
    labels : Path
        A labels CSV or a labelled test set (see :func:`read_labels`).
    output : Path, optional
        Where to write the scores as JSON.

    Raises
    ------
    CondormlError
        For unreadable files or an unwritable ``output`` (checked before reading), a
        probability outside [0, 1], a ``probs.csv`` row not summing to 1, a label that is no
        class of the predictions, an id given twice, or no image in both.
    """
    import numpy as np

    if output is not None:
        check_output_file(output, "--output")
    check_input_file(predictions, "predictions")
    preds = read_predictions(predictions)
    classes = prediction_classes(preds)
    probs = _checked_probabilities(preds, predictions)
    _refuse_duplicates(preds["fileid"], str(predictions))
    truth = read_labels(labels, classes=classes).reset_index()
    rows = preds[["fileid"]].assign(row=np.arange(len(preds)))
    merged = rows.merge(truth, on="fileid", how="inner")
    missing = len(truth) - len(merged)
    unlabelled = len(preds) - len(merged)
    if merged.empty:
        raise CondormlError(
            f"no image has both a prediction in {predictions} ({len(preds)} rows) and a label in "
            f"{labels} ({len(truth)} rows): are they about the same images?"
        )
    if missing:
        log.warning("%d of %d labelled image(s) have no prediction in %s; scored the %d that do",
                    missing, len(truth), predictions, len(merged))  # fmt: skip
    if unlabelled:
        log.warning("%d of %d prediction(s) have no label in %s; they are not scored",
                    unlabelled, len(preds), labels)  # fmt: skip
    result = score(
        merged["label"].to_numpy(dtype=int), probs[merged["row"].to_numpy()], classes=classes
    )
    result = replace(result, missing_predictions=missing, unlabelled_predictions=unlabelled)
    if output is not None:
        try:
            atomic_write_text(output, json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as err:
            raise CondormlError(f"--output {output}: cannot write it ({err.strerror})") from None
    return result
