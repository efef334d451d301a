"""Names of the files a job writes, without PyTorch, so that the readers of a run folder
(``collect``, ``watch``, ``report``) take them from the code that writes them.

``train`` writes into its checkpoint folder ``C/``: :data:`CHECKPOINT_FILE` (the checkpoint),
:data:`STATE_FILE` (its counters, readable without torch) and :data:`METRICS_FILE` (one row per
finished epoch); ``infer`` writes :data:`PREDICTIONS_FILE` (cat/dog) or :data:`CLASS_PROBS_FILE`
by default. A job's folders, log and streams are named here too, for the submit files that
declare them and the run folder that receives them.
"""

from __future__ import annotations

from pathlib import PurePosixPath

CHECKPOINT_FILE = "model.pth"
STATE_FILE = "state.json"  # the counters of the last checkpoint, readable without torch
METRICS_FILE = "metrics.csv"
PREDICTIONS_FILE = "dog_probs.csv"  # the predictions of a cat/dog model (the CHTC example's)
CLASS_PROBS_FILE = "probs.csv"  # the predictions of any other classes
PREDICTION_FILES = (PREDICTIONS_FILE, CLASS_PROBS_FILE)  # condorml.results.predictions' formats


CHECKPOINT_FOLDER = "ckpt"  # a training job's --checkpoint-dir, in its sandbox and initialdir
RESULTS_FOLDER = "out"  # where an inference job writes its predictions and returns them


def job_log_name(kind: str) -> str:
    """The ``log`` of a ``train``, ``infer`` or ``collect`` job, relative to its initialdir."""
    return f"{kind}.log"


def job_stream_name(kind: str, stream: str, job: str) -> str:
    """A job's ``output`` (``stream="out"``) or ``error`` (``"err"``) file: ``KIND.JOB.STREAM``.

    ``job`` is ``CLUSTER.PROC``, or the ``$(ClusterId).$(ProcId)`` macros in a description.
    """
    return f"{kind}.{job}.{stream}"


def shard_part_name(output: str, proc: str) -> str:
    """An inference shard's CSV: ``<stem>.part<proc><suffix>`` (``proc``: a number or a macro)."""
    path = PurePosixPath(output)
    return f"{path.stem}.part{proc}{path.suffix}"
