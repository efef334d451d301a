"""The predictions formats, shared by inference, shard merging, the ensemble and evaluation.

A model of exactly the classes ``cat``, ``dog`` writes ``dog_probs.csv``, the CHTC example's
format, so that existing consumers keep working: a header ``fileid,prob`` and one row per image,
``prob`` being the probability of "dog". Any other class list writes ``probs.csv``: ``fileid``,
``predicted`` (the class of the highest probability, the first of a tie) and one probability
column per class, named after it, in the class list's order; each row sums to 1.

condorml adds to both: rows sorted by id (numerically when every id is an integer), optional
``prob_std,n_models`` columns after them for an ensemble (``--with-stats``: the spread over the
models of the probability of dog, or of the predicted class), and a provenance sidecar
``<csv>.json`` beside the CSV that records, among the rest, the class list.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.fileio import atomic_write, atomic_write_text, read_csv
from condorml.job.files import CLASS_PROBS_FILE, PREDICTIONS_FILE

COLUMNS = ("fileid", "prob")
PREDICTED = "predicted"
STATS_COLUMNS = ("prob_std", "n_models")
SIDECAR_SUFFIX = ".json"
CAT_DOG = ("cat", "dog")  # the classes of dog_probs.csv
CAT_DOG_FILE = PREDICTIONS_FILE  # dog_probs.csv


def is_cat_dog(classes: Sequence[str]) -> bool:
    """Whether a class list is the CHTC example's: exactly ``cat``, ``dog`` (``dog_probs.csv``)."""
    return tuple(classes) == CAT_DOG


def predictions_name(classes: Sequence[str]) -> str:
    """The predictions CSV's name for a class list: ``dog_probs.csv`` or ``probs.csv``."""
    return CAT_DOG_FILE if is_cat_dog(classes) else CLASS_PROBS_FILE


def prediction_columns(classes: Sequence[str], with_stats: bool) -> list[str]:
    """The header of a predictions CSV for a class list."""
    head = list(COLUMNS) if is_cat_dog(classes) else ["fileid", PREDICTED, *classes]
    return head + list(STATS_COLUMNS if with_stats else ())


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
def prediction_writer(
    path: Path, with_stats: bool, classes: Sequence[str] = CAT_DOG
) -> Iterator[Any]:
    """Write a predictions CSV row by row, publishing it atomically when the block ends.

    Rows are written as they come, so memory stays flat; a reader sees the file only once it
    is complete. If the block raises, nothing is published.

    Yields
    ------
    callable
        ``write(fileid, probs, prob_std=0.0, n_models=1)``, ``probs`` one probability per class
        (for cat/dog only the dog's is written).
    """
    classes = tuple(classes)
    cat_dog = is_cat_dog(classes)
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(prediction_columns(classes, with_stats))
        names = io.StringIO()  # the id and class, quoted as the csv module quotes them
        quoted = csv.writer(names, lineterminator="")

        def write(
            fileid: str, probs: Sequence[float], prob_std: float = 0.0, n_models: int = 1
        ) -> None:
            stats = [format_prob(prob_std), str(n_models)] if with_stats else []
            if cat_dog:
                writer.writerow([fileid, format_prob(probs[1]), *stats])
                return
            values = [float(p) for p in probs]
            names.seek(0)
            names.truncate()
            quoted.writerow([fileid, classes[values.index(max(values))]])  # the first of a tie
            # format_prob of each value, joined at C speed: a row of 1,000 classes in 0.5 ms
            handle.write(",".join([names.getvalue(), *map(repr, values), *stats]) + "\n")

        yield write


def read_predictions(path: Path):
    """Read a predictions CSV into a DataFrame with ``fileid`` as text.

    The frame's ``attrs["classes"]`` is the class list: ``("cat", "dog")`` for
    ``fileid,prob``, else the columns between ``predicted`` and the statistics.

    Raises
    ------
    CondormlError
        If the file is missing, lacks the ``fileid,prob`` (or ``fileid,predicted,...``)
        columns, or holds a value that is not a number where one belongs.
    """
    # Everything as text, numbers converted by Python's float(): exact round trips of the
    # shortest reprs written by format_prob, whatever pandas' own float parser does.
    frame = read_csv(path, "predictions", dtype=str, keep_default_na=False)
    columns = list(frame.columns)
    if PREDICTED in columns and "fileid" in columns:
        classes = tuple(
            c for c in columns[columns.index(PREDICTED) + 1 :] if c not in STATS_COLUMNS
        )
        if len(classes) < 2:
            raise CondormlError(f"{path}: a {PREDICTED} column but fewer than two class columns")
    else:
        missing = [c for c in COLUMNS if c not in columns]
        if missing:
            raise CondormlError(
                f"{path}: not a predictions CSV (no {', '.join(missing)} column; expected fileid,prob or fileid,predicted,<classes>)"
            )
        classes = CAT_DOG
    named = classes if PREDICTED in columns else ()  # probs.csv: a column per class
    numbers = [c for c in ("prob", *named, "prob_std") if c in columns]
    try:
        for column in numbers:
            frame[column] = frame[column].map(float)
        if "n_models" in frame.columns:
            frame["n_models"] = frame["n_models"].map(int)
    except ValueError:
        raise CondormlError(
            f"{path}: a probability, prob_std or n_models value is not a number"
        ) from None
    frame.attrs["classes"] = classes
    return frame


def prediction_classes(frame: Any) -> tuple[str, ...]:
    """The class list of a frame :func:`read_predictions` read."""
    return tuple(frame.attrs.get("classes", CAT_DOG))


def probability_matrix(frame: Any):
    """The (images, classes) probabilities of a predictions frame, as floats (cat/dog: the
    probability of cat is 1 - that of dog)."""
    import numpy as np

    classes = prediction_classes(frame)
    if is_cat_dog(classes) and "prob" in frame.columns:
        dog = frame["prob"].to_numpy(dtype=float)
        return np.stack([1.0 - dog, dog], axis=1)
    return frame[list(classes)].to_numpy(dtype=float)


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
