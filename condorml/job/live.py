"""The live progress a training job publishes into its own job ad (HTCondor's Chirp), by name.

One table for the writer (the trainer, through :mod:`condorml.job.chirp`) and the readers
(``condorml watch``, the README's ``condor_q -af`` line, the local backend's job ads). No torch.
Every attribute has the prefix ``Condorml`` so that ``condor_q -af`` lines and print formats
stay short and never collide with HTCondor's own attributes.
"""

from __future__ import annotations

ATTRIBUTE_PREFIX = "Condorml"

# progress key -> (job ad attribute, what it is)
LIVE_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "epoch": ("CondormlEpoch", "the epoch being trained, 1-based (the last one once finished)"),
    "epochs": ("CondormlEpochs", "the epochs of the budget (--epochs)"),
    "batch": ("CondormlBatch", "batches of the current epoch done"),
    "batches": ("CondormlBatches", "batches per epoch"),
    "images_per_s": ("CondormlImagesPerSecond", "training images per second in this run"),
    "train_loss": ("CondormlTrainLoss", "mean training loss of the current epoch so far"),
    "train_acc": ("CondormlTrainAcc", "training accuracy of the current epoch so far"),
    "val_loss": ("CondormlValLoss", "validation loss of the last finished epoch"),
    "val_acc": ("CondormlValAcc", "validation accuracy of the last finished epoch"),
    "checkpoints": ("CondormlCheckpoints", "checkpoints written by this job (all its runs)"),
    "updated": ("CondormlUpdated", "when this was published (Unix time)"),
}


def attribute(key: str) -> str:
    """The job ad attribute of a progress key (``"val_acc"`` -> ``"CondormlValAcc"``)."""
    return LIVE_ATTRIBUTES[key][0]
