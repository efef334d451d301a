"""``condorml watch``: follow a run's job event logs (local backend or a real pool)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from condorml.cli._common import call

if TYPE_CHECKING:
    from condorml.monitor.watch import Snapshot, Watch


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
    accuracy and why it is held or failed (the hold reason), read from HTCondor job event logs with htcondor2. Works on logs from a pool and from
    the local backend, with or without a terminal (then it prints one line per change)."""
    from rich.console import Console

    from condorml.monitor.watch import Watch, check_interval, parse_exit, render

    call(check_interval, interval)
    rule = call(parse_exit, exit_when)
    watch = call(Watch, list(sources or []))
    console = Console()
    title = str(watch.run_dir or ", ".join(str(p) for p in watch.follower.paths))

    def stop_status(snapshot) -> int | None:
        if rule is None or not snapshot.condition(rule[0], rule[1]):
            return None
        if rule[2] is not None:
            return rule[2]
        return 1 if snapshot.failed() else 0

    if once:
        snapshot = call(watch.snapshot)
        console.print(render(snapshot, title))
        raise typer.Exit(0)
    if not console.is_terminal:  # no live display: a line whenever something changed
        lines = SummaryLines(lambda: watch)
        while True:
            snapshot = call(lines.update)
            status = stop_status(snapshot)
            if status is not None:
                console.print(render(snapshot, title))
                raise typer.Exit(status)
            time.sleep(interval)
    from rich.live import Live

    snapshot = call(watch.snapshot)
    with Live(render(snapshot, title), console=console, auto_refresh=False) as live:
        try:
            while (status := stop_status(snapshot)) is None:
                time.sleep(interval)
                snapshot = call(watch.snapshot)
                live.update(render(snapshot, title), refresh=True)
        except KeyboardInterrupt:
            status = 0
    raise typer.Exit(status)


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
        from condorml.monitor.watch import summary_line

        if self.watch is None:
            self.watch = self.make_watch()
        snapshot = self.watch.snapshot()
        line = summary_line(snapshot)
        if line != self.last:
            typer.echo(f"{time.strftime('%H:%M:%S')} {line}")
            sys.stdout.flush()
            self.last = line
        return snapshot
