"""What a training checkpoint holds, and resuming from one.

A checkpoint holds the modules (model, optimizer, scheduler, scaler), every RNG state and a
:class:`TrainState`: the position inside the epoch, the epoch's data order, the running sums of
its metrics and the run's counters. With all of it, a run cut into any number of pieces ends
bit-identical (on the CPU) to one that never stopped. Beside the checkpoint go ``metrics.csv``
(one row per finished epoch) and ``state.json`` (the counters, readable without torch).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from condorml import __version__
from condorml.architectures import job_value
from condorml.config import IDENTITY_FIELDS, TrainConfig
from condorml.errors import CondormlError, ConfigMismatchError
from condorml.fileio import atomic_write, atomic_write_text
from condorml.job.checkpoint import (
    capture_rng_state,
    checkpoint_files,
    discard_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from condorml.job.files import METRICS_FILE, STATE_FILE

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1",
                  "val_top5_acc", "lr", "seconds", "images_per_s")  # fmt: skip
# What a checkpoint written before classes were recorded was trained on.
LEGACY_CLASSES = ("cat", "dog")


@dataclass
class TrainState:
    """Where a run is, besides what the modules hold."""

    epoch: int = 0  # completed epochs = index of the epoch in progress
    batch: int = 0  # completed batches of that epoch
    order: torch.Tensor | None = None  # training positions of that epoch, in visiting order
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0  # time spent on that epoch, over all runs
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: int = 0
    runs: int = 0
    wall_before: float = 0.0  # wall time of earlier runs

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainState:
        """The state a checkpoint (as :func:`checkpoint_contents` made it) recorded."""
        loss_sum, correct, seen, seconds = saved["epoch_sums"]
        counters = saved["counters"]
        return cls(
            epoch=saved["epoch"],
            batch=saved["batch"],
            order=saved["order"],
            loss_sum=loss_sum,
            correct=correct,
            seen=seen,
            seconds=seconds,
            metrics=list(saved["metrics"]),
            checkpoints=counters["checkpoints"],
            runs=counters["runs"],
            wall_before=counters["wall_seconds"],
        )

    def next_epoch(self) -> None:
        """Start the next epoch: its batch count, order and sums from zero."""
        self.epoch += 1
        self.batch, self.order, self.loss_sum, self.correct, self.seen = 0, None, 0.0, 0, 0
        self.seconds = 0.0


@dataclass
class Modules:
    """The modules a training run updates; all go into its checkpoint."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None

    def load(self, saved: dict[str, Any]) -> None:
        """Load the modules' states and the RNG states from a checkpoint."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        restore_rng_state(saved["rng"])


def checkpoint_contents(record: dict[str, Any], state: TrainState, modules: Modules,
                        run_seconds: float, finished: bool) -> dict[str, Any]:  # fmt: skip
    """Everything a checkpoint holds; ``run_seconds``: the wall time of this run so far."""
    return {
        "config": record,
        "epoch": state.epoch,
        "batch": state.batch,
        "order": state.order,
        "epoch_sums": [state.loss_sum, state.correct, state.seen, state.seconds],
        "metrics": state.metrics,
        "counters": {
            "checkpoints": state.checkpoints,
            "runs": state.runs,
            "wall_seconds": state.wall_before + run_seconds,
        },
        "model": modules.model.state_dict(),
        "optimizer": modules.optimizer.state_dict(),
        "scheduler": modules.scheduler.state_dict(),
        "scaler": modules.scaler.state_dict() if modules.scaler is not None else None,
        "rng": capture_rng_state(),
        "finished": finished,
    }


def save_run(config: TrainConfig, checkpoint: dict[str, Any], live_off: str = "") -> None:
    """Write the checkpoint, ``metrics.csv`` and ``state.json`` into the checkpoint folder;
    ``live_off``: why live progress could not be published (kept in ``state.json``)."""
    save_checkpoint(checkpoint, config.checkpoint_dir)
    write_metrics(config.checkpoint_dir / METRICS_FILE, checkpoint["metrics"])
    summary = {key: checkpoint[key] for key in ("epoch", "batch", "finished")}
    summary.update(checkpoint["counters"], epochs=config.epochs, member=config.member,
                   classes=checkpoint["config"]["classes"])  # fmt: skip
    if live_off:
        summary["live_off"] = live_off
    atomic_write_text(config.checkpoint_dir / STATE_FILE, json.dumps(summary, indent=1) + "\n")


def write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    """Write one row per finished epoch (:data:`METRIC_COLUMNS`) as CSV, atomically."""
    import pandas as pd

    frame = pd.DataFrame(metrics, columns=list(METRIC_COLUMNS))
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, index=False)


def config_record(config: TrainConfig, data_fingerprint: str, precision: str,
                  classes: tuple[str, ...], model_sha256: str | None) -> dict[str, Any]:  # fmt: skip
    """The configuration as plain values, as stored in the checkpoint: the options, the data's
    fingerprint and class list, and a model file's SHA-256."""
    record = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()
    }
    record.update(
        data_fingerprint=data_fingerprint,
        classes=list(classes),
        model_sha256=model_sha256,
        precision=precision,
        condorml_version=__version__,
        torch_version=str(torch.__version__),
    )
    if model_sha256 is not None:  # the file's content is its identity, not where it lies
        record["model"] = job_value(config.model)
    return record


def saved_classes(record: dict[str, Any]) -> tuple[str, ...]:
    """The classes a checkpoint's configuration record was trained on."""
    return tuple(record.get("classes") or LEGACY_CLASSES)


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Raise ConfigMismatchError naming every identity field that differs."""
    saved = {
        **saved,
        "classes": list(saved_classes(saved)),
        "model_sha256": saved.get("model_sha256"),
    }
    if saved_classes(saved) != tuple(current["classes"]):
        raise ConfigMismatchError(
            f"{where} was trained on other classes ({', '.join(saved_classes(saved))}), not "
            f"{', '.join(current['classes'])}; use the same data, another --checkpoint-dir, or "
            "--force-restart to start over"
        )
    fields = [*IDENTITY_FIELDS, "data_fingerprint", "model_sha256"]
    if current["scheduler"] != "constant":  # the schedule's length depends on the epoch count
        fields.append("epochs")
    if current["precision"] != "auto":
        fields.append("precision")
    differing = [
        f"{name} {saved.get(name)!r} -> {current[name]!r}"
        for name in fields
        if saved.get(name) != current[name]
    ]
    if differing:
        raise ConfigMismatchError(
            f"{where} was written by another configuration ({'; '.join(differing)}); use the same "
            "options, another --checkpoint-dir, or --force-restart to start over"
        )


def resume_point(config: TrainConfig, data_fingerprint: str, classes: tuple[str, ...] = LEGACY_CLASSES,
                 model_sha256: str | None = None,
                 legacy_fingerprint: str | None = None) -> dict[str, Any] | None:  # fmt: skip
    """The checkpoint to resume from, or None to start afresh.

    ``legacy_fingerprint``: the data's fingerprint as an older condorml recorded it (file names
    and sizes), which is accepted too.

    With ``force_restart``, a checkpoint that cannot be loaded or belongs to another
    configuration is renamed to ``*.discarded``; a matching one is still resumed, so the flag is
    safe in a job that HTCondor restarts with the same arguments after exit 85.
    """
    current = config_record(config, data_fingerprint, config.precision, classes, model_sha256)
    try:
        saved = load_checkpoint(config.checkpoint_dir)
        if saved is not None:
            recorded = saved["config"]
            if (
                legacy_fingerprint is not None
                and recorded.get("data_fingerprint") == legacy_fingerprint
            ):
                # written before fingerprints covered contents: the data's names and sizes match
                recorded = {**recorded, "data_fingerprint": data_fingerprint}
            check_same_run(recorded, current, config.checkpoint_dir)
        return saved
    except CondormlError as err:
        # a transient failure (an I/O error) says nothing about the files: never discard them
        if err.transient or not config.force_restart or not checkpoint_files(config.checkpoint_dir):
            raise
        moved = discard_checkpoints(config.checkpoint_dir)
        log.warning(
            "--force-restart: %s; kept it as %s and starting over",
            err,
            ", ".join(str(path) for path in moved),
        )
        return None
