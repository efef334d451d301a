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

from condorml.errors import CheckpointError, CondormlError
from condorml.job.checkpoint import (
    PREVIOUS_FILE,
    capture_rng_state,
    check_checkpoint_dir,
    discard_checkpoints,
    load_checkpoint,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


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


@pytest.mark.parametrize(
    ("code", "hint", "not_hint"),
    [
        (errno.ENOSPC, "free space", None),
        (errno.EDQUOT, "quota", None),
        (errno.EACCES, "no permission", "free space"),
        (errno.ENOTDIR, "is a file, not a folder", "free space"),
        (errno.EROFS, "read-only file system", "free space"),
    ],
)
def test_a_failed_save_gives_the_advice_that_fits_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, hint: str, not_hint: str | None
) -> None:
    def failing(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(_state(1), tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'model.pth'}: cannot write the checkpoint")
    assert hint in message and "\n" not in message
    assert not_hint is None or not_hint not in message


def test_a_checkpoint_folder_under_a_file_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(CheckpointError) as err:
        check_checkpoint_dir(tmp_path / "notes.txt" / "ckpt")
    assert str(err.value).startswith(f"{tmp_path / 'notes.txt' / 'ckpt'}: cannot write")
    assert "not a folder" in str(err.value) and "free space" not in str(err.value)
    check_checkpoint_dir(tmp_path / "new" / "ckpt")  # a folder that can be made is made
    assert (tmp_path / "new" / "ckpt").is_dir() and not list((tmp_path / "new" / "ckpt").iterdir())


def test_a_fallback_sets_the_damaged_file_aside_and_keeps_the_good_backup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    current = tmp_path / "model.pth"
    damaged = current.read_bytes()[:100]  # truncated
    current.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(tmp_path)["epoch"] == 1
    assert "model.pth.corrupt" in caplog.text
    save_checkpoint(_state(3), tmp_path)  # the next save, after resuming from the previous one
    assert read_checkpoint(tmp_path / PREVIOUS_FILE)["epoch"] == 1  # still the good backup
    assert read_checkpoint(current)["epoch"] == 3
    assert (tmp_path / "model.pth.corrupt").read_bytes() == damaged
    # A second damaged file does not overwrite the first one set aside.
    current.write_bytes(b"")
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert (tmp_path / "model.pth.corrupt.2").read_bytes() == b""
    assert (tmp_path / "model.pth.corrupt").read_bytes() == damaged


def test_every_discarded_checkpoint_is_kept(tmp_path: Path) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    first = discard_checkpoints(tmp_path)
    save_checkpoint(_state(7), tmp_path)
    second = discard_checkpoints(tmp_path)
    assert [p.name for p in first] == ["model.pth.discarded", "model.prev.pth.discarded"]
    assert [p.name for p in second] == ["model.pth.discarded.2"]
    epochs = {p.name: torch.load(p, weights_only=True)["epoch"] for p in first + second}
    assert epochs == {
        "model.pth.discarded": 2, "model.prev.pth.discarded": 1, "model.pth.discarded.2": 7,
    }  # fmt: skip


def test_in_a_job_the_previous_generation_stays_out_of_the_transferred_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HTCondor transfers ckpt/ (transfer_checkpoint_files) at every exit 85: one generation only.
    monkeypatch.setenv("_CONDOR_SCRATCH_DIR", str(tmp_path))
    ckpt = tmp_path / "ckpt"
    check_checkpoint_dir(ckpt)
    save_checkpoint(_state(1), ckpt)
    save_checkpoint(_state(2), ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.pth"]
    previous = tmp_path / ".condorml-previous" / "ckpt" / PREVIOUS_FILE
    assert read_checkpoint(previous)["epoch"] == 1
    # ... and still covers a damaged model.pth in the same sandbox
    (ckpt / "model.pth").write_bytes(b"")
    assert load_checkpoint(ckpt)["epoch"] == 1
    # A folder written outside a job (model.prev.pth inside it) still falls back inside a job.
    laptop = tmp_path / "laptop"
    monkeypatch.delenv("_CONDOR_SCRATCH_DIR")
    save_checkpoint(_state(1), laptop)
    save_checkpoint(_state(2), laptop)
    (laptop / "model.pth").write_bytes(b"")
    monkeypatch.setenv("_CONDOR_SCRATCH_DIR", str(tmp_path))
    assert load_checkpoint(laptop)["epoch"] == 1
    save_checkpoint(_state(3), laptop)  # the good backup stays until a newer one replaces it
    assert read_checkpoint(laptop / PREVIOUS_FILE)["epoch"] == 1
    save_checkpoint(_state(4), laptop)  # from now on one generation in the folder
    assert sorted(p.name for p in laptop.iterdir()) == ["model.pth", "model.pth.corrupt"]
    assert read_checkpoint(tmp_path / ".condorml-previous" / "laptop" / PREVIOUS_FILE)["epoch"] == 3


def _pickled_object(path: Path) -> None:
    torch.save({"w": torch.zeros(2), "where": Path("/x")}, path)


def _plain_pickle(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))


def _truncated_file(path: Path) -> None:
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])


BAD_FILES = {
    "text": (lambda p: p.write_text("hello, I am not a model\n"), "not a PyTorch file at all"),
    "empty": (lambda p: p.write_bytes(b""), "an empty file"),
    "truncated": (_truncated_file, "truncated or damaged"),
    "object": (_pickled_object, "Python objects other than tensors"),
    "pickle": (_plain_pickle, "a plain Python pickle, not a file written by torch.save"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the test writes one on purpose
@pytest.mark.parametrize("kind", BAD_FILES)
def test_unloadable_files_are_named_for_what_they_are_without_unsafe_advice(
    tmp_path: Path, kind: str
) -> None:
    from condorml.job.modelfile import load_member
    from condorml.job.models import build_model

    make, expected = BAD_FILES[kind]
    path = tmp_path / "model.pth"
    make(path)
    for load in (
        read_checkpoint,
        lambda p: load_member(p, torch.device("cpu")),
        lambda p: build_model("resnet18", 64, pretrained_weights=p),
    ):
        with pytest.raises(CondormlError) as err:
            load(path)
        message = str(err.value)
        assert str(path) in message and expected in message, message
        assert "\n" not in message and "weights_only" not in message, message
    if kind == "object":
        assert "refusing to unpickle" in message and "pathlib" in message


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
        CheckpointError, match=r"model\.pth: not a PyTorch file at all.*--force-restart"
    ):
        load_checkpoint(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]  # nothing moved


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
    from condorml.job.checkpoint import save_checkpoint
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


# --- HTCondor's checkpoint transfer, as the local backend emulates it ------------------------
# What HTCondor 25.0.13 did with this job (a pool on 127.0.0.1, condor_vacate_job after the first
# exit 85, no preserve_relative_paths): see each case below. The local backend must do the same.

PROBE_JOB = """\
    #!/bin/sh
    # First start: write ckpt/ and exit 85. The restart in the same sandbox waits to be evicted.
    # A start in a new sandbox lists what the spooled checkpoint brought back.
    if [ -e sandbox_marker ]; then sleep 30; exit 3; fi
    if [ -e ckpt ] || [ -e model.pth ]; then
      find . -type f -not -name '_condor_*' -not -name probe.sh -not -name '.*' -not -name '*.txt' > result.txt
      exit 0
    fi
    touch sandbox_marker
    mkdir ckpt
    echo gen1 > ckpt/model.pth; echo gen0 > ckpt/model.prev.pth; echo m > ckpt/metrics.csv
    exit 85
"""


def _probe(tmp_path: Path, checkpoint_files: str):
    from condorml.backends.local.starter import Evictions
    from tests.test_local import _dag, _events, _run, _script, _shape, _submit

    _script(tmp_path / "probe.sh", PROBE_JOB)
    _submit(tmp_path / "probe.sub", "probe.sh", checkpoint_exit_code="85",
            transfer_checkpoint_files=checkpoint_files, transfer_output_files="result.txt")  # fmt: skip
    dag = _dag(tmp_path / "probe.dag", "JOB a probe.sub\n")
    result = _run(dag, evictions=Evictions(1.0, (1.0, 1.5), grace=1.0))
    return result, _shape(_events(tmp_path / "job.log"))


@pytest.mark.parametrize(
    ("listed", "came_back"),
    [
        # the folder comes back whole, both generations in it
        ("ckpt", ["./ckpt/metrics.csv", "./ckpt/model.prev.pth", "./ckpt/model.pth"]),
        # a path inside it comes back flattened to its name, at the top of the sandbox
        ("ckpt/model.pth, ckpt/metrics.csv", ["./metrics.csv", "./model.pth"]),
        # a trailing slash sends the folder's contents
        ("ckpt/", ["./metrics.csv", "./model.prev.pth", "./model.pth"]),
    ],
)
def test_local_checkpoint_transfer_does_what_the_pool_did(
    tmp_path: Path, listed: str, came_back: list[str]
) -> None:
    result, _ = _probe(tmp_path, listed)
    assert result.exit_code == 0
    assert sorted((tmp_path / "result.txt").read_text().split()) == came_back


def test_a_missing_checkpoint_file_holds_the_job_as_on_the_pool(tmp_path: Path) -> None:
    # Pool: 040 pair, 021 "Starter failed to upload checkpoint", 004 and 012, Code 36 Subcode -1.
    result, shape = _probe(tmp_path, "ckpt/model.pth, ckpt/state.json")
    assert result.exit_code != 0 and "a" in result.failed
    assert shape[-4:] == ["040 out-start", "040 out-done", "004", "012"]
    log = (tmp_path / "job.log").read_text()
    assert "Starter failed to upload checkpoint\n\tCode 36 Subcode -1" in log
