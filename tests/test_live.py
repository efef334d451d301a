"""Live progress: the Chirp publisher (job ad attributes, event-log lines) and TensorBoard files."""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from condorml.job.chirp import LivePublisher, checkpoint_line, classad_literal
from condorml.job.live import LIVE_ATTRIBUTES, attribute
from condorml.job.train import train
from condorml.progress import NullProgress
from tests.helpers import run_until_finished

NAMES = {name for name, _ in LIVE_ATTRIBUTES.values()}
BATCHES = 6  # 86 training images of the synthetic set in batches of 16


class FakeChirp:
    """Records what a Chirp client is asked to do; ``fail`` makes every call raise."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.attrs, self.lines, self.connects = fail, [], [], 0

    def connect(self) -> None:
        self.connects += 1
        if self.fail:
            raise ConnectionRefusedError("the proxy is gone")

    def disconnect(self) -> None:
        pass

    def set_job_attr(self, name: str, value: str) -> None:
        self.attrs.append((name, value))

    def ulog(self, text: str) -> None:
        self.lines.append(text)

    def last(self, key: str) -> str:
        return [value for name, value in self.attrs if name == attribute(key)][-1]


@pytest.fixture
def in_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Chirp configuration as HTCondor gives an I/O-proxy job (the fake client ignores it)."""
    config = tmp_path / "chirp.config"
    config.write_text("127.0.0.1 1 cookie\n")
    monkeypatch.setenv("_CONDOR_CHIRP_CONFIG", str(config))
    return config


def test_values_are_classad_literals() -> None:
    assert classad_literal(3) == "3" and classad_literal(0.123456) == "0.1235"
    assert classad_literal(1234.5678) == "1234.6" and classad_literal(float("nan")) == "undefined"
    assert classad_literal(True) == "true" and classad_literal('a "b"') == '"a \\"b\\""'


def test_updates_within_an_epoch_are_rate_limited(in_job: Path) -> None:
    client, now = FakeChirp(), [0.0]
    live = LivePublisher(lambda: client, interval=5.0, clock=lambda: now[0])
    live.start(epochs=10, batches=100, checkpoints=0, metrics=[])
    live.epoch_start(1, 0)
    for batch in range(1, 101):  # 50 seconds: at most one update per 5
        now[0] += 0.5
        live.batch(batch, 16, 0.5, 0.75)
    live.close()
    batches = [value for name, value in client.attrs if name == attribute("batch")]
    assert 1 <= len(batches) <= 11 + 2  # start and epoch_start send one each
    assert {name for name, _ in client.attrs} <= NAMES
    assert client.last("batch") == "100" and client.last("epochs") == "10"
    assert client.last("images_per_s") == "32.0" and client.last("train_acc") == "0.75"
    # an unchanged value is not sent again: each set_job_attr is a 033 event in the job's log
    assert [name for name, _ in client.attrs].count(attribute("epochs")) == 1
    assert [name for name, _ in client.attrs].count(attribute("train_acc")) == 1


def test_training_publishes_epochs_and_checkpoints(train_config, in_job: Path) -> None:
    client = FakeChirp()
    config = replace(train_config, epochs=2, exit_on_checkpoint=False)
    assert train(config, live=LivePublisher(lambda: client)).status == "finished"
    assert {name for name, _ in client.attrs} <= NAMES
    epochs = [line for line in client.lines if " epoch " in line and "checkpoint" not in line]
    assert [line.split()[:3] for line in epochs] == [
        ["condorml:", "epoch", "1/2"],
        ["condorml:", "epoch", "2/2"],
    ]
    assert "val_loss" in epochs[0] and "val_acc" in epochs[0]
    checkpoints = [line for line in client.lines if "checkpoint" in line]
    assert checkpoints == [checkpoint_line(1, 1, 0), checkpoint_line(2, 2, 0)]
    assert client.lines.index(checkpoints[0]) > client.lines.index(epochs[0])
    assert client.last("epoch") == "2" and client.last("checkpoints") == "2"
    assert client.last("batch") == str(BATCHES) and client.last("batches") == str(BATCHES)
    assert float(client.last("val_acc")) >= 0


def test_a_failing_proxy_warns_once_and_changes_nothing(
    train_config, tmp_path: Path, in_job: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = replace(train_config, epochs=2, exit_on_checkpoint=False)
    plain = replace(base, checkpoint_dir=tmp_path / "plain")
    failing = replace(base, checkpoint_dir=tmp_path / "failing")
    client = FakeChirp(fail=True)
    with caplog.at_level(logging.WARNING, logger="condorml.job.chirp"):
        assert train(failing, live=LivePublisher(lambda: client, interval=0.0)).status == "finished"
    warnings = [r for r in caplog.records if r.name == "condorml.job.chirp"]
    assert len(warnings) == 1 and "the proxy is gone" in warnings[0].getMessage()
    assert client.connects == 1  # then silence
    os.environ.pop("_CONDOR_CHIRP_CONFIG")
    assert train(plain).status == "finished"
    a, b = (
        torch.load(c.checkpoint_dir / "model.pth", weights_only=False) for c in (plain, failing)
    )
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


def test_outside_htcondor_no_client_is_made(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("_CONDOR_CHIRP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no .chirp.config here

    def factory():
        raise AssertionError("a Chirp client was made outside an I/O-proxy job")

    live = LivePublisher(factory, interval=0.0)
    assert not live.enabled
    assert train(replace(train_config, epochs=1), live=live).status == "finished"


# --- TensorBoard ---------------------------------------------------------------------------------


def _steps(config, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(config.checkpoint_dir / "tensorboard"))
    events.Reload()
    return sorted(event.step for event in events.Scalars(tag))


class _Crash(NullProgress):
    """A process killed after ``after`` batches: the writer had flushed what it wrote."""

    def __init__(self, after: int, action=None) -> None:
        self.left, self.action = after, action

    def advance(self, steps: int = 1, status: str = "") -> None:
        self.left -= 1
        if self.left == 0:
            if self.action is not None:
                return self.action()
            raise _Killed


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_tensorboard_curves_continue_across_restarts_without_duplicates(train_config) -> None:
    config = replace(train_config, epochs=4, checkpoint_every=1, tensorboard=True)
    _, runs = run_until_finished(config)
    assert runs == 4
    assert _steps(config, "epoch/val_loss") == [1, 2, 3, 4]
    assert _steps(config, "epoch/train_acc") == [1, 2, 3, 4]
    assert _steps(config, "batch/train_loss") == list(range(1, 4 * BATCHES + 1))


def test_events_written_after_the_checkpoint_by_a_killed_run_are_dropped(train_config) -> None:
    config = replace(train_config, epochs=2, checkpoint_every=2, tensorboard=True)
    # Run 1 checkpoints mid-epoch, after batch 1; run 2 trains on past epoch 1 and is killed
    # before its next checkpoint (at the end of epoch 2).
    assert train(replace(config, checkpoint_minutes=1e-9)).status == "checkpointed"
    with pytest.raises(_Killed):
        train(replace(config, exit_on_checkpoint=False), _Crash(after=BATCHES + 3))
    assert _steps(config, "epoch/val_loss") == [1]  # written after the checkpoint
    result, runs = run_until_finished(config)
    assert result.status == "finished" and runs == 1
    assert _steps(config, "epoch/val_loss") == [1, 2]
    assert _steps(config, "batch/train_loss") == list(range(1, 2 * BATCHES + 1))


def test_an_evicted_run_continues_the_curves(train_config) -> None:
    config = replace(train_config, epochs=2, checkpoint_every=2, tensorboard=True)
    sigterm = _Crash(after=BATCHES + 2, action=lambda: os.kill(os.getpid(), signal.SIGTERM))
    result = train(config, sigterm)
    assert result.status == "interrupted" and result.epochs_done == 1
    result, runs = run_until_finished(config)
    assert result.status == "finished" and runs == 1
    assert _steps(config, "epoch/val_loss") == [1, 2]
    assert _steps(config, "batch/train_loss") == list(range(1, 2 * BATCHES + 1))


def test_tensorboard_missing_is_one_line_naming_the_extra(
    train_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from condorml.errors import CondormlError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    with pytest.raises(CondormlError, match=r"pip install 'condorml\[tensorboard\]'"):
        train(replace(train_config, tensorboard=True))
    assert not (train_config.checkpoint_dir / "model.pth").exists()


def test_tensorboard_is_a_spec_key_and_a_job_flag(tmp_path: Path) -> None:
    from condorml.config import IDENTITY_FIELDS, IF_SET, TrainConfig
    from condorml.htcondor.submit import job_arguments
    from condorml.sweep.spec import load_spec

    spec = tmp_path / "s.toml"
    spec.write_text('[data]\ntrain = "t.zip"\ntest = "x.zip"\n\n[train]\ntensorboard = true\n')
    assert load_spec(spec, check_paths=False).train["tensorboard"] is True
    config = TrainConfig(tmp_path, tmp_path, tensorboard=True)
    assert "--tensorboard" in job_arguments(config, IF_SET)
    assert "--tensorboard" not in job_arguments(replace(config, tensorboard=False), IF_SET)
    assert "tensorboard" not in IDENTITY_FIELDS


@pytest.mark.slow
def test_a_local_sweep_job_publishes_through_the_local_backends_chirp_proxy(tmp_path: Path) -> None:
    """The same code path as on a pool, without one: the generated job asks for the I/O proxy,
    the trainer sets its Condorml* attributes through Chirp, and its log gets the epoch lines."""
    import htcondor2

    from condorml.job.synth import make_synthetic_dataset
    from condorml.sweep.rundir import local_job_ad
    from tests.helpers import condorml_cli, tiny_sweep_spec

    make_synthetic_dataset(
        tmp_path / "data", n_train=40, n_test=6, seed=2, size=(48, 48), make_zips=True
    )
    spec = tmp_path / "spec.toml"
    spec.write_text(tiny_sweep_spec(tmp_path / "data", members=1, retries=0))
    done = condorml_cli("sweep", str(spec), "-o", str(tmp_path / "run"), "--submit", "--backend", "local",
                        timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = tmp_path / "run" / "members" / "m000" / "train.log"
    events = list(htcondor2.JobEventLog(str(log)).events(0))
    jobs = sorted({f"{e.cluster}.{e.proc}" for e in events if int(e.type) == 0})
    ad = json.loads(local_job_ad(tmp_path / "run", jobs[0]).read_text())
    assert ad[attribute("epoch")] == 2 and ad[attribute("epochs")] == 2
    assert 0 <= ad[attribute("val_acc")] <= 1 and ad[attribute("checkpoints")] >= 1
    lines = [str(e.get("Info", "")) for e in events if int(e.type) == 8]
    assert [line.split()[2] for line in lines if line.startswith("condorml: epoch ")] == [
        "1/2",
        "2/2",
    ]
