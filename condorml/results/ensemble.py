"""The ensemble of a sweep's members: which members join it, and its probabilities. One
computation, used by the collect step (the ensemble's CSV and ``metrics.json``) and by the report
(its ensemble row, confusion matrix and mistakes), so that both say the same.

* **Who joins** (:func:`choose_members`): every member with predictions, or the ``top_k`` best by
  the run's metric (its last epoch's, ties by id, a member without it last: the search's
  :func:`~condorml.sweep.search.rank_key`).
* **Its probabilities** (:func:`average`): per image, the mean over the members that predicted it
  of each class's probability (cat/dog: of dog), with ``n_models`` and ``prob_std``, the
  population standard deviation of the probability of dog, or of the class the ensemble
  predicts, over those members.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml.results.predictions import is_cat_dog, prediction_writer, sort_ids
from condorml.sweep.search import METRICS, rank_key

if TYPE_CHECKING:
    import pandas as pd

STATS = ("prob_std", "n_models")


def value_columns(classes: Sequence[str]) -> list[str]:
    """The probability columns of a predictions frame: ``prob`` (cat/dog) or one per class."""
    return ["prob"] if is_cat_dog(classes) else list(classes)


def choose_members(
    metrics: Mapping[str, float | None], top_k: int | None, metric: str = "val_loss"
) -> list[str]:
    """The members that join the ensemble, best first: all of ``metrics``' members (those with
    predictions, each with its last epoch's ``metric``), or the ``top_k`` best."""
    direction = METRICS[metric]

    def key(member: str) -> tuple[float, str]:
        value = metrics[member]
        return rank_key(member, value if isinstance(value, int | float) else None, direction)

    ranked = sorted(metrics, key=key)
    return ranked if top_k is None else ranked[:top_k]


def average(frames: Mapping[str, pd.DataFrame], classes: Sequence[str]) -> pd.DataFrame:
    """The ensemble of the members' predictions (each a frame with ``fileid`` and the
    :func:`value_columns`, as :func:`~condorml.results.predictions.read_predictions` reads it).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``fileid`` in :func:`~condorml.results.predictions.sort_ids` order: the value
        columns (means), ``prob_std`` and ``n_models``.
    """
    import numpy as np
    import pandas as pd

    columns = value_columns(classes)
    table = pd.concat([frame[["fileid", *columns]] for frame in frames.values()])
    grouped = table.groupby("fileid")
    means = grouped[columns].mean()
    counts = grouped.size()
    if is_cat_dog(classes):
        spread = grouped["prob"].std()
    else:  # the spread of the ensemble's predicted class, image by image
        predicted = dict(zip(means.index, means.to_numpy().argmax(axis=1), strict=True))
        column = table["fileid"].map(predicted).to_numpy()
        picked = table[columns].to_numpy()[np.arange(len(table)), column]
        spread = pd.Series(picked, index=table["fileid"].to_numpy()).groupby(level=0).std()
    order = sort_ids(means.index)
    result = means.loc[order].copy()
    n = counts.loc[order].astype(int)
    # population standard deviation, like condorml infer's ensembles
    scale = np.sqrt(((n - 1) / n).where(n > 1, 0.0))
    result["prob_std"] = (spread.loc[order].fillna(0.0) * scale).where(n > 1, 0.0)
    result["n_models"] = n
    return result


def probabilities(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """An :func:`average` table's probability of each class (cat/dog: cat is 1 - dog), images
    by class."""
    import pandas as pd

    if is_cat_dog(classes):
        dog = table["prob"]
        return pd.DataFrame({classes[0]: 1.0 - dog, classes[1]: dog}, index=table.index)
    return table[list(classes)]


def write(table: pd.DataFrame, output: Path, classes: Sequence[str], with_stats: bool) -> None:
    """Write an :func:`average` table as the predictions CSV ``output`` (atomically)."""
    columns = value_columns(classes)
    values = table[columns].to_numpy(dtype=float)
    stds, counts = table["prob_std"].to_numpy(dtype=float), table["n_models"].to_numpy()
    with prediction_writer(output, with_stats, classes) as put:
        for k, fileid in enumerate(table.index):
            row = values[k].tolist()
            probs: Any = [1.0 - row[0], row[0]] if is_cat_dog(classes) else row
            put(fileid, probs, float(stds[k]), int(counts[k]))
