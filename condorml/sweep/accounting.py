"""HTCondor's accounting of a sweep's jobs, from their event logs: runs, checkpoints, time.

One definition for every output (``leaderboard.csv``, ``condorml watch``, ``condorml
report``, the local backend's ``dagman.out`` and ``condorml run``), HTCondor's own, counted by
:class:`condorml.htcondor.events.JobView`: a *run* is an execution on an execute point (001), a
*checkpoint* a checkpoint transfer back while the job kept running (an 040 output transfer of an
exit 85), an *eviction* an 004 that did not announce a hold or a removal. :func:`counts_line`
words them for text.

Time (:func:`job_time`) follows the same events: execution time up to a checkpoint or to the
job's successful termination is *committed*; the time from the start of a run's input transfer to
its execution is *set-up*; the rest is *lost*, to its cause (:data:`LOST_CAUSES`):

* an **eviction** (004): the time since the last checkpoint;
* a **hold** (012, or 004 then 012): the time since the last checkpoint (the spool keeps the
  checkpoints for a release);
* a **failure** (005 with a non-zero exit code or a signal): the time since the last checkpoint
  (the final output, ``ckpt/`` included, comes back, so earlier checkpoints stay useful);
* a **removal** (009, or 004 then 009: ``condor_rm``, a Ctrl-C of ``condorml run``): the time
  since the last checkpoint *and all the job's committed time*, as HTCondor deletes a removed
  job's spool with its checkpoints and transfers no output: the next attempt starts over.

For jobs that were neither removed nor failed, the total is HTCondor's ``RemoteWallClockTime``
and committed time its ``CommittedTime`` within a second or two per run, except that HTCondor
also counts the set-up of a run that ends without a checkpoint of its own (its shadow commits
a termination from the run's start, ``JobCurrentStartDate``, and a checkpoint from the start of
execution; here set-up stays apart, as it is input transfer, not training: 5 s in one pool run).
The pool tests compare them with ``condor_history``. For removed and failed jobs HTCondor
still counts as committed what this module counts as lost, because that work was not kept. The checkpoints and
transfers are only in each job's own log, not in DAGMan's nodes log, so both are read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condorml.errors import CondormlError
from condorml.htcondor.events import (
    NODES_LOG_SUFFIX,
    Event,
    EventFollower,
    JobKey,
    JobView,
    NodeView,
    short_reason,
    submit_order,
)
from condorml.job.files import job_stream_name
from condorml.sweep.rundir import (
    NodeName,
    job_logs,
    member_folder,
)
from condorml.sweep.trials import read_trials

if TYPE_CHECKING:
    import pandas as pd

# The accounting columns the leaderboard carries (the report's HTCondor table has them all)
LEADERBOARD_COLUMNS = ("runs", "checkpoints", "evictions")
# member_accounting's columns of a run with [search] only (a run without keeps its table as it was)
_SEARCH_ONLY = ("rungs", "search_state", "rungs_done")
# What lost time is lost to, in the order the report names them
LOST_CAUSES = ("eviction", "hold", "removal", "failure")


def lost_column(cause: str) -> str:
    """The accounting table's column of the time lost to ``cause`` (one of :data:`LOST_CAUSES`)."""
    return f"lost_{cause}_seconds"


def counts_line(runs: int, checkpoints: int, evictions: int) -> str:
    """The counts as every text output words them (``dagman.out``, report summary)."""
    return (
        f"{runs} run{'' if runs == 1 else 's'}, {checkpoints} checkpoint"
        f"{'' if checkpoints == 1 else 's'}, {evictions} eviction{'' if evictions == 1 else 's'}"
    )


@dataclass
class JobTime:
    """Time one job spent on execute points, in seconds, split by what became of it.

    For a job that ended well, ``execution`` is HTCondor's ``RemoteWallClockTime`` (every run,
    from the start of its input transfer to its end) and ``committed`` its ``CommittedTime``
    (from the start of execution to the last checkpoint that came back, or to the job's
    termination), within a second or two per run, plus the set-up of a run that ended without
    a checkpoint of its own, which HTCondor counts as committed (see the module docstring).
    Lost time is split by cause (see the module docstring).
    """

    committed: float = 0.0  # up to a checkpoint kept, or to the job's successful termination
    setup: float = 0.0  # from the start of a run (input transfer) to the start of execution
    uncommitted: float = 0.0  # since the last commit of a job still running
    lost_to: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOST_CAUSES, 0.0))

    @property
    def lost(self) -> float:
        """Time whose work was not kept, whatever the cause."""
        return sum(self.lost_to.values())

    @property
    def execution(self) -> float:
        """All the time the job held an execute point (HTCondor's RemoteWallClockTime)."""
        return self.committed + self.lost + self.setup + self.uncommitted


def job_time(events: Iterable[Event], now: float | None = None) -> JobTime:
    """Split one job's time on execute points into committed, lost (by cause) and set-up time.

    Parameters
    ----------
    events : iterable of Event
        The job's events in log order (its own log: only it has the checkpoints and transfers).
    now : float, optional
        For a job still running at the end of its log: the time up to which its work since the
        last commit counts as ``uncommitted`` (default: the current time).

    Example
    -------
    >>> from htcondor2 import FileTransferEventType as F, JobEventType as T
    >>> E = lambda kind, at, transfer=None: Event(kind, at, transfer)
    >>> run, evicted = E(T.EXECUTE, 2), E(T.JOB_EVICTED, 90)
    >>> out = E(T.FILE_TRANSFER, 60, F.OUT_FINISHED)
    >>> t = job_time([E(T.FILE_TRANSFER, 0, F.IN_STARTED), run, out, evicted,
    ...               E(T.EXECUTE, 100), E(T.JOB_TERMINATED, 130)])
    >>> (t.committed, t.lost, t.setup, t.execution, t.lost_to["eviction"])
    (88.0, 30.0, 2.0, 120.0, 30.0)
    >>> removed = job_time([E(T.EXECUTE, 0), out, evicted, E(T.JOB_ABORTED, 90)])  # condor_rm
    >>> (removed.committed, removed.lost_to["removal"])  # its checkpoints are deleted with it
    (0.0, 90.0)
    """
    from htcondor2 import JobEventType as T

    # The events that decide what a pending 004 or output transfer was (not 006, 021, 028...)
    deciding = {T.FILE_TRANSFER, T.EXECUTE, T.JOB_EVICTED, T.JOB_TERMINATED, T.JOB_HELD,
                T.JOB_ABORTED, T.JOB_RELEASED, T.SUBMIT}  # fmt: skip
    clock = _JobClock()
    for event in events:
        if event.type in deciding:
            clock.settle(event.type)
            clock.step(event)
    return clock.finish(time.time() if now is None else now)


@dataclass
class _JobClock:
    """:func:`job_time`'s walk through one job's events: the time so far and what is pending."""

    result: JobTime = field(default_factory=JobTime)
    start: float | None = None  # start of the current run (its input transfer)
    since: float | None = None  # last commit (or execution start) while running; None when not
    output_at: float | None = None  # an output transfer back: a checkpoint, or the final output
    evicted: float | None = None  # time lost at a 004: to an eviction, or a hold or removal

    def settle(self, kind: int) -> None:
        """Decide what a pending 004 or output transfer was, as an event of ``kind`` follows."""
        from htcondor2 import JobEventType as T

        lost_to = self.result.lost_to
        if self.evicted is not None:  # a 004 announces a hold or a removal, else it is an eviction
            cause = {T.JOB_HELD: "hold", T.JOB_ABORTED: "removal"}.get(kind, "eviction")
            lost_to[cause] += self.evicted
            self.evicted = None
        if self.output_at is not None and self.since is not None and kind != T.JOB_TERMINATED:
            self.result.committed += self.output_at - self.since  # the job went on: a checkpoint
            self.since, self.output_at = self.output_at, None

    def step(self, event: Event) -> None:
        """Account for one event that decides something (see :func:`job_time`)."""
        from htcondor2 import FileTransferEventType as F
        from htcondor2 import JobEventType as T

        kind, at, result = event.type, event.timestamp, self.result
        if kind == T.FILE_TRANSFER and event.transfer == F.IN_STARTED and self.since is None:
            self.start = at
        elif kind == T.EXECUTE:
            result.setup += at - (self.start if self.start is not None else at)
            self.start, self.since = None, at
        elif kind == T.JOB_ABORTED:
            if self.since is not None:
                result.lost_to["removal"] += at - self.since
            # condor_rm deletes the spool: the job's checkpoints are gone with it
            result.lost_to["removal"] += result.committed
            result.committed, self.since = 0.0, None
        elif self.since is None:
            return
        elif kind == T.FILE_TRANSFER and event.transfer == F.OUT_FINISHED:
            self.output_at = at
        elif kind == T.JOB_TERMINATED:
            if event.normal and not event.return_value:
                result.committed += at - self.since
            else:  # the work since the last checkpoint is not in the output that came back
                result.lost_to["failure"] += at - self.since
            self.since = self.output_at = None
        elif kind == T.JOB_EVICTED:
            self.evicted, self.since = at - self.since, None
        elif kind == T.JOB_HELD:
            result.lost_to["hold"] += at - self.since
            self.since = None

    def finish(self, now: float) -> JobTime:
        """The job's time once its log ends here (a running job's work counts up to ``now``)."""
        result = self.result
        if self.evicted is not None:  # nothing followed yet: an eviction, unless a hold comes
            result.lost_to["eviction"] += self.evicted
        if self.since is not None:
            if self.output_at is not None:  # still running after it: a checkpoint
                result.committed += self.output_at - self.since
                self.since = self.output_at
            result.uncommitted = max(now - self.since, 0.0)
        result.committed, result.setup = float(result.committed), float(result.setup)
        result.lost_to = {cause: float(value) for cause, value in result.lost_to.items()}
        return result


def read_job_times(
    logs: list[Path], now: float | None = None
) -> tuple[list[JobView], dict[JobKey, JobTime]]:
    """Read job event logs: every job's view (runs, checkpoints, ...) in submit order, and its
    time by :attr:`JobView.key` (a ``cluster.proc`` may name two jobs of a moved run).

    Raises
    ------
    CondormlError
        If a log is not a readable HTCondor job event log.
    """
    follower = EventFollower(logs)
    follower.poll()
    jobs = sorted(real_jobs(follower.jobs.values()), key=submit_order)
    return jobs, {key: job_time(follower.events[key], now) for job in jobs if (key := job.key)}


def run_logs(run_dir: Path, members: list[str]) -> list[Path]:
    """A sweep's event logs that exist: DAGMan's nodes logs and every job's own log."""
    nodes = sorted(run_dir.glob(f"*.dag{NODES_LOG_SUFFIX}"))
    return [p for p in [*nodes, *job_logs(run_dir, members)] if p.is_file()]


# Node states that need a word of explanation
TROUBLE = ("held", "failed", "removed")


@dataclass
class TrainingView(NodeView):
    """A member's training nodes seen in the logs, as one: with ``[search.halving]`` one node
    per rung (``train_m007_r1``, ``train_m007_r2``, ...), else the one ``train_m007``.

    ``jobs`` are every rung's jobs in rung order, so the counters (:meth:`total`) and
    :attr:`attempts` add up over the rungs; the state and the reason are the latest rung's.
    """

    rungs: list[NodeView] = field(default_factory=list)  # in rung order

    @property
    def latest(self) -> NodeView | None:
        """The latest rung's node that has jobs (None before the first was submitted)."""
        return self.rungs[-1] if self.rungs else None

    @property
    def rung(self) -> int | None:
        """The latest rung seen (1-based; None without rungs or before the first)."""
        name = NodeName.parse(self.rungs[-1].name) if self.rungs else None
        return None if name is None else name.rung

    @property
    def attempts(self) -> int:
        return sum(node.attempts for node in self.rungs)

    @property
    def state(self) -> str:
        return self.rungs[-1].state if self.rungs else "waiting"

    @property
    def reason(self) -> str:
        return self.rungs[-1].reason if self.rungs else ""


def training_views(nodes: Iterable[NodeView]) -> dict[str, TrainingView]:
    """Member -> its training nodes seen in the logs, as one :class:`TrainingView`."""
    found: dict[str, list[tuple[int, NodeView]]] = {}
    for node in nodes:
        name = NodeName.parse(node.name)
        if name is not None and name.kind == "train":
            found.setdefault(name.member, []).append((name.rung or 0, node))
    views = {}
    for member, rungs in found.items():
        ordered = [node for _, node in sorted(rungs, key=lambda pair: pair[0])]
        views[member] = TrainingView(str(NodeName("train", member)),
                                     [job for node in ordered for job in node.jobs], ordered)  # fmt: skip
    return views


# DAGMan's proc id in the events of a node that runs no job (a NOOP node's; 034 PRE_SKIP
# events are set apart by the event follower itself)
NO_JOB_PROC = 2**31 - 1


def real_jobs(jobs: Iterable[JobView]) -> list[JobView]:
    """The jobs that were submitted, without DAGMan's pseudo jobs of job-less nodes' events."""
    return [job for job in jobs if job.proc != NO_JOB_PROC]


def nodes_of(jobs: Iterable[JobView]) -> dict[str, NodeView]:
    """The DAG nodes of jobs (:func:`real_jobs`), by node name (a job outside a DAG under its
    id), in job order."""
    nodes: dict[str, NodeView] = {}
    for job in jobs:
        name = job.node or job.id
        nodes.setdefault(name, NodeView(name)).jobs.append(job)
    return nodes


def node_note(node: NodeView | None, folder: Path | None = None, kind: str = "") -> str:
    """Why a held, failed or removed node is so, in a few words ("" for any other state).

    The latest attempt's hold reason (short), exit code or signal, or POST script result; for a
    failed job of a sweep (``folder``, ``kind``: ``train`` or ``infer``), the last line of its
    stderr, which says what went wrong inside the job.
    """
    if isinstance(node, TrainingView):
        node = node.latest
    if node is None or node.state not in TROUBLE:
        return ""
    jobs = node.latest_attempt()
    job = next((j for j in reversed(jobs) if j.state == node.state), jobs[-1])
    if job.reason:
        note = short_reason(job.reason)
    elif job.post_return:
        note = f"POST script failed with status {job.post_return}"
    else:
        note = node.state
    if node.state == "failed" and folder is not None and kind:
        line = _last_error_line(folder / job_stream_name(kind, "err", job.id))
        note += f": {short_reason(line)}" if line else ""
    return note


def _last_error_line(path: Path) -> str:
    """The line of a job's stderr that says what failed: condorml's error, else the last one."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith("condorml: error:")]
    return (errors or lines or [""])[-1].removeprefix("condorml: error: ")


def no_predictions_reasons(table: pd.DataFrame | None) -> dict[str, str]:
    """Member -> why it has no predictions, from its jobs' logs (see :func:`member_outcome`)."""
    if table is None:
        return {}
    return {row["member"]: member_outcome(row) for row in table.to_dict("records")}


def member_outcome(row: dict[str, Any]) -> str:
    """Why a member of :func:`member_accounting`'s table has no predictions, from its jobs' logs."""
    train, infer = row.get("state"), row.get("infer_state")
    note = f": {row['note']}" if isinstance(row.get("note"), str) and row["note"] else ""
    if row.get("search_state") == "stopped" and infer in (None, "skipped", "not submitted"):
        rungs = row.get("rungs_done")
        after = f" after rung {int(rungs)}" if isinstance(rungs, (int, float)) and rungs > 0 else ""
        return f"stopped early by the search{after}: no inference"
    if train in TROUBLE:
        return f"training {train}{note}"
    if infer in TROUBLE:
        return f"inference {infer}{note}"
    if train != "done":
        return f"training {train}" if train else "no predictions"
    if infer in (None, "waiting", "not submitted"):
        return "inference not started"
    if infer != "done":
        return f"inference {infer}"
    return "inference finished but wrote no predictions"


def member_accounting(
    run_dir: Path, members: list[str], now: float | None = None
) -> tuple[pd.DataFrame | None, list[str]]:
    """Per member, its training jobs' runs, checkpoints, evictions and committed/lost time.

    With ``[search.halving]`` a member's training is one node per rung: the counts and times
    are summed over them and ``state`` is the latest's (:class:`TrainingView`). Also the state
    of its inference node (``infer_state``: ``skipped`` for a member the search stopped), with
    ``[search]`` how many rungs' jobs were seen (``rungs``) and its search record's
    ``search_state`` and ``rungs_done``, and why its latest node is held, failed or removed
    (``note``). Returns the table (None without any event log) and notes on what is
    missing.
    """
    import pandas as pd

    logs = run_logs(run_dir, members)
    if not logs:
        return None, [
            "no job event logs (no *.dag.nodes.log, no members/<id>/train.log): "
            "HTCondor accounting skipped"
        ]
    try:
        jobs, times = read_job_times(logs, now)
    except CondormlError as err:
        return None, [f"HTCondor accounting skipped: {err}"]
    notes: list[str] = []
    rows = []
    nodes = nodes_of(jobs)
    trainings, trials = training_views(nodes.values()), read_trials(run_dir, members)
    for member in members:
        node = trainings.get(member) or TrainingView(str(NodeName("train", member)))
        infer_name = str(NodeName("infer", member))
        infer = nodes.get(infer_name) or NodeView(infer_name)
        trial = trials.get(member)
        stopped = trial is not None and trial.state == "stopped"
        folder = member_folder(run_dir, member)
        spent = [times[job.key] for job in node.jobs if job.key is not None]
        committed = sum(t.committed for t in spent)
        execution = sum(t.execution for t in spent)
        rows.append({
            "member": member,
            "state": node.state if node.jobs else "not submitted",
            "rungs": len(node.rungs),
            "attempts": node.attempts,
            "runs": node.total("runs"),
            "checkpoints": node.total("checkpoints"),
            "evictions": node.total("evictions"),
            "execution_seconds": execution,
            "committed_seconds": committed,
            "lost_seconds": sum(t.lost for t in spent),
            **{lost_column(c): sum(t.lost_to[c] for t in spent) for c in LOST_CAUSES},
            "setup_seconds": sum(t.setup for t in spent),
            "uncommitted_seconds": sum(t.uncommitted for t in spent),
            # HTCondor's CommittedTime / RemoteWallClockTime (set-up apart): the share of the
            # time held that produced work which was kept
            "goodput": committed / execution if execution > 0 else math.nan,
            "infer_state": infer.state if infer.jobs else "skipped" if stopped else "not submitted",
            "search_state": None if trial is None else trial.state,
            "rungs_done": None if trial is None else trial.rungs_done,
            # why the member's latest node is held, failed or removed (its hold reason, ...)
            "note": node_note(infer, folder, "infer") or node_note(node, folder, "train"),
        })  # fmt: skip
        if not node.jobs:
            notes.append(f"no training job of {member} in the event logs (not submitted yet)")
    table = pd.DataFrame(rows)
    return (table if trials else table.drop(columns=list(_SEARCH_ONLY))), notes


def leaderboard_counts(table: pd.DataFrame | None) -> dict[str, dict[str, int]]:
    """Member -> its :data:`LEADERBOARD_COLUMNS`, for members whose training jobs were seen."""
    if table is None:
        return {}
    seen = table[table["state"] != "not submitted"]
    return {
        row["member"]: {c: int(row[c]) for c in LEADERBOARD_COLUMNS}
        for row in seen.to_dict("records")
    }
