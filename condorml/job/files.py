"""Names of the files a job writes, without PyTorch, so that the readers of a run folder
(``collect``, ``watch``, ``report``) take them from the code that writes them.

``train`` writes into its checkpoint folder ``C/``: :data:`CHECKPOINT_FILE` (the checkpoint),
:data:`STATE_FILE` (its counters, readable without torch) and :data:`METRICS_FILE` (one row per
finished epoch); ``infer`` writes :data:`PREDICTIONS_FILE` (cat/dog) or :data:`CLASS_PROBS_FILE`
by default.
"""

from __future__ import annotations

from pathlib import PurePosixPath

CHECKPOINT_FILE = "model.pth"
STATE_FILE = "state.json"  # the counters of the last checkpoint, readable without torch
METRICS_FILE = "metrics.csv"
PREDICTIONS_FILE = "dog_probs.csv"  # the predictions of a cat/dog model (the CHTC example's)
CLASS_PROBS_FILE = "probs.csv"  # the predictions of any other classes
PREDICTION_FILES = (PREDICTIONS_FILE, CLASS_PROBS_FILE)  # condorml.results.predictions' formats


def shard_part_name(output: str, proc: str) -> str:
    """An inference shard's CSV: ``<stem>.part<proc><suffix>`` (``proc``: a number or a macro)."""
    path = PurePosixPath(output)
    return f"{path.stem}.part{proc}{path.suffix}"
