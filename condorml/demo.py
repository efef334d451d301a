"""The Quickstart's main job: synthetic data, then a checkpointing training job run to the end.

The trainer is started the way HTCondor's starter runs a self-checkpointing job: as a separate
process with the same arguments every time, restarted in the same sandbox whenever it exits with
``checkpoint_exit_code`` (85), until it exits with anything else.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from condorml.checkpoint import CHECKPOINT_EXIT_CODE
from condorml.errors import CondormlError
from condorml.synth import make_synthetic_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One execution of the training job."""

    number: int
    exit_code: int
    seconds: float


@dataclass
class DemoResult:
    """What :func:`run_demo` did: the job's executions and where its outputs are."""

    out: Path
    command: list[str]
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The job's final exit code."""
        return self.attempts[-1].exit_code if self.attempts else 1

    @property
    def metrics_csv(self) -> Path:
        return self.out / "checkpoints" / "metrics.csv"


def train_command(out: Path, epochs: int, checkpoint_every: int, image_size: int) -> list[str]:
    """The job's command line (what a submit file's executable and arguments would say)."""
    return [
        sys.executable,
        "-m",
        "condorml",
        "train",
        "--data-dir",
        str(out / "data" / "train.zip"),
        "--checkpoint-dir",
        str(out / "checkpoints"),
        "--epochs",
        str(epochs),
        "--checkpoint-every",
        str(checkpoint_every),
        "--image-size",
        str(image_size),
        "--batch-size",
        "32",
        "--cache-dir",
        str(out / "cache"),
    ]


def run_demo(
    out: Path,
    n_train: int = 800,
    epochs: int = 20,
    checkpoint_every: int = 5,
    image_size: int = 96,
    max_attempts: int = 100,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> DemoResult:
    """Make a synthetic data set under ``out/data`` and train on it until the job finishes.

    Parameters
    ----------
    out : Path
        Run folder: ``data/``, ``checkpoints/`` (model.pth, metrics.csv), ``cache/``.
    n_train, epochs, checkpoint_every, image_size : int
        Size of the job; defaults take about a minute on two CPU cores.
    max_attempts : int
        Give up after this many executions (a job that never stops checkpointing).
    on_attempt : callable, optional
        Called after each execution.

    Raises
    ------
    CondormlError
        If the job keeps exiting 85 beyond ``max_attempts``.
    """
    summary = make_synthetic_dataset(
        out / "data", n_train=n_train, n_test=max(10, n_train // 8), seed=0, make_zips=True
    )
    log.info(
        "synthetic data: %d cats, %d dogs, %d test images in %s",
        summary.n_cats,
        summary.n_dogs,
        summary.n_test,
        out / "data",
    )
    result = DemoResult(out, train_command(out, epochs, checkpoint_every, image_size))
    for number in range(1, max_attempts + 1):
        started = time.monotonic()
        code = subprocess.run(result.command, check=False).returncode
        attempt = Attempt(number, code, time.monotonic() - started)
        result.attempts.append(attempt)
        if on_attempt:
            on_attempt(attempt)
        if code != CHECKPOINT_EXIT_CODE:
            return result
    raise CondormlError(
        f"the training job still exits {CHECKPOINT_EXIT_CODE} after {max_attempts} runs"
    )
