"""Job event logs of a run that moved between the local backend and a pool, and of many members.

A schedd numbers its clusters on its own (a fresh pool from 1, the local backend from 1 per run
folder), so a run folder continued on a pool after the local backend (or the other way round)
has two jobs for one ``cluster.proc`` in its logs. The logs here are written with the local
backend's writer, as a pool writes them (checked by tests/test_local.py against a real pool);
the pool's jobs carry the address a real pool's schedd wrote into ``tests/fixtures/htcondor/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from condorml.backends.local.eventlog import EventLog, JobId
from condorml.htcondor.events import EventFollower
from condorml.monitor.watch import MemberView, Watch
from condorml.sweep.accounting import (
    LEADERBOARD_COLUMNS,
    leaderboard_counts,
    member_accounting,
    run_logs,
)

FIXTURES = Path(__file__).parent / "fixtures" / "htcondor"
# the schedd address of the real pool's submit events (tests/fixtures/htcondor/dag)
POOL = "<127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm&noUDP&sock=schedd_21407_5062>"
T0 = 1_800_000_000.0
DAG = """\
JOB train_m000 train.sub DIR members/m000
JOB train_m001 train.sub DIR members/m001
JOB infer_m000 infer.sub DIR members/m000
JOB infer_m001 infer.sub DIR members/m001
FINAL collect collect.sub
"""


def test_the_pools_submit_events_name_their_schedd_in_both_logs() -> None:
    """What tells jobs apart: the 000's address, the same in a job's own log and the nodes log."""
    follower = EventFollower([FIXTURES / "dag" / "sweep.dag.nodes.log"])
    follower.poll()
    assert {key.schedd for key in follower.jobs} == {POOL}
    own = EventFollower([FIXTURES / "dag" / "node.log"])
    own.poll()
    assert {key.schedd for key in own.jobs} == {POOL} and set(own.jobs) <= set(follower.jobs)


@dataclass
class _Schedd:
    """Jobs of one schedd into a run folder's logs, with its own cluster ids and its own clock."""

    run: Path
    address: str | None  # None: the local backend's own (its writer's default)
    clock: float
    cluster: int = 0

    def job(self, node: str, log: str) -> tuple[EventLog, Callable[[float], None]]:
        """A new job of ``node`` logged to ``log`` (and the nodes log); a function that moves
        this schedd's clock to ``offset`` seconds after the job's submit."""
        self.cluster += 1
        events = EventLog([self.run / log], JobId(self.cluster), node,
                          self.run / "sweep.dag.nodes.log")  # fmt: skip
        if self.address is not None:
            events.host = self.address
        start = self.clock

        def at(offset: float) -> None:
            self.clock = start + offset
            events.clock = lambda: self.clock

        at(0)
        events.submitted()
        return events, at


def _checkpoint(events: EventLog) -> None:
    events.transfer("output", finished=False)
    events.transfer("output", finished=True)


def _first_half(schedd: _Schedd) -> None:
    """m000 trains (2 checkpoints) and infers; m001 checkpoints, is evicted, checkpoints again
    and is removed (a Ctrl-C of condorml run, or condor_rm of the DAG): 004 then 009."""
    m000, at0 = schedd.job("train_m000", "members/m000/train.log")
    m001, at1 = schedd.job("train_m001", "members/m001/train.log")
    for events, at in ((m000, at0), (m001, at1)):
        at(1)
        events.executing(schedd.run, 1, 128)
        at(11)
        _checkpoint(events)
    at0(21)
    _checkpoint(m000)
    at1(13)
    m001.evicted("Job was evicted")
    at1(15)
    m001.executing(schedd.run, 1, 128)
    at1(25)
    _checkpoint(m001)
    at0(30)
    _checkpoint(m000)  # its final output
    m000.terminated(0)
    infer, at = schedd.job("infer_m000", "members/m000/infer.log")
    at(1)
    infer.executing(schedd.run, 1, 128)
    at(3)
    infer.terminated(0)
    at1(28)
    m001.evicted("Claim deactivated")
    m001.aborted("DAG Removed")


def _second_half(schedd: _Schedd) -> None:
    """m001 resumes from its checkpoint (1 checkpoint, done) and infers; the collect step runs."""
    m001, at = schedd.job("train_m001", "members/m001/train.log")
    at(1)
    m001.executing(schedd.run, 1, 128)
    at(11)
    _checkpoint(m001)
    at(20)
    _checkpoint(m001)
    m001.terminated(0)
    for node, log in (("infer_m001", "members/m001/infer.log"), ("collect", "collect.log")):
        events, at = schedd.job(node, log)
        at(1)
        events.executing(schedd.run, 1, 128)
        at(2)
        events.terminated(0)


def _moved_run(run: Path, first: str, skew: float = 0.0, watch: list[Watch] | None = None) -> Path:
    """A run folder begun on ``first`` (``local`` or ``pool``) and continued on the other, each
    numbering its clusters from 1; the second's clock ``skew`` seconds off the first's. A pool's
    DAGMan empties the nodes log as it starts (seen on the pool); the local backend appends.
    ``watch``: a watch of the folder, started before the move, is put there."""
    (run / "members" / "m000").mkdir(parents=True)
    (run / "members" / "m001").mkdir(parents=True)
    (run / "sweep.dag").write_text(DAG)
    (run / "members.csv").write_text("member,seed,lr\nm000,0,0.001\nm001,1,0.0003\n")
    local, pool = (None, POOL) if first == "local" else (POOL, None)
    _first_half(_Schedd(run, local, T0))
    if watch is not None:
        watch.append(Watch([run]))
        watch[0].snapshot()
    if first == "local":
        (run / "sweep.dag.nodes.log").write_text("")
    _second_half(_Schedd(run, pool, T0 + 100 + skew))
    return run


# m000: everything on the first schedd; m001: a job removed there (its committed 20 s lost with
# its spool), then 1 run and 19 s committed on the second
EXPECTED = {
    "m000": {"attempts": 1, "runs": 1, "checkpoints": 2, "evictions": 0, "state": "done",
             "committed_seconds": 29.0, "execution_seconds": 29.0},
    "m001": {"attempts": 2, "runs": 3, "checkpoints": 3, "evictions": 1, "state": "done",
             "committed_seconds": 19.0, "execution_seconds": 44.0},
}  # fmt: skip
MOVES = [("local", 0.0), ("pool", 0.0), ("local", -7200.0), ("pool", -7200.0)]
MOVE_IDS = ["local-then-pool", "pool-then-local", "laptop-clock-behind", "pool-clock-behind"]


@pytest.mark.parametrize(("first", "skew"), MOVES, ids=MOVE_IDS)
def test_a_moved_run_counts_every_job_of_both_schedds(
    tmp_path: Path, first: str, skew: float
) -> None:
    """Each schedd's cluster 1, 2 and 3 are other jobs: none dropped, none merged; the order of
    a node's attempts is the logs', whatever the clocks say."""
    run = _moved_run(tmp_path, first, skew)
    follower = EventFollower(run_logs(run, ["m000", "m001"]))
    follower.poll()
    jobs = list(follower.jobs.values())  # own logs' order: a node's attempts in their order
    assert [(job.node, job.id, job.schedd == jobs[0].schedd) for job in jobs] == [
        ("train_m000", "1.0", True), ("infer_m000", "3.0", True), ("train_m001", "2.0", True),
        ("train_m001", "1.0", False), ("infer_m001", "2.0", False), ("collect", "3.0", False),
    ]  # fmt: skip
    local = [job.on_local_backend for job in (jobs[0], jobs[3])]
    assert local == [first == "local", first == "pool"]
    removed, resumed = jobs[2], jobs[3]
    assert (removed.state, removed.runs, removed.checkpoints, removed.evictions) == (
        "removed", 2, 2, 1)  # fmt: skip
    assert (resumed.state, resumed.runs, resumed.checkpoints) == ("done", 1, 1)
    assert follower.jobs[(1, 0)] is resumed  # by its id alone: the latest job with it


@pytest.mark.parametrize(("first", "skew"), MOVES, ids=MOVE_IDS)
def test_watch_report_and_leaderboard_count_a_moved_run_per_member(
    tmp_path: Path, first: str, skew: float
) -> None:
    from condorml.monitor.gather import gather

    started: list[Watch] = []
    run = _moved_run(tmp_path, first, skew, started)
    members = {m.member: m for m in Watch([run]).snapshot().members}

    # a watch that followed the run before the move (and DAGMan's emptying of the nodes log)
    def seen(view: MemberView) -> tuple:
        train = view.train
        assert train is not None
        return view.state, train.attempts, *(train.total(c) for c in LEADERBOARD_COLUMNS)

    later = {m.member: seen(m) for m in started[0].snapshot().members}
    assert later == {member: seen(view) for member, view in members.items()}
    table, _ = member_accounting(run, ["m000", "m001"], now=T0 + 1000)
    assert table is not None
    board = leaderboard_counts(table)  # the collect step's leaderboard columns
    report = gather(run, use_defaults=False, now=T0 + 1000)
    assert report.condor is not None
    condor, leaderboard = report.condor.set_index("member"), report.members.set_index("member")
    for member, expected in EXPECTED.items():
        view = members[member]
        assert view.train is not None and view.state == "infer: done", member
        seen = {"attempts": view.train.attempts, "state": view.train.state,
                **{c: view.train.total(c) for c in ("runs", "checkpoints", "evictions")}}  # fmt: skip
        assert seen == {k: v for k, v in expected.items() if k in seen}, member
        row = table.set_index("member").loc[member]
        for column, value in expected.items():
            assert row[column] == value, (member, column)
            assert condor.at[member, column] == value, (member, column)
        for column in ("runs", "checkpoints", "evictions"):
            assert board[member][column] == expected[column], (member, column)
            assert leaderboard.at[member, column] == expected[column], (member, column)
    m001 = table.set_index("member").loc["m001"]
    assert (m001["lost_eviction_seconds"], m001["lost_removal_seconds"]) == (2.0, 23.0)


def test_a_reused_id_in_the_nodes_log_and_own_logs_is_matched_by_node(tmp_path: Path) -> None:
    """One schedd reusing ids for other nodes (a run folder whose local cluster counter was
    lost): each own log's job is the nodes log's job of the same node."""
    run = tmp_path
    first, second = _Schedd(run, None, T0), _Schedd(run, None, T0 + 100)
    done, at = first.job("train_m000", "members/m000/train.log")
    at(1)
    done.executing(run, 1, 128)
    at(5)
    done.terminated(0)
    failed, at = second.job("train_m001", "members/m001/train.log")  # cluster 1 again
    at(1)
    failed.executing(run, 1, 128)
    at(2)
    failed.terminated(3)
    follower = EventFollower([run / "sweep.dag.nodes.log", *sorted(run.rglob("train.log"))])
    follower.poll()
    jobs = [(job.cluster, job.node, job.state, job.runs) for job in follower.jobs.values()]
    assert jobs == [(1, "train_m000", "done", 1), (1, "train_m001", "failed", 1)]


# --- many members: files open -----------------------------------------------------------------

MANY = textwrap.dedent("""\
    import json, os, resource, sys
    from pathlib import Path

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    from condorml.backends.local.eventlog import EventLog, JobId
    from condorml.monitor.gather import gather
    from condorml.monitor.watch import MemberView, Watch

    run, count = Path(sys.argv[1]), int(sys.argv[2])
    members = [f"m{i:03d}" for i in range(count)]
    (run / "sweep.dag").write_text("".join(
        f"JOB {kind}_{m} {kind}.sub DIR members/{m}\\n" for m in members for kind in ("train", "infer")))
    (run / "members.csv").write_text("member,seed\\n" + "".join(f"{m},{i}\\n" for i, m in enumerate(members)))
    nodes = run / "sweep.dag.nodes.log"

    def job(cluster, member, kind):
        events = EventLog([run / "members" / member / f"{kind}.log"], JobId(cluster), f"{kind}_{member}", nodes)
        events.submitted()
        events.executing(run, 1, 128)
        return events

    def checkpoint(events):
        events.transfer("output", finished=False)
        events.transfer("output", finished=True)

    def fds():
        return len(os.listdir("/proc/self/fd"))

    trains = [job(i + 1, m, "train") for i, m in enumerate(members)]
    for events in trains:
        checkpoint(events)
    watch = Watch([run])
    first = sorted({m.state for m in watch.snapshot().members})  # views change in place
    most = fds()
    for events in trains:  # the refresh: every log grew
        checkpoint(events)
        events.terminated(0)
    for i, m in enumerate(members):
        job(count + i + 1, m, "infer").terminated(0)
    second = watch.snapshot()
    most = max(most, fds())
    report = gather(run, use_defaults=False)
    most = max(most, fds())
    print(json.dumps({
        "first": first,
        "second": sorted({m.state for m in second.members}),
        "checkpoints": sorted({m.train.total("checkpoints") for m in second.members}),
        "report": sorted(set(report.condor["checkpoints"])) if report.condor is not None else None,
        "rows": 0 if report.condor is None else len(report.condor),
        "fds": most,
    }))
""")


def test_watch_and_report_of_300_members_stay_under_256_open_files(tmp_path: Path) -> None:
    """Each open htcondor2.JobEventLog holds two files: one per log kept open passed 1,024 at a
    few hundred members."""
    done = subprocess.run([sys.executable, "-c", MANY, str(tmp_path), "300"], capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["first"] == ["train: running"] and seen["second"] == ["infer: done"]
    assert seen["checkpoints"] == [1] and seen["report"] == [1] and seen["rows"] == 300
    assert seen["fds"] < 64, seen


def test_a_follower_keeps_no_log_open_and_reads_only_what_grew(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    events = EventLog([log], JobId(4), "train_m000")
    events.submitted()
    follower = EventFollower([log])
    before = len(os.listdir("/proc/self/fd"))
    assert follower.poll() == 1 and len(os.listdir("/proc/self/fd")) == before
    assert follower.poll() == 0  # unchanged: not read again
    events.executing(tmp_path, 1, 128)
    assert follower.poll() == 1 and follower.jobs[(4, 0)].state == "running"
    # rewritten (a new file in its place): read again from its start, nothing counted twice
    log.unlink()
    fresh = EventLog([log], JobId(9), "train_m000")
    fresh.submitted()
    follower.poll()
    assert [key[:2] for key in follower.jobs] == [(9, 0)]


def test_the_local_backends_jobs_are_known_as_its_own(tmp_path: Path) -> None:
    """Its spool and ad files are in the run folder; a pool's job with the same id has none."""
    from condorml.htcondor.events import JobKey

    log = tmp_path / "train.log"
    EventLog([log], JobId(1), "train_m000").submitted()
    follower = EventFollower([log])
    follower.poll()
    (job,) = follower.jobs.values()
    assert job.on_local_backend and isinstance(job.key, JobKey) and job.key.schedd


def test_a_pools_running_job_is_not_given_a_local_ad_of_the_same_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local backend's ad files of a run folder moved to a pool carry the pool's ids."""
    from condorml.monitor.live import LiveReader
    from condorml.sweep.rundir import local_job_ad

    monkeypatch.setenv("PATH", str(tmp_path / "no-condor"))  # no condor_q: nothing from a schedd
    ad = local_job_ad(tmp_path, "1.0")
    ad.parent.mkdir(parents=True)
    ad.write_text(json.dumps({"CondormlEpoch": 7, "CondormlEpochs": 9}))
    found = {}
    for address in (POOL, None):
        log = tmp_path / f"{address is None}.log"
        events = EventLog([log], JobId(1), "train_m000")
        if address is not None:
            events.host = address
        events.submitted()
        events.executing(tmp_path, 1, 128)
        follower = EventFollower([log])
        follower.poll()
        found[address] = LiveReader().read(follower.jobs.values(), [tmp_path])
    assert found[POOL] == {}
    assert found[None]["1.0"].epoch == 7  # the local backend's own job: its ad


def test_a_job_left_running_by_a_killed_local_run_is_not_followed_live(tmp_path: Path) -> None:
    """``condorml run`` killed outright logs no end for its jobs; once the pool ran the node
    again, the node is the pool's attempt, and no live progress is asked for the dead job."""
    from condorml.monitor.live import LiveReader

    class Recorder(LiveReader):
        def read(self, jobs, dag_folders=()):  # type: ignore[no-untyped-def]
            asked.extend(jobs)
            return {}

    asked: list = []
    run = tmp_path
    (run / "sweep.dag").write_text("JOB train_m000 train.sub\nJOB infer_m000 infer.sub\n")
    (run / "members.csv").write_text("member,seed\nm000,0\n")
    killed, at = _Schedd(run, None, T0).job("train_m000", "members/m000/train.log")
    at(1)
    killed.executing(run, 1, 128)
    resumed, at = _Schedd(run, POOL, T0 + 100).job("train_m000", "members/m000/train.log")
    at(1)
    resumed.executing(run, 1, 128)
    at(9)
    resumed.terminated(0)
    (member,) = Watch([run], live=Recorder()).snapshot().members
    assert member.train is not None and member.state == "train: done"
    assert (member.train.attempts, member.train.total("runs")) == (2, 2) and asked == []
