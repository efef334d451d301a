"""The backend interface: hand a DAG or a job to a backend, get a handle to follow it.

In the spirit of submitit's executors: a :class:`Backend` takes a written DAG file
(:meth:`Backend.submit_dag`) or a written submit file (:meth:`Backend.submit_job`) and returns a
:class:`Handle` with :meth:`~Handle.status`, :meth:`~Handle.wait` and :meth:`~Handle.cancel`.
Both backends read what happened from the same HTCondor job event logs
(:class:`condorml.htcondor.events.EventFollower`), so a status reads the same whichever ran it:

* a DAG's node counts come from DAGMan's nodes log (``<dag>.nodes.log``), its own result from
  how DAGMan ended (the pool: the DAGMan job's log; this machine: the local DAGMan's result);
* a job's counts come from its own ``log``, one count per ``cluster.proc``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from condorml.htcondor.events import EventFollower, JobView, NodeView

# What a submission is doing, as a whole (the states of htcondor.events.JobView, plus "held")
STATES = ("idle", "running", "held", "done", "failed", "removed")
ENDED = ("done", "failed", "removed")
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Status:
    """What a submitted DAG or job is doing.

    Attributes
    ----------
    state : str
        One of :data:`STATES`: ``idle`` (submitted, nothing running yet), ``running``,
        ``held``, or how it ended: ``done``, ``failed``, ``removed`` (cancelled, ``condor_rm``).
    counts : dict
        For a DAG, its nodes by state (the nodes DAGMan has submitted so far); for a job, its
        procs by state (see :class:`condorml.htcondor.events.JobView`).
    exit_code : int or None
        Once ended: DAGMan's exit status for a DAG, the (first failed) job's for a job.
    """

    state: str
    counts: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None

    @property
    def ended(self) -> bool:
        """Whether it has ended (done, failed or removed)."""
        return self.state in ENDED


class Handle(ABC):
    """A DAG or job handed to a backend."""

    kind: str  # "dag" or "job"

    @property
    @abstractmethod
    def message(self) -> str:
        """What was submitted and how to follow it, in one line."""

    @abstractmethod
    def status(self) -> Status:
        """What it is doing now, from its event logs.

        Raises
        ------
        CondormlError
            If a log cannot be read.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Remove it (``condor_rm``): running jobs stop, a DAG writes its rescue file."""

    def wait(self, timeout: float | None = None) -> Status:
        """Wait until it ends, or ``timeout`` seconds; the status then (``ended`` False on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if status.ended:
                return status
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return status
            time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))


class Backend(ABC):
    """Where DAGs and jobs run: :class:`~condorml.backends.condor.CondorBackend` (a schedd) or
    :class:`~condorml.backends.local.backend.LocalBackend` (this machine).

    Attributes
    ----------
    name : str
        ``condor`` or ``local``, as ``--backend`` names it.
    why : str
        Why :func:`condorml.backends.choose_backend` chose it when none was named, else "".
    detached : bool
        Whether the submitted work goes on without this process (a schedd) or runs only while
        this process waits for it (this machine).
    """

    name: str
    why: str = ""
    detached: bool

    def check_dag(self, dag_file: Path) -> None:
        """Refuse, before anything is written, a DAG file this backend would refuse to run.

        Raises
        ------
        CondormlError
            Saying why and what to do instead.
        """
        return None  # by default a backend finds problems when it reads the DAG

    @abstractmethod
    def submit_dag(self, dag_file: Path) -> Handle:
        """Start a written DAG (its submit files beside it, as ``condor_submit_dag`` reads them).

        Raises
        ------
        CondormlError
            If the DAG cannot be read or submitted.
        """

    @abstractmethod
    def submit_job(self, submit_file: Path) -> Handle:
        """Start the jobs of a written submit file (as ``condor_submit`` in its folder).

        Raises
        ------
        CondormlError
            If the submit file cannot be read or submitted.
        """


def node_counts(follower: EventFollower) -> dict[str, int]:
    """Nodes by state (their latest attempt's), from a follower of a DAG's nodes log; a node
    DAGMan skipped (PRE_SKIP) is done, as DAGMan counts it."""
    follower.poll()
    nodes: dict[str, NodeView] = {}
    for job in follower.jobs.values():
        if job.node is not None:
            nodes.setdefault(job.node, NodeView(job.node)).jobs.append(job)
    skipped = ["done"] * len(follower.skipped - nodes.keys())  # PRE_SKIP: done, no job
    return _count([*(node.state for node in nodes.values()), *skipped])


def jobs_status(jobs: list[JobView], procs: int = 0, finished: bool = False) -> Status:
    """The status of one submission's jobs, from their events: ``procs`` jobs are expected (those
    not logged yet count as idle); ``finished``: nothing more will happen to them, so jobs that
    did not end count as failed (the local backend ends a held job's node)."""
    states = [job.state for job in jobs]
    counts = _count(states + ["idle"] * max(procs - len(states), 0))
    state = _overall_state(counts)
    if finished and state not in ENDED:
        state = "failed"
    return Status(state, counts, _jobs_exit_code(jobs) if state in ENDED else None)


def _jobs_exit_code(jobs: Iterable[JobView]) -> int | None:
    """The first non-zero exit code of jobs that exited, else 0 if one exited, else None."""
    codes = [job.return_value for job in jobs if job.return_value is not None]
    return next((code for code in codes if code), 0 if codes else None)


def _overall_state(counts: dict[str, int]) -> str:
    """The state of a set of jobs: held or running if any is, idle until all ended, then the
    worst of failed, removed, done."""
    for state in ("held", "running", "idle", "failed", "removed", "done"):
        if counts.get(state):
            return state
    return "idle"  # nothing logged yet


def _count(states: Iterable[str]) -> dict[str, int]:
    return dict(Counter(states))
