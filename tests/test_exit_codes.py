"""Permanent and transient failures: exit 2 is never retried, exit 75 is (issue 13).

A failure is *permanent* when the command line, the spec, the data or the checkpoint is wrong
(exit 2), *transient* when the machine or the transfer is at fault: a full disk, a file-size
limit, an I/O error, a zip cut off in transfer, no memory (exit 75). The sweep's DAG says
``RETRY n UNLESS-EXIT 2``, so a transient failure is retried and resumes from its checkpoint.
Failures are real ones where that is cheap (a file-size limit, a truncated or damaged zip, junk
in the checkpoint folder); a full disk and permissions are simulated by a failing ``torch.save``.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import htcondor2
import pytest
import torch
import typer
from typer.testing import CliRunner

from condorml.cli import app
from condorml.cli._common import call
from condorml.errors import (
    EXIT_MEANINGS,
    CheckpointError,
    CondormlError,
    DataError,
    ExitCode,
    TransientError,
    is_transient,
)
from condorml.htcondor.wrappers import wrapper_script
from condorml.job.checkpoint import (
    CHECKPOINT_EXIT_CODE,
    capture_rng_state,
    load_checkpoint,
    save_checkpoint,
)
from condorml.job.data import ImageSource
from condorml.job.layouts import training_set
from condorml.sweep.dag import USAGE_ERROR_EXIT
from tests.helpers import IMAGE_SIZE, condorml_cli, tiny_sweep_spec
from tests.helpers import cli_exit_code as _exit_code

GOLDEN = Path(__file__).parent / "golden"


def _state(config: dict | None = None, size: int = 1000) -> dict:
    """A checkpoint's content, as small as ``size`` floats of weights."""
    return {
        "config": config or {"model": "cnn"},
        "epoch": 1,
        "batch": 0,
        "order": torch.arange(5),
        "epoch_sums": [0.0, 0, 0, 0.0],
        "metrics": [],
        "counters": {"checkpoints": 1, "runs": 1, "wall_seconds": 1.0},
        "model": {"w": torch.zeros(size)},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {},
        "rng": capture_rng_state(),
    }


def _raise(err: BaseException):
    def fail() -> None:
        raise err

    return fail


# --- the table and the error-to-exit-code mapping -------------------------------------------


def test_one_table_of_exit_codes_that_the_dag_and_the_trainer_use() -> None:
    assert len({int(code) for code in ExitCode}) == len(ExitCode) == len(EXIT_MEANINGS)
    assert (ExitCode.PERMANENT, ExitCode.TRANSIENT, ExitCode.CHECKPOINTED) == (2, 75, 85)
    assert CHECKPOINT_EXIT_CODE == ExitCode.CHECKPOINTED and USAGE_ERROR_EXIT == 2
    dag = (GOLDEN / "sweep.dag").read_text().splitlines()
    retries = [line for line in dag if line.startswith("RETRY ")]
    assert retries and all(
        line.endswith(f"UNLESS-EXIT {int(ExitCode.PERMANENT)}") for line in retries
    )
    note = next(line for line in dag if line.startswith("# Jobs exit "))
    assert all(f"{int(code)} {code.name.lower()}" in note for code in ExitCode)


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (CondormlError("bad option"), ExitCode.PERMANENT),
        (DataError("no images at all"), ExitCode.PERMANENT),
        (TransientError("disk full"), ExitCode.TRANSIENT),
        (MemoryError(), ExitCode.TRANSIENT),
        (torch.OutOfMemoryError("CUDA out of memory"), ExitCode.TRANSIENT),
        (OSError(errno.ENOSPC, "No space left on device", "x.csv"), ExitCode.TRANSIENT),
        (OSError(errno.EIO, "Input/output error"), ExitCode.TRANSIENT),
    ],
)
def test_call_picks_the_exit_code_by_the_kind_of_failure(
    err: BaseException, code: int, capsys: pytest.CaptureFixture
) -> None:
    assert _exit_code(_raise(err)) == code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("condorml: error: ")
    assert ("transient, exit 75" in lines[0]) == (code == ExitCode.TRANSIENT)


@pytest.mark.parametrize("err", [ValueError("a bug"), FileNotFoundError(errno.ENOENT, "gone")])
def test_anything_else_is_a_bug_with_its_traceback(err: BaseException) -> None:
    assert not is_transient(err)
    with pytest.raises(type(err)):
        call(_raise(err))


# --- checkpoints ------------------------------------------------------------------------------


def _failing_save(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fail(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", fail)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_full_disk_while_saving_is_transient_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    save_checkpoint(_state(), tmp_path)
    _failing_save(monkeypatch, code)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(_state(), tmp_path)
    assert _exit_code(_raise(err.value)) == ExitCode.TRANSIENT
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_a_file_size_limit_while_saving_is_transient(tmp_path: Path) -> None:
    """A real EFBIG, which torch.save hides behind a RuntimeError ("unexpected pos")."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(
            CheckpointError, match=r"cannot write the checkpoint \(File too large"
        ) as err:
            save_checkpoint(_state(size=100_000), tmp_path)  # 400 kB of weights
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert _exit_code(_raise(err.value)) == ExitCode.TRANSIENT
    assert not list(tmp_path.iterdir())  # no temporary left behind


def test_permissions_are_the_users_mistake_except_in_a_jobs_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a job, --checkpoint-dir is the user's choice; in a job's sandbox it is
    condorml's own ``ckpt``, so an unwritable one is the machine's fault."""
    _failing_save(monkeypatch, errno.EACCES)
    monkeypatch.setenv("_CONDOR_SCRATCH_DIR", str(tmp_path / "sandbox"))
    (tmp_path / "sandbox").mkdir()
    with pytest.raises(CheckpointError) as mine:
        save_checkpoint(_state(), tmp_path / "mine")
    with pytest.raises(CheckpointError) as jobs:
        save_checkpoint(_state(), tmp_path / "sandbox" / "ckpt")
    assert _exit_code(_raise(mine.value)) == ExitCode.PERMANENT
    assert _exit_code(_raise(jobs.value)) == ExitCode.TRANSIENT
    assert "no permission" in str(mine.value) and "no permission" in str(jobs.value)


def test_an_io_error_reading_a_checkpoint_sets_nothing_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(_state(), tmp_path)
    save_checkpoint(_state(), tmp_path)

    def failing_disk(*_args, **_kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "load", failing_disk)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert _exit_code(_raise(err.value)) == ExitCode.TRANSIENT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.prev.pth", "model.pth"]


# --- data -------------------------------------------------------------------------------------


def test_a_truncated_zip_is_transient_and_a_file_that_is_no_zip_permanent(
    tmp_path: Path, synth: Path
) -> None:
    data = (synth / "train.zip").read_bytes()
    (tmp_path / "half.zip").write_bytes(data[: len(data) // 2])  # cut off in transfer
    with pytest.raises(DataError, match="truncated zip archive") as cut:
        ImageSource(tmp_path / "half.zip")
    (tmp_path / "notes.zip").write_text("not a zip")
    with pytest.raises(DataError, match=r"not a directory or a \.zip") as wrong:
        ImageSource(tmp_path / "notes.zip")
    assert _exit_code(_raise(cut.value)) == ExitCode.TRANSIENT
    assert _exit_code(_raise(wrong.value)) == ExitCode.PERMANENT


def test_a_damaged_member_fails_the_build_and_caches_nothing(tmp_path: Path, synth: Path) -> None:
    """A bad CRC was raised raw (a bug, exit 1); an I/O error marked a sound image undecodable
    in the cache for good."""
    from condorml.job.imagecache import load_decoded

    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for image in [
            *sorted((synth / "train").glob("cat.*"))[:3],
            *sorted((synth / "train").glob("dog.*"))[:3],
        ]:
            out.write(image, f"train/{image.name}")
    raw = bytearray(archive.read_bytes())
    raw[200] ^= 0xFF  # inside the first image's bytes: its CRC no longer matches
    archive.write_bytes(bytes(raw))
    source = ImageSource(archive)
    listed = training_set(archive).labelled_images()
    with pytest.raises(DataError, match="damaged or was cut off in transfer") as err:
        load_decoded(source, listed, IMAGE_SIZE, tmp_path / "cache", 1)
    assert _exit_code(_raise(err.value)) == ExitCode.TRANSIENT
    assert not list((tmp_path / "cache").glob("*.npy"))


# --- through the CLI ---------------------------------------------------------------------------


def test_train_exit_codes_through_the_cli(tmp_path: Path, synth: Path) -> None:
    """Exit 2: a checkpoint of another configuration, junk in the checkpoint folder, no images;
    exit 75: a zip cut off in transfer. One line each, no traceback."""
    save_checkpoint(_state({"model": "resnet18", "image_size": 224}), tmp_path / "other")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.pth").write_text("not a checkpoint")
    (tmp_path / "empty").mkdir()
    data = (synth / "train.zip").read_bytes()
    (tmp_path / "half.zip").write_bytes(data[: len(data) // 3])
    cases = [
        (str(synth), "other", ExitCode.PERMANENT, "was written by another configuration"),
        (str(synth), "junk", ExitCode.PERMANENT, "no valid checkpoint"),
        (str(tmp_path / "empty"), "c1", ExitCode.PERMANENT, "no training images found"),
        (str(tmp_path / "half.zip"), "c2", ExitCode.TRANSIENT, "truncated zip archive"),
    ]
    for data_dir, checkpoint_dir, code, message in cases:
        argv = ["train", "-d", data_dir, "-c", str(tmp_path / checkpoint_dir), "--image-size", "48"]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == code, (argv, result.output)
        errors = [line for line in result.stderr.splitlines() if "condorml: error: " in line]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output


def test_no_memory_loading_the_checkpoint_exits_75_moves_nothing_and_resumes_later(
    train_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was exit 2 (every generation "corrupt"), which RETRY ... UNLESS-EXIT 2 never retries."""
    from condorml.job.train import train

    every_batch = replace(train_config, checkpoint_minutes=1e-9)  # a checkpoint per batch
    for _ in range(2):  # model.pth (batch 2) and model.prev.pth (batch 1)
        assert train(every_batch).exit_code == ExitCode.CHECKPOINTED
    ckpt = train_config.checkpoint_dir
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    real = torch.load

    def no_memory(path, *args, **kwargs):
        if Path(path).name.startswith("model."):
            raise MemoryError
        return real(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", no_memory)
    argv = ["train", "-d", str(train_config.data_dir), "-c", str(ckpt), "--epochs", "2",
            "--image-size", str(IMAGE_SIZE), "--batch-size", "16", "--precision", "fp32",
            "--checkpoint-minutes", "1e-9", "--cache-dir", str(train_config.cache_dir)]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == ExitCode.TRANSIENT, result.output
    errors = [line for line in result.stderr.splitlines() if "condorml: error: " in line]
    assert len(errors) == 1 and f"{ckpt / 'model.pth'}: not enough memory to load it" in errors[0]
    assert "transient, exit 75" in errors[0] and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    monkeypatch.undo()  # the retry, with memory, resumes from the newest checkpoint
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == ExitCode.CHECKPOINTED, result.output
    assert "resuming from" in result.stderr and "0 of 2 epochs done, batch 2 of 6" in result.stderr
    assert not list(ckpt.glob("*.corrupt*"))


NO_MEMORY_NET = """\
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        raise {error}
"""


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        ("MemoryError()", ExitCode.TRANSIENT, "not enough memory to construct the model"),
        (
            'RuntimeError("DefaultCPUAllocator: can\'t allocate memory: you tried to allocate 9 bytes")',
            ExitCode.TRANSIENT,
            "not enough memory to construct the model",
        ),
        ("OSError(5, 'Input/output error')", ExitCode.TRANSIENT, "cannot construct the model"),
        ("ValueError('my bug')", ExitCode.PERMANENT, "failed (ValueError: my bug)"),
    ],
    ids=["MemoryError", "allocator", "EIO", "its own bug"],
)
def test_a_user_model_that_runs_out_of_memory_is_transient_its_own_bug_permanent(
    tmp_path: Path, error: str, code: int, message: str
) -> None:
    from condorml.job.usermodel import load_model_class

    path = tmp_path / "net.py"
    path.write_text(NO_MEMORY_NET.format(error=error))
    with pytest.raises(CondormlError) as err:
        load_model_class(path, "Net").build(2)
    assert str(err.value).startswith(f"--model {path}:Net: ") and message in str(err.value)
    assert "\n" not in str(err.value) and _exit_code(_raise(err.value)) == code
    (tmp_path / "top.py").write_text(f"raise {error}\n")  # when the file is imported
    with pytest.raises(CondormlError) as err:
        load_model_class(tmp_path / "top.py", "Net")
    assert _exit_code(_raise(err.value)) == code


@pytest.mark.slow
def test_train_exits_75_when_a_checkpoint_cannot_be_written(
    tmp_path: Path, synth: Path, cache_dir: Path
) -> None:
    """A real process over its file-size limit: the decoded images (648 kB) fit, the 1.1 MB
    checkpoint does not."""
    limit = 1000 * 1024

    def limited() -> None:
        resource.setrlimit(
            resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
        )

    args = ["train", "-d", str(synth / "train.zip"), "-c", str(tmp_path / "ck"), "--epochs", "1",
            "--checkpoint-every", "1", "--image-size", str(IMAGE_SIZE), "--batch-size", "16",
            "--precision", "fp32", "--cache-dir", str(cache_dir)]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "condorml", *args], capture_output=True,
                          text=True, preexec_fn=limited, timeout=300, check=False)  # fmt: skip
    assert done.returncode == ExitCode.TRANSIENT, done.stderr
    assert "cannot write the checkpoint (File too large)" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_wrapper_exits_transient_where_condorml_is_missing(tmp_path: Path) -> None:
    """No condorml on this machine: another machine may have it, and 1 stays a bug's code."""
    wrapper = tmp_path / "condorml_infer.sh"
    wrapper.write_text(wrapper_script("infer", "out"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "", "HOME": str(tmp_path)}
    proc = subprocess.run(["/bin/bash", str(wrapper), "infer"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode == 0:
        pytest.skip("a system python here has condorml importable")
    assert proc.returncode == ExitCode.TRANSIENT and "condorml is not installed on" in proc.stderr
    assert (tmp_path / "out").is_dir()


# --- a sweep on the local backend ----------------------------------------------------------------

# Put in the generated wrapper: m000's second start (it has a checkpoint) gets a file-size limit
# its next checkpoint does not fit, once: a real EFBIG, as a full scratch disk would give ENOSPC.
LIMIT_ONCE = (
    'case " $* " in *" --member m000 "*) if [ -e ckpt/model.pth ] && mkdir "{flag}" 2>/dev/null; '
    "then ulimit -f 1000; fi ;; esac\n"
)


def _train_jobs(member: Path) -> list[tuple[int, int]]:
    """(cluster, exit code) of every training job of a member, from its job log."""
    events = htcondor2.JobEventLog(str(member / "train.log")).events(0)
    terminated = htcondor2.JobEventType.JOB_TERMINATED
    return [(e.cluster, e["ReturnValue"]) for e in events if e.type == terminated]


@pytest.mark.slow
def test_a_transient_failure_is_retried_and_resumes_a_permanent_one_is_not(
    tmp_path: Path,
) -> None:
    """m000 checkpoints epoch 1 (exit 85), then cannot write epoch 2's checkpoint (exit 75): the
    node is retried and the retry resumes from epoch 1. m001 finds junk in its checkpoint folder
    (exit 2): its node fails at once, never retried. The ensemble has m000."""
    from condorml.job.synth import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data", n_train=40, n_test=10, seed=5, size=(48, 48),
                           make_zips=True)  # fmt: skip
    spec = tmp_path / "spec.toml"
    spec.write_text(tiny_sweep_spec(tmp_path / "data", members=2, retries=1))
    run = tmp_path / "run"
    written = condorml_cli("sweep", str(spec), "--out", str(run))
    assert written.returncode == 0, written.stderr
    wrapper = run / "condorml_train.sh"
    text = wrapper.read_text()
    assert text.count("set -u\n") == 1
    wrapper.write_text(
        text.replace("set -u\n", "set -u\n" + LIMIT_ONCE.format(flag=tmp_path / "limited"))
    )
    (run / "members" / "m001" / "ckpt" / "model.pth").write_text("not a checkpoint")

    done = condorml_cli("run", str(run), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    m000, m001 = run / "members" / "m000", run / "members" / "m001"
    (first, code), (retry, final) = _train_jobs(m000)
    assert (code, final) == (ExitCode.TRANSIENT, ExitCode.DONE)
    first_err = (m000 / f"train.{first}.0.err").read_text()
    assert "checkpoint 1 saved" in first_err and "File too large" in first_err
    assert (
        "resuming from ckpt/model.pth: 1 of 2 epochs done"
        in (m000 / f"train.{retry}.0.err").read_text()
    )
    metrics = (m000 / "ckpt" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in metrics[1:]] == ["1", "2"]
    assert (m000 / "out" / "dog_probs.csv").exists()

    [(only, code)] = _train_jobs(m001)  # one job: not retried
    assert code == ExitCode.PERMANENT
    assert "no valid checkpoint" in (m001 / f"train.{only}.0.err").read_text()
    assert not (m001 / "out").exists()


def test_the_cpu_allocator_running_out_of_memory_is_transient() -> None:
    """torch's CPU allocator raises a RuntimeError, not a MemoryError: exit 75, not 1 (a bug)."""
    from condorml.cli._common import call
    from condorml.errors import is_transient

    err = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes."
    )
    assert is_transient(err)

    def fails() -> None:
        raise err

    with pytest.raises(typer.Exit) as exited:
        call(fails)
    assert exited.value.exit_code == 75
