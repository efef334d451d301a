"""Live training progress into the job's own ad through HTCondor's Chirp (``want_io_proxy``).

A job submitted with ``want_io_proxy = true`` finds ``$_CONDOR_CHIRP_CONFIG`` (or
``.chirp.config`` in its working folder): the address and cookie of the starter's I/O proxy.
Through it the trainer sets the ``Condorml*`` attributes of :mod:`condorml.job.live` in its own
job ad (``condor_q -af CondormlEpoch CondormlValAcc`` shows them while it runs) and appends
lines to the job's event log (``ulog``). The client is the ``htchirp`` package.

Progress is only an aid: a missing proxy (not under HTCondor) turns this off silently, a failing
one logs one warning and turns it off for the rest of the run. The calls go through a
background thread with a short socket timeout, so a slow or dead proxy never stalls training;
the training thread only hands over the newest values, at most every :data:`UPDATE_SECONDS`
within an epoch, and at every epoch end and checkpoint. No torch here.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from condorml.job.live import attribute

log = logging.getLogger(__name__)

# Within an epoch, at most one update per this many seconds. Each set_job_attr travels from the
# starter through the shadow into the schedd's job queue, so a sweep's dozens of jobs must not
# send one per batch; epoch ends and checkpoints are always sent at once.
UPDATE_SECONDS = 10.0
CHIRP_TIMEOUT = 2.0  # seconds a Chirp call may wait for the proxy before the channel is given up
CLOSE_SECONDS = 5.0  # at the end of a run: how long the last updates may take to go out
CONFIG_ENV = "_CONDOR_CHIRP_CONFIG"
CONFIG_FILE = ".chirp.config"  # where htchirp looks without the environment variable
ULOG_PREFIX = "condorml:"


class ChirpClient(Protocol):
    """What the publisher uses of :class:`htchirp.HTChirp`."""

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def set_job_attr(self, job_attribute: str, attribute_value: str) -> None: ...
    def ulog(self, text: str) -> None: ...


def chirp_config() -> Path | None:
    """The job's Chirp configuration file, as htchirp finds it; None outside an I/O-proxy job."""
    path = Path(os.environ.get(CONFIG_ENV) or CONFIG_FILE)
    return path if path.is_file() else None


def htchirp_client() -> ChirpClient:
    """A client of the starter's proxy (htchirp reads the configuration file itself)."""
    from htchirp import HTChirp

    return HTChirp(timeout=CHIRP_TIMEOUT)


def classad_literal(value: object) -> str:
    """A value as a ClassAd literal: numbers plain (floats rounded), NaN/inf ``undefined``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "undefined"
        return repr(round(value, 4 if abs(value) < 100 else 1))
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The event-log line of a finished epoch (a row of ``metrics.csv``)."""
    return (
        f"{ULOG_PREFIX} epoch {row['epoch']}/{epochs} train_loss {row['train_loss']:.4f} "
        f"train_acc {row['train_acc']:.4f} val_loss {row['val_loss']:.4f} "
        f"val_acc {row['val_acc']:.4f}"
    )


def checkpoint_line(count: int, epoch: int, batch: int) -> str:
    """The event-log line of a checkpoint: its number, and the completed epochs and batches."""
    return f"{ULOG_PREFIX} checkpoint {count} at epoch {epoch} batch {batch}"


class LivePublisher:
    """Publishes one training run's progress to its job ad and event log; a no-op off HTCondor.

    The trainer calls :meth:`start` once, then :meth:`epoch_start`, :meth:`batch` (every batch:
    cheap, rate limited here), :meth:`epoch_end`, :meth:`checkpoint`, and :meth:`close` at the
    end of the run.

    Parameters
    ----------
    client_factory : callable, optional
        Makes the Chirp client, in the background thread [default: :func:`htchirp_client`].
        Called only when :func:`chirp_config` finds a configuration.
    interval : float
        Seconds between updates within an epoch.
    clock : callable
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        client_factory: Callable[[], ChirpClient] | None = None,
        interval: float = UPDATE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = chirp_config() is not None
        # why an offered proxy could not be used ("" while it could): the checkpoint's state.json
        # carries it back, so that a watch says why a running job shows no live progress
        self.off_reason = ""
        self._factory = client_factory or htchirp_client
        self._interval, self._clock = interval, clock
        self._attrs: dict[str, str] = {}
        self._published: dict[str, str] = {}  # attribute -> the literal last handed over
        self._lines: list[str] = []
        self._closing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last = -math.inf
        self._epoch = self._epochs = 0
        self._images, self._seconds, self._since = 0, 0.0, None  # training throughput

    def start(self, epochs: int, batches: int, checkpoints: int, metrics: list[dict[str, Any]]
              ) -> None:  # fmt: skip
        """At the start of a run: the budget, and what earlier runs of this job recorded."""
        self._epochs = epochs
        values: dict[str, object] = {"epochs": epochs, "batches": batches,
                                     "checkpoints": checkpoints}  # fmt: skip
        if metrics:
            last = metrics[-1]
            values.update({key: last[key] for key in ("val_loss", "val_acc")}, epoch=last["epoch"])
        self._send(values)

    def epoch_start(self, epoch: int, batch: int) -> None:
        """Epoch ``epoch`` (1-based) begins, or resumes after ``batch`` batches."""
        self._epoch, self._since = epoch, self._clock()
        self._send({"epoch": epoch, "batch": batch})

    def batch(self, batch: int, images: int, train_loss: float, train_acc: float) -> None:
        """A batch is done (``batch`` of the epoch, of ``images`` images): maybe publish."""
        self._images += images
        now = self._clock()
        if not self.enabled or now - self._last < self._interval:
            return
        values = {"epoch": self._epoch, "batch": batch, "train_loss": train_loss,
                  "train_acc": train_acc}  # fmt: skip
        seconds = self._seconds + (now - self._since if self._since is not None else 0.0)
        if seconds > 0:
            values["images_per_s"] = self._images / seconds
        self._send(values)

    def epoch_end(self, row: dict[str, Any], batches: int) -> None:
        """An epoch is done and validated: ``row`` is its line of ``metrics.csv``."""
        if self._since is not None:
            self._seconds += self._clock() - self._since
            self._since = None
        values = {key: row[key] for key in ("epoch", "train_loss", "train_acc", "val_loss",
                                            "val_acc")}  # fmt: skip
        values.update(batch=batches, images_per_s=row["images_per_s"])
        self._send(values, epoch_line(row, self._epochs))

    def checkpoint(self, count: int, epoch: int, batch: int) -> None:
        """Checkpoint ``count`` of the job is saved after ``epoch`` epochs and ``batch`` batches."""
        self._send({"checkpoints": count}, checkpoint_line(count, epoch, batch))

    def close(self) -> None:
        """Send what is pending (waiting at most :data:`CLOSE_SECONDS`) and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(CLOSE_SECONDS)

    def _send(self, values: dict[str, object], line: str | None = None) -> None:
        """Hand values (by progress key) and an event-log line to the background thread."""
        if not self.enabled:
            return
        self._last = self._clock()
        # only what changed: every set_job_attr, even of an unchanged value, is an event (033)
        # in the job's own log and a trip through the shadow to the schedd (seen on the pool)
        changed = {attribute(key): classad_literal(v) for key, v in values.items()}
        changed = {k: v for k, v in changed.items() if self._published.get(k) != v}
        if not changed and line is None:
            return
        changed[attribute("updated")] = classad_literal(int(time.time()))
        self._published.update(changed)
        with self._cond:
            self._attrs.update(changed)
            if line is not None:
                self._lines.append(line)
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="condorml-chirp", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """The background thread: send what the trainer handed over, until closed or failed."""
        client = None
        while True:
            with self._cond:
                while not (self._attrs or self._lines or self._closing):
                    self._cond.wait()
                attrs, lines = self._attrs, self._lines
                self._attrs, self._lines = {}, []
            if not (attrs or lines):
                return  # closing, nothing left
            try:
                client = client or self._factory()
                _deliver(client, attrs, lines)
            except Exception as err:  # any failure of an optional channel: say so once, stop
                self.enabled = False
                self.off_reason = (
                    f"the job could not reach HTCondor's Chirp proxy ({err or type(err).__name__})"
                )
                log.warning("live progress through HTCondor's Chirp is off for this run: %s",
                            err or type(err).__name__)  # fmt: skip
                return


def _deliver(client: ChirpClient, attrs: dict[str, str], lines: list[str]) -> None:
    """One connection: set the attributes, then append the event-log lines."""
    client.connect()
    try:
        for name, value in attrs.items():
            client.set_job_attr(name, value)
        for line in lines:
            client.ulog(line)
    finally:
        client.disconnect()
