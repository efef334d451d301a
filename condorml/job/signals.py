"""Stopping a training run at a safe point: SIGTERM (an HTCondor eviction) and SIGINT as a flag."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("condorml.job.train")  # the trainer's messages, under its name


@contextmanager
def stop_signals() -> Iterator[dict[str, int]]:
    """Turn SIGTERM (an eviction) and SIGINT into a flag checked at safe points."""
    received: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        received.setdefault("signal", signum)
        log.warning("received %s: stopping at the next safe point", signal.Signals(signum).name)
        signal.signal(signum, previous[signum])  # a second signal acts at once

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
