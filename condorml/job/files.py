"""Names of the files a job writes, without PyTorch, so that the readers of a run folder
(``collect``, ``watch``, ``report``) take them from the code that writes them.

``train`` writes into its checkpoint folder ``C/``: :data:`CHECKPOINT_FILE` (the checkpoint),
:data:`STATE_FILE` (its counters, readable without torch) and :data:`METRICS_FILE` (one row per
finished epoch); ``infer`` writes :data:`PREDICTIONS_FILE` by default.
"""

from __future__ import annotations

CHECKPOINT_FILE = "model.pth"
STATE_FILE = "state.json"  # the counters of the last checkpoint, readable without torch
METRICS_FILE = "metrics.csv"
PREDICTIONS_FILE = "dog_probs.csv"  # condorml infer's default --output
