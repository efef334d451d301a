"""condorml watch: a running member's live progress, from the schedd (a fake condor_q) or the
local backend's job ad files, and the fallback to its checkpoint without them."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from condorml.backends.local.eventlog import EventLog, JobId
from condorml.monitor.live import FAILURE_PAUSE, LiveReader
from condorml.monitor.watch import Watch
from condorml.sweep.rundir import local_job_ad
from tests.helpers import condorml_cli

# what a training job publishes through Chirp (condorml/job/live.py's names), per job
ADS = [
    {"ClusterId": 7, "ProcId": 0, "DAGNodeName": "train_m000", "CondormlEpoch": 3,
     "CondormlEpochs": 10, "CondormlBatch": 45, "CondormlBatches": 100,
     "CondormlValAcc": 0.8125, "CondormlImagesPerSecond": 812.4},
    {"ClusterId": 8, "ProcId": 0, "DAGNodeName": "train_m001", "CondormlEpoch": 1,
     "CondormlEpochs": 10, "CondormlUpdated": "/Expr(time())/"},  # an expression: not a number
]  # fmt: skip
FAKE_CONDOR_Q = """\
#!{python}
import json, pathlib, sys
here = pathlib.Path(__file__).parent
with open(here / "calls.txt", "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
if (here / "fail").exists():
    sys.exit("-- Failed to fetch ads from: <127.0.0.1:9618> : no schedd")
print((here / "ads.json").read_text())
"""


def _run(root: Path) -> Path:
    """A sweep run folder of two members whose training jobs run (clusters 7 and 8); m000 has
    a checkpoint of epoch 1 (val_acc 0.5)."""
    run = root / "run"
    run.mkdir()
    (run / "members.csv").write_text("member,seed\nm000,0\nm001,1\n")
    nodes = [f"JOB {k}_{m} {k}.sub" for m in ("m000", "m001") for k in ("train", "infer")]
    (run / "sweep.dag").write_text("\n".join(nodes) + "\n")
    for cluster, member in ((7, "m000"), (8, "m001")):
        own = run / "members" / member / "train.log"
        events = EventLog([own], JobId(cluster), f"train_{member}", run / "sweep.dag.nodes.log")
        events.submitted()
        events.executing(run, 1, 128)
    ckpt = run / "members" / "m000" / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(
        json.dumps({"epoch": 1, "epochs": 10, "finished": False, "wall_seconds": 1.0})
    )
    (ckpt / "metrics.csv").write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc\n1,1,0.5,1,0.5\n"
    )
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return _run(tmp_path)


@pytest.fixture
def schedd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A condor_q on PATH (alone there) that records its calls and prints :data:`ADS`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "condor_q"
    fake.write_text(FAKE_CONDOR_Q.format(python=sys.executable))
    fake.chmod(0o755)
    ads = [{**ad, "CondormlUpdated": time.time() - 4} if ad["ClusterId"] == 7 else ad for ad in ADS]
    (bin_dir / "ads.json").write_text(json.dumps(ads))
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def _calls(schedd: Path) -> list[list[str]]:
    calls = schedd / "calls.txt"
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_the_schedd_is_asked_once_per_refresh_for_all_running_members(
    run: Path, schedd: Path
) -> None:
    watch = Watch([run], live=LiveReader(interval=0))
    for refresh in (1, 2):
        members = {m.member: m for m in watch.snapshot().members}
        assert len(_calls(schedd)) == refresh  # one condor_q for both members
    command = _calls(schedd)[0]
    assert command[command.index("-constraint") + 1] == "member(ClusterId, {7, 8})"
    assert "-json" in command and "CondormlValAcc" in command[command.index("-attributes") + 1]
    m000, m001 = members["m000"], members["m001"]
    # newer than m000's checkpoint (epoch 1, val_acc 0.5)
    assert (m000.epoch, m000.epochs, m000.val_acc) == (3, 10, 0.8125)
    assert m000.live is not None and m000.live.source == "schedd"
    assert m000.live.images_per_s == pytest.approx(812.4) and 3 < m000.live.age() < 60
    assert (m001.epoch, m001.val_acc) == (1, None) and m001.live.updated is None


def test_the_schedd_is_not_asked_more_often_than_the_interval(run: Path, schedd: Path) -> None:
    now = [0.0]
    watch = Watch([run], live=LiveReader(interval=5, clock=lambda: now[0]))
    for moment in (0.0, 2.0, 4.0, 5.0, 7.0):
        now[0] = moment
        assert watch.snapshot().members[0].epoch == 3  # between queries: the last answer
    assert len(_calls(schedd)) == 2  # at 0 and 5


def test_the_table_shows_live_values_marked_live(run: Path, schedd: Path) -> None:
    once = condorml_cli(
        "watch", "--once", str(run), env={"PATH": os.environ["PATH"], "COLUMNS": "200"}
    )
    assert once.returncode == 0, once.stderr
    assert "img/s" in once.stdout and "live" in once.stdout
    row = next(line for line in once.stdout.splitlines() if "m000" in line)
    assert "3/10 45%" in row and "0.812" in row and "812" in row and "s ago" in row
    from condorml.cli.watch import summary_line

    line = summary_line(Watch([run], live=LiveReader(interval=0)).snapshot())
    assert "m000 epoch 3/10 acc 0.812 (live)" in line


def test_a_failing_or_missing_condor_q_is_silent_and_falls_back_to_the_checkpoint(
    run: Path, schedd: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from condorml.cli.watch import render, summary_line

    (schedd / "fail").touch()
    now = [0.0]
    watch = Watch([run], live=LiveReader(interval=1, clock=lambda: now[0]))
    for moment in (0.0, 10.0):  # a failure: the schedd is left alone for a while
        now[0] = moment
        m000 = watch.snapshot().members[0]
        assert (m000.epoch, m000.val_acc, m000.live) == (1, 0.5, None)
    assert len(_calls(schedd)) == 1
    now[0] = FAILURE_PAUSE + 1
    watch.snapshot()
    assert len(_calls(schedd)) == 2
    (schedd / "condor_q").unlink()  # not installed
    now[0] = 3 * FAILURE_PAUSE
    snapshot = watch.snapshot()
    assert snapshot.members[0].epoch == 1 and "live" not in summary_line(snapshot)
    assert "img/s" not in str(render(snapshot).renderables[0].columns)  # no live columns
    assert capfd.readouterr() == ("", "")


def test_local_ad_files_give_live_values_without_a_schedd(
    run: Path, schedd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ad = local_job_ad(run, "7.0")
    ad.parent.mkdir(parents=True)
    # the local backend may keep ClassAd values as text
    ad.write_text(
        json.dumps({"CondormlEpoch": 2, "CondormlEpochs": "10", "CondormlValAcc": "0.75"})
    )
    watch = Watch([run], live=LiveReader(interval=0))
    m000, m001 = watch.snapshot().members
    assert (m000.epoch, m000.val_acc, m000.live.source) == (2, 0.75, "local")
    assert m001.live.source == "schedd"  # only the job without a local ad is asked of the schedd
    (command,) = _calls(schedd)
    assert command[command.index("-constraint") + 1] == "member(ClusterId, {8})"
    monkeypatch.setenv("PATH", "")  # no condor_q at all: the local ad still counts
    assert Watch([run]).snapshot().members[0].epoch == 2
    old = time.time() - 3600  # a file from an earlier run that used the same job id
    os.utime(ad, (old, old))
    assert Watch([run]).snapshot().members[0].epoch == 1  # the checkpoint's


def test_an_ad_of_another_dag_node_is_not_the_members(run: Path, schedd: Path) -> None:
    """A job id of a local run may be a pool job's too: the node name must match."""
    ads = [{**ad, "DAGNodeName": "train_m999"} for ad in ADS]
    (schedd / "ads.json").write_text(json.dumps(ads))
    m000 = Watch([run], live=LiveReader(interval=0)).snapshot().members[0]
    assert (m000.epoch, m000.live) == (1, None)


def test_finished_members_are_not_asked_about(run: Path, schedd: Path) -> None:
    for cluster, member in ((7, "m000"), (8, "m001")):
        own = run / "members" / member / "train.log"
        EventLog([own], JobId(cluster), f"train_{member}", run / "sweep.dag.nodes.log").terminated(
            0
        )
    snapshot = Watch([run], live=LiveReader(interval=0)).snapshot()
    assert all(m.live is None for m in snapshot.members) and _calls(schedd) == []


def test_at_80_columns_member_ids_and_states_keep_their_room() -> None:
    """The note gives way first: ids and states are neither wrapped nor cut."""
    from rich.console import Console

    from condorml.cli.watch import render
    from condorml.monitor.watch import MemberView, Snapshot
    from condorml.sweep.trials import Trial

    members = [
        MemberView(f"m{k:04d}", None, None, epoch=k, epochs=20, val_acc=0.5, rungs=3,
                   trial=Trial(f"m{k:04d}", state="waiting", rung=2))
        for k in range(3)
    ]  # fmt: skip
    snapshot = Snapshot(jobs=[], nodes=[], members=members, dag_nodes=7)
    console = Console(width=80, record=True, force_terminal=False)
    console.print(render(snapshot))
    text = console.export_text()
    for m in members:
        row = next(line for line in text.splitlines() if m.member in line)
        assert m.state in row, row  # whole, on the member's own line
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_job_that_could_not_publish_says_so_instead_of_showing_nothing(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose Chirp proxy was unreachable (a Docker container on its own network, seen on
    the pool) keeps why in its checkpoint's state.json; the watch shows it for the running member."""
    from condorml.cli.watch import summary_line

    monkeypatch.setenv("PATH", str(tmp_path))  # no condor_q: no live values from a schedd
    state = run / "members" / "m000" / "ckpt" / "state.json"
    reason = "the job could not reach HTCondor's Chirp proxy ([Errno 111] Connection refused)"
    state.write_text(json.dumps({"epoch": 1, "epochs": 10, "finished": False, "live_off": reason}))

    snapshot = Watch([run], live=LiveReader(interval=0)).snapshot()

    assert f"m000 epoch 1/10 acc 0.500 (no live progress: {reason})" in summary_line(snapshot)
    once = condorml_cli("watch", "--once", str(run), env={"PATH": str(tmp_path), "COLUMNS": "250"})
    row = next(line for line in once.stdout.splitlines() if "m000" in line)
    assert " off " in row and "no live progress: the job could not reach" in row


def test_the_trainer_keeps_why_chirp_was_off_in_its_state_file(
    train_config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from condorml.job.chirp import LivePublisher
    from condorml.job.train import train
    from condorml.sweep.rundir import read_state

    class Refused:
        def connect(self) -> None:
            raise ConnectionRefusedError(111, "Connection refused")

    config_file = tmp_path / ".chirp.config"
    config_file.write_text("127.0.0.1 9 cookie\n")
    monkeypatch.setenv("_CONDOR_CHIRP_CONFIG", str(config_file))
    train(train_config, live=LivePublisher(client_factory=Refused, interval=0))

    state = read_state(train_config.checkpoint_dir)
    assert state is not None and "Chirp proxy ([Errno 111] Connection refused)" in state.live_off
