"""Issue 21: stopping a sweep loses at most the training since each member's last checkpoint.

On a laptop, Ctrl-C of ``condorml run`` (the local backend's ``condor_rm``) leaves each running
member's last checkpoint in ``members/<id>/ckpt`` (its training job stays in the queue with its
spool, ``leave_in_queue``, and the checkpoint comes back), and the rerun says where each member
resumes from. On a pool, ``condorml stop RUN_DIR`` does the same to a DAG that DAGMan runs.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condorml.htcondor.events import EventFollower
from condorml.sweep.rundir import RunDir
from tests.helpers import condorml_cli, tiny_sweep_spec
from tests.pool import Pool, wait_for

MEMBERS = ("m000", "m001")
EPOCHS = 4


def _spec(folder: Path) -> Path:
    from condorml.job.synth import make_synthetic_dataset

    if not (folder / "data").exists():
        make_synthetic_dataset(
            folder / "data", n_train=40, n_test=10, seed=5, size=(48, 48), make_zips=True
        )
    spec = folder / "spec.toml"
    text = tiny_sweep_spec(folder / "data", members=2, retries=0)
    spec.write_text(text.replace("epochs = 2", f"epochs = {EPOCHS}"))
    return spec


def _epoch(ckpt: Path) -> int:
    state = ckpt / "state.json"
    return json.loads(state.read_text())["epoch"] if state.exists() else 0


def _spooled_epochs(run: Path) -> dict[str, int]:
    """The newest epoch each member's running training job has checkpointed (its spool)."""
    found = {}
    for member, folders in RunDir(run).spooled_checkpoints().items():
        found[member] = max((_epoch(folder) for folder in folders), default=0)
    return found


def _last_err(run: Path, member: str) -> str:
    """The ``.err`` of a member's newest training job (``train.CLUSTER.PROC.err``)."""
    errs = (run / "members" / member).glob("train.*.err")
    return max(errs, key=lambda p: int(p.name.split(".")[1])).read_text()


def _weights(run: Path, member: str) -> dict:
    import torch

    path = run / "members" / member / "ckpt" / "model.pth"
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _stop_argv(run: Path) -> list[str]:
    """``condorml stop RUN``, as a user types it."""
    return [sys.executable, "-m", "condorml", "stop", str(run)]


@pytest.mark.slow
def test_ctrl_c_keeps_each_members_checkpoint_and_the_rerun_resumes_from_it(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    reference = tmp_path / "reference"
    done = condorml_cli("sweep", str(spec), "--out", str(reference), "--submit", "--backend",
                        "local", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "run"
    written = condorml_cli("sweep", str(spec), "--out", str(run))
    assert written.returncode == 0, written.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "condorml", "run", str(run), "--max-jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        spooled: dict[str, int] = {}
        while time.monotonic() < deadline and process.poll() is None:
            spooled = _spooled_epochs(run)
            if all(spooled.get(m, 0) >= 2 for m in MEMBERS):
                break
            time.sleep(0.1)
        assert all(spooled.get(m, 0) >= 2 for m in MEMBERS), spooled
        process.send_signal(signal.SIGINT)  # Ctrl-C: condor_rm of the DAG
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode != 0 and "interrupted" in stdout, stdout + stderr
    stopped = {m: _epoch(run / "members" / m / "ckpt") for m in MEMBERS}
    for member in MEMBERS:  # no training before the last checkpoint was thrown away
        assert stopped[member] >= spooled[member] >= 2, (stopped, spooled)
        assert stopped[member] < EPOCHS
        assert f"{member}: stopped at epoch {stopped[member]} of {EPOCHS}" in stdout, stdout
    out = (run / "sweep.dag.dagman.out").read_text()
    assert "condor_rm -forcex" in out and "stays in the queue with its checkpoint" in out
    assert not list((run / ".condorml-local" / "queue").glob("*.json"))  # none lingers
    from condorml.monitor.watch import Watch

    notes = {m.member: m.note for m in Watch([run]).snapshot().members}
    for member in MEMBERS:  # watch says where each stopped member resumes from
        assert notes[member].startswith(f"resumes from epoch {stopped[member]} of {EPOCHS}"), notes

    again = condorml_cli("run", str(run), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    out = (run / "sweep.dag.dagman.out").read_text()
    for member in MEMBERS:
        where = f"{member}: resumes from epoch {stopped[member]} of {EPOCHS} (members/{member}/ckpt/model.pth)"  # fmt: skip
        assert where in again.stdout and f"Member {where}" in out, again.stdout
        assert f"{stopped[member]} of {EPOCHS} epochs done" in _last_err(run, member)
        assert _epoch(run / "members" / member / "ckpt") == EPOCHS
    # the same models, and so the same predictions, as the run that was never stopped
    import torch

    for member in MEMBERS:
        ours, theirs = _weights(run, member), _weights(reference, member)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), member
    assert (run / "dog_probs.csv").read_bytes() == (reference / "dog_probs.csv").read_bytes()
    assert re.search(r"m000: (resumes|starts)", again.stdout)


# --- the local queue: kept jobs, the stop command, what is never overwritten (fast) -----------

COUNTING_JOB = """\
#!/bin/sh
# like a training job: ckpt/ is input, checkpoint and output; a checkpoint (exit 85) a second
n=$(cat ckpt/state.txt 2>/dev/null || echo 0)
echo "restored $n" >> "$1"
n=$((n + 1)); echo "$n" > ckpt/state.txt
sleep 1
[ "$n" -lt 30 ] && exit 85
exit 0
"""


def _counting_dag(folder: Path, keep: bool = True) -> Path:
    from condorml.htcondor.submit import KEEP_REMOVED_CHECKPOINT

    job = folder / "job.sh"
    job.write_text(COUNTING_JOB)
    job.chmod(0o755)
    (folder / "m" / "ckpt").mkdir(parents=True)
    commands = {
        "executable": str(job), "arguments": str(folder / "record.txt"),
        "initialdir": str(folder / "m"), "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT", "log": "job.log", "transfer_input_files": "ckpt",
        "checkpoint_exit_code": "85", "transfer_checkpoint_files": "ckpt",
        "transfer_output_files": "ckpt",
    }  # fmt: skip
    if keep:
        commands["leave_in_queue"] = KEEP_REMOVED_CHECKPOINT
    text = "".join(f"{k} = {v}\n" for k, v in commands.items())
    (folder / "job.sub").write_text(text + "queue\n")
    dag = folder / "job.dag"
    dag.write_text("JOB a job.sub\n")
    return dag


def _record(folder: Path) -> list[str]:
    path = folder / "record.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_condorml_stop_of_a_local_run_brings_the_checkpoint_back_and_the_rerun_resumes(
    tmp_path: Path,
) -> None:
    dag = _counting_dag(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "condorml", "run", str(dag)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_record(tmp_path)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_record(tmp_path)) >= 4, _record(tmp_path)  # 3 checkpoints spooled
        stop = subprocess.run(_stop_argv(tmp_path), capture_output=True, text=True, timeout=120)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped a local run, pid" in stop.stdout and "interrupted" in stdout, stdout + stderr
    kept = int((tmp_path / "m" / "ckpt" / "state.txt").read_text())
    assert kept >= 3  # what the job had spooled, not the nothing condor_rm leaves
    out = (tmp_path / "job.dag.dagman.out").read_text()
    assert "stays in the queue with its checkpoint (leave_in_queue)" in out
    assert "let go (condor_rm -forcex) after its checkpoint came back into m: ckpt" in out
    log = (tmp_path / "m" / "job.log").read_text()
    assert "via condor_rm -forcex" in log  # the 009 a pool writes for it

    before = len(_record(tmp_path))
    again = subprocess.Popen([sys.executable, "-m", "condorml", "run", str(dag)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_record(tmp_path)) <= before and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=60)
        again.kill()
    assert _record(tmp_path)[before] == f"restored {kept}"  # resumed, not from 0


def test_a_kept_checkpoint_never_replaces_a_later_one_and_expires(tmp_path: Path) -> None:
    """What comes back is copied only where it is further (state.json's epochs); a kept job
    whose leave_in_queue has expired (10 days) goes with its spool, nothing copied."""
    from dataclasses import asdict

    from condorml.backends.local import jobqueue
    from condorml.htcondor.submit import KEEP_REMOVED_CHECKPOINT
    from condorml.sweep.rundir import LOCAL_FOLDER, local_spool

    def checkpoint(folder: Path, epoch: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "state.json").write_text(json.dumps({"epoch": epoch}))

    local = tmp_path / LOCAL_FOLDER
    member = tmp_path / "members" / "m000"
    for number, (spooled, there, age_days) in enumerate(((3, 5, 0), (4, 2, 11), (4, 2, 0)), 1):
        checkpoint(local_spool(tmp_path, f"{number}.0") / "ckpt", spooled)
        checkpoint(member / "ckpt", there)
        kept = jobqueue.KeptJob(
            f"{number}.0", "train_m000", "members/m000", [], None, KEEP_REMOVED_CHECKPOINT,
            time.time() - age_days * 86400, 1, spooled - 1, number, 0,
        )  # fmt: skip
        path = local / jobqueue.QUEUE_FOLDER / f"{number}.0.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(kept)))
        returned = jobqueue.bring_back(local)
        epoch = _epoch(member / "ckpt")
        if number == 1:  # epoch 5 there: the spool's epoch 3 is older
            assert epoch == 5 and [r.skipped for r in returned] == [("ckpt",)]
        elif number == 2:  # expired: let go, nothing copied
            assert epoch == 2 and returned == []
        else:
            assert epoch == 4 and [r.copied for r in returned] == [("ckpt",)]
        assert not local_spool(tmp_path, f"{number}.0").exists() and not path.exists()


# --- the documented stop on a real pool ---------------------------------------------------------

POOL_EPOCHS = 5
POOL_SPEC = """\
[data]
train = "data/train.zip"
test = "data/test.zip"
labels = "data/test_labels.csv"

[train]
model = "cnn"
image_size = 48
epochs = {epochs}
checkpoint_every = 1
batch_size = 16
precision = "fp32"

[ensemble]
members = 2

[resources]
python = "{python}"
cpus = 1
memory = "1GB"
disk = "1GB"

[submit]
periodic_remove = "RemoteWallClockTime > 3600"

[inference.resources]
cpus = 1
memory = "1GB"
disk = "1GB"
"""


def _checkpoints(log: Path) -> int:
    """Checkpoints that came back from the newest job of a member's own log while it runs."""
    follower = EventFollower([log])
    follower.poll()
    running = [job for job in follower.jobs.values() if job.state == "running"]
    return max((job.checkpoints for job in running), default=0)


def _dag_exits(run: Path) -> list[int]:
    out = run / "sweep.dag.dagman.out"
    return [int(c) for c in re.findall(r"EXITING WITH STATUS (-?\d+)", out.read_text())]


@pytest.mark.pool
@pytest.mark.slow
def test_condorml_stop_on_the_pool_keeps_each_members_checkpoint_and_the_dag_resumes(
    pool: Pool,
) -> None:
    """README "Stopping a sweep": ``condorml stop RUN_DIR`` (condor_rm of the DAG; the removed
    training jobs stay in the queue with their spool, leave_in_queue; each checkpoint comes
    back into its member folder; condor_rm -forcex), then ``condor_submit_dag sweep.dag``."""
    work = pool.workdir("stop-resume")
    made = condorml_cli("data", "synth", str(work / "data"), "--n-train", "96", "--n-test", "12",
                        "--size", "56x44", "--zip")  # fmt: skip
    assert made.returncode == 0, made.stderr
    spec = work / "spec.toml"
    spec.write_text(POOL_SPEC.format(epochs=POOL_EPOCHS, python=sys.executable))
    run = work / "run"
    written = condorml_cli("sweep", str(spec), "--out", str(run), cwd=work)
    assert written.returncode == 0, written.stderr
    assert "leave_in_queue = " in (run / "train.sub").read_text()
    pool.own(work)
    pool.check("condor_submit_dag sweep.dag", run)
    logs = {m: run / "members" / m / "train.log" for m in MEMBERS}
    for member, log in logs.items():  # both running, 2 checkpoints each in their spools
        wait_for(lambda log=log: log.exists() and _checkpoints(log) >= 2, 240,
                 f"{member}'s second checkpoint", every=1)  # fmt: skip

    stop = " ".join(f"'{word}'" for word in _stop_argv(run))
    stopped = pool.check(stop, work, timeout=240)
    print(stopped)
    assert re.search(r"removed DAGMan job \d+", stopped), stopped
    assert _dag_exits(run) and (run / "sweep.dag.rescue001").exists()
    epochs = {m: _epoch(run / "members" / m / "ckpt") for m in MEMBERS}
    for member in MEMBERS:
        assert 2 <= epochs[member] < POOL_EPOCHS, (epochs, stopped)
        assert f"{member}: stopped at epoch {epochs[member]} of {POOL_EPOCHS}" in stopped, stopped
    assert stopped.count("condor_rm -forcex") >= 2, stopped
    left = pool.check("condor_q -constraint 'JobStatus == 3' -af Iwd", work)
    assert str(run) not in left  # no kept job lingers

    pool.check("condor_submit_dag sweep.dag", run)
    wait_for(lambda: len(_dag_exits(run)) >= 2, 600, "the resubmitted DAG", every=1)
    assert _dag_exits(run)[-1] == 0, (run / "sweep.dag.dagman.out").read_text()[-2000:]
    for member in MEMBERS:
        resumed = _last_err(run, member)
        assert f"resuming from ckpt/model.pth: {epochs[member]} of {POOL_EPOCHS} epochs done" in (
            resumed
        ), resumed[-2000:]
        assert _epoch(run / "members" / member / "ckpt") == POOL_EPOCHS
    assert (run / "dog_probs.csv").exists()


def test_a_fresh_run_of_many_members_says_where_they_start_in_one_line() -> None:
    from condorml.backends.local.resume import ResumePoint, describe_all
    from condorml.sweep.rundir import TrainingState

    fresh = [
        ResumePoint(f"m{i:03d}", f"members/m{i:03d}/ckpt/model.pth", None) for i in range(1000)
    ]
    resumed = ResumePoint("m1000", "members/m1000/ckpt/model.pth", TrainingState(4, 20, False, 9.0))
    lines = describe_all([*fresh, resumed])
    assert lines == [
        "m1000: resumes from epoch 4 of 20 (members/m1000/ckpt/model.pth)",
        "1000 member(s) start from the beginning (no checkpoint yet): "
        "m000, m001, m002, m003, m004, m005, m006, m007, ...",
    ]
    assert describe_all([resumed], stopped=True) == [
        "m1000: stopped at epoch 4 of 20 (members/m1000/ckpt/model.pth)"
    ]


def test_the_dagman_jobs_of_a_folder_are_asked_with_its_path_quoted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """condorml stop removes what this constraint matches: a quote in a folder's name must not
    turn it into one that matches every DAG in the queue."""
    from condorml.backends import condor

    asked: list[list[str]] = []
    monkeypatch.setattr(condor, "_tool_lines", lambda argv, folder: asked.append(argv) or [])
    assert condor.dagman_jobs(Path('/runs/a" || true || "b')) == []
    (constraint,) = [arg for arg in asked[0] if arg.startswith("JobUniverse")]
    assert constraint == 'JobUniverse == 7 && Iwd == "/runs/a\\" || true || \\"b"'
