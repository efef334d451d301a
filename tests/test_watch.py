"""condorml watch: real HTCondor 25 event logs (tests/fixtures/htcondor) read as a user expects."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from condorml.backends.local.eventlog import EventLog, JobId
from condorml.errors import CondormlError
from condorml.htcondor.events import EventFollower
from condorml.monitor.watch import Watch, parse_exit
from tests.helpers import condorml_cli

FIXTURES = Path(__file__).parent / "fixtures" / "htcondor"


def test_checkpoints_evictions_and_runs_of_a_real_self_checkpointing_job() -> None:
    follower = EventFollower([FIXTURES / "checkpoint" / "ckpt.log"])
    follower.poll()
    (job,) = follower.jobs.values()
    # two 040 output pairs while running are checkpoints; the pair before 005 is the final output
    assert (job.state, job.runs, job.checkpoints, job.evictions) == ("done", 2, 2, 1)
    assert job.return_value == 0


def test_a_held_job_is_held_with_its_reason_and_no_eviction_is_counted(tmp_path: Path) -> None:
    text = (FIXTURES / "held" / "held.log").read_text()
    events = text.split("...\n")
    held_at = next(i for i, e in enumerate(events) if e.startswith("012"))
    log = tmp_path / "held.log"
    follower = EventFollower([log])
    assert follower.poll() == 0  # not there yet: nothing read, no error
    log.write_text("...\n".join(events[: held_at + 1]) + "...\n")
    follower.poll()
    (job,) = follower.jobs.values()
    assert job.state == "held" and "missing.csv" in job.reason
    assert job.evictions == 0  # the 004 before 012 announced the hold
    with open(log, "a") as handle:  # the log grows: only the new events are read
        handle.write("...\n".join(events[held_at + 1 :]))
    assert follower.poll() == 1
    assert job.state == "removed"


def test_a_real_dag_folder_shows_nodes_attempts_and_the_dag_result() -> None:
    snapshot = Watch([FIXTURES / "dag"]).snapshot()
    nodes = {node.name: node for node in snapshot.nodes}
    assert {n: (v.state, v.attempts) for n, v in nodes.items()} == {
        "prep": ("done", 1), "train0": ("done", 1), "train1": ("failed", 2),
    }  # fmt: skip
    assert snapshot.dag_nodes == 4 and snapshot.dag_exit == 1
    assert snapshot.counts()["not run"] == 1  # collect never ran
    assert snapshot.finished() and snapshot.condition("all", "done") and snapshot.failed()
    assert snapshot.condition("any", "failed") and not snapshot.condition("any", "running")


def test_a_running_dag_is_not_done_until_dagman_exits(tmp_path: Path) -> None:
    run = tmp_path / "dag"
    shutil.copytree(FIXTURES / "dag", run)
    out = run / "sweep.dag.dagman.out"
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(line for line in lines if "EXITING WITH STATUS" not in line))
    snapshot = Watch([run]).snapshot()
    assert snapshot.dag_exit is None and not snapshot.condition("all", "done")
    assert snapshot.counts()["waiting"] == 1


def test_parse_exit_accepts_condor_watch_q_forms_and_refuses_others() -> None:
    assert parse_exit("all,done") == ("all", "done", None)
    assert parse_exit("any, held, 3") == ("any", "held", 3)
    for bad in ("all", "every,done", "all,finished", "all,done,x"):
        with pytest.raises(CondormlError, match="--exit"):
            parse_exit(bad)


def test_watch_cli_without_a_terminal(tmp_path: Path) -> None:
    once = condorml_cli("watch", "--once", str(FIXTURES / "dag"))
    assert once.returncode == 0
    assert "train1" in once.stdout and "failed" in once.stdout
    assert "DAG exited with status 1" in once.stdout.replace("\n", " ").replace("  ", " ")
    # --exit on a finished run returns at once; a failed DAG gives status 1, a good job 0
    failed = condorml_cli("watch", str(FIXTURES / "dag"), "--exit", "all,done", timeout=30)
    assert failed.returncode == 1
    done = condorml_cli(
        "watch", str(FIXTURES / "checkpoint" / "ckpt.log"), "--exit", "all,done", timeout=30
    )
    assert done.returncode == 0 and "1 done" in done.stdout
    custom = condorml_cli(
        "watch", str(FIXTURES / "checkpoint" / "ckpt.log"), "--exit", "all,done,7", timeout=30
    )
    assert custom.returncode == 7
    csv = tmp_path / "dog_probs.csv"
    csv.write_text("fileid,prob\n1,0.5\n")
    for args, message in (
        (["--exit", "sometimes"], "--exit 'sometimes'"),
        ([str(tmp_path / "nope.log")], "no such file or folder"),
        ([str(tmp_path / "nope")], f"{tmp_path / 'nope'}: no such file or folder"),
        ([str(tmp_path)], "no *.dag file here"),
        # a CSV as a log: it showed an empty table and exit 0
        ([str(csv)], f"{csv}: not an HTCondor job event log"),
        # a traceback without --once (time.sleep(-5))
        (["--interval", "-5", str(FIXTURES / "dag")], "--interval -5: give a positive number"),
        (["--interval", "0", str(FIXTURES / "dag")], "--interval 0: give a positive number"),
    ):
        bad = condorml_cli("watch", *args) if "--interval" in args else (
            condorml_cli("watch", "--once", *args))  # fmt: skip
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_held_job_shows_its_hold_reason_short() -> None:
    once = condorml_cli(
        "watch", "--once", str(FIXTURES / "held" / "held.log"), env={"COLUMNS": "200"}
    )
    assert once.returncode == 0, once.stderr
    # held, then removed: the 012's HoldReason, without the execute point and the sandbox path
    assert "held: Transfer output files failure: reading from file missing.csv: No" in once.stdout


# --- a job's own log and DAGMan's nodes log ---------------------------------------------------


def _job(own: Path, cluster: int = 7, nodes: Path | None = None) -> EventLog:
    """Events of one job, written as a pool writes them (the local backend's writer)."""
    return EventLog([own], JobId(cluster), "train_m000", nodes)


def _checkpoint(events: EventLog) -> None:
    events.transfer("output", finished=False)
    events.transfer("output", finished=True)


def test_checkpoints_come_from_the_jobs_own_log_and_post_results_from_the_nodes_log(
    tmp_path: Path,
) -> None:
    """A real DAGMan's nodes log has no 040 transfers (seen on the pool): the own log has them."""
    nodes, own = tmp_path / "x.dag.nodes.log", tmp_path / "train.log"
    events = _job(own, nodes=nodes)
    events.submitted()
    events.executing(tmp_path, 1, 128)
    _checkpoint(events)  # exit 85: a checkpoint came back
    _checkpoint(events)  # the final output
    events.terminated(0)
    events.post_script_terminated(3)
    alone = EventFollower([nodes])
    alone.poll()
    assert alone.jobs[(7, 0)].checkpoints == 0  # what a monitor reading only the nodes log sees
    both = EventFollower([nodes, own])
    both.poll()
    job = both.jobs[(7, 0)]
    assert (job.checkpoints, job.runs, job.post_return, job.node) == (1, 1, 3, "train_m000")
    # a job submitted by hand (no DAG node) into a log is not part of the DAG followed
    other = EventLog([tmp_path / "other.log"], JobId(99))
    other.submitted()
    follower = EventFollower([nodes, own, tmp_path / "other.log"])
    follower.poll()
    assert [key[:2] for key in follower.jobs] == [(7, 0)]
    # DAGMan empties its nodes log at every start (seen on the pool): a job of an earlier
    # DAGMan that only its own log still has is the DAG's; the nodes log is read again
    nodes.write_text("")
    rescued = _job(tmp_path / "train.log", cluster=8, nodes=nodes)
    rescued.submitted()
    follower.poll()
    assert [key[:2] for key in follower.jobs] == [(7, 0), (8, 0)]
    assert follower.jobs[(7, 0)].checkpoints == 1 and follower.jobs[(8, 0)].state == "idle"


def test_a_removal_is_not_an_eviction_and_a_reused_id_is_a_new_job(tmp_path: Path) -> None:
    # condor_rm of a running job: 004 then 009 (seen on the pool)
    log = tmp_path / "train.log"
    events = _job(log)
    events.submitted()
    events.executing(tmp_path, 1, 128)
    _checkpoint(events)
    events.evicted("Claim deactivated")
    events.aborted("DAG Removed")
    follower = EventFollower([log])
    follower.poll()
    job = follower.jobs[(7, 0)]
    assert (job.state, job.evictions, job.checkpoints) == ("removed", 0, 1)
    # the same schedd submits the same id for the same node again (a run folder whose local
    # cluster counter was lost): a second job; the first keeps what it did
    events.submitted()
    events.executing(tmp_path, 1, 128)
    events.terminated(0)
    follower.poll()
    first, second = follower.jobs.values()
    assert first is job and (job.state, job.runs, job.checkpoints) == ("removed", 1, 1)
    assert (second.state, second.runs, second.evictions, second.checkpoints) == ("done", 1, 0, 0)
    assert follower.jobs[(7, 0)] is second  # by its id alone: the latest, as condor_q names it
    assert (
        second.key is not None and second.key.serial == 1 and first.submission != second.submission
    )


# --- DAGs written for a pool ------------------------------------------------------------------

POOL_DAG = """\
# a DAG a user wrote for a pool: commands the local backend does not run
CONFIG dagman.config
ENV GET PATH
SET_JOB_ATTR Project = "x"
DOT pool.dot
INCLUDE more.dag
JOB prep node.sub
# NODE is JOB's newer spelling; "DIR done" names a folder, it marks nothing DONE
node train node.sub DIR done
JOB inline {
    executable = /bin/true
    JOB not_a_node x.sub
    queue
}
SUBMIT-DESCRIPTION shared {
    JOB not_a_node_either x.sub
}
SUBDAG EXTERNAL inner inner.dag
SPLICE S diamond.dag DIR parts
FINAL collect node.sub
SERVICE monitor node.sub
PROVISIONER provision node.sub
DONE prep
SCRIPT POST train post.sh $RETURN
PARENT prep CHILD S
PARENT S CHILD train
SOME_FUTURE_COMMAND with words
"""


def _pool_dag(folder: Path) -> Path:
    """A pool DAG with an include, a SUBDAG and nested splices (11 nodes, 2 premarked DONE)."""
    (folder / "pool.dag").write_text(POOL_DAG)
    (folder / "more.dag").write_text("JOB extra node.sub DONE\n")
    (folder / "inner.dag").write_text("JOB i1 x.sub\nJOB i2 x.sub\n")  # its own DAGMan's nodes
    (folder / "parts").mkdir()
    (folder / "parts" / "diamond.dag").write_text("JOB A x.sub\nJOB B x.sub\nSPLICE T line.dag\n")
    (folder / "parts" / "line.dag").write_text("NODE Z x.sub\n")
    return folder / "pool.dag"


def test_the_dag_reader_counts_every_node_a_pool_runs(tmp_path: Path) -> None:
    from condorml.htcondor.dagread import read_dag_nodes

    dag = read_dag_nodes(_pool_dag(tmp_path))
    assert {name: node.kind for name, node in dag.nodes.items()} == {
        "extra": "job", "prep": "job", "train": "job", "inline": "job", "inner": "subdag",
        "S+A": "job", "S+B": "job", "S+T+Z": "job", "collect": "final", "monitor": "service",
        "provision": "provisioner",
    }  # fmt: skip
    assert sorted(dag.done) == ["extra", "prep"] and dag.unread == []
    missing = tmp_path / "broken.dag"
    missing.write_text("JOB a x.sub\nSPLICE gone nowhere.dag\nINCLUDE self.dag\n")
    (tmp_path / "self.dag").write_text("INCLUDE self.dag\nJOB b x.sub\n")
    broken = read_dag_nodes(missing)
    assert list(broken.nodes) == ["a", "b"] and len(broken.unread) == 2  # shown, not refused


def test_watching_a_pool_dag_with_config_subdag_splice_and_include(tmp_path: Path) -> None:
    """It raised "CONFIG is not supported by the local backend"."""
    _pool_dag(tmp_path)
    events = EventLog([tmp_path / "a.log"], JobId(5), "S+A", tmp_path / "pool.dag.nodes.log")
    events.submitted()
    events.executing(tmp_path, 1, 128)
    watch = Watch([tmp_path])
    assert [p.name for p in watch.dags] == ["pool.dag"]  # the splice and SUBDAG files are parts
    snapshot = watch.snapshot()
    assert snapshot.dag_nodes == 11 and snapshot.premarked == 2
    counts = {state: n for state, n in snapshot.counts().items() if n}
    assert counts == {"waiting": 8, "running": 1, "done": 2}
    assert not snapshot.condition("all", "done") and snapshot.condition("any", "running")
    once = condorml_cli("watch", "--once", str(tmp_path), env={"COLUMNS": "200"})
    assert once.returncode == 0, once.stderr
    assert "S+A" in once.stdout and "2/11 nodes ended (8 waiting, 1 running, 2 done)" in once.stdout


def test_the_monitor_does_not_import_a_backend() -> None:
    import subprocess
    import sys

    code = (
        "import sys, condorml.monitor.watch, condorml.monitor.report, condorml.cli.watch; "
        "print([m for m in sys.modules if m.startswith('condorml.backends')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _held_container_job(log: str) -> tuple[str, str]:
    """The hold reason of the one job in a recorded container log, and what watch says of it."""
    from condorml.htcondor.events import EventFollower, short_reason

    follower = EventFollower([FIXTURES / "container" / log])
    follower.poll()
    (job,) = follower.jobs.values()
    assert job.state == "held", job
    return job.reason, short_reason(job.reason)


def test_a_job_whose_image_cannot_be_pulled_says_so_and_what_to_do() -> None:
    """Recorded on the pool (HTCondor 25.0.13, `pool docker`): a container job whose image is
    not in the registry is held, code 35, "Cannot pull image ..."."""
    reason, said = _held_container_job("missing_image.log")
    assert "Cannot pull image" in reason
    assert said == (
        "cannot pull image localhost:5000/nosuch:1.0: push it to that registry, or fix the image name"
    )


def test_a_container_over_its_memory_says_so_and_what_to_do() -> None:
    """Recorded on the pool (HTCondor 25.0.13, `pool docker`): a container job that outgrew its
    request (request_memory = 100, the slot 128 MB) is held, code 34 subcode 102."""
    reason, said = _held_container_job("over_memory.log")
    assert "memory limit" in reason
    assert said == (
        "over its memory limit (128 MB): raise request_memory (--memory, [resources] memory)"
    )
