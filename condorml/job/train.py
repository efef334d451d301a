"""The checkpointing trainer: HTCondor's self-checkpointing protocol with exact resume.

Every ``checkpoint_every`` epochs (and, with ``checkpoint_minutes`` above 0, at the first batch
boundary after that many minutes of this run; 0 turns that off) the trainer writes
``C/model.pth`` and returns ``"checkpointed"``; the CLI turns that into exit code 85, and
HTCondor transfers the checkpoint and runs the same command again. Every start resumes from
``C/model.pth``. Because the checkpoint holds the model, optimizer, scheduler, scaler, the
position inside the epoch, the epoch's data order, the running sums of its metrics and every RNG
state, a run cut into any number of pieces ends bit-identical (on the CPU) to one that never
stopped. The checkpoint folder is checked writable before any training.

Reading order, like ``pytorch/examples``: configuration, setup, ``train_one_epoch`` and
``evaluate``, then :func:`train`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from condorml import __version__
from condorml.config import IDENTITY_FIELDS, TrainConfig
from condorml.errors import CondormlError, ConfigMismatchError
from condorml.fileio import atomic_write, atomic_write_text
from condorml.job.checkpoint import (
    CHECKPOINT_EXIT_CODE,
    CHECKPOINT_FILE,
    capture_rng_state,
    check_checkpoint_dir,
    checkpoint_files,
    discard_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from condorml.job.data import ImageSource, fingerprint, split_indices, training_images
from condorml.job.devices import autocast, job_cpus, resolve_device, resolve_precision
from condorml.job.imagecache import DecodedImages, default_cache_dir, load_decoded
from condorml.job.models import InputNormalizer, build_model, model_spec
from condorml.progress import NullProgress, Progress

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
STATE_FILE = "state.json"  # the counters of the last checkpoint, readable without torch
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
    "images_per_s",
)
EXIT_CODES = {"finished": 0, "checkpointed": CHECKPOINT_EXIT_CODE}


@dataclass
class TrainResult:
    """What a call to :func:`train` did.

    Attributes
    ----------
    status : str
        ``"finished"``, ``"checkpointed"`` (run again to continue) or ``"interrupted"`` (a
        signal stopped it at a safe point, after saving).
    epochs_done : int
        Completed epochs.
    metrics : list of dict
        One row per completed epoch (see :data:`METRIC_COLUMNS`).
    signal : int or None
        The signal that interrupted the run.
    """

    status: str
    epochs_done: int
    checkpoint: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        """0 finished, 85 checkpointed, 128 + signal number when interrupted."""
        return EXIT_CODES.get(self.status, 128 + (self.signal or 0))


@dataclass
class _Progress:
    """The state a checkpoint captures, besides what the modules hold."""

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


class _Batches:
    """Training batches: rows of the decoded images, normalised by an :class:`InputNormalizer`.

    Rows are read into one reused ``uint8`` staging array, so a batch is valid until the next
    call of :meth:`get`.
    """

    def __init__(
        self, images: DecodedImages, model_name: str, device: torch.device, precision: str
    ) -> None:
        self.images, self.device = images, device
        size = images.pixels.shape[1]
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.normalize = InputNormalizer(model_spec(model_name), size, device, dtype)
        self.labels = torch.from_numpy(images.labels)
        self._stage = np.empty((0, size, size, 3), dtype=np.uint8)

    def get(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised images (N, 3, S, S, channels-last) and labels at ``positions``."""
        # Reading rows in file order is faster; the loss does not care about the order.
        positions = positions.sort().values
        if len(self._stage) < len(positions):
            self._stage = np.empty((len(positions), *self._stage.shape[1:]), dtype=np.uint8)
        stage = self._stage[: len(positions)]
        self.images.gather(self.images.rows[positions.numpy()], stage)
        x = self.normalize(torch.from_numpy(stage))
        return x, self.labels[positions].to(self.device, non_blocking=True)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The visiting order of the training positions in one epoch; a pure function of its inputs."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    kwargs = {"lr": config.lr, "weight_decay": config.weight_decay}
    try:  # one fused kernel instead of a dozen per parameter, where the device has one
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


def _scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.scheduler == "step":  # divide by 10 at one and two thirds of training
        milestones = sorted({max(1, config.epochs // 3), max(1, 2 * config.epochs // 3)})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str,
) -> tuple[float, int]:
    """One optimisation step; returns (summed loss, correct predictions) over the batch."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, precision):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    correct = int((logits.argmax(1) == y).sum())
    return float(loss.detach()) * len(y), correct


def validate(
    model: nn.Module, batches: _Batches, positions: torch.Tensor, batch_size: int, precision: str
) -> tuple[float, float]:
    """Mean loss and accuracy over ``positions``; (nan, nan) when there are none."""
    if len(positions) == 0:
        return math.nan, math.nan
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(positions), batch_size):
            x, y = batches.get(positions[start : start + batch_size])
            with autocast(x.device, precision):
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    model.train()
    return loss_sum / len(positions), correct / len(positions)


@contextmanager
def _stop_signals() -> Iterator[dict[str, int]]:
    """Turn SIGTERM (an eviction) and SIGINT into a flag checked at safe points."""
    received: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        received.setdefault("signal", signum)
        log.warning("received %s: stopping at the next safe point", signal.Signals(signum).name)
        signal.signal(signum, previous[signum])  # a second signal acts at once

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Raise ConfigMismatchError naming every identity field that differs."""
    fields = [*IDENTITY_FIELDS, "data_fingerprint"]
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


def _resume_point(config: TrainConfig, data_fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start afresh.

    With ``force_restart``, a checkpoint that cannot be loaded or belongs to another
    configuration is renamed to ``*.discarded``; a matching one is still resumed, so the flag is
    safe in a job that HTCondor restarts with the same arguments after exit 85.
    """
    current = _config_record(config, data_fingerprint, config.precision)
    try:
        saved = load_checkpoint(config.checkpoint_dir)
        if saved is not None:
            _check_same_run(saved["config"], current, config.checkpoint_dir)
        return saved
    except CondormlError as err:
        if not config.force_restart or not checkpoint_files(config.checkpoint_dir):
            raise
        moved = discard_checkpoints(config.checkpoint_dir)
        log.warning(
            "--force-restart: %s; kept it as %s and starting over",
            err,
            ", ".join(str(path) for path in moved),
        )
        return None


def _config_record(config: TrainConfig, data_fingerprint: str, precision: str) -> dict[str, Any]:
    """The configuration as plain values, as stored in the checkpoint."""
    record = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()
    }
    record.update(
        data_fingerprint=data_fingerprint,
        precision=precision,
        condorml_version=__version__,
        torch_version=str(torch.__version__),
    )
    return record


def _write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    import pandas as pd

    frame = pd.DataFrame(metrics, columns=list(METRIC_COLUMNS))
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, index=False)


def _decode_progress(progress: Progress) -> Callable[[int, int], None]:
    """Adapt the image cache's (done, total) callback to a Progress."""
    reported = [0]

    def report(done: int, total: int) -> None:
        if reported[0] == 0:
            progress.start("decoding images", total)
        progress.advance(done - reported[0])
        reported[0] = done
        if done >= total:
            progress.finish()

    return report


def train(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train (or resume training) one model, checkpointing the HTCondor way.

    Parameters
    ----------
    config : TrainConfig
        The run's configuration.
    progress : Progress, optional
        Receives per-batch progress (the CLI shows a bar or log lines).

    Returns
    -------
    TrainResult
        ``status`` says whether training finished, checkpointed or was interrupted;
        ``exit_code`` is what the process should exit with (0, 85, or 128 + signal).

    Raises
    ------
    CondormlError
        For bad options, unusable data, or a checkpoint that cannot be resumed.

    Example
    -------
    >>> result = train(TrainConfig(Path("data"), Path("ckpt"), epochs=2, checkpoint_every=1))  # doctest: +SKIP
    >>> result.status, result.exit_code  # doctest: +SKIP
    ('checkpointed', 85)
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    config.validate()
    device = resolve_device(config.device)
    cpus = job_cpus()
    torch.set_num_threads(cpus)
    source = ImageSource(config.data_dir)
    try:
        listed = training_images(source)
        data_fingerprint = fingerprint([image.file for image in listed])
        check_checkpoint_dir(config.checkpoint_dir)  # now, not after an interval of training
        saved = _resume_point(config, data_fingerprint)  # before decoding: a mismatch fails fast
        # An "auto" precision resumes with what the run started with, even on another machine.
        wanted = saved["config"]["precision"] if saved and config.precision == "auto" else None
        precision = resolve_precision(wanted or config.precision, device)
        images = load_decoded(
            source,
            listed,
            config.image_size,
            config.cache_dir or default_cache_dir(),
            config.workers or cpus,
            _decode_progress(progress),
        )
    finally:
        source.close()
    record = _config_record(config, data_fingerprint, precision)
    trainer = _Trainer(config, record, images, device, progress, started)
    if saved is not None:
        trainer.restore(saved)
    else:
        log.info(
            "starting %s on %s (%s, %d CPU thread(s)): %d training and %d validation images",
            config.model,
            device,
            precision,
            cpus,
            len(trainer.train_pos),
            len(trainer.val_pos),
        )
    try:
        return trainer.run()
    finally:
        images.close()


class _Trainer:
    """The modules and the loop of one run; :func:`train` builds it, restores it, runs it."""

    def __init__(
        self,
        config: TrainConfig,
        record: dict[str, Any],
        images: DecodedImages,
        device: torch.device,
        progress: Progress,
        started: float,
    ) -> None:
        self.config, self.record, self.progress, self.started = config, record, progress, started
        self.precision = record["precision"]
        train_pos, val_pos = split_indices(len(images), config.val_fraction, config.split_seed)
        self.train_pos = torch.tensor(train_pos, dtype=torch.int64)
        self.val_pos = torch.tensor(val_pos, dtype=torch.int64)
        self.batches = _Batches(images, config.model, device, self.precision)
        torch.manual_seed(config.seed)
        model = build_model(
            config.model, config.image_size, config.pretrained_weights, config.freeze_backbone
        )
        self.model = model.to(device=device, memory_format=torch.channels_last)
        self.optimizer = _optimizer(config, self.model)
        self.scheduler = _scheduler(config, self.optimizer)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        self.state = _Progress()
        self.wall_before = 0.0  # wall time of earlier runs
        self.n_batches = math.ceil(len(self.train_pos) / config.batch_size)
        minutes = config.checkpoint_minutes  # None or 0: no time-based checkpoints
        self.deadline = started + 60 * minutes if minutes else None

    @property
    def checkpoint_path(self) -> Path:
        return self.config.checkpoint_dir / CHECKPOINT_FILE

    def restore(self, saved: dict[str, Any]) -> None:
        """Load every piece of state a checkpoint holds."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        restore_rng_state(saved["rng"])
        loss_sum, correct, seen, seconds = saved["epoch_sums"]
        counters = saved["counters"]
        self.state = _Progress(
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
        )
        self.wall_before = counters["wall_seconds"]
        log.info(
            "resuming from %s: %d of %d epochs done, batch %d of %d",
            self.checkpoint_path,
            self.state.epoch,
            self.config.epochs,
            self.state.batch,
            self.n_batches,
        )

    def run(self) -> TrainResult:
        """Train until finished, a checkpoint exit, or a stop signal."""
        run, config = self.state, self.config
        run.runs += 1
        if run.epoch >= config.epochs:
            log.info("already trained %d of %d epochs: nothing to do", run.epoch, config.epochs)
            _write_metrics(config.checkpoint_dir / METRICS_FILE, run.metrics)
            return self._result("finished")
        self.model.train()
        with _stop_signals() as stop:
            while run.epoch < config.epochs:
                reason = self._train_epoch(stop)
                if reason is None:
                    self._end_epoch()
                    if run.epoch >= config.epochs:
                        break
                    if stop:
                        reason = "signal"
                    elif run.epoch % config.checkpoint_every == 0:
                        reason = "interval"
                    elif self._timed_out():
                        reason = "time"
                    else:
                        _write_metrics(config.checkpoint_dir / METRICS_FILE, run.metrics)
                        continue
                self._save()
                if reason == "signal":
                    return self._result("interrupted", stop["signal"])
                log.info(
                    "checkpoint %d saved (%s): epoch %d of %d, batch %d of %d",
                    run.checkpoints,
                    reason,
                    run.epoch,
                    config.epochs,
                    run.batch,
                    self.n_batches,
                )
                if config.exit_on_checkpoint:
                    return self._result("checkpointed")
                if self.deadline is not None:
                    self.deadline = time.monotonic() + 60 * config.checkpoint_minutes
        self._save()
        log.info("training finished: %d epochs; final model in %s", run.epoch, self.checkpoint_path)
        return self._result("finished")

    def _train_epoch(self, stop: dict[str, int]) -> str | None:
        """Train the rest of the current epoch; return why it stopped early, or None."""
        run, config = self.state, self.config
        if run.order is None:
            run.order = epoch_order(config.seed, run.epoch, len(self.train_pos))
        self.progress.start(f"epoch {run.epoch + 1}/{config.epochs}", self.n_batches, run.batch)
        resumed = time.monotonic()
        try:
            while run.batch < self.n_batches:
                chunk = run.order[
                    run.batch * config.batch_size : (run.batch + 1) * config.batch_size
                ]
                x, y = self.batches.get(self.train_pos[chunk])
                loss_sum, correct = train_step(
                    self.model, self.optimizer, self.scaler, x, y, self.precision
                )
                run.loss_sum += loss_sum
                run.correct += correct
                run.seen += len(y)
                run.batch += 1
                self.progress.advance(1, f"loss {run.loss_sum / run.seen:.4f}")
                if run.batch < self.n_batches:  # the epoch's end is a checkpoint boundary anyway
                    if stop:
                        return "signal"
                    if self._timed_out():
                        return "time"
            return None
        finally:
            run.seconds += time.monotonic() - resumed

    def _end_epoch(self) -> None:
        """Validate, record the epoch's metrics and step the LR scheduler."""
        run = self.state
        validation_started = time.monotonic()
        val_loss, val_acc = validate(
            self.model, self.batches, self.val_pos, self.config.batch_size, self.precision
        )
        train_seconds = run.seconds
        run.seconds += time.monotonic() - validation_started
        run.epoch += 1
        run.metrics.append(
            {
                "epoch": run.epoch,
                "train_loss": run.loss_sum / run.seen,
                "train_acc": run.correct / run.seen,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": self.scheduler.get_last_lr()[0],
                "seconds": round(run.seconds, 3),
                "images_per_s": round(run.seen / train_seconds, 1)
                if train_seconds > 0
                else math.nan,
            }
        )
        self.progress.finish(_summary(run.metrics[-1]))
        self.scheduler.step()
        run.batch, run.order, run.loss_sum, run.correct, run.seen, run.seconds = (
            0,
            None,
            0.0,
            0,
            0,
            0.0,
        )

    def _timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _save(self) -> None:
        run = self.state
        run.checkpoints += 1
        checkpoint = self._checkpoint()
        save_checkpoint(checkpoint, self.config.checkpoint_dir)
        _write_metrics(self.config.checkpoint_dir / METRICS_FILE, run.metrics)
        summary = {key: checkpoint[key] for key in ("epoch", "batch", "finished")}
        summary.update(checkpoint["counters"], epochs=self.config.epochs, member=self.config.member)
        atomic_write_text(
            self.config.checkpoint_dir / STATE_FILE, json.dumps(summary, indent=1) + "\n"
        )

    def _checkpoint(self) -> dict[str, Any]:
        run = self.state
        return {
            "config": self.record,
            "epoch": run.epoch,
            "batch": run.batch,
            "order": run.order,
            "epoch_sums": [run.loss_sum, run.correct, run.seen, run.seconds],
            "metrics": run.metrics,
            "counters": {
                "checkpoints": run.checkpoints,
                "runs": run.runs,
                "wall_seconds": self.wall_before + time.monotonic() - self.started,
            },
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(),
            "finished": run.epoch >= self.config.epochs,
        }

    def _result(self, status: str, signum: int | None = None) -> TrainResult:
        return TrainResult(
            status, self.state.epoch, self.checkpoint_path, self.state.metrics, signum
        )


def _summary(row: dict[str, Any]) -> str:
    return (
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}, "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}, {row['images_per_s']:.0f} img/s"
    )
