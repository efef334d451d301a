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

from condorml import fileio
from condorml.errors import CheckpointError, CondormlError, ExitCode
from condorml.job import checkpoint
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
from tests.helpers import error_exit_code as _exit_code


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative name, with its bytes: to prove nothing moved."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


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
    with pytest.raises(
        CheckpointError, match=r"cannot write the checkpoint \(No space left"
    ) as err:
        save_checkpoint(_state(2), tmp_path)
    assert _exit_code(err.value) == ExitCode.TRANSIENT
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]  # no temporary left


@pytest.mark.parametrize(
    ("code", "hint", "not_hint", "exit_code"),
    [
        (errno.ENOSPC, "free space", None, ExitCode.TRANSIENT),
        (errno.EDQUOT, "quota", None, ExitCode.TRANSIENT),
        (errno.EACCES, "no permission", "free space", ExitCode.PERMANENT),  # the user's folder
        (errno.ENOTDIR, "is a file, not a folder", "free space", ExitCode.PERMANENT),
        (errno.EROFS, "read-only file system", "free space", ExitCode.PERMANENT),
    ],
)
def test_a_failed_save_gives_the_advice_that_fits_the_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    hint: str,
    not_hint: str | None,
    exit_code: int,
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
    assert _exit_code(err.value) == exit_code


def test_a_checkpoint_folder_under_a_file_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(CheckpointError) as err:
        check_checkpoint_dir(tmp_path / "notes.txt" / "ckpt")
    assert str(err.value).startswith(f"{tmp_path / 'notes.txt' / 'ckpt'}: cannot write")
    assert "not a folder" in str(err.value) and "free space" not in str(err.value)
    assert _exit_code(err.value) == ExitCode.PERMANENT
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
        assert _exit_code(err.value) == ExitCode.PERMANENT, message
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
    ) as err:
        load_checkpoint(tmp_path)
    assert _exit_code(err.value) == ExitCode.PERMANENT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]  # nothing moved


def test_a_bare_state_dict_is_not_taken_for_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"fc1.weight": torch.zeros(2)}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="not a condorml checkpoint") as err:
        load_checkpoint(tmp_path)
    assert _exit_code(err.value) == ExitCode.PERMANENT


class _Exploit:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_runs_code_from_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({**_state(1), "config": _Exploit(marker)}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="refusing to unpickle") as err:
        load_checkpoint(tmp_path)
    assert _exit_code(err.value) == ExitCode.PERMANENT
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


# --- out of memory, I/O errors and a missing model.pth: the file's fault or the machine's? -------

ALLOCATOR = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate {} bytes. Error code 12 (Cannot allocate memory)"
)
NO_MEMORY = {
    "MemoryError": lambda: MemoryError(),
    "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "allocator": lambda: RuntimeError(ALLOCATOR.format(4000)),  # torch's CPU allocator
    "ENOMEM": lambda: OSError(errno.ENOMEM, "Cannot allocate memory"),
}


def _failing_load(monkeypatch: pytest.MonkeyPatch, make, names: tuple[str, ...] | None = None):
    """torch.load raises ``make()`` for files named in ``names`` (every file if None)."""
    real = torch.load

    def load(path, *args, **kwargs):
        if names is None or Path(path).name in names:
            raise make()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)


@pytest.mark.parametrize("which", ["model.pth", "every file"])
@pytest.mark.parametrize("kind", NO_MEMORY)
def test_no_memory_while_loading_moves_nothing_and_the_checkpoint_resumes_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, which: str
) -> None:
    """Was: model.pth set aside as corrupt and epoch 1 resumed (only model.pth failing), or exit
    2, never retried (every file failing)."""
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    before = _files(tmp_path)
    _failing_load(monkeypatch, NO_MEMORY[kind], ("model.pth",) if which == "model.pth" else None)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'model.pth'}: "), message
    assert "\n" not in message and "corrupt" not in message and "damaged" not in message
    assert _exit_code(err.value) == ExitCode.TRANSIENT
    assert _files(tmp_path) == before  # nothing set aside, nothing rewritten
    monkeypatch.undo()  # memory is back: the newest checkpoint resumes
    assert load_checkpoint(tmp_path)["epoch"] == 2
    assert _files(tmp_path) == before


def test_an_allocation_larger_than_the_file_is_damage_not_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save stores tensors uncompressed: a request for more bytes than the file holds is a
    damaged size field, which no amount of memory would load."""
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    _failing_load(monkeypatch, lambda: RuntimeError(ALLOCATOR.format(10**15)), ("model.pth",))
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert (tmp_path / "model.pth.corrupt").exists() and not (tmp_path / "model.pth").exists()


def test_an_io_error_under_torchs_reader_is_transient_and_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's zip reader turns the disk's EIO into "file read failed", a damaged file's words:
    reading the file through tells them apart."""
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    before = _files(tmp_path)
    message = "PytorchStreamReader failed reading file data/0: file read failed"
    _failing_load(monkeypatch, lambda: RuntimeError(message), ("model.pth",))

    def failing_disk(path, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(checkpoint, "open", failing_disk, raising=False)
    with pytest.raises(CheckpointError, match=r"model\.pth: cannot read it \(Input/output") as err:
        load_checkpoint(tmp_path)
    assert _exit_code(err.value) == ExitCode.TRANSIENT
    monkeypatch.undo()
    assert _files(tmp_path) == before and load_checkpoint(tmp_path)["epoch"] == 2


def test_a_checkpoint_that_cannot_be_opened_is_refused_not_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permissions on the user's own folder: exit 2, and model.pth is not taken for damaged."""
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    before = _files(tmp_path)
    denied = lambda: PermissionError(errno.EACCES, "Permission denied")  # noqa: E731
    _failing_load(monkeypatch, denied, ("model.pth",))

    def no_permission(path, *args, **kwargs):
        raise denied()

    monkeypatch.setattr(checkpoint, "open", no_permission, raising=False)
    with pytest.raises(CheckpointError, match=r"model\.pth: cannot read it \(Permission") as err:
        load_checkpoint(tmp_path)
    assert _exit_code(err.value) == ExitCode.PERMANENT
    assert _files(tmp_path) == before


def test_a_checkpoint_of_a_newer_condorml_is_refused_and_kept(tmp_path: Path) -> None:
    """A good file this version cannot read is no damaged one: nothing is set aside."""
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint({**_state(2), "version": 99}, tmp_path)
    torch.save({**torch.load(tmp_path / "model.pth", weights_only=True), "version": 99},
               tmp_path / "model.pth")  # fmt: skip
    before = _files(tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.pth: written by a newer condorml") as err:
        load_checkpoint(tmp_path)
    assert _exit_code(err.value) == ExitCode.PERMANENT
    assert _files(tmp_path) == before


@pytest.mark.parametrize("kind", ["MemoryError", "allocator"])
def test_no_memory_loading_a_model_or_pretrained_weights_is_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from condorml.job.modelfile import load_member
    from condorml.job.models import build_model

    path = tmp_path / "weights.pth"
    torch.save(build_model("cnn", 48, num_classes=2).state_dict(), path)
    _failing_load(monkeypatch, NO_MEMORY[kind])
    for option, load in (
        ("--model", lambda: load_member(path, torch.device("cpu"), image_size=48)),
        ("--pretrained-weights", lambda: build_model("cnn", 48, pretrained_weights=path)),
    ):
        with pytest.raises(CondormlError) as err:
            load()
        assert str(err.value).startswith(f"{option} {path}: not enough memory to load it")
        assert _exit_code(err.value) == ExitCode.TRANSIENT
    monkeypatch.undo()
    assert load_member(path, torch.device("cpu"), image_size=48).arch == "cnn"


@pytest.mark.parametrize("layout", ["folder", "job sandbox"])
def test_a_missing_checkpoint_resumes_from_the_previous_generation_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, layout: str
) -> None:
    if layout == "job sandbox":
        monkeypatch.setenv("_CONDOR_SCRATCH_DIR", str(tmp_path))
        previous = tmp_path / ".condorml-previous" / "ckpt" / PREVIOUS_FILE
    else:
        previous = tmp_path / "ckpt" / PREVIOUS_FILE
    ckpt = tmp_path / "ckpt"
    save_checkpoint(_state(1), ckpt)
    save_checkpoint(_state(2), ckpt)
    (ckpt / "model.pth").unlink()
    with caplog.at_level(logging.WARNING, logger="condorml.job.checkpoint"):
        assert load_checkpoint(ckpt)["epoch"] == 1
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{ckpt / 'model.pth'}: missing; resuming from the previous")
    assert str(previous) in warning
    save_checkpoint(_state(3), ckpt)  # the good previous generation stays the backup
    assert read_checkpoint(previous)["epoch"] == 1 and load_checkpoint(ckpt)["epoch"] == 3
    # ... and with that one damaged too, the error says model.pth is missing: exit 2
    (ckpt / "model.pth").unlink()
    previous.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    assert str(err.value).startswith(f"{ckpt / 'model.pth'}: missing; {previous}: an empty file")
    assert _exit_code(err.value) == ExitCode.PERMANENT


# --- published files and the umask ---------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o077, 0o022, 0o002], ids=oct)
def test_published_files_get_the_permissions_of_the_users_umask(tmp_path: Path, mask: int) -> None:
    """Was 0644 whatever the umask: checkpoints world-readable under umask 077."""
    old = os.umask(mask)
    try:
        assert fileio.current_umask() == mask
        save_checkpoint(_state(1), tmp_path / "ckpt")
        save_checkpoint(_state(2), tmp_path / "ckpt")
        fileio.atomic_write_text(tmp_path / "metrics.csv", "epoch\n1\n")
        with fileio.atomic_write(tmp_path / "run.sh", executable=True) as handle:
            handle.write("#!/bin/sh\n")
        with open(tmp_path / "plain.txt", "w") as handle:  # what a plain open gives
            handle.write("x")
    finally:
        os.umask(old)
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert plain == 0o666 & ~mask
    for name in ("ckpt/model.pth", "ckpt/model.prev.pth", "metrics.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == plain, name
    assert (tmp_path / "run.sh").stat().st_mode & 0o777 == 0o777 & ~mask


def test_the_umask_is_read_without_changing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /proc has no ``Umask:`` line, it is read once at import by setting it and back."""
    old = os.umask(0o027)
    try:
        assert fileio._umask_from_proc() in (0o027, None)
        monkeypatch.setattr(fileio, "_umask_from_proc", lambda: None)
        assert fileio._umask_at_import() == 0o027
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(old)


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
    assert result.exit_code == 1 and "a" in result.failed  # DAGMan's status: the DAG failed
    assert shape[-4:] == ["040 out-start", "040 out-done", "004", "012"]
    log = (tmp_path / "job.log").read_text()
    assert "Starter failed to upload checkpoint\n\tCode 36 Subcode -1" in log
