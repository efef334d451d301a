"""Checkpoint files: atomic under SIGKILL, two generations, safe loading, RNG round trip."""

from __future__ import annotations

import errno
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from condorml.checkpoint import (
    PREVIOUS_FILE,
    capture_rng_state,
    load_checkpoint,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from condorml.errors import CheckpointError


def _state(step: int, size: int = 1000) -> dict:
    return {
        "config": {"model": "cnn"},
        "epoch": step,
        "batch": 0,
        "order": torch.arange(5),
        "epoch_sums": [0.0, 0, 0, 0.0],
        "metrics": [{"epoch": step, "train_loss": 0.5}],
        "counters": {"checkpoints": step, "runs": 1, "wall_seconds": 1.0},
        "model": {"w": torch.full((size,), float(step))},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {},
        "rng": capture_rng_state(),
    }


def test_save_keeps_the_previous_generation(tmp_path: Path) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    assert load_checkpoint(tmp_path)["epoch"] == 2
    assert read_checkpoint(tmp_path / PREVIOUS_FILE)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.prev.pth", "model.pth"]


def test_a_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(_state(1), tmp_path)

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint \(No space left"):
        save_checkpoint(_state(2), tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]  # no temporary left


def test_no_checkpoint_means_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_falls_back_to_the_previous_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    current = tmp_path / "model.pth"
    data = current.read_bytes()
    current.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage]
    )
    with caplog.at_level(logging.WARNING):
        state = load_checkpoint(tmp_path)
    assert state["epoch"] == 1
    assert any(
        "model.pth" in r.getMessage() and "model.prev.pth" in r.getMessage() for r in caplog.records
    )


def test_no_valid_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"model\.pth: not a loadable checkpoint.*--force-restart"
    ):
        load_checkpoint(tmp_path)


def test_a_bare_state_dict_is_not_taken_for_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"fc1.weight": torch.zeros(2)}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="not a condorml checkpoint"):
        load_checkpoint(tmp_path)


class _Exploit:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_runs_code_from_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({**_state(1), "config": _Exploit(marker)}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_stale_temporary_files_of_a_killed_save_are_removed(tmp_path: Path) -> None:
    save_checkpoint(_state(1), tmp_path)
    (tmp_path / ".tmp-model.pth.abc123").write_bytes(b"half")
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert not (tmp_path / ".tmp-model.pth.abc123").exists()


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint({**_state(1), "rng": capture_rng_state()}, tmp_path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from tests.test_checkpoint import _state
    from condorml.checkpoint import save_checkpoint
    step = 0
    while True:
        step += 1
        save_checkpoint(_state(step, size=2_000_000), Path(sys.argv[1]))
        if step == 1:
            print("saved", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(0)
    root = Path(__file__).resolve().parents[1]
    for attempt in range(6):
        directory = tmp_path / str(attempt)
        saver = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(directory)],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert saver.stdout.readline().strip() == "saved"
        time.sleep(rng.uniform(0.0, 0.4))
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        read_checkpoint(directory / "model.pth")  # the newest file itself is never torn
        state = load_checkpoint(directory)
        assert state["epoch"] >= 1
        assert torch.equal(state["model"]["w"], torch.full((2_000_000,), float(state["epoch"])))
