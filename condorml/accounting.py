"""HTCondor's accounting of a sweep's jobs, from their event logs: runs, checkpoints, time.

One definition for every output (``leaderboard.csv``, ``condorml watch``, ``condorml
report``), HTCondor's own (see :mod:`condorml.events`): a *run* is an execution on an execute
point (001), a *checkpoint* one that came back while the job kept running (an 040 output
transfer), an *eviction* an 004 that did not announce a hold.

Time (:func:`job_time`) follows the same events: execution time up to a checkpoint or to the
job's termination is *committed*; execution time since the last commit that ends in an eviction
(004), a hold (012) or a removal (009) is *lost*; the time from the start of a run's input
transfer to its execution is *set-up*. Together they are HTCondor's ``RemoteWallClockTime``,
and committed time its ``CommittedTime``, within a second or two per run (the pool tests
compare them with ``condor_history``). The checkpoints and transfers are only in each job's own
log, not in DAGMan's nodes log, so both are read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from condorml.errors import CondormlError
from condorml.events import NODES_LOG_SUFFIX, Event, EventFollower, JobView, NodeView
from condorml.layout import job_logs

if TYPE_CHECKING:
    import pandas as pd

# The accounting columns the leaderboard carries (the report's HTCondor table has them all)
LEADERBOARD_COLUMNS = ("runs", "checkpoints", "evictions")


@dataclass
class JobTime:
    """Time one job spent on execute points, in seconds, split by what became of it.

    ``execution`` is HTCondor's ``RemoteWallClockTime`` (every run, from the start of its input
    transfer to its end) and ``committed`` its ``CommittedTime`` (from the start of execution
    to the last checkpoint that came back, or to the job's termination), within a second or
    two per run (compared on a real pool by the pool tests).
    """

    committed: float = 0.0  # ended in a checkpoint or in the job's termination
    lost: float = 0.0  # since the last commit, then evicted, held or removed
    setup: float = 0.0  # from the start of a run (input transfer) to the start of execution
    uncommitted: float = 0.0  # since the last commit of a job still running

    @property
    def execution(self) -> float:
        """All the time the job held an execute point (HTCondor's RemoteWallClockTime)."""
        return self.committed + self.lost + self.setup + self.uncommitted


def job_time(events: Iterable[Event], now: float | None = None) -> JobTime:
    """Split one job's time on execute points into committed, lost and set-up time.

    Parameters
    ----------
    events : iterable of Event
        The job's events in log order (its own log: only it has the checkpoints and transfers).
    now : float, optional
        For a job still running at the end of its log: the time up to which its work since the
        last commit counts as ``uncommitted`` (default: the current time).

    Example
    -------
    >>> E = lambda kind, at, transfer=None: Event(kind, at, transfer)
    >>> t = job_time([E(40, 0, 2), E(1, 2), E(40, 60, 6), E(4, 90), E(1, 100), E(5, 130)])
    >>> (t.committed, t.lost, t.setup, t.execution)
    (88.0, 30.0, 2.0, 120.0)
    """
    from htcondor2 import FileTransferEventType as F
    from htcondor2 import JobEventType as T

    result = JobTime()
    start: float | None = None  # start of the current run (its input transfer)
    since: float | None = None  # last commit (or execution start) while running; None when not
    for event in events:
        kind, timestamp = event.type, event.timestamp
        if kind == T.FILE_TRANSFER and event.transfer == F.IN_STARTED and since is None:
            start = timestamp
        elif kind == T.EXECUTE:
            result.setup += timestamp - (start if start is not None else timestamp)
            start, since = None, timestamp
        elif since is None:
            continue
        elif kind == T.FILE_TRANSFER and event.transfer == F.OUT_FINISHED:
            result.committed += timestamp - since  # a checkpoint (or the final output) came back
            since = timestamp
        elif kind == T.JOB_TERMINATED:
            result.committed += timestamp - since
            since = None
        elif kind in (T.JOB_EVICTED, T.JOB_HELD, T.JOB_ABORTED):
            result.lost += timestamp - since
            since = None
    if since is not None:
        result.uncommitted = max((time.time() if now is None else now) - since, 0.0)
    result.committed, result.lost, result.setup = map(
        float, (result.committed, result.lost, result.setup)
    )
    return result


def read_job_times(
    logs: list[Path], now: float | None = None
) -> tuple[list[JobView], dict[str, JobTime]]:
    """Read job event logs: every job's view (runs, checkpoints, ...) and its time, by job id.

    Raises
    ------
    CondormlError
        If a log is not a readable HTCondor job event log.
    """
    follower = EventFollower(logs)
    follower.poll()
    jobs = sorted(follower.jobs.values(), key=lambda j: (j.cluster, j.proc))
    return jobs, {job.id: job_time(follower.events[(job.cluster, job.proc)], now) for job in jobs}


def run_logs(run_dir: Path, members: list[str]) -> list[Path]:
    """A sweep's event logs that exist: DAGMan's nodes logs and every job's own log."""
    nodes = sorted(run_dir.glob(f"*.dag{NODES_LOG_SUFFIX}"))
    return [p for p in [*nodes, *job_logs(run_dir, members)] if p.is_file()]


def member_accounting(
    run_dir: Path, members: list[str], now: float | None = None
) -> tuple[pd.DataFrame | None, list[str]]:
    """Per member, its training jobs' runs, checkpoints, evictions and committed/lost time.

    Returns the table (None without any event log) and notes on what is missing.
    """
    import pandas as pd

    logs = run_logs(run_dir, members)
    if not logs:
        return None, ["no job event logs (no *.dag.nodes.log, no members/<id>/train.log): HTCondor accounting skipped"]  # fmt: skip
    try:
        jobs, times = read_job_times(logs, now)
    except CondormlError as err:
        return None, [f"HTCondor accounting skipped: {err}"]
    notes: list[str] = []
    rows = []
    for member in members:
        node = NodeView(f"train_{member}", [j for j in jobs if j.node == f"train_{member}"])
        spent = [times[job.id] for job in node.jobs]
        committed = sum(t.committed for t in spent)
        execution = sum(t.execution for t in spent)
        rows.append({
            "member": member,
            "state": node.state if node.jobs else "not submitted",
            "attempts": node.attempts,
            "runs": node.total("runs"),
            "checkpoints": node.total("checkpoints"),
            "evictions": node.total("evictions"),
            "execution_seconds": execution,
            "committed_seconds": committed,
            "lost_seconds": sum(t.lost for t in spent),
            "setup_seconds": sum(t.setup for t in spent),
            "uncommitted_seconds": sum(t.uncommitted for t in spent),
            # HTCondor's CommittedTime / RemoteWallClockTime: the share of the time held that
            # produced work which was kept
            "goodput": committed / execution if execution > 0 else math.nan,
        })  # fmt: skip
        if not node.jobs:
            notes.append(f"no training job of {member} in the event logs (not submitted yet)")
    return pd.DataFrame(rows), notes


def leaderboard_counts(table: pd.DataFrame | None) -> dict[str, dict[str, int]]:
    """Member -> its :data:`LEADERBOARD_COLUMNS`, for members whose training jobs were seen."""
    if table is None:
        return {}
    seen = table[table["state"] != "not submitted"]
    return {
        row["member"]: {c: int(row[c]) for c in LEADERBOARD_COLUMNS}
        for row in seen.to_dict("records")
    }
