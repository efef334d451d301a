"""Score a ``dog_probs.csv`` against labels: accuracy, log loss, ROC AUC, confusion matrix.

Labels are a CSV ``fileid,is_dog`` (what ``condorml data synth`` writes as ``test_labels.csv``).
Only images present in both files are scored; images without a prediction (undecodable ones,
say) are counted and reported, predictions without a label are an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from condorml.errors import CondormlError
from condorml.fileio import atomic_write_text
from condorml.predictions import read_predictions

if TYPE_CHECKING:
    import pandas as pd

THRESHOLD = 0.5
_EPS = 1e-15  # probabilities are clipped to [eps, 1 - eps] for the log loss, as scikit-learn does


@dataclass(frozen=True)
class Scores:
    """Evaluation results; ``confusion`` is ``[[TN, FP], [FN, TP]]`` (rows: truth cat, dog)."""

    n: int
    accuracy: float
    log_loss: float
    roc_auc: float | None
    confusion: list[list[int]]
    threshold: float
    missing_predictions: int

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
    )


def read_labels(path: Path, what: str = "--labels") -> pd.Series:
    """A ``fileid,is_dog`` CSV as a Series of 0/1 indexed by file id.

    Raises
    ------
    CondormlError
        For a missing or unreadable file, missing columns, or labels other than 0/1; the message
        starts with ``what`` (the option or file role) and the path.
    """
    import pandas as pd

    try:
        truth = pd.read_csv(path, dtype={"fileid": str}, keep_default_na=False)
    except FileNotFoundError:
        raise CondormlError(f"{what} {path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CondormlError(f"{what} {path}: not a CSV file ({err})") from None
    if not {"fileid", "is_dog"} <= set(truth.columns):
        raise CondormlError(f"{what} {path}: expected the columns fileid,is_dog")
    if not truth["is_dog"].isin([0, 1]).all():
        raise CondormlError(f"{what} {path}: is_dog must be 0 or 1")
    return truth.set_index("fileid")["is_dog"].astype(int)


def evaluate_file(predictions: Path, labels: Path, output: Path | None = None) -> Scores:
    """Score a predictions CSV against a labels CSV, optionally writing ``metrics.json``.

    Raises
    ------
    CondormlError
        For unreadable files, labels other than 0/1, or predictions of unlabelled images.
    """
    preds = read_predictions(predictions)
    truth = read_labels(labels).reset_index()
    merged = preds.merge(truth, on="fileid", how="left")
    unlabelled = merged[merged["is_dog"].isna()]["fileid"].tolist()
    if unlabelled:
        raise CondormlError(
            f"{predictions}: {len(unlabelled)} image(s) have no label in {labels} (first: {unlabelled[0]})"
        )
    result = score([int(v) for v in merged["is_dog"]], merged["prob"].tolist())
    missing = len(set(truth["fileid"]) - set(preds["fileid"]))
    result = Scores(**{**result.to_dict(), "missing_predictions": missing})
    if output is not None:
        atomic_write_text(output, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
