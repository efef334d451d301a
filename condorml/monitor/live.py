"""Live training progress of running jobs: what each one published into its own job ad.

A training job with the I/O proxy publishes its progress (epoch, batch, images/s, last validation
accuracy...) into its job ad through Chirp, in the attributes :data:`condorml.job.live.
LIVE_ATTRIBUTES` names. On a pool they are in the schedd's job ad; the local backend writes each
job's attributes to ``<dag folder>/.condorml-local/ads/<cluster>.<proc>.json``
(:func:`condorml.sweep.rundir.local_job_ad`).

:class:`LiveReader` reads both for the running jobs a watch knows from the event logs: a job with a
fresh local ad file is the local backend's, unless its submit event names a pool's schedd (a run
moved from the local backend to a pool has local ad files of the same ids,
:attr:`~condorml.htcondor.events.JobView.on_local_backend`); the others are asked of the schedd
with ONE ``condor_q`` run for all of them, at most every :data:`SCHEDD_INTERVAL` seconds (its
answer is reused in between), with a short timeout. ``condor_q`` rather than the htcondor2
bindings: the command line authenticates where the bindings may not. No ``condor_q``, no schedd, a
timeout or an unreadable answer give no live values, silently (the watch then shows the
checkpoints), and the schedd is left alone for :data:`FAILURE_PAUSE` seconds. This module only
reads files and runs ``condor_q``: it never imports a backend.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml.htcondor.events import JobView
from condorml.job.live import LIVE_ATTRIBUTES
from condorml.sweep.rundir import local_job_ad

SCHEDD_INTERVAL = 5.0  # seconds between two condor_q runs (one for all jobs)
QUERY_TIMEOUT = 5.0  # seconds condor_q may take before its answer is given up
FAILURE_PAUSE = 60.0  # seconds without condor_q after it failed (no schedd: do not stall)
CLOCK_SLACK = 60.0  # an execute point's clock may differ this much from the access point's
SOURCES = ("schedd", "local")


@dataclass(frozen=True)
class LiveProgress:
    """One running job's published progress.

    ``values`` maps progress keys of :data:`~condorml.job.live.LIVE_ATTRIBUTES` (``epoch``,
    ``val_acc``...) to numbers; keys the job has not published are absent.
    """

    values: Mapping[str, float]
    source: str  # "schedd" or "local": where the numbers came from

    @classmethod
    def from_ad(cls, ad: Mapping[str, Any], source: str) -> LiveProgress | None:
        """The progress in a job ad (attribute -> value; numbers, or numbers as ClassAd text);
        None when it holds none."""
        values = {}
        for key, (name, _) in LIVE_ATTRIBUTES.items():
            number = _number(ad.get(name))
            if number is not None:
                values[key] = number
        return cls(values, source) if values else None

    def _int(self, key: str) -> int | None:
        value = self.values.get(key)
        return None if value is None else int(value)

    @property
    def epoch(self) -> int | None:
        """The epoch being trained (1-based)."""
        return self._int("epoch")

    @property
    def epochs(self) -> int | None:
        return self._int("epochs")

    @property
    def batch(self) -> int | None:
        return self._int("batch")

    @property
    def batches(self) -> int | None:
        return self._int("batches")

    @property
    def images_per_s(self) -> float | None:
        return self.values.get("images_per_s")

    @property
    def val_acc(self) -> float | None:
        """The last finished epoch's validation accuracy."""
        return self.values.get("val_acc")

    @property
    def updated(self) -> float | None:
        """When the job published this (Unix time)."""
        return self.values.get("updated")

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the job published this (None: it did not say when)."""
        if self.updated is None:
            return None
        return max((time.time() if now is None else now) - self.updated, 0.0)


def _number(value: Any) -> float | None:
    """A finite number from a JSON or ClassAd value (``3``, ``0.81``, ``"0.81"``), else None
    (an expression such as ``"/Expr(time())/"``, a string, a boolean)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def schedd_query(jobs: Sequence[JobView]) -> list[str]:
    """The one ``condor_q`` command that asks the schedd for the live attributes of ``jobs``
    (a constraint on their clusters; ``-allusers`` as jobs may be another user's)."""
    clusters = ", ".join(str(c) for c in sorted({job.cluster for job in jobs}))
    names = ["ClusterId", "ProcId", "DAGNodeName", *(name for name, _ in LIVE_ATTRIBUTES.values())]
    return ["condor_q", "-allusers", "-json", "-attributes", ",".join(names),
            "-constraint", f"member(ClusterId, {{{clusters}}})"]  # fmt: skip


def run_condor_q(command: list[str], timeout: float) -> list[dict[str, Any]] | None:
    """The job ads ``condor_q -json`` printed (none matched: ``[]``), or None when it is not
    installed, failed, timed out or printed something else."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    if not done.stdout.strip():  # condor_q -json prints nothing when no job matches
        return []
    try:
        ads = json.loads(done.stdout)
    except ValueError:
        return None
    return [ad for ad in ads if isinstance(ad, dict)] if isinstance(ads, list) else None


class LiveReader:
    """The live progress of running jobs, from local ad files or the schedd (see the module).

    Parameters
    ----------
    interval : float
        The least number of seconds between two ``condor_q`` runs.
    timeout : float
        How long one ``condor_q`` run may take.
    clock : callable
        Monotonic seconds (a test's own clock).
    """

    def __init__(
        self,
        interval: float = SCHEDD_INTERVAL,
        timeout: float = QUERY_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval, self.timeout, self.clock = interval, timeout, clock
        self.queries = 0  # condor_q runs so far
        self._next_query = -math.inf  # when the schedd may be asked again
        self._ads: dict[str, dict[str, Any]] = {}  # cluster.proc -> its ad in the last answer

    def read(
        self, jobs: Iterable[JobView], dag_folders: Sequence[Path] = ()
    ) -> dict[str, LiveProgress]:
        """``cluster.proc`` -> live progress, for those of the running ``jobs`` that published
        any; ``dag_folders`` are where the local backend keeps its jobs' ads."""
        running = [job for job in jobs if job.state == "running"]
        found: dict[str, LiveProgress] = {}
        for job in running:
            if job.schedd and not job.on_local_backend:
                continue  # a pool's job, whose id a local job of the same run folder may have had
            progress = self._local(job, dag_folders)
            if progress is not None:
                found[job.id] = progress
        elsewhere = [job for job in running if job.id not in found]
        for job, ad in zip(elsewhere, self._schedd_ads(elsewhere), strict=True):
            progress = None if ad is None else LiveProgress.from_ad(ad, "schedd")
            if progress is not None and _this_run(job, progress.updated):
                found[job.id] = progress
        return found

    def _local(self, job: JobView, dag_folders: Sequence[Path]) -> LiveProgress | None:
        """The job's ad file written by the local backend during this run (an older file is
        another run's: the local backend numbers its clusters from 1 per run folder, and a job
        whose submit event was not read may be a pool's)."""
        for folder in dag_folders:
            path = local_job_ad(folder, job.id)
            try:
                if not _this_run(job, path.stat().st_mtime):
                    continue
                ad = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # none, or being replaced: the next refresh reads it
            if isinstance(ad, dict) and (progress := LiveProgress.from_ad(ad, "local")):
                return progress
        return None

    def _schedd_ads(self, jobs: list[JobView]) -> list[dict[str, Any] | None]:
        """Each job's ad in the schedd's answer (None: not in it), asking at most every
        ``interval`` seconds; an ad whose DAG node is not the job's is another job's."""
        if jobs and self.clock() >= self._next_query:
            self.queries += 1
            ads = run_condor_q(schedd_query(jobs), self.timeout)
            pause = self.interval if ads is not None else max(FAILURE_PAUSE, self.interval)
            self._next_query = self.clock() + pause
            self._ads = {f"{ad.get('ClusterId')}.{ad.get('ProcId')}": ad for ad in ads or []}
        found: list[dict[str, Any] | None] = []
        for job in jobs:
            ad = self._ads.get(job.id)
            same = ad is not None and (
                job.node is None or ad.get("DAGNodeName") in (None, job.node)
            )
            found.append(ad if same else None)
        return found


def _this_run(job: JobView, written: float | None) -> bool:
    """Whether something written at ``written`` (Unix time) can be the job's current run's."""
    return written is None or job.started is None or written >= job.started - CLOCK_SLACK
