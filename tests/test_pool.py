"""Pool tests: condorml's files on a real HTCondor 25.0 pool, driven as a user drives them.

Everything HTCondor does here is evidence about HTCondor; the local backend is checked against
it. Each test runs the real CLI as the pool's submitting user from a folder outside /tmp (see
``tests/pool.py``). Without a pool they skip with the reason; CI starts one
(``.ci/run``) and sets ``CONDORML_REQUIRE_POOL=1``, so there they fail instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from condorml.htcondor.events import EventFollower
from condorml.monitor.watch import Watch
from condorml.sweep.accounting import member_accounting, run_logs
from condorml.sweep.rundir import LOCAL_FOLDER
from tests.helpers import condorml_cli
from tests.pool import CONDORML, Pool, copy_tree, wait_for

if TYPE_CHECKING:
    import pandas as pd

pytestmark = [pytest.mark.pool, pytest.mark.slow]

MEMBERS = ["m000", "m001", "m002", "m003"]
EVICTED = "m000"  # the member whose first training job is vacated after its first checkpoint
DAG_TIMEOUT = 600

SPEC = """\
[data]
train = "data/train.zip"
test = "data/test.zip"
labels = "data/test_labels.csv"

[train]
model = "cnn"
image_size = 48
epochs = 3
checkpoint_every = 1
batch_size = 16
precision = "fp32"

[grid]
lr = [0.001, 0.0003]

[ensemble]
members = 2

[resources]
python = "{python}"
cpus = 1
memory = "1GB"
disk = "1GB"

[submit]
"+CondormlTest" = "pool"
periodic_remove = "RemoteWallClockTime > 3600"

[inference]
with_stats = true

[inference.resources]
cpus = 1
memory = "1GB"
disk = "1GB"
"""


def _write_spec(folder: Path, spec: str = SPEC) -> Path:
    path = folder / "spec.toml"
    path.write_text(spec.format(python=os.path.abspath(sys.executable)))
    return path


def _make_data(folder: Path) -> None:
    made = condorml_cli("data", "synth", str(folder / "data"), "--n-train", "96", "--n-test", "12",
                        "--size", "56x44", "--zip")  # fmt: skip
    assert made.returncode == 0, made.stderr


def _job_cluster(log: Path, attempt: int = 0) -> int | None:
    """The cluster of a node's ``attempt``-th job, from the job's own log."""
    follower = EventFollower([log])
    follower.poll()
    clusters = sorted({key.cluster for key in follower.jobs})
    return clusters[attempt] if len(clusters) > attempt else None


def _checkpointed(log: Path, cluster: int, count: int = 1) -> bool:
    """Whether the job has had ``count`` checkpoints come back and is still running."""
    follower = EventFollower([log])
    follower.poll()
    job = follower.jobs.get((cluster, 0))
    return job is not None and job.state == "running" and job.checkpoints >= count


def _dag_exit(run: Path, starts: int = 1) -> int | None:
    """DAGMan's exit status once its ``starts``-th run of this DAG has ended, else None."""
    out = run / "sweep.dag.dagman.out"
    text = out.read_text() if out.exists() else ""
    codes = re.findall(r"EXITING WITH STATUS (-?\d+)", text)
    started = text.count("STARTING UP")
    return int(codes[-1]) if started >= starts and len(codes) >= starts else None


def _wait_dag(run: Path, starts: int = 1) -> int:
    """Wait for DAGMan's ``starts``-th run of the DAG in ``run`` to end; its exit status."""
    wait_for(lambda: _dag_exit(run, starts) is not None, DAG_TIMEOUT, f"DAGMan in {run}", every=1)
    return _dag_exit(run, starts)  # type: ignore[return-value]


def _submit_count(nodes_log: Path, node: str) -> int:
    return nodes_log.read_text().count(f"DAG Node: {node}\n")


# --- one sweep on the pool and on the local backend ---------------------------------------------


@dataclass
class PoolSweep:
    work: Path
    local: Path  # the run folder of the local backend
    run: Path  # the run folder on the pool
    dag_cluster: int
    watch: subprocess.CompletedProcess  # condorml watch --exit all,done
    watch_q: str  # what condor_watch_q printed under a pseudo-terminal
    watch_q_code: int


@pytest.fixture(scope="module")
def pool_sweep(pool: Pool) -> PoolSweep:
    """The same spec run on the local backend, then on the pool (one member evicted there)."""
    work = pool.workdir("sweep")
    _make_data(work)
    spec = _write_spec(work)
    local = condorml_cli("sweep", str(spec), "--out", str(work / "local-run"), "--submit",
                         "--backend", "local", cwd=work, timeout=DAG_TIMEOUT)  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]

    pool.own(work)
    run = work / "pool-run"
    submitted = pool.check(
        f"{CONDORML} sweep spec.toml --out pool-run --submit --backend condor", work
    )
    dag = pool.submitted_cluster(submitted)
    watch_q = pool.popen(
        f"script -qec 'condor_watch_q -clusters {dag} -exit all,done' /dev/null", run
    )
    watch = subprocess.Popen(
        [CONDORML, "watch", str(run), "--exit", "all,done", "--interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        train_log = run / "members" / EVICTED / "train.log"
        cluster = wait_for(lambda: _job_cluster(train_log), 180, f"{EVICTED}'s training job")
        wait_for(lambda: _checkpointed(train_log, cluster), 180, f"{EVICTED}'s first checkpoint")
        pool.check(f"condor_vacate_job {cluster}", run)
        out, err = watch.communicate(timeout=DAG_TIMEOUT)
        q_out, _ = watch_q.communicate(timeout=120)
    finally:
        for process in (watch, watch_q):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # both started in a session of their own
    return PoolSweep(work, work / "local-run", run, dag,
                     subprocess.CompletedProcess(watch.args, watch.returncode, out, err),
                     q_out, watch_q.returncode)  # fmt: skip


def test_a_sweep_on_the_pool_gives_the_local_backends_predictions_byte_for_byte(
    pool_sweep: PoolSweep,
) -> None:
    run, local = pool_sweep.run, pool_sweep.local
    assert _dag_exit(run) == 0, (run / "sweep.dag.dagman.out").read_text()[-2000:]
    assert (run / "dog_probs.csv").read_bytes() == (local / "dog_probs.csv").read_bytes()
    for member in MEMBERS:
        ours = run / "members" / member / "out" / "dog_probs.csv"
        assert (
            ours.read_bytes() == (local / "members" / member / "out" / "dog_probs.csv").read_bytes()
        )
    # the collect step ran on the access point with the interpreter that wrote the files
    assert "4 member(s) joined the ensemble" in (run / "collect.out").read_text()


def test_watch_follows_the_pool_sweep_with_its_checkpoints_and_eviction(
    pool_sweep: PoolSweep,
) -> None:
    import pandas as pd

    assert pool_sweep.watch.returncode == 0, pool_sweep.watch.stdout + pool_sweep.watch.stderr
    once = condorml_cli("watch", "--once", str(pool_sweep.run))
    assert once.returncode == 0, once.stderr
    assert "DAG exited with status 0" in " ".join(once.stdout.split())
    # what that table shows: 3 epochs with a checkpoint (exit 85) after epochs 1 and 2, and one
    # eviction after the first checkpoint, so 2 runs for that member
    members = {m.member: m for m in Watch([pool_sweep.run]).snapshot().members}
    assert sorted(members) == MEMBERS
    for member, view in members.items():
        counts = tuple(view.train.total(c) for c in ("runs", "checkpoints", "evictions"))
        assert counts == ((2, 2, 1) if member == EVICTED else (1, 2, 0)), member
        assert (view.epoch, view.epochs, view.state) == (3, 3, "infer: done")
    # the collect step's leaderboard counts the same (one definition of a run everywhere)
    board = pd.read_csv(pool_sweep.run / "leaderboard.csv", dtype={"member": str}).set_index(
        "member"
    )
    assert board.at[EVICTED, "runs"] == 2 and board.at[EVICTED, "evictions"] == 1
    assert set(board["checkpoints"]) == {2} and set(board.drop(index=EVICTED)["runs"]) == {1}


def test_report_time_accounting_agrees_with_condor_history(
    pool: Pool, pool_sweep: PoolSweep
) -> None:
    import pandas as pd

    report = condorml_cli(
        "report", str(pool_sweep.run), "--output", str(pool_sweep.work / "report")
    )
    assert report.returncode == 0, report.stderr
    ours = pd.read_csv(pool_sweep.work / "report" / "htcondor.csv", dtype={"member": str})
    ours = ours.set_index("member")
    rows = pool.history(f"DAGManJobId == {pool_sweep.dag_cluster}",
                        ["DAGNodeName", "CommittedTime", "RemoteWallClockTime", "NumJobStarts"])  # fmt: skip
    history = {row[0]: [float(v) for v in row[1:]] for row in rows}
    for member in MEMBERS:
        committed, wall, starts = history[f"train_{member}"]
        mine = ours.loc[member]
        assert _committed_agrees(mine["committed_seconds"], mine["setup_seconds"], committed, 1), (
            member, mine.to_dict(), history)  # fmt: skip
        assert abs(mine["execution_seconds"] - wall) <= 3, (member, mine.to_dict(), history)
        assert mine["runs"] == starts
    evicted = ours.loc[EVICTED]
    assert evicted["lost_seconds"] < 5  # evicted just after a checkpoint: little work lost


def test_condor_watch_q_follows_the_sweep_to_the_end(pool_sweep: PoolSweep) -> None:
    text = pool_sweep.watch_q.replace("\r", "")
    assert pool_sweep.watch_q_code == 0, text[-2000:]
    assert 'because of condition "all done"' in text
    assert re.search(r"Total: \d+ jobs; \d+ completed", text)


def test_pass_through_submit_commands_reach_the_job_ads(pool: Pool, pool_sweep: PoolSweep) -> None:
    rows = pool.history(f"DAGManJobId == {pool_sweep.dag_cluster}",
                        ["DAGNodeName", "CondormlTest", "PeriodicRemove"], raw=True)  # fmt: skip
    jobs = {row[0].strip('"'): [v.strip('"') for v in row[1:]] for row in rows}  # -af:r quotes
    assert jobs["train_m001"][0] == "pool" and jobs["infer_m001"][0] == "pool"
    assert "RemoteWallClockTime > 3600" in " ".join(jobs["train_m001"][1:])


# --- the local backend against the pool ---------------------------------------------------------


def _shapes(log: Path) -> dict[str, list[str]]:
    """Per DAG node, its events' types in order (040 with its direction), 006 left out, and
    the live progress a job sends through Chirp (033 per attribute update: how many depends on
    timing) left out too; its 008 lines (one per epoch and checkpoint) stay.

    A pool writes the 001 of a start and the end of its input transfer in the same second, in
    either order; they are put in one order here.
    """
    import htcondor2

    names = {int(t): t.name for t in htcondor2.FileTransferEventType}
    shapes: dict[str, list[str]] = {}
    nodes: dict[int, str] = {}
    for event in htcondor2.JobEventLog(str(log)).events(0):
        code = int(event.type)
        if code == 0:
            text = str(event.get("LogNotes", ""))
            nodes[event.cluster] = (
                text.split(":", 1)[1].strip() if ":" in text else str(event.cluster)
            )
        if code in (6, 33):
            continue
        name = nodes.get(event.cluster, str(event.cluster))
        label = f"040 {names[event['Type']]}" if code == 40 else f"{code:03d}"
        shape = shapes.setdefault(name, [])
        if label == "040 IN_FINISHED" and shape[-1:] == ["001"]:
            shape.insert(len(shape) - 1, label)
        else:
            shape.append(label)
    return shapes


def test_the_local_backend_writes_the_events_files_and_status_a_pool_writes(
    pool_sweep: PoolSweep,
) -> None:
    run, local = pool_sweep.run, pool_sweep.local
    logs = ["sweep.dag.nodes.log", "collect.log"]
    logs += [f"members/{m}/{kind}.log" for m in MEMBERS for kind in ("train", "infer")]
    for name in logs:
        pool_shapes, local_shapes = _shapes(run / name), _shapes(local / name)
        if name.startswith(f"members/{EVICTED}/train") or name == "sweep.dag.nodes.log":
            # the pool evicted one job: compare that node apart, the rest as they are
            evicted = pool_shapes.pop(f"train_{EVICTED}")
            local_shapes.pop(f"train_{EVICTED}")
            assert evicted.count("004") == 1 and evicted.count("001") == 2
        assert pool_shapes == local_shapes, name
    # DAGMan's nodes log has no file transfers; the jobs' own logs have them
    assert not any(
        "040" in e for shape in _shapes(run / "sweep.dag.nodes.log").values() for e in shape
    )
    # the same files came back into every member's folder, and the same exit status
    for member in MEMBERS:
        for sub in ("ckpt", "out"):
            files = sorted(p.name for p in (run / "members" / member / sub).iterdir())
            assert files == sorted(p.name for p in (local / "members" / member / sub).iterdir())
    assert _dag_exit(run) == _dag_exit(local) == 0


# --- a training job submitted by hand ------------------------------------------------------------


def _model_weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _scratch_dirs(log: Path) -> list[str]:
    import htcondor2

    return [str(e["ExecuteProps"]["CondorScratchDir"])
            for e in htcondor2.JobEventLog(str(log)).events(0) if int(e.type) == 1]  # fmt: skip


def _submit_train(pool: Pool, work: Path, options: list[str]) -> int:
    """``condorml submit train --submit`` of ``work/data/train.zip`` as the pool's user; the cluster."""
    submitted = pool.check(
        f"{CONDORML} submit train --data-dir data/train.zip -o job/train.sub {' '.join(options)} "
        f"--cpus 1 --memory 1GB --disk 1GB --python {sys.executable} --submit", work
    )  # fmt: skip
    assert "submitted as cluster" in submitted  # through the pool's own condor_submit
    return pool.submitted_cluster(submitted)


def test_a_training_job_checkpoints_is_evicted_and_resumes_to_the_same_weights(
    pool: Pool, tmp_path: Path
) -> None:
    work = pool.workdir("train")
    _make_data(work)
    (work / "job").mkdir()
    pool.own(work)
    options = ["--epochs", "3", "--checkpoint-every", "1", "--image-size", "48", "--batch-size",
               "16", "--precision", "fp32"]  # fmt: skip
    cluster = _submit_train(pool, work, options)
    log = work / "job" / "train.log"
    wait_for(lambda: _checkpointed(log, cluster), 180, "the first checkpoint")
    pool.check(f"condor_vacate_job {cluster}", work)

    def finished():
        follower = EventFollower([log])
        follower.poll()
        job = follower.jobs.get((cluster, 0))
        return job if job is not None and job.state in ("done", "failed") else None

    job = wait_for(finished, 300, "the job to finish")
    assert (job.state, job.runs, job.checkpoints, job.evictions) == ("done", 2, 2, 1)
    first, second = _scratch_dirs(log)
    assert first != second  # the eviction moved it to a new sandbox, with the checkpoint
    assert (work / "job" / "ckpt" / "model.pth").exists()
    (exit_code,) = {row[1] for row in pool.history(f"ClusterId == {cluster}",
                                                   ["ClusterId", "ExitCode"])}  # fmt: skip
    assert exit_code == "0"

    reference = condorml_cli(
        "train", "--data-dir", str(work / "data" / "train.zip"), "--checkpoint-dir",
        str(tmp_path / "ckpt"), "--no-exit-on-checkpoint", *options,
        env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr
    ours, theirs = (
        _model_weights(work / "job" / "ckpt" / "model.pth"),
        _model_weights(tmp_path / "ckpt" / "model.pth"),
    )
    assert ours.keys() == theirs.keys()
    import torch

    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name


# --- failures: permanent, transient, condor_rm and the rescue DAG ------------------------------


FAILURE_SPEC = (
    SPEC.replace("lr = [0.001, 0.0003]", "epochs = [2, 6, 3]")
    .replace("epochs = 3\n", "")
    .replace("members = 2", "members = 1\nmin_members = 2")
    + "\n[throttle]\nretries = 1\n"
)


def _kill_trainer(member: str) -> bool:
    """SIGKILL the training process of ``member`` (as an out-of-memory kill would)."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in command and b"--member" in command and member.encode() in command:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                continue
            return True
    return False


def test_failures_retries_removal_and_the_rescue_dag(pool: Pool) -> None:
    """m000 trains 2 epochs, m001 6 (killed once: transient), m002 3 on a checkpoint of
    another configuration (permanent). The DAG is removed mid-training and submitted again."""
    work = pool.workdir("failures")
    _make_data(work)
    spec = _write_spec(work, FAILURE_SPEC)
    run = work / "run"
    written = condorml_cli("sweep", str(spec), "--out", str(run), cwd=work)
    assert written.returncode == 0, written.stderr
    poison = condorml_cli(
        "train", "--data-dir", str(work / "data" / "train.zip"), "--checkpoint-dir",
        str(run / "members" / "m002" / "ckpt"), "--epochs", "1", "--image-size", "48",
        "--batch-size", "16", "--precision", "fp32", "--seed", "7", "--no-exit-on-checkpoint",
    )  # fmt: skip
    assert poison.returncode == 0, poison.stderr
    pool.own(work)
    dag = pool.submitted_cluster(pool.check("condor_submit_dag sweep.dag", run))
    logs = {m: run / "members" / m / "train.log" for m in ("m000", "m001", "m002")}

    # transient: m001 killed after its first checkpoint came back; RETRY resumes from it
    first = wait_for(lambda: _job_cluster(logs["m001"]), 180, "m001's training job")
    wait_for(lambda: _checkpointed(logs["m001"], first), 180, "m001's first checkpoint")
    assert wait_for(lambda: _kill_trainer("m001"), 30, "m001's trainer")
    second = wait_for(lambda: _job_cluster(logs["m001"], 1), 120, "m001's retry")
    # condor_rm of the DAG once m000's training finished and m001's retry checkpointed (spool)
    trained = re.compile(r"Node train_m000 job proc \(\d+\.0\.0\) completed successfully")
    wait_for(lambda: trained.search((run / "sweep.dag.dagman.out").read_text()), 240,
             "m000's training")  # fmt: skip
    wait_for(lambda: _checkpointed(logs["m001"], second), 180, "m001's retry to checkpoint")
    pool.check(f"condor_rm {dag}", run)
    assert _wait_dag(run) == 1 and (run / "sweep.dag.rescue001").exists()
    # the retry had checkpointed: removed, it stays in the queue with its spool (leave_in_queue)
    # for condorml stop to bring back; a plain condor_rm leaves it there, so this test lets it go
    kept = pool.check(f"condor_q -constraint 'DAGManJobId == {dag} && JobStatus == 3' -af ClusterId",
                      run).split()  # fmt: skip
    assert kept == [str(second)], kept
    pool.check(f"condor_rm -forcex {second}", run)

    nodes_log = (run / "sweep.dag.nodes.log").read_text()
    assert "DONE train_m000" in (run / "sweep.dag.rescue001").read_text()
    assert _submit_count(run / "sweep.dag.nodes.log", "train_m002") == 1  # permanent: no retry
    assert "written by another configuration" in "".join(
        p.read_text() for p in (run / "members" / "m002").glob("train.*.err"))  # fmt: skip
    assert (
        "(signal 9)" in nodes_log and _submit_count(run / "sweep.dag.nodes.log", "train_m001") == 2
    )
    retry_err = run / "members" / "m001" / f"train.{second}.0.err"
    assert not retry_err.exists()  # removed: its files did not come back
    # the FINAL collect node ran after the removal; too few members: the DAG failed. m000's
    # inference may have finished before the removal (when m001's retry was slow to checkpoint)
    rescue = (run / "sweep.dag.rescue001").read_text()
    predicted = len(re.findall(r"^DONE infer_m\d+$", rescue, re.M))
    assert predicted <= 1, rescue
    assert f"only {predicted} member(s) produced predictions" in (run / "collect.err").read_text()
    m001 = next(m for m in Watch([run]).snapshot().members if m.member == "m001")
    assert m001.train.total("evictions") == 0  # condor_rm logs 004 then 009: not an eviction

    # submitted again: the rescue DAG runs no node that finished
    pool.check("condor_submit_dag sweep.dag", run)
    assert _wait_dag(run, starts=2) == 0, (run / "sweep.dag.dagman.out").read_text()[-2000:]
    assert _submit_count(run / "sweep.dag.nodes.log", "train_m000") == 0
    third = _job_cluster(logs["m001"], 2)
    # it resumed from the last checkpoint that came back (epoch 1, from the killed job)
    err = (run / "members" / "m001" / f"train.{third}.0.err").read_text()
    assert "resuming from ckpt/model.pth: 1 of 6 epochs done" in err
    import pandas as pd

    board = pd.read_csv(run / "leaderboard.csv", dtype={"member": str}).set_index("member")
    assert board.at["m000", "status"] == "ok" and board.at["m001", "status"] == "ok"
    assert board.at["m002", "status"].startswith("failed")
    assert _submit_count(run / "sweep.dag.nodes.log", "train_m002") == 1


# --- from a laptop to a pool, and back ----------------------------------------------------------

COUNTS = ("runs", "checkpoints", "evictions")
TIMES = ("committed_seconds", "execution_seconds")
_NODE_COUNTS = re.compile(
    r"Node train_(m\d+) job proc \((\d+)\.0\.0\) [^;]*; (\d+) runs?, (\d+) checkpoints?, "
    r"(\d+) evictions?"
)


def _pool_last_cluster(pool: Pool) -> int:
    """The highest cluster id the pool's schedd has given so far (queue or history)."""
    ids = pool.check("condor_q -allusers -af ClusterId; condor_history -limit 1 -af ClusterId",
                     Path("/"))  # fmt: skip
    return max((int(word) for word in ids.split()), default=0)


def _number_local_clusters_from(run: Path, first: int) -> None:
    """Make the local backend number this run folder's clusters from ``first`` on (it counts
    from 1 per run folder, a fresh pool from 1 too): the ids of both schedds then overlap on
    this long-lived test pool as they do on a laptop and a fresh pool."""
    counter = run / LOCAL_FOLDER / "cluster"
    counter.parent.mkdir(parents=True, exist_ok=True)
    counter.write_text(f"{first - 1}\n")


def _own_logs(run: Path) -> list[Path]:
    """The jobs' own logs of a run folder (no nodes log: DAGMan empties it as it starts)."""
    return [log for log in run_logs(run, MEMBERS) if not log.name.endswith(".nodes.log")]


def _log_sizes(run: Path) -> dict[Path, int]:
    """The size of every job's own log, at the moment of the move."""
    return {log.relative_to(run): log.stat().st_size for log in _own_logs(run)}


def _accounting_of_each_part(
    run: Path, sizes: dict[Path, int], work: Path
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The accounting of the part before the move and of the part after it, each read alone
    (the bytes of every job's own log up to its size at the move, and the rest): one schedd's
    jobs each, so no id is shared; what happened, to hold the moved run's accounting against."""
    import pandas as pd

    parts = []
    for name, before in (("before", True), ("after", False)):
        folder = work / "parts" / name
        (folder / "members").mkdir(parents=True)
        shutil.copy(run / "members.csv", folder / "members.csv")
        for log in _own_logs(run):
            rel = log.relative_to(run)
            data = log.read_bytes()
            size = sizes.get(rel, 0)
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data[:size] if before else data[size:])
        table, _ = member_accounting(folder, MEMBERS)
        assert table is not None, name
        parts.append(table.set_index("member"))
    before, after = parts
    return before, after, pd.concat(parts).groupby(level=0)[list(COUNTS + TIMES)].sum()


def _clusters(logs: list[Path]) -> set[int]:
    follower = EventFollower(logs)
    follower.poll()
    return {key.cluster for key in follower.jobs}


def _check_moved_run(run: Path, expected: pd.DataFrame) -> None:
    """watch, the report's gathering, the accounting and the collect step's leaderboard count
    every member's runs, checkpoints, evictions and time as each part did."""
    import pandas as pd

    from condorml.monitor.gather import gather

    table, _ = member_accounting(run, MEMBERS)
    assert table is not None
    table = table.set_index("member")
    report = gather(run, use_defaults=False)
    assert report.condor is not None
    condor, board = report.condor.set_index("member"), report.members.set_index("member")
    collected = pd.read_csv(run / "leaderboard.csv", dtype={"member": str}).set_index("member")
    members = {m.member: m for m in Watch([run]).snapshot().members}
    for member in MEMBERS:
        want = expected.loc[member]
        seen = members[member]
        assert seen.train is not None and seen.state == "infer: done", (member, seen.state)
        for column in COUNTS:
            found = (seen.train.total(column), table.at[member, column], condor.at[member, column],
                     board.at[member, column], collected.at[member, column])  # fmt: skip
            assert found == (want[column],) * 5, (member, column, found, expected)
        for column in TIMES:
            found = (table.at[member, column], condor.at[member, column])
            assert found == pytest.approx((want[column],) * 2), (member, column, found)


def _committed_agrees(committed: float, setup: float, history: float, jobs: int) -> bool:
    """Whether condorml's committed time agrees with HTCondor's ``CommittedTime`` (3 s a job):
    HTCondor's shadow also commits the set-up of a run that ends without a checkpoint of its own
    (from ``JobCurrentStartDate``, before input transfer), so its figure lies between condorml's
    committed time and that plus the set-up (seen on the pool: 16 s of a run whose set-up took 5 s,
    condorml's 11 s)."""
    slack = 3 * jobs
    return committed - slack <= history <= committed + setup + slack


def _check_pool_part(pool: Pool, dag: int, part: pd.DataFrame) -> None:
    """The pool's part of the run against HTCondor's own accounting (``condor_history``): its
    executions per member, and for training jobs that ended well their committed (with set-up)
    and total time (within 3 s per job)."""
    rows = pool.history(f"DAGManJobId == {dag}", ["DAGNodeName", "NumJobStarts", "ExitCode",
                        "CommittedTime", "RemoteWallClockTime", "JobStatus"])  # fmt: skip
    for member in MEMBERS:
        jobs = [row for row in rows if row[0] == f"train_{member}"]
        assert part.at[member, "runs"] == sum(int(row[1]) for row in jobs), (member, jobs)
        if jobs and all(row[5] == "4" and row[2] == "0" for row in jobs):  # all completed
            mine = part.loc[member]
            committed = sum(float(row[3]) for row in jobs)
            wall = sum(float(row[4]) for row in jobs)
            assert _committed_agrees(mine["committed_seconds"], mine["setup_seconds"], committed,
                                     len(jobs)), (member, jobs, mine.to_dict())  # fmt: skip
            assert abs(mine["execution_seconds"] - wall) <= 3 * len(jobs), (member, jobs)


def test_a_sweep_interrupted_on_the_local_backend_continues_on_the_pool(
    pool: Pool, pool_sweep: PoolSweep
) -> None:
    work = pool.workdir("moved")
    copy_tree(pool_sweep.work / "data", work / "data")
    spec = _write_spec(work)
    run = work / "run"
    written = condorml_cli("sweep", str(spec), "--out", str(run), cwd=work)
    assert written.returncode == 0, written.stderr
    # the local backend's ids: those the pool is about to give (maybe shifted by other users)
    _number_local_clusters_from(run, _pool_last_cluster(pool) + 2)
    local = subprocess.Popen([CONDORML, "run", str(run), "--max-jobs", "2"], cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        out = run / "sweep.dag.dagman.out"
        wait_for(lambda: out.exists() and "Node train_m000 completed successfully" in out.read_text(),
                 300, "the first member's training on the local backend")  # fmt: skip
        local.send_signal(signal.SIGINT)  # Ctrl-C
        local.communicate(timeout=300)
    finally:
        if local.poll() is None:
            local.kill()
    rescue = (run / "sweep.dag.rescue001").read_text()
    done = re.findall(r"^DONE (\S+)", rescue, re.M)
    assert "train_m000" in done
    sizes = _log_sizes(run)
    # what the local backend itself counted for each job it ran (its dagman.out)
    local_counts = {m: [0, 0, 0] for m in MEMBERS}
    for member, _, *counts in _NODE_COUNTS.findall(out.read_text()):
        local_counts[member] = [
            a + int(b) for a, b in zip(local_counts[member], counts, strict=True)
        ]

    pool.own(work)  # the folder moves to the user's account on the access point
    dag = pool.submitted_cluster(pool.check("condor_submit_dag sweep.dag", run))
    assert _wait_dag(run, starts=2) == 0, out.read_text()[-2000:]
    assert "USING RESCUE DAG sweep.dag.rescue001" in out.read_text()
    for node in done:  # no node that finished here ran again there
        assert _submit_count(run / "sweep.dag.nodes.log", node) == 0, node
    # DAGMan emptied the nodes log as it started: the local jobs are in their own logs only
    assert "condorml-local" not in (run / "sweep.dag.nodes.log").read_text()
    assert "MultiLogFiles: truncating log file" in out.read_text()
    # the same ensemble as the run that never moved
    assert (run / "dog_probs.csv").read_bytes() == (pool_sweep.local / "dog_probs.csv").read_bytes()

    before, after, expected = _accounting_of_each_part(run, sizes, work)
    for member in MEMBERS:
        assert [before.at[member, c] for c in COUNTS] == local_counts[member], member
    _check_pool_part(pool, dag, after)
    _check_moved_run(run, expected)
    before_ids, after_ids = (_clusters(_own_logs(work / "parts" / p)) for p in ("before", "after"))
    shared = before_ids & after_ids
    print(f"cluster ids both schedds gave in this run folder: {sorted(shared)}")


def test_a_sweep_removed_on_the_pool_continues_on_the_local_backend(
    pool: Pool, pool_sweep: PoolSweep
) -> None:
    """The other way round; the local backend numbers its clusters from the pool's first, so
    every local job's id is one a pool job of this run folder had."""
    work = pool.workdir("moved-back")
    copy_tree(pool_sweep.work / "data", work / "data")
    spec = _write_spec(work)
    run = work / "run"
    written = condorml_cli("sweep", str(spec), "--out", str(run), cwd=work)
    assert written.returncode == 0, written.stderr
    pool.own(work)
    dag = pool.submitted_cluster(pool.check("condor_submit_dag sweep.dag", run))
    out = run / "sweep.dag.dagman.out"
    trained = re.compile(r"Node train_m000 job proc \(\d+\.0\.0\) completed successfully")
    wait_for(lambda: out.exists() and trained.search(out.read_text()), 300, "m000's training")
    pool.check(f"condor_rm {dag}", run)
    # Until DAGMan has left the queue, not until it says "EXITING": HTCondor 25.0.13's DAGMan
    # can die of "Assertion ERROR on (! _finalNodeRun)" when another node's job ends in the
    # second of the removal (seen once here, after it had written the rescue DAG)
    wait_for(lambda: not pool.check(f"condor_q {dag} -af ProcId", run).strip(), DAG_TIMEOUT,
             "DAGMan to leave the queue", every=1)  # fmt: skip
    assert "DONE train_m000" in (run / "sweep.dag.rescue001").read_text()
    # a plain condor_rm: what leave_in_queue kept goes (condorml stop would have brought it back)
    pool.run(f"condor_rm -forcex -constraint 'DAGManJobId == {dag} && JobStatus == 3'", run)
    sizes = _log_sizes(run)
    pool_clusters = _clusters([run / "sweep.dag.nodes.log"])
    _number_local_clusters_from(run, min(pool_clusters))

    local = condorml_cli("run", str(run), timeout=DAG_TIMEOUT)
    pool.own(work)
    assert local.returncode == 0, local.stderr[-3000:]
    assert _submit_count(run / "sweep.dag.nodes.log", "train_m000") == 1  # not again here
    assert (run / "dog_probs.csv").read_bytes() == (pool_sweep.local / "dog_probs.csv").read_bytes()

    before, _, expected = _accounting_of_each_part(run, sizes, work)
    local_clusters = _clusters(_own_logs(work / "parts" / "after"))
    assert local_clusters & pool_clusters, (local_clusters, pool_clusters)  # ids given twice
    _check_pool_part(pool, dag, before)
    _check_moved_run(run, expected)


# --- live progress through Chirp (issue 15) -----------------------------------------------------


def test_a_training_job_publishes_growing_epochs_to_its_ad_before_a_checkpoint_returns(
    pool: Pool,
) -> None:
    """want_io_proxy: the trainer sets Condorml* attributes in its own job ad through the
    starter's Chirp proxy, so condor_q shows the epoch grow while no checkpoint has come back,
    and its event log gets one line per epoch (Generic events, 008)."""
    import htcondor2

    from condorml.job.live import attribute

    work = pool.workdir("live")
    made = condorml_cli("data", "synth", str(work / "data"), "--n-train", "400", "--n-test", "4",
                        "--size", "96x96", "--zip")  # fmt: skip
    assert made.returncode == 0, made.stderr
    (work / "job").mkdir()
    pool.own(work)
    options = ["--epochs", "4", "--checkpoint-every", "4", "--image-size", "96", "--batch-size",
               "16", "--precision", "fp32"]  # fmt: skip
    cluster = _submit_train(pool, work, options)
    assert "want_io_proxy = true" in (work / "job" / "train.sub").read_text()
    log = work / "job" / "train.log"
    epoch, seen = attribute("epoch"), []

    def ad_epochs() -> bool:
        out = pool.check(f"condor_q {cluster} -af {epoch} {attribute('epochs')} JobStatus", work)
        values = out.split()
        if values and values[0] != "undefined" and not _checkpointed(log, cluster, 1):
            seen.append(int(values[0]))
        follower = EventFollower([log])
        follower.poll()
        job = follower.jobs.get((cluster, 0))
        return job is not None and job.state in ("done", "failed")

    wait_for(ad_epochs, 300, "the training job to finish", every=0.5)
    assert len(set(seen)) >= 2 and seen == sorted(seen), seen  # it grew, before any checkpoint
    (final,) = pool.history(f"ClusterId == {cluster}", [epoch, attribute("val_acc")])
    assert final[0] == "4" and 0 <= float(final[1]) <= 1
    lines = [str(e.get("Info", "")) for e in htcondor2.JobEventLog(str(log)).events(0)
             if int(e.type) == 8]  # fmt: skip
    assert [line.split()[2] for line in lines if line.startswith("condorml: epoch ")] == [
        "1/4", "2/4", "3/4", "4/4"], lines  # fmt: skip
    assert lines[-1] == "condorml: checkpoint 1 at epoch 4 batch 0"
