"""Progress reporting that library code can call without knowing where it is shown.

Library functions take a :class:`Progress`; the CLI passes a rich progress bar on a terminal and
:class:`LogProgress` (plain log lines, for batch jobs whose stdout is a file) otherwise.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("condorml")


class Progress(Protocol):
    """Receives progress of one task at a time."""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        """A task of ``total`` steps begins, ``completed`` of them already done."""

    def advance(self, steps: int = 1, status: str = "") -> None:
        """``steps`` more steps are done; ``status`` is a short note such as the running loss."""

    def finish(self, summary: str = "") -> None:
        """The task is over; ``summary`` is a one-line result."""

    def close(self) -> None:
        """No more tasks will follow."""


class LogProgress:
    """Log a line every ``every_s`` seconds while a task runs, and one when it ends.

    Parameters
    ----------
    every_s : float
        Longest gap between two progress lines; short tasks log only their end.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._description, self._total, self._done, self._last = "", 0, 0, 0.0

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self._description, self._total, self._done = description, total, completed
        self._last = time.monotonic()

    def advance(self, steps: int = 1, status: str = "") -> None:
        self._done += steps
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("%s: %d/%d %s", self._description, self._done, self._total, status)

    def finish(self, summary: str = "") -> None:
        log.info("%s: %s", self._description, summary or f"{self._done}/{self._total} done")

    def close(self) -> None:
        pass


class NullProgress:
    """Report nothing (tests, library use)."""

    def start(self, description: str, total: int, completed: int = 0) -> None:
        pass

    def advance(self, steps: int = 1, status: str = "") -> None:
        pass

    def finish(self, summary: str = "") -> None:
        pass

    def close(self) -> None:
        pass
