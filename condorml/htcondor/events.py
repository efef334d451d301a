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
* a job is its submit event (000): ``cluster.proc`` alone does not name it, as every schedd
  numbers its own clusters (a fresh pool from 1, the local backend from 1 per run folder), and a
  run moved between the local backend and a pool, either way, has both schedds' jobs in the same
  logs. The 000 names the schedd (``Job submitted from host: <address>``, the same address in a
  job's own log and in the nodes log, checked on the pool) and the DAG node; a job is
  :class:`JobKey` (schedd, ``cluster.proc``, node and, should one schedd reuse an id for the
  same node, how many such submits came before in the log), and an event belongs to the latest
  job submitted with its ``cluster.proc`` in the same log;
* a DAG node's jobs are those whose submit event carries ``DAG Node: NAME``; a POST script's 016
  event decides the node's result when there is one.

Two kinds of log hold a DAG's events, and they differ:

* a job's **own log** (its ``log`` command, e.g. ``members/m000/train.log``) has every event of
  the job, the 040 transfers included;
* DAGMan's **nodes log** (``<dag>.nodes.log``) has only what DAGMan acts on (000, 001, 004,
  005, 009, 012, 013, and the 016 of POST scripts): no 040, so no checkpoint shows there; and
  DAGMan empties it at every start but a recovery ("MultiLogFiles: truncating log file", seen
  on the pool), a rescue DAG's included: it holds the latest DAGMan's jobs only, where own logs
  keep every run's (the local backend appends to it).

A job's view is therefore built from its own log once that has been read, else from the nodes
log, which also adds the POST script's result. When a nodes log is followed, the jobs of the DAG
are those it names and those whose own log's submit event names a DAG node (an earlier DAGMan's,
or the local backend's before a run moved to a pool); a job submitted by hand into the same log
is not. The order of the jobs is the order their submit events were read, own logs first: a
node's attempts share their own log, whose order is theirs (the clocks of a laptop and a pool
may differ; the cluster ids of two schedds do not compare).

A follower opens each log only while it reads it and remembers where it stopped, so that a sweep
of a thousand members' logs stays under the usual limit of open files (an open
``htcondor2.JobEventLog`` holds two); a log whose size has not changed is not opened, and one
whose beginning changed or that shrank (DAGMan's new start) is read again from its start.
"""

from __future__ import annotations

import datetime
import functools
import os
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from condorml.errors import CondormlError

_OUTPUT_BACK = -1  # JobView._last after an output transfer finished (no event type is negative)
# How an event log begins in each of HTCondor's formats: "000 (123.000.000) ..." (the default),
# XML (``log_xml``) or JSON; htcondor2 reads anything else as a log without events
_LOG_START = re.compile(rb"^\s*(\d{3} \(\d+\.\d+\.\d+\) |<\?xml|<c>|[\[{])")
_SNIFF_BYTES = 64
NODES_LOG_SUFFIX = ".nodes.log"  # DAGMan's default node log: <dag>.nodes.log
DAGMAN_LOG_SUFFIX = ".dagman.log"  # the log of the DAGMan job itself, not of its nodes
# What the local backend's event log writer puts in its schedd address (condorml/backends/local/
# eventlog.py): its jobs' spool and ad files are in the run folder, a pool's are not
LOCAL_SCHEDD_MARK = "condorml-local"


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
    return Event(int(kind), _timestamp(event["EventTime"]), **values)


@functools.lru_cache(maxsize=4096)
def _timestamp(iso: str) -> float:
    """``JobEvent.timestamp`` of an event's ``EventTime`` (local time, as HTCondor writes it;
    ``Z``: UTC), parsed once per distinct second: ``JobEvent.timestamp``'s ``strptime`` took a
    fifth of the time a watch of 1,000 members spent reading their logs."""
    moment = datetime.datetime.fromisoformat(iso.removesuffix("Z"))
    if iso.endswith("Z"):
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return float(int(moment.timestamp()))


def _node_name(event: Any) -> str | None:
    notes = event.get("StructuredNotes")
    if notes is not None and "DAGNodeName" in notes:
        return str(notes["DAGNodeName"])
    text = str(event.get("LogNotes", ""))
    return text.split(":", 1)[1].strip() if text.startswith("DAG Node:") else None


class JobKey(NamedTuple):
    """One job among all those a set of logs holds (see the module docstring).

    The first two fields are HTCondor's ``cluster.proc``; the others set apart the jobs of two
    schedds that reuse it, and a schedd's own reuse of it (a run folder's local cluster counter
    lost, say).
    """

    cluster: int
    proc: int
    schedd: str = ""  # the 000 event's "submitted from host" address ("": no 000 in the log)
    node: str | None = None  # the DAG node the 000 names
    serial: int = 0  # earlier 000s of this schedd, cluster.proc and node in the same log


@dataclass
class JobView:
    """What the event logs say about one job (one submit of a ``cluster.proc``)."""

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
    key: JobKey | None = None  # set by EventFollower: unique among the jobs it follows
    seq: int = 0  # EventFollower: the order of its submit among all jobs followed

    @property
    def id(self) -> str:
        """``cluster.proc``, as HTCondor prints it (not unique in a moved run: see :attr:`key`)."""
        return f"{self.cluster}.{self.proc}"

    @property
    def schedd(self) -> str:
        """The address of the schedd that submitted it ("" when no submit event was read)."""
        return self.key.schedd if self.key is not None else ""

    @property
    def on_local_backend(self) -> bool:
        """Whether condorml's local backend ran it (its spool and ad are in the run folder)."""
        return LOCAL_SCHEDD_MARK in self.schedd

    @property
    def submission(self) -> tuple[str, int, int]:
        """Its submit (schedd, cluster, serial): the procs of one attempt of a node share it."""
        key = self.key or JobKey(self.cluster, self.proc)
        return key.schedd, key.cluster, key.serial

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
        return len({job.submission for job in self.jobs})

    def latest_attempt(self) -> list[JobView]:
        """The jobs (procs) of the node's latest submit; [] before the first."""
        if not self.jobs:
            return []
        latest = max(self.jobs, key=submit_order).submission
        return [job for job in self.jobs if job.submission == latest]

    @property
    def state(self) -> str:
        """The state of the node's latest attempt (its worst job)."""
        jobs = self.latest_attempt()
        if not jobs:
            return "waiting"
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


def submit_order(job: JobView) -> tuple[int, int, int]:
    """Sort key of jobs in the order they were submitted: the follower's order, which the logs
    give, then (views made elsewhere) cluster and proc."""
    return job.seq, job.cluster, job.proc


_PULL_FAILED = re.compile(r"Cannot pull image (\S+)")
# a container killed by its memory limit (code 34 subcode 102 on the pool)
_OVER_MEMORY = re.compile(r"gone over memory limit of (\d+) ?Mb")


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
    >>> short_reason("Error from slot1_1@vm: Cannot pull image localhost:5000/nosuch:1.0")
    'cannot pull image localhost:5000/nosuch:1.0: push it to that registry, or fix the image name'
    >>> short_reason("Error from slot1_1@vm: Docker job has gone over memory limit of 128 Mb")
    'over its memory limit (128 MB): raise request_memory (--memory, [resources] memory)'
    """
    text = " ".join(reason.split())
    pull, memory = _PULL_FAILED.search(text), _OVER_MEMORY.search(text)
    if pull:  # the execute point could not fetch the job's image (hold code 35, on the pool)
        # an image reference, not a path: kept whole
        text = f"cannot pull image {pull.group(1)}: push it to that registry, or fix the image name"
    elif memory:
        text = f"over its memory limit ({memory.group(1)} MB): raise request_memory (--memory, [resources] memory)"
    else:
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
    start = _log_start(path)
    return start is not None and _begins_as_log(path, start)


def _log_start(path: Path) -> bytes | None:
    """The first bytes of a file (None: there is none).

    Raises
    ------
    CondormlError
        If it cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            return handle.read(_SNIFF_BYTES)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CondormlError(f"{path}: cannot read it ({err.strerror or err})") from None


def _begins_as_log(path: Path, start: bytes) -> bool:
    """Whether a file that begins with ``start`` has begun as an event log (False: empty).

    Raises
    ------
    CondormlError
        If it begins as no HTCondor event log does.
    """
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


class JobTable(dict[JobKey, JobView]):
    """The jobs an :class:`EventFollower` knows, by :class:`JobKey`, in submit order.

    Looked up by a plain ``(cluster, proc)`` pair, it answers with the latest job submitted with
    that id, as ``condor_q`` would name it (a backend that has just submitted a cluster asks so).
    """

    def _latest(self, key: object) -> JobKey | None:
        if isinstance(key, JobKey) or not isinstance(key, tuple) or len(key) != 2:
            return key if dict.__contains__(self, key) else None  # type: ignore[return-value]
        found = [job for k, job in self.items() if (k.cluster, k.proc) == key]
        return max(found, key=submit_order).key if found else None

    def __getitem__(self, key: object) -> JobView:
        found = self._latest(key)
        if found is None:
            raise KeyError(key)
        return dict.__getitem__(self, found)

    def get(self, key: object, default: Any = None) -> Any:  # type: ignore[override]
        found = self._latest(key)
        return default if found is None else dict.__getitem__(self, found)

    def __contains__(self, key: object) -> bool:
        return self._latest(key) is not None


@dataclass
class _LogState:
    """Where a follower stands in one log between two polls, with the log closed."""

    path: Path
    nodes_log: bool
    start: bytes = b""  # its first bytes once it began as an event log: changed, it was rewritten
    position: bytes | None = None  # the htcondor2.JobEventLog after the last event read, pickled
    size: int = -1  # the file's size when it was last read: unchanged, nothing new to read
    file_id: tuple[int, int] | None = None  # (device, inode): another file means a rewritten log
    current: dict[tuple[int, int], JobKey] = field(default_factory=dict)  # id -> its latest job
    submits: dict[tuple[str, int, int, str | None], int] = field(default_factory=dict)  # 000s


class EventFollower:
    """Read job event logs incrementally; a log that does not exist yet is read once it appears.

    Each log is opened only while it is read, and only when its size changed since the last
    poll: a follower of thousands of logs keeps no file open between polls.

    Parameters
    ----------
    paths : iterable of Path
        Jobs' own logs and DAGMan nodes logs (recognised by their ``.nodes.log`` suffix), in
        any order. When a nodes log is among them, only the DAG's jobs are shown (see the
        module docstring): a job's own log may also hold jobs submitted by hand.

    Attributes
    ----------
    jobs : JobTable
        :class:`JobKey` -> :class:`JobView`, in submit order, brought up to date from the best log
        at every poll (in place: a caller may keep a view).
    events : dict
        :class:`JobKey` -> the :class:`Event` list that view was built from (its own log's when
        read, else the nodes log's).
    skipped : set of str
        Nodes DAGMan skipped (PRE_SKIP): done, without a job.
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(dict.fromkeys(Path(p) for p in paths))
        self._dag_mode = any(is_nodes_log(p) for p in self.paths)
        self._start()

    def _start(self) -> None:
        """Forget everything read (a new follower, or a log was rewritten)."""
        self.jobs = JobTable()
        self.events: dict[JobKey, list[Event]] = {}
        # own logs first: a node's attempts are in the order of their submits in its own log
        ordered = sorted(self.paths, key=is_nodes_log)
        self._logs = [_LogState(path, is_nodes_log(path)) for path in ordered]
        self._own: dict[JobKey, tuple[Path, list[Event]]] = {}  # its own log, events
        self._dag: dict[JobKey, list[Event]] = {}  # events from nodes logs
        self._applied: dict[JobKey, int] = {}  # events of self.events[key] in the view
        self._seq: dict[JobKey, int] = {}  # submit order: the order jobs were first read
        self.skipped: set[str] = set()

    def poll(self) -> int:
        """Read the events written since the last call; return how many were read.

        Raises
        ------
        CondormlError
            If a log is not a readable HTCondor job event log.
        """
        from htcondor2 import JobEventType as T

        count, changed = 0, dict[JobKey, None]()
        for log in self._logs:
            events = self._read(log)
            if events is None:  # rewritten or truncated: what was read of it is gone
                self._start()
                return self.poll()
            for raw in events:
                count += 1
                if raw.type == T.PRESKIP:  # no job: DAGMan's note that a node was skipped
                    notes = str(raw.get("SkipEventLogNotes", ""))
                    self.skipped.add(notes.removeprefix("DAG Node: "))
                    continue
                event = read_event(raw)
                key = self._job_of(log, raw, event)
                self._seq.setdefault(key, len(self._seq))
                if log.nodes_log:
                    history = self._dag.setdefault(key, [])
                else:
                    owner, history = self._own.setdefault(key, (log.path, []))
                    if owner != log.path:
                        continue  # the same job in a second own log: counted once
                history.append(event)
                changed[key] = None
        known = len(self.jobs)
        for key in changed:
            self._rebuild(key)
        if len(self.jobs) != known:  # new jobs: keep the table in submit order
            ordered = sorted(self.jobs.items(), key=lambda item: self._seq[item[0]])
            self.jobs.clear()
            self.jobs.update(ordered)
        return count

    def _read(self, log: _LogState) -> list[Any] | None:
        """The events appended to a log since it was last read ([] if it did not grow or is
        not there yet); None if it was rewritten or truncated since.

        Raises
        ------
        CondormlError
            If the log is not a readable HTCondor job event log.
        """
        import htcondor2

        try:
            status = os.stat(log.path)
        except FileNotFoundError:
            return [] if log.size < 0 else None
        except OSError as err:
            raise CondormlError(f"{log.path}: cannot read it ({err.strerror or err})") from None
        file_id = (status.st_dev, status.st_ino)
        if log.file_id is not None and (file_id != log.file_id or status.st_size < log.size):
            return None
        if status.st_size == log.size:
            return []  # nothing new: not opened
        start = _log_start(log.path)
        if start is None:
            return None if log.start else []
        if log.start:
            if start[: len(log.start)] != log.start[: len(start)]:
                return None  # another beginning: emptied and written again since the last read
        elif not _begins_as_log(log.path, start):
            return []  # still empty
        log.start = max(start, log.start, key=len)
        try:
            reader = (
                htcondor2.JobEventLog(str(log.path))
                if log.position is None
                else pickle.loads(log.position)  # reopens the file where the last read stopped
            )
            try:
                events = list(reader.events(0))
                log.position = pickle.dumps(reader)
            finally:
                reader.close()
        except Exception as err:  # htcondor2 raises plain exceptions for corrupt logs
            raise CondormlError(
                f"{log.path}: not a readable HTCondor job event log ({err})"
            ) from err
        log.size, log.file_id = status.st_size, file_id  # the size before reading: never ahead
        return events

    @staticmethod
    def _job_of(log: _LogState, raw: Any, event: Event) -> JobKey:
        """The job an event of ``log`` belongs to: a submit event makes a new one, any other
        event belongs to the latest job submitted with its ``cluster.proc`` in this log."""
        from htcondor2 import JobEventType as T

        ident = (int(raw.cluster), int(raw.proc))
        if event.type != T.SUBMIT:
            return log.current.get(ident) or JobKey(*ident)
        schedd = str(raw.get("SubmitHost", "") or "")
        submit = (schedd, *ident, event.node)
        serial = log.submits.get(submit, 0)
        log.submits[submit] = serial + 1
        log.current[ident] = key = JobKey(*ident, schedd, event.node, serial)
        return key

    def _rebuild(self, key: JobKey) -> None:
        """Bring the job's view up to date with its best log (in place: callers keep views)."""
        from htcondor2 import JobEventType as T

        if self._dag_mode and key not in self._dag and key.node is None:
            return  # not (yet) known to the DAG, nor submitted by a DAGMan
        own = self._own.get(key, (None, []))[1]
        dag = self._dag.get(key, [])
        events = own or dag
        view = self.jobs.get(key)
        if view is None:
            view = self.jobs[key] = JobView(key.cluster, key.proc, key=key, seq=self._seq[key])
        if self.events.get(key) is not events:  # first time, or its own log appeared: replay
            view.__dict__.update(JobView(key.cluster, key.proc, key=key, seq=view.seq).__dict__)
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
