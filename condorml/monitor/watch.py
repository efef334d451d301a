"""Follow a sweep, a DAG or job event logs: per member, node and job, what happened so far.

The events and what they mean are read by :mod:`condorml.htcondor.events`. For a run folder, a watch
follows DAGMan's ``<dag>.nodes.log`` (which jobs belong to the DAG, POST results) and every
job's own log (``members/<id>/train.log``...), which alone holds the 040 transfers that mark a
checkpoint on a real pool.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.htcondor.events import (
    NODES_LOG_SUFFIX,
    EventFollower,
    JobView,
    NodeView,
    looks_like_event_log,
    short_reason,
)
from condorml.monitor.accounting import node_note
from condorml.sweep.rundir import job_logs, member_folder

# What a job's state counts as, for --exit conditions
TERMINAL = frozenset({"done", "failed", "removed"})
STATES = ("idle", "running", "held", "done", "failed", "removed")
CONDITIONS = ("done", "idle", "running", "held", "failed", "active")
GROUPERS = ("all", "any", "none")
_EXITING = re.compile(r"EXITING WITH STATUS (-?\d+)")


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

    @property
    def note(self) -> str:
        """Why its furthest node is held, failed or removed (the hold reason, short)."""
        return node_note(self.infer) or node_note(self.train)


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


def check_interval(seconds: float) -> None:
    """Refuse a ``--interval`` that is not a positive number of seconds."""
    if not seconds > 0 or seconds == float("inf"):
        raise CondormlError(
            f"--interval {seconds:g}: give a positive number of seconds between reads (e.g. 2)"
        )


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
        missing = [str(s) for s in sources if not s.exists()]
        if missing:
            raise CondormlError(
                f"{', '.join(missing)}: no such file or folder; give a run folder or job event logs"
            )
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
            logs = [dag.with_name(dag.name + NODES_LOG_SUFFIX) for dag in self.dags]
        else:
            for source in sources:  # a CSV given as a log: refused now, not shown as no jobs
                looks_like_event_log(source)
            logs = list(sources)
        self.members = self._read_members()
        if self.run_dir is not None:  # the jobs' own logs: the only ones with checkpoints
            logs += job_logs(self.run_dir, self.members)
        self.follower = EventFollower(logs)
        self._dagman_out: dict[Path, tuple[int, int | None]] = {}  # file -> (offset read, exit)
        self.dag_nodes = self._count_dag_nodes()

    def _count_dag_nodes(self) -> int | None:
        if not self.dags:
            return None
        from condorml.backends.local.dagfile import read_dag

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
        from condorml.backends.local.dagman import LOCAL_FOLDER

        folders = [member_folder(self.run_dir, member) / "ckpt"]
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


_NUMBERS = frozenset({"runs", "ckpts", "evictions", "epoch", "val acc"})
_NOTE_WIDTH = 80


def _cell(note: str) -> str:
    """A note cut to the table's note width."""
    return note if len(note) <= _NOTE_WIDTH else note[: _NOTE_WIDTH - 1].rstrip() + "\u2026"


def render(snapshot: Snapshot, title: str = "") -> Any:
    """A rich renderable: the member (or node, or job) table and a progress line."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, title_justify="left")
    if snapshot.members:
        for column in ("member", "state", "runs", "ckpts", "evictions", "epoch", "val acc", "note"):
            table.add_column(column, justify="right" if column in _NUMBERS else "left")
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
                _cell(m.note),
            )
        named = {f"{stage}_{m.member}" for m in snapshot.members for stage in ("train", "infer")}
        others = [node for node in snapshot.nodes if node.name not in named]
        for node in others:  # e.g. the collect node
            table.add_row(node.name, node.state, str(node.total("runs")), "", "", "", "",
                          _cell(node_note(node)))  # fmt: skip
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
                _cell(node_note(node)),
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
                _cell(short_reason(job.reason)),
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
        elif m.note:  # held, failed or removed: say why
            extra.append(f"{m.member} {m.state}: {_cell(m.note)}")
    text = f"{snapshot.total} {'nodes' if snapshot.dag_nodes else 'jobs'}: " + (
        ", ".join(parts) or "nothing yet"
    )
    if extra:
        text += " | " + "; ".join(extra)
    if snapshot.dag_exit is not None:
        text += f" | DAG exited with status {snapshot.dag_exit}"
    return text
