"""The ``<dag>.dagman.out`` writer: DAGMan's progress log, one time-stamped line per event.

The node-count line (``Of 9 nodes total: Done 3 ...``) is written only when a count changed,
although the scheduling loop reports after every poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# The node states, in the order DAGMan's status line names them (state -> its name there)
STATUS_NAMES = {"done": "Done", "pre": "Pre", "queued": "Queued", "post": "Post",
                "ready": "Ready", "not_ready": "Un-Ready", "error": "Failed", "futile": "Futile"}  # fmt: skip


class DagmanOut:
    """Append lines to ``<dag>.dagman.out`` (it is created on the first line).

    Parameters
    ----------
    path : Path
        The ``.dagman.out`` file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._status_line = ""  # the last node-count line written

    def write(self, message: str) -> None:
        """Append ``message`` with DAGMan's time stamp (``06/01/25 12:00:00``)."""
        stamp = time.strftime("%m/%d/%y %H:%M:%S")
        with open(self.path, "a") as handle:
            handle.write(f"{stamp} {message}\n")
        log.debug(message)

    def status(self, statuses: Iterable[str]) -> None:
        """Write the node-count line for these node states, if it differs from the last one."""
        statuses = list(statuses)
        counts = dict.fromkeys(STATUS_NAMES, 0)
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
        named = " ".join(f"{name} {counts[state]}" for state, name in STATUS_NAMES.items())
        line = f"Of {len(statuses)} nodes total: {named}"
        if line != self._status_line:
            self.write(line)
            self._status_line = line
