"""TensorBoard event files in the checkpoint folder (``--tensorboard``), continued across restarts.

The events go to ``CHECKPOINT_DIR/tensorboard/``, so they come back with every checkpoint and
``tensorboard --logdir RUN/members`` shows each member (``mNNN/ckpt/tensorboard``) as a run.
Per epoch (step = the epoch, 1-based) the columns of ``metrics.csv`` as ``epoch/<column>``; per
batch (step = batches trained since the start) ``batch/train_loss``.

A restarted run continues the same curves without duplicate steps: before writing, it removes
from the folder's event files every event past the checkpoint it resumes from (written after
that checkpoint by a run that then died), whatever the reader (the Python reader and the
Rust data server treat TensorBoard's own ``purge_step`` marker differently, and it cannot tell
epoch steps from batch steps). The writer is flushed before every checkpoint, so the files
that travel with a checkpoint hold exactly its events.

TensorBoard is an optional extra (``condorml[tensorboard]``), imported only here and only when
the option is on.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.fileio import atomic_write

log = logging.getLogger(__name__)

TENSORBOARD_FOLDER = "tensorboard"  # inside the checkpoint folder
EXTRA = "condorml[tensorboard]"
EPOCH_PREFIX = "epoch/"
BATCH_LOSS_TAG = "batch/train_loss"
EPOCH_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "val_top5_acc",
                 "lr", "images_per_s")  # fmt: skip
EVENT_FILE_MARK = "tfevents"


def require_tensorboard() -> None:
    """Raise :class:`CondormlError` (exit 2) if TensorBoard is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise CondormlError(
            f"--tensorboard needs TensorBoard, which is not installed: pip install '{EXTRA}'"
        )


def tensorboard_dir(checkpoint_dir: Path) -> Path:
    """Where a run's event files go: ``CHECKPOINT_DIR/tensorboard``."""
    return checkpoint_dir / TENSORBOARD_FOLDER


def _kept(event: Any, epoch: int, step: int) -> bool:
    """Whether an event belongs to the run up to (``epoch``, ``step``) (non-scalars always do)."""
    if not event.HasField("summary"):
        return True
    tags = [value.tag for value in event.summary.value]
    limit = epoch if all(tag.startswith(EPOCH_PREFIX) for tag in tags) else step
    return event.step <= limit


def drop_events_after(folder: Path, epoch: int, step: int) -> int:
    """Remove events past a checkpoint from the event files in ``folder``; return how many.

    ``epoch``: epochs the checkpoint has done (epoch scalars up to it stay); ``step``: batches
    trained since the start (batch scalars up to it stay). A file left with no scalars goes.
    """
    if not folder.is_dir():
        return 0
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in sorted(folder.glob(f"*{EVENT_FILE_MARK}*")):
        records = list(RawEventFileLoader(str(path)).Load())
        events = [Event.FromString(record) for record in records]
        kept = [r for r, e in zip(records, events, strict=True) if _kept(e, epoch, step)]
        if len(kept) == len(records):
            continue
        dropped += len(records) - len(kept)
        if not any(Event.FromString(record).HasField("summary") for record in kept):
            path.unlink()
            continue
        with atomic_write(path, "wb") as handle:
            writer = RecordWriter(handle)
            for record in kept:
                writer.write(record)
    return dropped


class TensorBoardLog:
    """Writes one run's scalars into ``CHECKPOINT_DIR/tensorboard``, continuing earlier runs.

    Parameters
    ----------
    checkpoint_dir : Path
        The run's checkpoint folder.
    epoch, step : int
        Where the run resumes: epochs done and batches trained since the start (0, 0 afresh:
        earlier events in the folder are then removed too).
    """

    def __init__(self, checkpoint_dir: Path, epoch: int, step: int) -> None:
        folder = tensorboard_dir(checkpoint_dir)
        dropped = drop_events_after(folder, epoch, step)
        if dropped:
            log.info("tensorboard: removed %d event(s) written after the checkpoint", dropped)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def batch(self, step: int, loss: float) -> None:
        """The mean training loss of batch number ``step`` (counted from the start)."""
        self.writer.add_scalar(BATCH_LOSS_TAG, loss, step)

    def epoch(self, row: dict[str, Any]) -> None:
        """An epoch's row of ``metrics.csv`` (columns without a value, NaN, are left out)."""
        for column in EPOCH_COLUMNS:
            value = row.get(column)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(EPOCH_PREFIX + column, value, row["epoch"])

    def flush(self) -> None:
        """Write everything so far to disk (before a checkpoint is saved)."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
