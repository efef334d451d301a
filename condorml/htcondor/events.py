"""Job event logs, read as HTCondor writes them: per job, what happened; per DAG node, its jobs.

The logs are read with ``htcondor2.JobEventLog``, so a log written by a real pool and one written
by the local backend read the same. What the events mean (the evidence: the real logs in
``tests/fixtures/htcondor/`` and the pool tests):

* a *run* is an 001 "executing" event: an execution on an execute point. A restart after exit
  85 in the same sandbox is not one (HTCondor writes no event for it);
* a *checkpoint* is an 040 "finished transferring output files" event while the job keeps
  running (HTCondor writes no checkpoint event); the output transfer just before the 005
  termination is the job's final output, not a checkpoint;
* an *eviction* is an 004 event that is not the prelude of a hold or a removal (a failed
  output transfer is 004 then 012; ``condor_rm`` of a running job 004 then 009);
* a second submit event (000) for a ``cluster.proc`` seen before is a new job: a sweep begun on
  the local backend and continued on a pool has both in a member's own log, with ids that may
  repeat;
* a DAG node's jobs are those whose submit event carries ``DAG Node: NAME``; a POST script's 016
  event decides the node's result when there is one.

Two kinds of log hold a DAG's events, and they differ:

* a job's **own log** (its ``log`` command, e.g. ``members/m000/train.log``) has every event of
  the job, the 040 transfers included;
* DAGMan's **nodes log** (``<dag>.nodes.log``) has only what DAGMan acts on (000, 001, 004,
  005, 009, 012, 013, and the 016 of POST scripts): no 040, so no checkpoint shows there.

A job's view is therefore built from its own log once that has been read, else from the nodes
log, which also adds the POST script's result; when a nodes log is followed, it decides which
jobs belong to the DAG.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError

_OUTPUT_BACK = -1  # JobView._last after an output transfer finished (no event type is negative)
# How an event log begins in each of HTCondor's formats: "000 (123.000.000) ..." (the default),
# XML (``log_xml``) or JSON; htcondor2 reads anything else as a log without events
_LOG_START = re.compile(rb"^\s*(\d{3} \(\d+\.\d+\.\d+\) |<\?xml|<c>|[\[{])")
_SNIFF_BYTES = 64
NODES_LOG_SUFFIX = ".nodes.log"  # DAGMan's default node log: <dag>.nodes.log
DAGMAN_LOG_SUFFIX = ".dagman.log"  # the log of the DAGMan job itself, not of its nodes


@dataclass(frozen=True)
class Event:
    """The part of one job event that condorml reads (``htcondor2.JobEvent`` is tied to its log)."""

    type: int  # htcondor2.JobEventType
    timestamp: float
    transfer: int | None = None  # an 040's FileTransferEventType
    normal: bool = True  # 005: terminated normally (else by a signal)
    return_value: int | None = None  # 005: exit code; 016: the POST script's
    signal: int | None = None
    reason: str = ""  # 012 hold reason, 009 removal reason
    node: str | None = None  # 000: the DAG node it was submitted for


def read_event(event: Any) -> Event:
    """The :class:`Event` of an ``htcondor2.JobEvent``."""
    from htcondor2 import JobEventType as T

    kind = event.type
    values: dict[str, Any] = {}
    if kind == T.SUBMIT:
        values["node"] = _node_name(event)
    elif kind == T.FILE_TRANSFER:
        values["transfer"] = event.get("Type")
    elif kind == T.JOB_TERMINATED:
        values["normal"] = bool(event.get("TerminatedNormally", False))
        if values["normal"]:
            values["return_value"] = int(event.get("ReturnValue", 0))
        else:
            values["signal"] = event.get("TerminatedBySignal")
    elif kind == T.JOB_HELD:
        values["reason"] = str(event.get("HoldReason", "held"))
    elif kind == T.JOB_ABORTED:
        values["reason"] = str(event.get("Reason", "removed"))
    elif kind == T.POST_SCRIPT_TERMINATED:
        values["return_value"] = int(event.get("ReturnValue", -1))
    return Event(int(kind), float(event.timestamp), **values)


def _node_name(event: Any) -> str | None:
    notes = event.get("StructuredNotes")
    if notes is not None and "DAGNodeName" in notes:
        return str(notes["DAGNodeName"])
    text = str(event.get("LogNotes", ""))
    return text.split(":", 1)[1].strip() if text.startswith("DAG Node:") else None


@dataclass
class JobView:
    """What the event logs say about one job (one ``cluster.proc``)."""

    cluster: int
    proc: int
    node: str | None = None
    state: str = "idle"
    runs: int = 0
    checkpoints: int = 0
    evictions: int = 0
    return_value: int | None = None
    reason: str = ""
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    post_return: int | None = None
    _last: int | None = None  # type of the last event that counts for checkpoint/eviction rules

    @property
    def id(self) -> str:
        """``cluster.proc``, as HTCondor prints it."""
        return f"{self.cluster}.{self.proc}"

    def apply(self, event: Event) -> None:
        """Update the view with the job's next event."""
        from htcondor2 import FileTransferEventType as F
        from htcondor2 import JobEventType as T

        kind = event.type
        if kind == T.SUBMIT:
            self.submitted = event.timestamp
            self.node = event.node or self.node
        elif kind == T.EXECUTE:
            self.runs += 1
            self.state, self.started = "running", event.timestamp
        elif kind == T.FILE_TRANSFER:
            if event.transfer == F.OUT_FINISHED and self.state == "running":
                self.checkpoints += 1  # taken back below if the job terminates next
                self._last = _OUTPUT_BACK
            return
        elif kind == T.JOB_EVICTED:
            self.evictions += 1
            self.state = "idle"
        elif kind == T.JOB_TERMINATED:
            if self._last == _OUTPUT_BACK:
                self.checkpoints -= 1  # that transfer was the job's final output
            self.ended = event.timestamp
            if event.normal:
                self.return_value = event.return_value
                self.state = "done" if self.return_value == 0 else "failed"
                if self.return_value:
                    self.reason = f"exited with {self.return_value}"
            else:
                self.state = "failed"
                self.reason = (
                    f"killed by signal {event.signal if event.signal is not None else '?'}"
                )
        elif kind == T.JOB_HELD:
            if self._last == int(T.JOB_EVICTED):
                self.evictions -= 1  # the 004 announced this hold, not an eviction
            self.state, self.reason = "held", event.reason
        elif kind == T.JOB_RELEASED:
            self.state, self.reason = "idle", ""
        elif kind == T.JOB_ABORTED:
            if self._last == int(T.JOB_EVICTED):
                self.evictions -= 1  # a running job's removal is logged as 004, then 009
            if self.state == "held":  # why it was held says more than who removed it
                self.reason = f"held: {self.reason}; then removed {event.reason}"
            else:
                self.reason = event.reason
            self.state, self.ended = "removed", event.timestamp
        elif kind == T.POST_SCRIPT_TERMINATED:
            self.post_return = event.return_value
        if kind != T.IMAGE_SIZE:
            self._last = kind


@dataclass
class NodeView:
    """A DAG node: its jobs over all attempts (RETRY) and procs (sharded inference)."""

    name: str
    jobs: list[JobView] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        """How many times the node was submitted (1 + retries so far)."""
        return len({job.cluster for job in self.jobs})

    @property
    def state(self) -> str:
        """The state of the node's latest attempt (its worst job)."""
        if not self.jobs:
            return "waiting"
        latest = max(job.cluster for job in self.jobs)
        jobs = [job for job in self.jobs if job.cluster == latest]
        post = [job.post_return for job in jobs if job.post_return is not None]
        if post:  # a POST script decides the node's result
            return "done" if post[-1] == 0 else "failed"
        for state in ("held", "running", "idle", "failed", "removed"):
            if any(job.state == state for job in jobs):
                return state
        return "done"

    def total(self, attribute: str) -> int:
        """Sum of a counter (runs, checkpoints, evictions) over the node's jobs."""
        return sum(getattr(job, attribute) for job in self.jobs)

    @property
    def reason(self) -> str:
        """Why the latest held or failed job is so."""
        return next((job.reason for job in reversed(self.jobs) if job.reason), "")


def short_reason(reason: str, width: int = 100) -> str:
    """A hold or removal reason short enough for a table cell: what failed, on which file.

    HTCondor's hold reasons name the execute point and every path in full; a user needs what
    failed and the file's name.

    Example
    -------
    >>> short_reason("Transfer output files failure at execution point slot1@vm while sending "
    ...              "files to access point vm. Details: 1 total failures: first failure: reading "
    ...              "from file /var/lib/condor/execute/dir_1/missing.csv: (errno 2) No such file "
    ...              "or directory")
    'Transfer output files failure: reading from file missing.csv: No such file or directory'
    """
    text = " ".join(reason.split())
    if "Details:" in text:
        head, _, detail = text.partition("Details:")
        head = re.split(r" at execution point|\. ", head, maxsplit=1)[0].rstrip(". ")
        detail = detail.rsplit("first failure:", 1)[-1].strip()
        text = f"{head}: {detail}"
    text = re.sub(r"(?:[\w.~-]*/)+([^/\s:]+)", r"\1", text)  # paths: their file names
    text = re.sub(r"\(errno \d+\) ", "", text)
    return text if len(text) <= width else text[: width - 1].rstrip() + "\u2026"


def looks_like_event_log(path: Path) -> bool:
    """Whether the file has begun as an event log; False while it is missing or empty.

    Raises
    ------
    CondormlError
        If the file begins as no HTCondor event log does (a CSV given as a log, say):
        htcondor2 would read it as a log without events.
    """
    try:
        with open(path, "rb") as handle:
            start = handle.read(_SNIFF_BYTES)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise CondormlError(f"{path}: cannot read it ({err.strerror or err})") from None
    if not start.strip():
        return False
    if not _LOG_START.match(start):
        raise CondormlError(
            f"{path}: not an HTCondor job event log (it does not begin with an event such "
            "as '000 (1.000.000) ...'); give a job's log file or a run folder"
        )
    return True


def is_nodes_log(path: Path) -> bool:
    """Whether ``path`` is a DAGMan nodes log (``<dag>.nodes.log``) rather than a job's own log."""
    return path.name.endswith(NODES_LOG_SUFFIX)


class EventFollower:
    """Read job event logs incrementally; a log that does not exist yet is read once it appears.

    Parameters
    ----------
    paths : iterable of Path
        Jobs' own logs and DAGMan nodes logs (recognised by their ``.nodes.log`` suffix), in
        any order. When a nodes log is among them, only the jobs it names are shown: a job's
        own log may also hold jobs of other submissions.

    Attributes
    ----------
    jobs : dict
        ``(cluster, proc)`` -> :class:`JobView`, rebuilt from the best log after every poll.
    events : dict
        ``(cluster, proc)`` -> the :class:`Event` list that view was built from (its own log's
        when read, else the nodes log's).
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(dict.fromkeys(Path(p) for p in paths))
        self.jobs: dict[tuple[int, int], JobView] = {}
        self.events: dict[tuple[int, int], list[Event]] = {}
        self._dag_mode = any(is_nodes_log(p) for p in self.paths)
        self._logs: dict[Path, Any] = {}
        self._own: dict[tuple[int, int], tuple[Path, list[Event]]] = {}  # its own log, events
        self._dag: dict[tuple[int, int], list[Event]] = {}  # events from nodes logs
        self._applied: dict[tuple[int, int], int] = {}  # events of self.events[key] in the view
        self._checked: set[Path] = set()  # logs seen to begin as an event log does
        self.skipped: set[str] = set()  # nodes DAGMan skipped (PRE_SKIP): done, no job

    def poll(self) -> int:
        """Read the events written since the last call; return how many were read.

        Raises
        ------
        CondormlError
            If a log is not a readable HTCondor job event log.
        """
        import htcondor2
        from htcondor2 import JobEventType as T

        count, changed = 0, set()
        for path in self.paths:
            if path not in self._checked:
                if not looks_like_event_log(path):
                    continue  # not there yet, or still empty
                self._checked.add(path)
            if path not in self._logs:
                self._logs[path] = htcondor2.JobEventLog(str(path))
            try:
                events = list(self._logs[path].events(0))
            except Exception as err:  # htcondor2 raises plain exceptions for corrupt logs
                raise CondormlError(
                    f"{path}: not a readable HTCondor job event log ({err})"
                ) from err
            nodes_log = is_nodes_log(path)
            for raw in events:
                if raw.type == T.PRESKIP:  # no job: DAGMan's note that a node was skipped
                    self.skipped.add(
                        str(raw.get("SkipEventLogNotes", "")).removeprefix("DAG Node: ")
                    )
                    count += 1
                    continue
                key, event = (raw.cluster, raw.proc), read_event(raw)
                if nodes_log:
                    history = self._dag.setdefault(key, [])
                else:
                    owner, history = self._own.setdefault(key, (path, []))
                    if owner != path:
                        continue  # the same job in a second own log: counted once
                if event.type == T.SUBMIT and history:  # a new job that reuses the id
                    history.clear()
                    self.events.pop(key, None)  # its view is replayed from the new submit
                history.append(event)
                changed.add(key)
                count += 1
        for key in changed:
            self._rebuild(key)
        return count

    def _rebuild(self, key: tuple[int, int]) -> None:
        """Bring the job's view up to date with its best log (in place: callers keep views)."""
        from htcondor2 import JobEventType as T

        if self._dag_mode and key not in self._dag:
            return  # not (yet) known to the DAG
        own = self._own.get(key, (None, []))[1]
        dag = self._dag.get(key, [])
        events = own or dag
        view = self.jobs.setdefault(key, JobView(*key))
        if self.events.get(key) is not events:  # first time, or its own log appeared: replay
            view.__dict__.update(JobView(*key).__dict__)
            self._applied[key] = 0
        for event in events[self._applied[key] :]:
            view.apply(event)
        self._applied[key] = len(events)
        self.events[key] = events
        if own:  # what only DAGMan writes: the POST script's result (and the node's name)
            for event in dag:
                if event.type == T.POST_SCRIPT_TERMINATED:
                    view.post_return = event.return_value
                elif event.type == T.SUBMIT and view.node is None:
                    view.node = event.node
