"""``condorml watch``: follow a run's job event logs (local backend or a real pool).

The library (:mod:`condorml.monitor.watch`) reads the logs into a :class:`Snapshot`; this module
draws it: a rich table and progress line (:func:`render`), or one plain line (:func:`summary_line`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from condorml.cli._common import call

if TYPE_CHECKING:
    from condorml.htcondor.events import JobView, NodeView
    from condorml.monitor.watch import MemberView, Snapshot, Watch


def watch_command(
    sources: list[Path] = typer.Argument(
        None,
        help="A run folder (with its *.dag) or job event log files [default: this folder].",
        show_default=False,
    ),
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit (for scripts)."),
    exit_when: str | None = typer.Option(
        None,
        "--exit",
        metavar="GROUPER,CONDITION[,STATUS]",
        help="Stop when the condition holds, as condor_watch_q -exit: GROUPER all|any|none, "
        "CONDITION done|idle|running|held|failed|active; e.g. all,done. Exit status: STATUS if "
        "given, else 1 when the DAG failed or a node failed or was held, else 0.",
    ),
    interval: float = typer.Option(
        2.0, "--interval", help="Seconds between two reads of the logs."
    ),
) -> None:
    """Show per member (or job) its state, runs, checkpoints, evictions, epoch, validation
    accuracy and why it is held or failed (the hold reason), read from HTCondor job event logs
    with htcondor2. A running member's live progress (epoch, batch, images/s, validation
    accuracy), published into its job ad, comes from condor_q (at most every 5 s, one query
    for all) or the local backend, marked with its age in the live column. With an adaptive search, members stopped early or waiting for a halving
    decision show as such, with their rung; counts are summed over a member's rungs. Works on
    logs from a pool and from the local backend, on any DAG a pool runs, with or without a
    terminal (then it prints one line per change)."""
    from rich.console import Console

    from condorml.monitor.watch import Watch, check_interval, parse_exit

    call(check_interval, interval)
    rule = call(parse_exit, exit_when)
    watch = call(Watch, list(sources or []))
    console = Console()
    title = str(watch.run_dir or ", ".join(str(p) for p in watch.follower.paths))

    def stop_status(snapshot: Snapshot) -> int | None:
        if rule is None or not snapshot.condition(rule[0], rule[1]):
            return None
        if rule[2] is not None:
            return rule[2]
        return 1 if snapshot.failed() else 0

    if once:
        console.print(render(call(watch.snapshot), title))
        raise typer.Exit(0)
    if not console.is_terminal:  # no live display: a line whenever something changed
        lines = SummaryLines(lambda: watch)
        while (status := stop_status(snapshot := call(lines.update))) is None:
            time.sleep(interval)
        console.print(render(snapshot, title))
        raise typer.Exit(status)
    raise typer.Exit(_follow_live(watch, console, title, interval, stop_status))


def _follow_live(
    watch: Watch, console: Any, title: str, interval: float, stop: Callable[[Snapshot], int | None]
) -> int:
    """Redraw the table in place until ``stop`` gives an exit status (0 on Ctrl-C)."""
    from rich.live import Live

    snapshot = call(watch.snapshot)
    with Live(render(snapshot, title), console=console, auto_refresh=False) as live:
        try:
            while (status := stop(snapshot)) is None:
                time.sleep(interval)
                snapshot = call(watch.snapshot)
                live.update(render(snapshot, title), refresh=True)
        except KeyboardInterrupt:
            status = 0
    return status


class SummaryLines:
    """Print the watch's one-line summary whenever it changed (output without a live display).

    Parameters
    ----------
    make_watch : callable
        Returns the :class:`~condorml.monitor.watch.Watch` to read, on first use (a run folder's DAG
        may not be written yet when this is created).
    """

    def __init__(self, make_watch: Callable[[], Watch]) -> None:
        self.make_watch, self.watch, self.last = make_watch, None, ""

    def update(self, *_: object) -> Snapshot:
        """Read the logs, print the summary if it changed; usable as a DAG runner's on_change."""
        if self.watch is None:
            self.watch = self.make_watch()
        snapshot = self.watch.snapshot()
        line = summary_line(snapshot)
        if line != self.last:
            typer.echo(f"{time.strftime('%H:%M:%S')} {line}")
            sys.stdout.flush()
            self.last = line
        return snapshot


# --- drawing a snapshot ------------------------------------------------------------------------

_NUMBERS = frozenset({"runs", "ckpts", "evictions", "epoch", "val acc", "img/s", "live"})
_NOTE_WIDTH = 80


def _cell(note: str) -> str:
    """A note cut to the table's note width."""
    return note if len(note) <= _NOTE_WIDTH else note[: _NOTE_WIDTH - 1].rstrip() + "\u2026"


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
        _member_rows(table, snapshot)
    elif snapshot.dag_nodes:
        _node_rows(table, snapshot.nodes)
    else:
        _job_rows(table, snapshot.jobs)
    counts = snapshot.counts()
    done = sum(counts.get(state, 0) for state in ("done", "failed", "removed", "skipped"))
    unit = "nodes" if snapshot.dag_nodes else "jobs"
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    line = Text(f"{done}/{snapshot.total} {unit} ended ({summary or 'nothing yet'})")
    if search := _search_counts(snapshot):
        line.append(f"; members: {search}")
    if snapshot.dag_exit is not None:
        line.append(f"; DAG exited with status {snapshot.dag_exit}")
    status = Table.grid(padding=(0, 1))
    status.add_row(ProgressBar(total=max(snapshot.total, 1), completed=done, width=30), line)
    return Group(table, status)


def _member_rows(table: Any, snapshot: Snapshot) -> None:
    """A sweep: one row per member, then one per other node (e.g. the collect node)."""
    from condorml.sweep.accounting import node_note
    from condorml.sweep.rundir import NodeName

    rungs = any(m.rungs for m in snapshot.members)  # a search with halving: a rung column
    # published progress: images/s and its age (or "off", where a job could not publish it)
    live = any(m.live or _live_off(m) for m in snapshot.members)
    columns = ("member", "state", *(("rung",) if rungs else ()), "runs", "ckpts", "evictions",
               "epoch", "val acc", *(("img/s", "live") if live else ()), "note")  # fmt: skip
    # At 80 columns the note gives way first: the member ids, states and numbers keep their room
    # (rich shrinks wrappable columns; these are neither wrapped nor cut).
    widest = {
        "member": max([len("member"), *(len(m.member) for m in snapshot.members),
                       *(len(n.name) for n in snapshot.nodes)]),
        "state": max([len("state"), *(len(m.state) for m in snapshot.members),
                      *(len(n.state) for n in snapshot.nodes)]),
    }  # fmt: skip
    for column in columns:
        note = column == "note"
        table.add_column(
            column,
            justify="right" if column in _NUMBERS else "left",
            no_wrap=True,
            overflow="ellipsis" if note else "fold",
            min_width=widest.get(column, len(column) if not note else 4),
        )
    for m in snapshot.members:
        accuracy = f"{m.val_acc:.3f}" if m.val_acc is not None else ""
        rung = (m.rung,) if rungs else ()
        speed = _live_cells(m) if live else ()
        table.add_row(m.member, m.state, *rung, *_train_counts(m), _epoch(m), accuracy, *speed,
                      _cell(m.note or _live_off(m)))  # fmt: skip
    members = {m.member for m in snapshot.members}
    for node in snapshot.nodes:  # every rung's and the inference node are in the member's row
        name = NodeName.parse(node.name)
        if name is None or name.member not in members:
            cells = {"member": node.name, "state": node.state, "runs": str(node.total("runs")),
                     "note": _cell(node_note(node))}  # fmt: skip
            table.add_row(*(cells.get(column, "") for column in columns))


def _train_counts(member: MemberView) -> tuple[str, str, str]:
    """Runs, checkpoints and evictions of the member's training nodes (summed over rungs)."""
    train = member.train
    if train is None:
        return "0", "0", "0"
    runs, checkpoints, evictions = (
        str(train.total(n)) for n in ("runs", "checkpoints", "evictions")
    )
    return runs, checkpoints, evictions


def _epoch(member: MemberView) -> str:
    """``done/epochs`` from a checkpoint; ``current/epochs 45%`` (of its batches) when live."""
    if member.epoch is None:
        return ""
    live = member.live
    if live is not None and live.batch is not None and live.batches:
        return f"{member.epoch}/{member.epochs} {100 * live.batch // live.batches}%"
    return f"{member.epoch}/{member.epochs}"


def _live_cells(member: MemberView) -> tuple[str, str]:
    """Images/s and the live column: how long ago the job published its progress."""
    live = member.live
    if live is None:
        return "", "off" if _live_off(member) else ""
    speed = f"{live.images_per_s:.0f}" if live.images_per_s is not None else ""
    age = live.age()
    return speed, "live" if age is None else f"{_short_age(age)} ago"


def _live_off(member: MemberView) -> str:
    """Why a running member shows no live progress ("" when it does, or is not running)."""
    running = member.train is not None and member.train.state == "running"
    if member.live is not None or not member.live_off or not running:
        return ""
    return f"no live progress: {member.live_off}"


def _short_age(seconds: float) -> str:
    """``7s``, ``3m``, ``2h``."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def _node_rows(table: Any, nodes: list[NodeView]) -> None:
    """A DAG that is not a sweep: one row per node seen in the logs."""
    from condorml.sweep.accounting import node_note

    for column in ("node", "state", "attempts", "runs", "ckpts", "evictions", "note"):
        table.add_column(column)
    for node in nodes:
        counts = (str(node.total(name)) for name in ("runs", "checkpoints", "evictions"))
        table.add_row(node.name, node.state, str(node.attempts), *counts, _cell(node_note(node)))


def _job_rows(table: Any, jobs: list[JobView]) -> None:
    """Plain event logs: one row per job."""
    from condorml.htcondor.events import short_reason

    for column in ("job", "node", "state", "runs", "ckpts", "evictions", "time", "note"):
        table.add_column(column)
    for job in jobs:
        table.add_row(job.id, job.node or "", job.state, str(job.runs), str(job.checkpoints),
                      str(job.evictions), _age(job.started or job.submitted, job.ended),
                      _cell(short_reason(job.reason)))  # fmt: skip


def _search_counts(snapshot: Snapshot) -> str:
    """Members per search state, e.g. ``2 running, 3 stopped, 1 failed`` ("" without [search]):
    a member the search stopped early is not a failure."""
    return ", ".join(f"{n} {state}" for state, n in snapshot.search_counts().items())


def summary_line(snapshot: Snapshot) -> str:
    """One plain line for logs without a terminal."""
    counts = snapshot.counts()
    parts = [f"{n} {state}" for state, n in counts.items() if n]
    extra = []
    for m in snapshot.members:
        if m.epoch is not None and m.train is not None and m.train.state == "running":
            acc = f" acc {m.val_acc:.3f}" if m.val_acc is not None else ""
            # no batch or age: a line per epoch, not per poll
            live = f" ({off})" if (off := _live_off(m)) else " (live)" if m.live else ""
            extra.append(f"{m.member} epoch {m.epoch}/{m.epochs}{acc}{live}")
        elif m.note:  # held, failed or removed: say why
            extra.append(f"{m.member} {m.state}: {_cell(m.note)}")
    text = f"{snapshot.total} {'nodes' if snapshot.dag_nodes else 'jobs'}: " + (
        ", ".join(parts) or "nothing yet"
    )
    if search := _search_counts(snapshot):
        text += f" | members: {search}"
    if extra:
        text += " | " + "; ".join(extra)
    if snapshot.dag_exit is not None:
        text += f" | DAG exited with status {snapshot.dag_exit}"
    return text
