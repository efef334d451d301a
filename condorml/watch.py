"""Follow HTCondor job event logs: per job, node and sweep member, what happened so far.

The logs are read with ``htcondor2.JobEventLog``, so a log written by a real pool and one written
by the local backend read the same. What the events mean (the real logs in
``tests/fixtures/htcondor/`` are the evidence):

* a *run* is an 001 "executing" event;
* a *checkpoint* is an 040 "finished transferring output files" event while the job keeps
  running (HTCondor writes no checkpoint event); the output transfer just before the 005
  termination is the job's final output, not a checkpoint;
* an *eviction* is an 004 event that is not the prelude of a hold (a failed output transfer is
  004 then 012);
* a DAG node's jobs are those whose submit event carries ``DAG Node: NAME``; a POST script's 016
  event decides the node's result when there is one.

For a sweep run folder, the member table adds the training progress from the member's files:
``members/<id>/ckpt/state.json`` and ``metrics.csv`` once the training job's outputs came back,
or, while it runs on the local backend, its spooled checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError

# FileTransferEvent "Type" of "finished transferring output files" (FileTransferEventType)
OUT_FINISHED = 6
# What a job's state counts as, for --exit conditions
TERMINAL = frozenset({"done", "failed", "removed"})
STATES = ("idle", "running", "held", "done", "failed", "removed")
CONDITIONS = ("done", "idle", "running", "held", "failed", "active")
GROUPERS = ("all", "any", "none")
_EXITING = re.compile(r"EXITING WITH STATUS (-?\d+)")


@dataclass
class JobView:
    """What the event log says about one job (one ``cluster.proc``)."""

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


class EventFollower:
    """Read job event logs incrementally; a log that does not exist yet is read once it appears.

    The same job can be in several logs (its own ``log`` and the DAG's nodes log): each job is
    counted from the first log it was seen in.
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(dict.fromkeys(Path(p) for p in paths))
        self.jobs: dict[tuple[int, int], JobView] = {}
        self._logs: dict[Path, Any] = {}
        self._owner: dict[tuple[int, int], Path] = {}

    def poll(self) -> int:
        """Read the events written since the last call; return how many were read."""
        import htcondor2

        count = 0
        for path in self.paths:
            if path not in self._logs:
                if not path.exists():
                    continue
                self._logs[path] = htcondor2.JobEventLog(str(path))
            try:
                events = list(self._logs[path].events(0))
            except Exception as err:  # htcondor2 raises plain exceptions for corrupt logs
                raise CondormlError(
                    f"{path}: not a readable HTCondor job event log ({err})"
                ) from err
            for event in events:
                key = (event.cluster, event.proc)
                if self._owner.setdefault(key, path) != path:
                    continue
                self._apply(key, event)
                count += 1
        return count

    def _apply(self, key: tuple[int, int], event: Any) -> None:
        from htcondor2 import JobEventType as T

        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = JobView(*key)
        kind = event.type
        if kind == T.SUBMIT:
            job.submitted = event.timestamp
            job.node = _node_name(event) or job.node
        elif kind == T.EXECUTE:
            job.runs += 1
            job.state, job.started = "running", event.timestamp
        elif kind == T.FILE_TRANSFER:
            if event.get("Type") == OUT_FINISHED and job.state == "running":
                job.checkpoints += 1  # taken back below if the job terminates next
                job._last = OUT_FINISHED
                return
        elif kind == T.JOB_EVICTED:
            job.evictions += 1
            job.state = "idle"
            job._last = int(T.JOB_EVICTED)
            return
        elif kind == T.JOB_TERMINATED:
            if job._last == OUT_FINISHED:
                job.checkpoints -= 1  # that transfer was the job's final output
            job.ended = event.timestamp
            if event.get("TerminatedNormally", False):
                job.return_value = int(event.get("ReturnValue", 0))
                job.state = "done" if job.return_value == 0 else "failed"
                if job.return_value:
                    job.reason = f"exited with {job.return_value}"
            else:
                job.state = "failed"
                job.reason = f"killed by signal {event.get('TerminatedBySignal', '?')}"
        elif kind == T.JOB_HELD:
            if job._last == int(T.JOB_EVICTED):
                job.evictions -= 1  # the 004 announced this hold, not an eviction
            job.state, job.reason = "held", str(event.get("HoldReason", "held"))
        elif kind == T.JOB_RELEASED:
            job.state, job.reason = "idle", ""
        elif kind == T.JOB_ABORTED:
            job.state, job.ended = "removed", event.timestamp
            job.reason = str(event.get("Reason", "removed"))
        elif kind == T.POST_SCRIPT_TERMINATED:
            job.post_return = int(event.get("ReturnValue", -1))
        if kind not in (T.IMAGE_SIZE, T.FILE_TRANSFER):
            job._last = int(kind)


def _node_name(event: Any) -> str | None:
    notes = event.get("StructuredNotes")
    if notes is not None and "DAGNodeName" in notes:
        return str(notes["DAGNodeName"])
    text = str(event.get("LogNotes", ""))
    return text.split(":", 1)[1].strip() if text.startswith("DAG Node:") else None


# --- what a watch shows ---------------------------------------------------------------------------


@dataclass
class MemberView:
    """A sweep member: its training and inference nodes and training progress."""

    member: str
    train: NodeView | None
    infer: NodeView | None
    epoch: int | None = None
    epochs: int | None = None
    val_acc: float | None = None

    @property
    def state(self) -> str:
        """``stage: state``, where the stage is the furthest node that started."""
        if self.infer is not None and self.infer.jobs:
            return f"infer: {self.infer.state}"
        if self.train is not None:
            return f"train: {self.train.state}"
        return "waiting"


@dataclass
class Snapshot:
    """Everything ``condorml watch`` shows at one moment."""

    jobs: list[JobView]
    nodes: list[NodeView]
    members: list[MemberView]
    dag_nodes: int | None = None  # nodes in the DAG (None: plain logs)
    dag_exit: int | None = None  # DAGMan's exit status once it finished

    def counts(self) -> dict[str, int]:
        """Nodes (or jobs, for plain logs) per state, ``waiting`` for nodes not yet submitted."""
        items = self._states()
        counts = {state: items.count(state) for state in ("waiting", *STATES)}
        if self.dag_nodes:
            counts["waiting"] += max(self.dag_nodes - len(self.nodes), 0)
            if self.finished():  # DAGMan exited: what still waits will not run
                counts["not run"] = counts.pop("waiting")
        return counts

    def _states(self) -> list[str]:
        """The state of every node (a DAG) or job (plain logs) seen in the logs."""
        return [n.state for n in self.nodes] if self.dag_nodes else [j.state for j in self.jobs]

    @property
    def total(self) -> int:
        """Nodes in the DAG, or jobs seen in plain logs."""
        return self.dag_nodes or len(self.jobs)

    def finished(self) -> bool:
        """The DAG exited, or (plain logs) every job seen ended."""
        if self.dag_nodes:
            return self.dag_exit is not None
        return bool(self.jobs) and all(job.state in TERMINAL for job in self.jobs)

    def condition(self, grouper: str, condition: str) -> bool:
        """condor_watch_q's ``-exit GROUPER,CONDITION`` over nodes (a DAG) or jobs (plain logs).

        For a DAG, ``all,done`` is true once DAGMan exited, and nodes not yet submitted count
        as idle.
        """
        if self.dag_nodes and condition == "done" and grouper == "all":
            return self.finished()
        states = self._states()
        if self.dag_nodes and not self.finished():
            states += ["idle"] * max(self.dag_nodes - len(self.nodes), 0)
        states = ["idle" if s == "waiting" else s for s in states]
        if not states:
            return grouper == "none"
        matches = [_matches(state, condition) for state in states]
        return {"all": all, "any": any, "none": lambda m: not any(m)}[grouper](matches)

    def failed(self) -> bool:
        """Whether the DAG failed, or any node/job failed, was held or removed."""
        if self.dag_exit:
            return True
        return any(state in ("failed", "held", "removed") for state in self._states())


def _matches(state: str, condition: str) -> bool:
    if condition == "active":
        return state not in TERMINAL
    if condition == "done":
        return state in TERMINAL
    return state == condition


def parse_exit(value: str | None) -> tuple[str, str, int | None] | None:
    """Parse ``--exit GROUPER,CONDITION[,STATUS]`` (condor_watch_q's form)."""
    if value is None:
        return None
    parts = [part.strip().lower() for part in value.split(",")]
    if len(parts) not in (2, 3) or parts[0] not in GROUPERS or parts[1] not in CONDITIONS:
        raise CondormlError(
            f"--exit {value!r}: expected GROUPER,CONDITION[,EXIT_STATUS] with GROUPER one of "
            f"{', '.join(GROUPERS)} and CONDITION one of {', '.join(CONDITIONS)} (e.g. all,done)"
        )
    status = None
    if len(parts) == 3:
        if not parts[2].lstrip("-").isdigit():
            raise CondormlError(f"--exit {value!r}: the exit status must be an integer")
        status = int(parts[2])
    return parts[0], parts[1], status


class Watch:
    """Follow a sweep run folder (or any DAG folder) or a list of job event logs.

    Parameters
    ----------
    sources : list of Path
        One folder holding a ``*.dag`` (its ``<dag>.nodes.log`` is followed and, when it has a
        ``members.csv``, the members are tabulated), or one or more event log files.
    """

    def __init__(self, sources: list[Path]) -> None:
        if not sources:
            sources = [Path(".")]
        self.run_dir: Path | None = None
        self.dags: list[Path] = []
        folders = [s for s in sources if s.is_dir()]
        if folders:
            if len(sources) != 1:
                raise CondormlError("give one run folder, or event log files, not both")
            self.run_dir = folders[0]
            self.dags = sorted(self.run_dir.glob("*.dag"))
            if not self.dags:
                raise CondormlError(
                    f"{self.run_dir}: no *.dag file here; give a run folder made by "
                    "`condorml sweep`, or the job event log files to follow"
                )
            logs = [dag.with_name(dag.name + ".nodes.log") for dag in self.dags]
        else:
            missing = [str(s) for s in sources if not s.exists()]
            if missing:
                raise CondormlError(
                    f"{', '.join(missing)}: no such file or folder; give a run folder or job event logs"
                )
            logs = list(sources)
        self.follower = EventFollower(logs)
        self._dagman_out: dict[Path, tuple[int, int | None]] = {}  # file -> (offset read, exit)
        self.dag_nodes = self._count_dag_nodes()
        self.members = self._read_members()

    def _count_dag_nodes(self) -> int | None:
        if not self.dags:
            return None
        from condorml.local.dagfile import read_dag

        return sum(len(read_dag(dag).nodes) for dag in self.dags)

    def _read_members(self) -> list[str]:
        if self.run_dir is None or not (self.run_dir / "members.csv").exists():
            return []
        with open(self.run_dir / "members.csv", newline="") as handle:
            return [row["member"] for row in csv.DictReader(handle)]

    def _dag_exit(self) -> int | None:
        """DAGMan's exit status when its latest start has finished (real or local dagman.out).

        Each poll reads only the complete lines written since the last one.
        """
        status = None
        for dag in self.dags:
            out = dag.with_name(dag.name + ".dagman.out")
            offset, exited = self._dagman_out.get(out, (0, None))
            try:
                with open(out, "rb") as handle:
                    if os.fstat(handle.fileno()).st_size < offset:  # rewritten: start again
                        offset, exited = 0, None
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                return None
            complete = chunk[: chunk.rfind(b"\n") + 1]
            for line in complete.decode(errors="replace").splitlines():
                if "STARTING UP" in line:
                    exited = None
                elif match := _EXITING.search(line):
                    exited = int(match.group(1))
            self._dagman_out[out] = (offset + len(complete), exited)
            if exited is None:
                return None
            status = exited if status is None else max(status, exited)
        return status

    def snapshot(self) -> Snapshot:
        """Read what is new in the logs and return the current picture."""
        self.follower.poll()
        jobs = sorted(self.follower.jobs.values(), key=lambda j: (j.cluster, j.proc))
        nodes: dict[str, NodeView] = {}
        for job in jobs:
            name = job.node or job.id
            nodes.setdefault(name, NodeView(name)).jobs.append(job)
        members = [self._member(member, nodes) for member in self.members]
        return Snapshot(jobs, list(nodes.values()), members, self.dag_nodes, self._dag_exit())

    def _member(self, member: str, nodes: dict[str, NodeView]) -> MemberView:
        view = MemberView(member, nodes.get(f"train_{member}"), nodes.get(f"infer_{member}"))
        folders = self._ckpt_folders(member, view.train)
        for folder in folders:
            try:
                state = json.loads((folder / "state.json").read_text())
            except (OSError, ValueError):
                continue  # being replaced right now; the next poll reads it
            view.epoch, view.epochs = state.get("epoch"), state.get("epochs")
            break
        metrics = next((f / "metrics.csv" for f in folders if (f / "metrics.csv").exists()), None)
        if metrics is not None:
            view.val_acc = _last_val_acc(metrics)
        return view

    def _ckpt_folders(self, member: str, train: NodeView | None) -> list[Path]:
        """Where the member's checkpoint files may be, newest first."""
        assert self.run_dir is not None
        from condorml.local.runner import LOCAL_FOLDER

        folders = [self.run_dir / "members" / member / "ckpt"]
        if train is not None:  # a local run's spooled checkpoint, newer while the job runs
            for job in reversed(train.jobs):
                spool = self.run_dir / LOCAL_FOLDER / "spool" / job.id
                folders.extend(sorted(spool.glob("**/state.json")))
        folders = [f.parent if f.name == "state.json" else f for f in folders]
        return sorted(
            (f for f in folders if (f / "state.json").exists()),
            key=lambda f: (f / "state.json").stat().st_mtime,
            reverse=True,
        )


def _last_val_acc(path: Path) -> float | None:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return float(rows[-1]["val_acc"]) if rows and rows[-1].get("val_acc") else None
    except (OSError, ValueError, KeyError):
        return None


# --- rendering --------------------------------------------------------------------------------------


def _age(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    seconds = int((end or time.time()) - start)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def render(snapshot: Snapshot, title: str = "") -> Any:
    """A rich renderable: the member (or node, or job) table and a progress line."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, title_justify="left")
    if snapshot.members:
        for column in ("member", "state", "runs", "ckpts", "evictions", "epoch", "val acc"):
            table.add_column(column, justify="left" if column in ("member", "state") else "right")
        for m in snapshot.members:
            train = m.train
            epoch = f"{m.epoch}/{m.epochs}" if m.epoch is not None else ""
            table.add_row(
                m.member,
                m.state,
                str(train.total("runs")) if train else "0",
                str(train.total("checkpoints")) if train else "0",
                str(train.total("evictions")) if train else "0",
                epoch,
                f"{m.val_acc:.3f}" if m.val_acc is not None else "",
            )
        named = {f"{stage}_{m.member}" for m in snapshot.members for stage in ("train", "infer")}
        others = [node for node in snapshot.nodes if node.name not in named]
        for node in others:  # e.g. the collect node
            table.add_row(node.name, node.state, str(node.total("runs")), "", "", "", "")
    elif snapshot.dag_nodes:
        for column in ("node", "state", "attempts", "runs", "ckpts", "evictions", "note"):
            table.add_column(column)
        for node in snapshot.nodes:
            table.add_row(
                node.name,
                node.state,
                str(node.attempts),
                str(node.total("runs")),
                str(node.total("checkpoints")),
                str(node.total("evictions")),
                node.reason[:60],
            )
    else:
        for column in ("job", "node", "state", "runs", "ckpts", "evictions", "time", "note"):
            table.add_column(column)
        for job in snapshot.jobs:
            table.add_row(
                job.id,
                job.node or "",
                job.state,
                str(job.runs),
                str(job.checkpoints),
                str(job.evictions),
                _age(job.started or job.submitted, job.ended),
                job.reason[:60],
            )
    counts = snapshot.counts()
    done = counts["done"] + counts["failed"] + counts["removed"]
    unit = "nodes" if snapshot.dag_nodes else "jobs"
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    line = Text(f"{done}/{snapshot.total} {unit} ended ({summary or 'nothing yet'})")
    if snapshot.dag_exit is not None:
        line.append(f"; DAG exited with status {snapshot.dag_exit}")
    status = Table.grid(padding=(0, 1))
    status.add_row(ProgressBar(total=max(snapshot.total, 1), completed=done, width=30), line)
    return Group(table, status)


def summary_line(snapshot: Snapshot) -> str:
    """One plain line for logs without a terminal."""
    counts = snapshot.counts()
    parts = [f"{n} {state}" for state, n in counts.items() if n]
    extra = []
    for m in snapshot.members:
        if m.epoch is not None and m.train is not None and m.train.state == "running":
            acc = f" acc {m.val_acc:.3f}" if m.val_acc is not None else ""
            extra.append(f"{m.member} epoch {m.epoch}/{m.epochs}{acc}")
    text = f"{snapshot.total} {'nodes' if snapshot.dag_nodes else 'jobs'}: " + (
        ", ".join(parts) or "nothing yet"
    )
    if extra:
        text += " | " + "; ".join(extra)
    if snapshot.dag_exit is not None:
        text += f" | DAG exited with status {snapshot.dag_exit}"
    return text
