"""Helpers the tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

IMAGE_SIZE = 48  # the smallest comfortable size for the CHTC CNN; keeps the suite fast


def cli_exit_code(fn, *args) -> int:
    """The exit code condorml's command line gives what ``fn(*args)`` raises: 2 permanent (never
    retried), 75 transient."""
    import typer

    from condorml.cli._common import call

    try:
        call(fn, *args)
    except typer.Exit as done:
        return done.exit_code
    raise AssertionError("no error")


def error_exit_code(err: BaseException) -> int:
    """The exit code condorml's command line gives ``err`` raised by a library function."""

    def fail() -> None:
        raise err

    return cli_exit_code(fail)


def run_until_finished(config, max_runs: int = 200):
    """Call train() again after every checkpoint, as HTCondor restarts a job after exit 85."""
    from condorml.job.train import train

    for runs in range(1, max_runs + 1):
        result = train(config)
        if result.status != "checkpointed":
            return result, runs
    raise AssertionError(f"still checkpointing after {max_runs} runs")


def condorml_cli(
    *args: str, env: dict | None = None, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``python -m condorml ARGS`` in a subprocess and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "condorml", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def tiny_sweep_spec(data: Path, members: int, retries: int) -> str:
    """A sweep of a tiny CNN over ``data`` (synthetic zips): 2 epochs, a checkpoint after the first."""
    return f"""\
[data]
train = "{data}/train.zip"
test = "{data}/test.zip"
labels = "{data}/test_labels.csv"

[train]
epochs = 2
checkpoint_every = 1
image_size = {IMAGE_SIZE}
batch_size = 16

[ensemble]
members = {members}

[resources]
cpus = 1
memory = "1GB"

[throttle]
retries = {retries}
"""


# A user's own model file (README: "Your own model"): small enough for the suite, with batch norm.
SMALL_NET = """\
import torch
from torch import nn


class Net(nn.Module):
    \"\"\"3 x S x S in, num_classes logits out.\"\"\"

    input_mean = (0.5, 0.5, 0.5)
    input_std = (0.25, 0.25, 0.25)

    def __init__(self, num_classes):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(8 * 16, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))
"""
