"""Score a ``dog_probs.csv`` against labels: accuracy, log loss, ROC AUC, confusion matrix.

Labels are a CSV ``fileid,is_dog`` (what ``condorml data synth`` writes as ``test_labels.csv``).
Only images present in both files are scored. Labelled images without a prediction (undecodable
ones, a subset predicted) and predictions without a label are counted, recorded and warned
about, not refused; an empty overlap is an error. A ``prob`` outside [0, 1] (or nan), a label
other than 0/1 and a ``fileid`` given twice in either file are errors naming the file, the line
and the value: they would otherwise give a nan log loss, a wrong AUC or an image counted twice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from condorml.errors import CondormlError
from condorml.fileio import atomic_write_text, check_input_file, check_output_file, read_csv
from condorml.results.predictions import read_predictions

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
THRESHOLD = 0.5
_EPS = 1e-15  # probabilities are clipped to [eps, 1 - eps] for the log loss, as scikit-learn does


@dataclass(frozen=True)
class Scores:
    """Evaluation results; ``confusion`` is ``[[TN, FP], [FN, TP]]`` (rows: truth cat, dog).

    Coverage, as recorded in ``metrics.json``: ``n`` images were scored (those with both a
    prediction and a label), ``missing_predictions`` labelled images had no prediction and
    ``unlabelled_predictions`` predictions had no label; neither of those is in any score.
    """

    n: int
    accuracy: float
    log_loss: float
    roc_auc: float | None
    confusion: list[list[int]]
    threshold: float
    missing_predictions: int
    unlabelled_predictions: int = 0

    def to_dict(self) -> dict:
        """Plain dict, as written to ``metrics.json``."""
        return asdict(self)


def roc_auc(labels: list[int], probs: list[float]) -> float | None:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half.

    Returns None when only one class is present (the AUC is undefined).

    Example
    -------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    import pandas as pd

    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(probs).rank(method="average")
    pos_rank_sum = float(sum(r for r, y in zip(ranks, labels, strict=True) if y == 1))
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def score(labels: list[int], probs: list[float], threshold: float = THRESHOLD) -> Scores:
    """Compute the scores of probabilities ``probs`` for true ``labels`` (1 = dog)."""
    if not labels:
        raise CondormlError("no image has both a prediction and a label: nothing to evaluate")
    predicted = [int(p > threshold) for p in probs]
    tp = sum(1 for y, p in zip(labels, predicted, strict=True) if y == 1 and p == 1)
    tn = sum(1 for y, p in zip(labels, predicted, strict=True) if y == 0 and p == 0)
    fp = sum(1 for y, p in zip(labels, predicted, strict=True) if y == 0 and p == 1)
    fn = len(labels) - tp - tn - fp
    losses = []
    for y, p in zip(labels, probs, strict=True):
        p = min(max(p, _EPS), 1 - _EPS)
        losses.append(-math.log(p if y == 1 else 1 - p))
    return Scores(
        n=len(labels),
        accuracy=(tp + tn) / len(labels),
        log_loss=sum(losses) / len(losses),
        roc_auc=roc_auc(labels, probs),
        confusion=[[tn, fp], [fn, tp]],
        threshold=threshold,
        missing_predictions=0,
        unlabelled_predictions=0,
    )


def read_labels(path: Path, what: str = "--labels") -> pd.Series:
    """A ``fileid,is_dog`` CSV as a Series of 0/1 indexed by file id.

    Raises
    ------
    CondormlError
        For a missing or unreadable file, missing columns, labels other than 0/1 or an id given
        twice; the message starts with ``what`` (the option or file role) and the path.
    """
    import pandas as pd

    truth = read_csv(path, what, dtype=str, keep_default_na=False)
    if not {"fileid", "is_dog"} <= set(truth.columns):
        raise CondormlError(f"{what} {path}: expected the columns fileid,is_dog")
    values = pd.to_numeric(truth["is_dog"], errors="coerce")  # 1, 1.0 and " 1" are all a dog
    bad = ~values.isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise CondormlError(
            f"{what} {path}: line {row + 2}, fileid {truth['fileid'].iloc[row]}: is_dog "
            f"{truth['is_dog'].iloc[row]!r} must be 0 or 1"
        )
    _refuse_duplicates(truth["fileid"], f"{what} {path}")
    return values.astype(int).set_axis(truth["fileid"]).rename("is_dog")


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


def _refuse_non_probabilities(preds: pd.DataFrame, path: Path) -> None:
    probs = preds["prob"].to_numpy(dtype=float)
    bad = ~((probs >= 0.0) & (probs <= 1.0))  # nan compares false: refused too
    if bad.any():
        row = int(bad.argmax())
        raise CondormlError(
            f"{path}: line {row + 2}, fileid {preds['fileid'].iloc[row]}: prob {float(probs[row])!r} "
            "is not a probability (0 to 1)"
        )


def evaluate_file(predictions: Path, labels: Path, output: Path | None = None) -> Scores:
    """Score a predictions CSV against a labels CSV, optionally writing ``metrics.json``.

    The images in both files are scored; labelled images without a prediction and predictions
    without a label are counted in the result (and ``metrics.json``) and logged as a warning.

    Raises
    ------
    CondormlError
        For unreadable files or an unwritable ``output`` (checked before reading), a prob
        outside [0, 1], labels other than 0/1, an id given twice, or no image in both files.
    """
    if output is not None:
        check_output_file(output, "--output")
    check_input_file(predictions, "predictions")
    preds = read_predictions(predictions)
    _refuse_non_probabilities(preds, predictions)
    _refuse_duplicates(preds["fileid"], str(predictions))
    truth = read_labels(labels).reset_index()
    merged = preds.merge(truth, on="fileid", how="inner")
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
    result = score([int(v) for v in merged["is_dog"]], merged["prob"].tolist())
    result = Scores(
        **{**result.to_dict(), "missing_predictions": missing, "unlabelled_predictions": unlabelled}
    )
    if output is not None:
        try:
            atomic_write_text(output, json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as err:
            raise CondormlError(f"--output {output}: cannot write it ({err.strerror})") from None
    return result
