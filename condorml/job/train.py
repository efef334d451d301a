"""The checkpointing trainer: HTCondor's self-checkpointing protocol with exact resume.

Every ``checkpoint_every`` epochs (and, with ``checkpoint_minutes`` above 0, at the first batch
boundary after that many minutes of this run; 0 turns that off) the trainer writes
``C/model.pth`` and returns ``"checkpointed"``; the CLI turns that into exit code 85, and
HTCondor transfers the checkpoint and runs the same command again. Every start resumes from
``C/model.pth``. Because the checkpoint holds the model, optimizer, scheduler, scaler, the
position inside the epoch, the epoch's data order, the running sums of its metrics and every RNG
state, a run cut into any number of pieces ends bit-identical (on the CPU) to one that never
stopped. The checkpoint folder is checked writable before any training.

With ``stop_after_epoch`` E (successive halving's rungs) a run ends after epoch E with an ordinary
checkpoint and status ``"stopped"`` (exit 0: done for now). The learning-rate schedule still
spans all ``epochs``, so a later run with a larger E, or none, continues as if it never stopped.

The pieces: :mod:`.batches` (which images an epoch visits and the tensors of a batch),
:mod:`.train_state` (what a checkpoint holds, resuming from one), :mod:`.signals` (an
eviction's SIGTERM as a flag), and here the optimisation step, validation and the epoch loop.
Reading order: setup (``_optimizer``, ``_scheduler``), ``train_step`` and ``validate``, then
:func:`train` and ``_Trainer``. Beside the progress display, the trainer reports to the HTCondor
job's ad (:mod:`.chirp`, where the job has Chirp) and, with ``--tensorboard``, to TensorBoard
event files in the checkpoint folder (:mod:`.tensorboard`).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from condorml.config import TrainConfig
from condorml.errors import ExitCode, signal_exit_code
from condorml.job.batches import Batches, batch_positions, epoch_order
from condorml.job.checkpoint import (
    CHECKPOINT_EXIT_CODE,
    CHECKPOINT_FILE,
    LOADED_FROM,
    check_checkpoint_dir,
)
from condorml.job.chirp import LivePublisher
from condorml.job.data import split_indices
from condorml.job.devices import autocast, job_cpus, resolve_device, resolve_precision
from condorml.job.files import METRICS_FILE
from condorml.job.imagecache import DecodedImages, default_cache_dir, load_decoded
from condorml.job.layouts import training_set
from condorml.job.models import Architecture, build_model, logits_of, set_training
from condorml.job.signals import stop_signals
from condorml.job.tensorboard import TensorBoardLog, require_tensorboard
from condorml.job.train_state import (
    METRIC_COLUMNS,
    Modules,
    TrainState,
    checkpoint_contents,
    config_record,
    resume_point,
    save_run,
    write_metrics,
)
from condorml.progress import NullProgress, Progress

log = logging.getLogger(__name__)

__all__ = ["METRIC_COLUMNS", "TrainConfig", "TrainResult", "train", "train_step", "validate"]
TOP_K = 5  # top-5 accuracy, reported with more than five classes
# What validate() returns, in metrics.csv's order (train_state.METRIC_COLUMNS holds them).
VALIDATION_METRICS = ("val_loss", "val_acc", "val_macro_f1", "val_top5_acc")
# What the process exits with, by TrainResult.status; an interrupted run: 128 + the signal.
# "stopped": at --stop-after-epoch, done for now (exit 0, not 85: HTCondor must not restart it).
EXIT_CODES = {
    "finished": int(ExitCode.DONE),
    "stopped": int(ExitCode.DONE),
    "checkpointed": CHECKPOINT_EXIT_CODE,
}


@dataclass
class TrainResult:
    """What a call to :func:`train` did.

    Attributes
    ----------
    status : str
        ``"finished"``, ``"stopped"`` (at ``stop_after_epoch``, saved: a later run with a
        larger one continues), ``"checkpointed"`` (run again to continue) or ``"interrupted"``
        (a signal stopped it at a safe point, after saving).
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
        """0 finished or stopped, 85 checkpointed, 128 + signal number when interrupted."""
        return EXIT_CODES.get(self.status, 128 + (self.signal or 0))


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
        logits = logits_of(model(x))
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
    model: nn.Module, batches: Batches, positions: torch.Tensor, batch_size: int, precision: str
) -> dict[str, float]:
    """The validation metrics over ``positions`` (:data:`VALIDATION_METRICS`; nan when there
    are none): mean loss and accuracy, and macro-F1 and top-5 accuracy (with more than five
    classes) from scikit-learn."""
    if len(positions) == 0:
        return dict.fromkeys(VALIDATION_METRICS, math.nan)
    model.eval()
    loss_sum, correct = 0.0, 0
    predicted, truth, scores = [], [], []
    with torch.inference_mode():
        for start in range(0, len(positions), batch_size):
            x, y = batches.get(positions[start : start + batch_size])
            with autocast(x.device, precision):
                logits = logits_of(model(x))
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            predicted.append(logits.argmax(1).cpu())
            truth.append(y.cpu())
            if logits.shape[1] > TOP_K:
                scores.append(logits.float().cpu())
    set_training(model)
    y_true, y_pred = torch.cat(truth).numpy(), torch.cat(predicted).numpy()
    n_classes = batches.n_classes
    # Imported here, at the first validation, not at the start: its second of Python, imported
    # in a thread while the first batches trained, held the GIL their steps need and slowed the
    # epoch down by more than the import takes alone.
    from sklearn.metrics import f1_score, top_k_accuracy_score

    metrics = {
        "val_loss": loss_sum / len(positions),
        "val_acc": correct / len(positions),
        "val_macro_f1": float(f1_score(y_true, y_pred, labels=list(range(n_classes)),
                                       average="macro", zero_division=0)),
        "val_top5_acc": math.nan,
    }  # fmt: skip
    if scores:
        metrics["val_top5_acc"] = float(top_k_accuracy_score(
            y_true, torch.cat(scores).numpy(), k=TOP_K, labels=list(range(n_classes))))  # fmt: skip
    return metrics


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


def train(
    config: TrainConfig, progress: Progress | None = None, live: LivePublisher | None = None
) -> TrainResult:
    """Train (or resume training) one model, checkpointing the HTCondor way.

    Parameters
    ----------
    config : TrainConfig
        The run's configuration.
    progress : Progress, optional
        Receives per-batch progress (the CLI shows a bar or log lines).
    live : LivePublisher, optional
        Publishes progress into the HTCondor job's ad [default: one that finds the job's Chirp
        configuration, and does nothing without one].

    Returns
    -------
    TrainResult
        ``status`` says whether training finished, stopped at ``stop_after_epoch``,
        checkpointed or was interrupted; ``exit_code`` is what the process should exit with
        (0, 85, or 128 + signal).

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
    if config.tensorboard:
        require_tensorboard()
    device = resolve_device(config.device)
    cpus = job_cpus()
    torch.set_num_threads(cpus)
    images, record, saved, arch = _prepare(config, device, cpus, progress)
    try:
        trainer = _Trainer(config, record, images, device, progress, started,
                           live or LivePublisher(), arch)  # fmt: skip
        if saved is not None:
            trainer.restore(saved)
        else:
            log.info(
                "starting %s on %s (%s, %d CPU thread(s)): %d training and %d validation images of %d classes",
                config.model, device, record["precision"], cpus, len(trainer.train_pos),
                len(trainer.val_pos), len(record["classes"]),
            )  # fmt: skip
        return trainer.run()
    finally:
        images.close()


def _prepare(
    config: TrainConfig, device: torch.device, cpus: int, progress: Progress
) -> tuple[DecodedImages, dict[str, Any], dict[str, Any] | None, Architecture]:
    """The decoded images, the configuration record, the checkpoint to resume (or None) and the
    model's architecture.

    The data's layout, the model (its file, the image size it takes), the checkpoint folder
    and the checkpoint's match with the configuration are all checked before any image is
    decoded: a mistake fails fast.
    """
    cache_dir = config.cache_dir or default_cache_dir()
    arch = Architecture(config.model)
    listed = training_set(config.data_dir, config.labels_csv, cache_dir)
    try:
        classes = listed.classes or ()
        arch.check_input(len(classes), config.image_size)
        data_fingerprint = listed.fingerprint()
        check_checkpoint_dir(config.checkpoint_dir)  # now, not after an interval of training
        saved = resume_point(config, data_fingerprint, classes, arch.file_sha256,
                             listed.legacy_fingerprint())  # fmt: skip
        # An "auto" precision resumes with what the run started with, even on another machine.
        wanted = saved["config"]["precision"] if saved and config.precision == "auto" else None
        precision = resolve_precision(wanted or config.precision, device)
        images = load_decoded(
            listed.source,
            listed.labelled_images(),
            config.image_size,
            cache_dir,
            config.workers or cpus,
            _decode_progress(progress),
        )
    finally:
        listed.source.close()
    record = config_record(config, data_fingerprint, precision, classes, arch.file_sha256)
    return images, record, saved, arch


class _Trainer:
    """The epoch loop of one run; :func:`train` builds it, restores it, runs it.

    Its pieces: :class:`.batches.Batches` (the data of a batch), :func:`.batches.epoch_order`
    (which images an epoch visits), :class:`.train_state.TrainState` and
    :class:`.train_state.Modules` (what a checkpoint holds).
    """

    def __init__(self, config: TrainConfig, record: dict[str, Any], images: DecodedImages,
                 device: torch.device, progress: Progress, started: float,
                 live: LivePublisher, arch: Architecture) -> None:  # fmt: skip
        self.config, self.record, self.progress, self.started = config, record, progress, started
        self.precision = record["precision"]
        train_pos, val_pos = split_indices(len(images), config.val_fraction, config.split_seed)
        self.train_pos = torch.tensor(train_pos, dtype=torch.int64)
        self.val_pos = torch.tensor(val_pos, dtype=torch.int64)
        n_classes = len(record["classes"])
        self.batches = Batches(images, arch.normalization(), n_classes, device, self.precision)
        torch.manual_seed(config.seed)
        model = build_model(config.model, config.image_size, config.pretrained_weights,
                            config.freeze_backbone, num_classes=n_classes, architecture=arch)  # fmt: skip
        model = model.to(device=device, memory_format=torch.channels_last)
        optimizer = _optimizer(config, model)
        scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        self.modules = Modules(model, optimizer, _scheduler(config, optimizer), scaler)
        self.state = TrainState()
        self.n_batches = math.ceil(len(self.train_pos) / config.batch_size)
        minutes = config.checkpoint_minutes  # None or 0: no time-based checkpoints
        self.deadline = started + 60 * minutes if minutes else None
        self.live = live
        self.board: TensorBoardLog | None = None  # run() opens it with --tensorboard

    @property
    def checkpoint_path(self) -> Path:
        return self.config.checkpoint_dir / CHECKPOINT_FILE

    def restore(self, saved: dict[str, Any]) -> None:
        """Load every piece of state a checkpoint holds."""
        self.modules.load(saved)
        self.state = TrainState.from_checkpoint(saved)
        log.info(
            "resuming from %s: %d of %d epochs done, batch %d of %d",
            saved.get(LOADED_FROM, self.checkpoint_path),
            self.state.epoch,
            self.config.epochs,
            self.state.batch,
            self.n_batches,
        )

    @property
    def last_epoch(self) -> int:
        """The epoch this run ends after: ``stop_after_epoch``, else the whole budget."""
        return self.config.stop_after_epoch or self.config.epochs

    def run(self) -> TrainResult:
        """Train until finished (or stopped), a checkpoint exit, or a stop signal."""
        run, config = self.state, self.config
        run.runs += 1
        if run.epoch >= self.last_epoch:
            log.info("already trained %d of %d epochs%s: nothing to do", run.epoch, config.epochs,
                     self._stop_note())  # fmt: skip
            write_metrics(config.checkpoint_dir / METRICS_FILE, run.metrics)
            return self._result(self._end_status())
        if config.tensorboard:
            self.board = TensorBoardLog(config.checkpoint_dir, run.epoch, self._step)
        self.live.start(config.epochs, self.n_batches, run.checkpoints, run.metrics)
        try:
            return self._loop()
        finally:
            self.live.close()
            if self.board is not None:
                self.board.close()

    @property
    def _step(self) -> int:
        """Batches trained since the start of training (TensorBoard's step of a batch)."""
        return self.state.epoch * self.n_batches + self.state.batch

    def _loop(self) -> TrainResult:
        """The epochs of :meth:`run`, each followed by a checkpoint when one is due."""
        run, config = self.state, self.config
        set_training(self.modules.model)
        with stop_signals() as stop:
            while run.epoch < self.last_epoch:
                reason = self._train_epoch(stop)
                if reason is None:
                    self._end_epoch()
                    reason = self._checkpoint_reason(stop)
                    if reason is None:
                        continue
                self._save()
                if reason == "signal":
                    signum = stop["signal"]
                    log.info(
                        "stopped by %s: checkpoint %d saved to %s (%s); exit %d: run the same "
                        "command again to continue from it", signal.Signals(signum).name,
                        run.checkpoints, self.checkpoint_path, self._saved_at(),
                        signal_exit_code(signum),
                    )  # fmt: skip
                    return self._result("interrupted", signum)
                if config.exit_on_checkpoint:
                    log.info(
                        "checkpoint %d saved (%s) to %s (%s); exit %d: run the same command "
                        "again to continue (in an HTCondor job, HTCondor does)", run.checkpoints,
                        reason, self.checkpoint_path, self._saved_at(), CHECKPOINT_EXIT_CODE,
                    )  # fmt: skip
                    return self._result("checkpointed")
                log.info(
                    "checkpoint %d saved (%s): epoch %d of %d, batch %d of %d", run.checkpoints,
                    reason, run.epoch, config.epochs, run.batch, self.n_batches,
                )  # fmt: skip
                if self.deadline is not None:
                    self.deadline = time.monotonic() + 60 * config.checkpoint_minutes
        self._save()
        if self._end_status() == "stopped":
            log.info("stopped after epoch %d of %d as --stop-after-epoch asks; checkpoint in %s",
                     run.epoch, config.epochs, self.checkpoint_path)  # fmt: skip
        else:
            log.info("training finished: %d epochs; final model in %s", run.epoch,
                     self.checkpoint_path)  # fmt: skip
        return self._result(self._end_status())

    def _saved_at(self) -> str:
        """Where the saved checkpoint resumes, for the messages at an exit: epochs and batches."""
        run = self.state
        done = f"{run.epoch} of {self.config.epochs} epochs done"
        if not run.batch:
            return done
        return f"{done} and {run.batch} of {self.n_batches} batches of epoch {run.epoch + 1}"

    def _end_status(self) -> str:
        """At or past :attr:`last_epoch`: ``finished``, or ``stopped`` short of the budget."""
        return "finished" if self.state.epoch >= self.config.epochs else "stopped"

    def _stop_note(self) -> str:
        stop = self.config.stop_after_epoch
        return f" (--stop-after-epoch {stop})" if stop and stop < self.config.epochs else ""

    def _checkpoint_reason(self, stop: dict[str, int]) -> str | None:
        """After an epoch: why to checkpoint now (``signal``, ``interval``, ``time``), or None.

        None also after the last epoch (the budget's or ``stop_after_epoch``), which the loop's
        end saves; without a checkpoint the metrics are still written, one row per epoch.
        """
        run, config = self.state, self.config
        if run.epoch >= self.last_epoch:
            return None
        if stop:
            return "signal"
        if run.epoch % config.checkpoint_every == 0:
            return "interval"
        if self._timed_out():
            return "time"
        write_metrics(config.checkpoint_dir / METRICS_FILE, run.metrics)
        return None

    def _train_epoch(self, stop: dict[str, int]) -> str | None:
        """Train the rest of the current epoch; return why it stopped early, or None."""
        run, config = self.state, self.config
        if run.order is None:
            run.order = epoch_order(config.seed, run.epoch, len(self.train_pos))
        self.progress.start(f"epoch {run.epoch + 1}/{config.epochs}", self.n_batches, run.batch)
        self.live.epoch_start(run.epoch + 1, run.batch)
        resumed = time.monotonic()
        modules = self.modules
        try:
            while run.batch < self.n_batches:
                chunk = batch_positions(run.order, run.batch, config.batch_size)
                x, y = self.batches.get(self.train_pos[chunk])
                loss_sum, correct = train_step(modules.model, modules.optimizer, modules.scaler,
                                               x, y, self.precision)  # fmt: skip
                run.loss_sum += loss_sum
                run.correct += correct
                run.seen += len(y)
                run.batch += 1
                self._report_batch(loss_sum, len(y))
                if run.batch < self.n_batches:  # the epoch's end is a checkpoint boundary anyway
                    if stop:
                        return "signal"
                    if self._timed_out():
                        return "time"
            return None
        finally:
            run.seconds += time.monotonic() - resumed

    def _report_batch(self, loss_sum: float, images: int) -> None:
        """Tell the progress display, the job ad and TensorBoard that a batch is done."""
        run = self.state
        self.progress.advance(1, f"loss {run.loss_sum / run.seen:.4f}")
        self.live.batch(run.batch, images, run.loss_sum / run.seen, run.correct / run.seen)
        if self.board is not None:
            self.board.batch(self._step, loss_sum / images)

    def _end_epoch(self) -> None:
        """Validate, record the epoch's metrics and step the LR scheduler."""
        run, modules = self.state, self.modules
        validation_started = time.monotonic()
        scores = validate(
            modules.model, self.batches, self.val_pos, self.config.batch_size, self.precision
        )
        train_seconds = run.seconds
        seconds = run.seconds + time.monotonic() - validation_started
        run.metrics.append(
            {
                "epoch": run.epoch + 1,
                "train_loss": run.loss_sum / run.seen,
                "train_acc": run.correct / run.seen,
                **scores,
                "lr": modules.scheduler.get_last_lr()[0],
                "seconds": round(seconds, 3),
                "images_per_s": round(run.seen / train_seconds, 1)
                if train_seconds > 0
                else math.nan,
            }
        )
        self.progress.finish(_summary(run.metrics[-1]))
        self.live.epoch_end(run.metrics[-1], self.n_batches)
        if self.board is not None:
            self.board.epoch(run.metrics[-1])
        modules.scheduler.step()
        run.next_epoch()

    def _timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _save(self) -> None:
        run = self.state
        run.checkpoints += 1
        checkpoint = checkpoint_contents(self.record, run, self.modules,
                                         time.monotonic() - self.started,
                                         run.epoch >= self.config.epochs)  # fmt: skip
        if self.board is not None:  # the event files that travel with it hold what it holds
            self.board.flush()
        save_run(self.config, checkpoint, live_off=self.live.off_reason)
        self.live.checkpoint(run.checkpoints, run.epoch, run.batch)

    def _result(self, status: str, signum: int | None = None) -> TrainResult:
        return TrainResult(
            status, self.state.epoch, self.checkpoint_path, self.state.metrics, signum
        )


def _summary(row: dict[str, Any]) -> str:
    return (
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}, "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}, {row['images_per_s']:.0f} img/s"
    )
