"""The Quickstart's main job: synthetic data, a checkpointing training job, then inference.

Each step runs as its own process, the way HTCondor runs the jobs. The training job is restarted
the way HTCondor's starter restarts a self-checkpointing job: same arguments, same sandbox,
whenever it exits with ``checkpoint_exit_code`` (85), until it exits with anything else. Then an
inference job writes ``dog_probs.csv`` and the result is scored against the synthetic labels.
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
from condorml.evaluate import Scores, evaluate_file
from condorml.synth import make_synthetic_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One execution of a job."""

    job: str
    number: int
    exit_code: int
    seconds: float


@dataclass
class DemoResult:
    """What :func:`run_demo` did: the jobs' executions, where the outputs are, the scores."""

    out: Path
    attempts: list[Attempt] = field(default_factory=list)
    scores: Scores | None = None

    @property
    def exit_code(self) -> int:
        """The last job's exit code."""
        return self.attempts[-1].exit_code if self.attempts else 1

    @property
    def metrics_csv(self) -> Path:
        return self.out / "checkpoints" / "metrics.csv"

    @property
    def predictions(self) -> Path:
        return self.out / "dog_probs.csv"


def _condorml(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "condorml", *map(str, args)]


def run_demo(
    out: Path,
    n_train: int = 800,
    epochs: int = 20,
    checkpoint_every: int = 5,
    image_size: int = 96,
    max_attempts: int = 100,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> DemoResult:
    """Make a synthetic data set, train on it until the job finishes, infer, and score.

    Parameters
    ----------
    out : Path
        Run folder: ``data/``, ``checkpoints/`` (model.pth, metrics.csv), ``cache/``,
        ``dog_probs.csv`` and its sidecar, ``metrics.json``.
    n_train, epochs, checkpoint_every, image_size : int
        Size of the job; the defaults take about half a minute on two CPU cores.
    max_attempts : int
        Give up after this many executions of the training job.
    on_attempt : callable, optional
        Called after each job execution.

    Raises
    ------
    CondormlError
        If the training job keeps exiting 85 beyond ``max_attempts``.
    """
    data = out / "data"
    summary = make_synthetic_dataset(
        data, n_train=n_train, n_test=max(10, n_train // 8), make_zips=True
    )
    log.info(
        "synthetic data: %d cats, %d dogs, %d test images in %s",
        summary.n_cats,
        summary.n_dogs,
        summary.n_test,
        data,
    )
    result = DemoResult(out)
    train = _condorml(
        "train",
        "--data-dir",
        data / "train.zip",
        "--checkpoint-dir",
        out / "checkpoints",
        "--epochs",
        epochs,
        "--checkpoint-every",
        checkpoint_every,
        "--image-size",
        image_size,
        "--batch-size",
        32,
        "--cache-dir",
        out / "cache",
    )
    for number in range(1, max_attempts + 1):
        attempt = _run("train", number, train, result, on_attempt)
        if attempt.exit_code != CHECKPOINT_EXIT_CODE:
            break
    else:
        raise CondormlError(
            f"the training job still exits {CHECKPOINT_EXIT_CODE} after {max_attempts} runs"
        )
    if result.exit_code != 0:
        return result
    infer = _condorml(
        "infer",
        "--model",
        out / "checkpoints" / "model.pth",
        "--images",
        data / "test.zip",
        "--output",
        result.predictions,
    )
    if _run("infer", 1, infer, result, on_attempt).exit_code == 0:
        result.scores = evaluate_file(
            result.predictions, data / "test_labels.csv", out / "metrics.json"
        )
    return result


def _run(
    job: str,
    number: int,
    command: list[str],
    result: DemoResult,
    on_attempt: Callable[[Attempt], None] | None,
) -> Attempt:
    started = time.monotonic()
    code = subprocess.run(command, check=False).returncode
    attempt = Attempt(job, number, code, time.monotonic() - started)
    result.attempts.append(attempt)
    if on_attempt:
        on_attempt(attempt)
    return attempt
