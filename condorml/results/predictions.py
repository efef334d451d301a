"""The ``dog_probs.csv`` format, shared by inference, shard merging and evaluation.

It keeps the CHTC example's format so that existing consumers keep working: a header
``fileid,prob`` and one row per image, ``prob`` being the probability of "dog". condorml adds:
rows sorted by id (numerically when every id is an integer), optional ``prob_std,n_models``
columns after them for an ensemble (``--with-stats``), and a provenance sidecar
``dog_probs.csv.json`` beside the CSV.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.fileio import atomic_write, atomic_write_text, read_csv

COLUMNS = ("fileid", "prob")
STATS_COLUMNS = ("prob_std", "n_models")
SIDECAR_SUFFIX = ".json"


def sidecar_path(csv_path: Path) -> Path:
    """``dog_probs.csv`` -> ``dog_probs.csv.json``."""
    return csv_path.with_name(csv_path.name + SIDECAR_SUFFIX)


def _is_integer(text: str) -> bool:
    return text.isascii() and text.isdigit()


def sort_ids(ids: Iterable[str]) -> list[str]:
    """Sort image ids numerically when all are integers, else as text.

    Example
    -------
    >>> sort_ids(["10", "9", "100"])
    ['9', '10', '100']
    >>> sort_ids(["b", "a10", "a9"])
    ['a10', 'a9', 'b']
    """
    ids = list(ids)
    if all(_is_integer(i) for i in ids):
        return sorted(ids, key=lambda i: (int(i), i))
    return sorted(ids)


def format_prob(value: float) -> str:
    """Python's shortest round-tripping float text, as the example wrote it."""
    return repr(float(value))


@contextmanager
def prediction_writer(path: Path, with_stats: bool) -> Iterator[Any]:
    """Write a predictions CSV row by row, publishing it atomically when the block ends.

    Rows are written as they come, so memory stays flat; a reader sees the file only once it
    is complete. If the block raises, nothing is published.

    Yields
    ------
    callable
        ``write(fileid, prob, prob_std=None, n_models=None)``.
    """
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS + (STATS_COLUMNS if with_stats else ()))

        def write(fileid: str, prob: float, prob_std: float = 0.0, n_models: int = 1) -> None:
            row = [fileid, format_prob(prob)]
            if with_stats:
                row += [format_prob(prob_std), str(n_models)]
            writer.writerow(row)

        yield write


def read_predictions(path: Path):
    """Read a predictions CSV into a DataFrame with ``fileid`` as text.

    Raises
    ------
    CondormlError
        If the file is missing or lacks the ``fileid,prob`` columns.
    """
    # Everything as text, numbers converted by Python's float(): exact round trips of the
    # shortest reprs written by format_prob, whatever pandas' own float parser does.
    frame = read_csv(path, "predictions", dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise CondormlError(f"{path}: not a predictions CSV (no {', '.join(missing)} column)")
    try:
        for column in ("prob", "prob_std"):
            if column in frame.columns:
                frame[column] = frame[column].map(float)
        if "n_models" in frame.columns:
            frame["n_models"] = frame["n_models"].map(int)
    except ValueError:
        raise CondormlError(f"{path}: a prob, prob_std or n_models value is not a number") from None
    return frame


def write_sidecar(csv_path: Path, record: dict[str, Any]) -> Path:
    """Write the provenance sidecar of ``csv_path`` atomically."""
    path = sidecar_path(csv_path)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_sidecar(csv_path: Path) -> dict[str, Any] | None:
    """The sidecar of ``csv_path``, or None if there is none.

    Raises
    ------
    CondormlError
        If the sidecar exists but is not valid JSON.
    """
    path = sidecar_path(csv_path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CondormlError(f"{path}: unreadable provenance sidecar ({err})") from None
