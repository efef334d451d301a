"""Follow a sweep, a DAG or job event logs: per member, node and job, what happened so far.

The events and what they mean are read by :mod:`condorml.htcondor.events`. For a run folder, a watch
follows DAGMan's ``<dag>.nodes.log`` (which jobs belong to the DAG, POST results) and every
job's own log (``members/<id>/train.log``...), which alone holds the 040 transfers that mark a
checkpoint on a real pool. The DAG's nodes are counted by :mod:`condorml.htcondor.dagread`, which
reads any DAG a pool runs (not only those the local backend runs).

This module returns data (:class:`Snapshot`) and raises; :mod:`condorml.cli.watch` draws it.

For a sweep run folder, the member table adds the training progress from the member's files:
``members/<id>/ckpt/state.json`` and ``metrics.csv`` once the training job's outputs came back,
or, while it runs on the local backend, its spooled checkpoint. With ``[search]``, each member's
search record (``trial.json``) says whether it runs, waits for a halving decision, was stopped
early or finished; with ``[search.halving]`` its training is one node per rung, shown together.
A stopped member's later nodes are skipped by DAGMan (done, without a job or an event).

While a member's training job runs, what it publishes into its job ad (Chirp) is newer than its
checkpoint: :mod:`condorml.monitor.live` reads it (the schedd's job ads with one ``condor_q`` for
all members, or the local backend's ad files) and the member shows the live epoch, batch,
images/s and validation accuracy instead, marked live.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.htcondor.dagread import DagNodes, read_dag_nodes
from condorml.htcondor.events import (
    NODES_LOG_SUFFIX,
    EventFollower,
    JobView,
    NodeView,
    looks_like_event_log,
    submit_order,
)
from condorml.job.files import METRICS_FILE, STATE_FILE
from condorml.monitor.live import LiveProgress, LiveReader
from condorml.sweep.accounting import (
    TrainingView,
    node_note,
    nodes_of,
    real_jobs,
    training_views,
)
from condorml.sweep.rundir import NodeName, RunDir, job_logs, read_metrics, read_state
from condorml.sweep.trials import STATES as SEARCH_STATES
from condorml.sweep.trials import Trial, read_trials

# What a job's state counts as, for --exit conditions
TERMINAL = frozenset({"done", "failed", "removed"})
STATES = ("idle", "running", "held", "done", "failed", "removed")
CONDITIONS = ("done", "idle", "running", "held", "failed", "active")
GROUPERS = ("all", "any", "none")
_EXITING = re.compile(r"EXITING WITH STATUS (-?\d+)")
_MISSING = object()  # Watch._read: no such file
# training states after which a run resumes from the member folder's checkpoint (a held job
# resumes from its spool when released)
_RESUMED = ("removed", "failed")


# --- what a watch shows ---------------------------------------------------------------------------


@dataclass
class MemberView:
    """A sweep member: its training and inference nodes and training progress."""

    member: str
    train: TrainingView | None  # every rung's training node together
    infer: NodeView | None
    epoch: int | None = None
    epochs: int | None = None
    val_acc: float | None = None
    trial: Trial | None = None  # the search record (None without [search], or not yet)
    rungs: int | None = None  # the DAG's rungs for it (None: no [search.halving])
    live: LiveProgress | None = None  # what its running training job published (newest)
    live_off: str = ""  # why its training job could not publish (its last checkpoint says)
    # its training removed or failed: the (epoch, epochs) of the checkpoint in its folder, which
    # the next run resumes from ((0, None): none, it starts over)
    resumes: tuple[int, int | None] | None = None

    @property
    def state(self) -> str:
        """``stage: state``, where the stage is the furthest node that started; a search's
        ``stopped`` and ``waiting`` members say so (their nodes say nothing of it)."""
        trial, of = self.trial, f" of {self.rungs}" if self.rungs else ""
        if trial is not None and trial.state == "stopped":
            return f"stopped after rung {trial.rungs_done}{of}"
        if trial is not None and trial.state == "waiting":
            return f"waiting (before rung {trial.rung}{of})"
        if self.infer is not None and self.infer.jobs:
            return f"infer: {self.infer.state}"
        if self.train is not None:
            behind = trial is not None and (self.train.rung or 1) < trial.rung
            return "train: waiting" if behind else f"train: {self.train.state}"
        return "waiting"

    @property
    def rung(self) -> str:
        """``k/n``: the rung it runs, waits for or failed at, or the last it finished once
        stopped or complete ("" without [search.halving])."""
        if self.rungs is None or self.trial is None:
            return ""
        trial = self.trial
        rung = trial.rungs_done if trial.state in ("stopped", "complete") else trial.rung
        return f"{rung}/{self.rungs}"

    @property
    def note(self) -> str:
        """Why its furthest node is held, failed or removed (the hold reason, short); first,
        where a stopped training resumes."""
        note = node_note(self.infer) or node_note(self.train)
        if self.resumes is None:
            return note
        epoch, epochs = self.resumes
        where = f"resumes from epoch {epoch} of {epochs}" if epoch else "starts over when run"
        return f"{where}; {note}" if note else where


@dataclass
class Snapshot:
    """Everything ``condorml watch`` shows at one moment."""

    jobs: list[JobView]
    nodes: list[NodeView]
    members: list[MemberView]
    dag_nodes: int | None = None  # nodes in the DAG (None: plain logs)
    dag_exit: int | None = None  # DAGMan's exit status once it finished
    premarked: int = 0  # nodes the DAG file marks DONE that no log names: DAGMan never submits them
    skipped: int = 0  # nodes of members the search stopped: done for DAGMan, without a job

    def counts(self) -> dict[str, int]:
        """Nodes (or jobs, for plain logs) per state, ``waiting`` for nodes not yet submitted,
        ``skipped`` for a stopped member's nodes (which DAGMan counts as done)."""
        items = self._states()
        counts = {state: items.count(state) for state in ("waiting", *STATES)}
        if self.dag_nodes:
            counts["done"] += self.premarked
            counts["skipped"] = self.skipped
            counts["waiting"] += self._unseen()
            if self.finished():  # DAGMan exited: what still waits will not run
                counts["not run"] = counts.pop("waiting")
        return counts

    def _unseen(self) -> int:
        """DAG nodes no log names that are neither premarked DONE nor skipped."""
        assert self.dag_nodes is not None
        return max(self.dag_nodes - len(self.nodes) - self.premarked - self.skipped, 0)

    def search_counts(self) -> dict[str, int]:
        """Members per search state (running, waiting, stopped, complete, failed), those
        with none left out; empty without ``[search]``."""
        states = [m.trial.state for m in self.members if m.trial is not None]
        return {state: states.count(state) for state in SEARCH_STATES if state in states}

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
        if self.dag_nodes:
            states += ["done"] * (self.premarked + self.skipped)
        if self.dag_nodes and not self.finished():
            states += ["idle"] * self._unseen()
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
        ``members.csv``, the members are tabulated), or one or more event log files. DAG files
        that another one splices, includes or runs as a SUBDAG are parts, not DAGs followed.
    live : LiveReader, optional
        Reads the running members' live progress (default: a :class:`LiveReader` that asks the
        schedd at most every few seconds).

    Raises
    ------
    CondormlError
        For a missing source, a folder without a ``*.dag``, a file that is no event log.
    """

    def __init__(self, sources: list[Path], live: LiveReader | None = None) -> None:
        self.live = live or LiveReader()
        if not sources:
            sources = [Path(".")]
        self.run_dir: Path | None = None
        self.dag_files: list[DagNodes] = []
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
            self.dag_files = top_level_dags(self.run_dir)
            if not self.dag_files:
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
        self._run = RunDir(self.run_dir) if self.run_dir is not None else None
        self._files: dict[Path, tuple[tuple[int, int, int], Any]] = {}  # file -> (stat, value)
        self._ckpts: dict[str, Path] = {}  # member -> its ckpt/ folder
        self._state_files: dict[Path, Path] = {}  # ckpt/ -> its state file
        self._dagman_out: dict[Path, tuple[int, int | None]] = {}  # file -> (offset read, exit)
        self.dag_nodes = sum(len(d.nodes) for d in self.dag_files) if self.dag_files else None
        self._premarked = {name for d in self.dag_files for name in d.done}
        # member -> its nodes in the DAG, and how many training rungs (halving) they have
        self._member_nodes: dict[str, set[str]] = {}
        self._rungs: dict[str, int] = {}
        for name in (name for d in self.dag_files for name in d.nodes):
            parsed = NodeName.parse(name)
            if parsed is not None:
                self._member_nodes.setdefault(parsed.member, set()).add(name)
                if parsed.kind == "train" and parsed.rung is not None:
                    self._rungs[parsed.member] = max(self._rungs.get(parsed.member, 0), parsed.rung)

    @property
    def dags(self) -> list[Path]:
        """The DAG files followed (a folder's top-level ``*.dag`` files)."""
        return [dag.path for dag in self.dag_files]

    def _read_members(self) -> list[str]:
        return [] if self.run_dir is None else RunDir(self.run_dir).member_ids()

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
        jobs = sorted(real_jobs(self.follower.jobs.values()), key=submit_order)
        nodes = nodes_of(jobs)
        trainings = training_views(nodes.values())
        trials = read_trials(self.run_dir, self.members) if self.run_dir is not None else {}
        live = self._live(trainings)
        members = [
            self._member(m, trainings.get(m), nodes.get(str(NodeName("infer", m))), trials.get(m))
            for m in self.members
        ]
        for view in members:
            _show_live(view, live.get(view.member))
        premarked = len(self._premarked - nodes.keys())
        return Snapshot(jobs, list(nodes.values()), members, self.dag_nodes, self._dag_exit(),
                        premarked, self._skipped(trials, nodes.keys()))  # fmt: skip

    def _live(self, trainings: dict[str, TrainingView]) -> dict[str, LiveProgress]:
        """Member -> the live progress of its running training job (one read for all)."""
        running = {m: job for m, t in trainings.items() if (job := _running_job(t)) is not None}
        if not self.members or not running:
            return {}
        found = self.live.read(running.values(), sorted({dag.parent for dag in self.dags}))
        return {m: found[job.id] for m, job in running.items() if job.id in found}

    def _skipped(self, trials: dict[str, Trial], seen: Collection[str]) -> int:
        """The DAG nodes DAGMan skipped (PRE_SKIP: its 034 events) or will skip (those of a
        member the search stopped, before DAGMan reaches them): done, without a job."""
        stopped = (m for m, trial in trials.items() if trial.state == "stopped")
        names = {name for m in stopped for name in self._member_nodes.get(m, ())}
        return len((names | self.follower.skipped) - self._premarked - set(seen))

    def _member(
        self, member: str, train: TrainingView | None, infer: NodeView | None, trial: Trial | None
    ) -> MemberView:
        view = MemberView(member, train, infer, trial=trial, rungs=self._rungs.get(member))
        folders = self._ckpt_folders(member, view.train)
        for _, state_file in folders:
            state = self._read(state_file, read_state)
            if state is not _MISSING and state is not None:
                view.epoch, view.epochs = state.epoch, state.epochs
                view.live_off = state.live_off
                break
        if (
            view.train is not None
            and view.train.state in _RESUMED
            and not (view.infer and view.infer.jobs)
        ):
            state = self._read(self._state_files[self._ckpts[member]], read_state)
            usable = state is not _MISSING and state is not None
            view.resumes = (state.epoch, state.epochs) if usable else (0, None)
        for folder, _ in folders:
            val_acc = self._read(folder / METRICS_FILE, _last_val_acc)
            if val_acc is not _MISSING:
                view.val_acc = val_acc
                break
        return view

    def _read(self, path: Path, reader: Callable[[Path], Any]) -> Any:
        """``reader(path.parent)``, read again only when the file changed since the last refresh
        (pandas reads a metrics.csv in milliseconds: seconds per refresh at 1,000 members);
        :data:`_MISSING` without the file, None while it cannot be read (being replaced: the
        next refresh reads it)."""
        try:
            status = os.stat(path)
        except OSError:
            return _MISSING
        stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        cached = self._files.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            value = reader(path.parent)
        except CondormlError:
            return None
        self._files[path] = (stamp, value)
        return value

    def _ckpt_folders(self, member: str, train: NodeView | None) -> list[tuple[Path, Path]]:
        """Where the member's checkpoint files may be, with their state file, newest first."""
        assert self._run is not None
        ckpt = self._ckpts.get(member)
        if ckpt is None:
            ckpt = self._ckpts[member] = self._run.member(member).ckpt
            self._state_files[ckpt] = ckpt / STATE_FILE
        found = [(ckpt, self._state_files[ckpt])]
        if train is not None:  # a local run's spooled checkpoint, newer while the job runs
            # (the local backend's jobs only: a pool's job may reuse a local job's id)
            for job in reversed([job for job in train.jobs if _local_or_unknown(job)]):
                spooled = sorted(self._run.local_spool(job.id).glob(f"**/{STATE_FILE}"))
                found.extend((state.parent, state) for state in spooled)
        written = []
        for folder, state in found:
            try:
                written.append((os.stat(state).st_mtime, folder, state))
            except OSError:
                continue
        written.sort(key=lambda item: item[0], reverse=True)
        return [(folder, state) for _, folder, state in written]


def top_level_dags(folder: Path) -> list[DagNodes]:
    """The nodes of a folder's ``*.dag`` files that no other one splices, includes or runs as a
    SUBDAG (those are parts of a DAG, not DAGs of their own), by file name.

    Raises
    ------
    CondormlError
        If a ``*.dag`` file cannot be read.
    """
    read = [read_dag_nodes(path) for path in sorted(folder.glob("*.dag"))]
    parts = {path.resolve() for dag in read for path in dag.referenced}
    return [dag for dag in read if dag.path.resolve() not in parts]


def _local_or_unknown(job: JobView) -> bool:
    """Whether a job may be the local backend's (its submit event says so, or was not read)."""
    return job.on_local_backend or not job.schedd


def _running_job(train: TrainingView) -> JobView | None:
    """The training node's job that runs now (its latest attempt's), if any: an earlier
    attempt's job that its log leaves running died unlogged (a local run killed outright,
    before the run moved to a pool)."""
    latest = train.latest
    jobs = latest.latest_attempt() if latest is not None else []
    return next((job for job in reversed(jobs) if job.state == "running"), None)


def _show_live(view: MemberView, live: LiveProgress | None) -> None:
    """Show a running member's live progress: newer than its checkpoint's epoch and accuracy."""
    if live is None:
        return
    view.live = live
    if live.epoch is not None:
        view.epoch = live.epoch
        view.epochs = live.epochs if live.epochs is not None else view.epochs
    if live.val_acc is not None:
        view.val_acc = live.val_acc


def _last_val_acc(ckpt: Path) -> float | None:
    """The last finished epoch's validation accuracy in a checkpoint folder (None: none yet).

    The trainer's own ``metrics.csv`` is read with the csv module (pandas takes a millisecond
    per file: a second per refresh at 1,000 members, and its import); anything else (a row of
    another length, a value that is no number) is read by :func:`read_metrics`, as before.

    Raises
    ------
    CondormlError
        If ``metrics.csv`` cannot be read (being replaced right now: the next refresh reads it).
    """
    simple = _simple_val_acc(ckpt / METRICS_FILE)
    if simple is not _MISSING:
        return simple
    metrics = read_metrics(ckpt)
    if metrics is None or "val_acc" not in metrics or metrics["val_acc"].isna().iloc[-1]:
        return None
    return float(metrics["val_acc"].iloc[-1])


# what pandas.read_csv reads as NaN by default (its STR_NA_VALUES)
_NA_TEXT = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                      "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                      "nan", "null"})  # fmt: skip
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _simple_val_acc(path: Path) -> Any:
    """:func:`_last_val_acc` of a plain ``metrics.csv`` (ASCII, unquoted, every row as long as
    the header, an ``epoch`` column, every ``val_acc`` a decimal number or empty), read without
    pandas; :data:`_MISSING` for anything else, which pandas reads."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return _MISSING
    if not data.isascii() or b'"' in data or b"\r" in data:
        return _MISSING
    lines = data.decode().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or any(not line for line in lines):
        return _MISSING  # empty, or blank lines: pandas' rules
    header = lines[0].split(",")
    if "epoch" not in header or len(set(header)) != len(header) or "" in header:
        return _MISSING
    rows = [line.split(",") for line in lines[1:]]
    if not rows or any(len(row) != len(header) for row in rows):
        return _MISSING
    if "val_acc" not in header:
        return None
    column = header.index("val_acc")
    values = [row[column] for row in rows]
    if any(v not in _NA_TEXT and not _NUMBER.fullmatch(v) for v in values):
        return _MISSING
    last = values[-1]
    return None if last in _NA_TEXT else float(last)
