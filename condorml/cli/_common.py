"""What every command shares: error reporting, logging, and progress display."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from condorml.errors import CondormlError
from condorml.progress import LogProgress, Progress

T = TypeVar("T")
USAGE_ERROR = 2

stderr = Console(stderr=True)


def call(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a library function; a :class:`CondormlError` becomes one line on stderr and exit 2."""
    try:
        return fn(*args, **kwargs)
    except CondormlError as err:
        typer.echo(f"condorml: error: {err}", err=True)
        raise typer.Exit(USAGE_ERROR) from None


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr: through rich on a terminal (so bars and lines mix), plain lines otherwise."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if stderr.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=stderr, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="%H:%M:%S"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
        )
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Pillow and others log at INFO/DEBUG about plugins; keep batch-job logs about our work.
    logging.getLogger("PIL").setLevel(logging.WARNING)


def make_progress() -> Progress:
    """A rich progress bar on a terminal, log lines in a batch job."""
    return RichProgress() if stderr.is_terminal else LogProgress()


class RichProgress:
    """:class:`~condorml.progress.Progress` drawn as one live rich bar; finished tasks become lines."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self._bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=stderr,
            transient=True,
        )
        self._task = None
        self._description = ""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        if self._task is None:
            self._bars.start()
        else:
            self._bars.remove_task(self._task)
        self._description = description
        self._task = self._bars.add_task(description, total=total, completed=completed, status="")

    def advance(self, steps: int = 1, status: str = "") -> None:
        if self._task is not None:
            self._bars.update(self._task, advance=steps, status=status)

    def finish(self, summary: str = "") -> None:
        if self._task is not None:
            self._bars.remove_task(self._task)
            self._task = None
            self._bars.console.print(f"{self._description}: {summary or 'done'}", highlight=False)

    def close(self) -> None:
        """Stop drawing (call once, after the last task)."""
        self._bars.stop()
