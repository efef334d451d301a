"""One run of a DAG at a time (issue 21): DAGMan's lock, ``<dag>.lock``, held by both backends.

What HTCondor 25.0.13 does, seen on the pool (the pool tests below check it again): DAGMan takes
a POSIX write lock (``fcntl``) on an empty ``<dag>.lock`` for as long as it runs and deletes the
file when it ends; a second DAGMan of the same DAG logs "Aborting because it looks like another
instance of DAGMan is currently running on this DAG" and exits 1 (``condor_submit_dag`` itself
says "submitted" and exits 0); a lock file whose process died is taken over (recovery mode).

The local backend holds the same lock on the same file: a second run refuses (exit 2, naming the
process and how to stop it), a lock left by a dead process is taken over with a note, and
``condorml sweep --out`` refuses to rewrite (or ``--force``-move) a live run. Where no DAG can
be submitted (no ``condor_dagman`` on PATH), ``--backend condor`` is refused and no
``--backend`` means local.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import condorml.backends as backends
import condorml.backends.condor as condor
from condorml.backends import choose_backend
from condorml.backends.daglock import LOCAL_TAG, holder, lock_path
from condorml.backends.local.backend import LocalBackend
from condorml.cli import app
from condorml.errors import CondormlError
from tests.helpers import condorml_cli
from tests.pool import CONDORML, Pool, wait_for

SLEEP_SUB = """\
executable = /bin/sleep
arguments = {seconds}
log = sleep.log
request_cpus = 1
request_memory = 16MB
request_disk = 1MB
queue
"""

# a process holding the lock as DAGMan does: a POSIX write lock on an empty file
HOLD_EMPTY = """\
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(120)
"""
# a process holding it as the local backend does (its lock, its line in the file)
HOLD_LOCAL = """\
import sys, time
from pathlib import Path
from condorml.backends.daglock import DagLock
DagLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def _sleep_dag(folder: Path, seconds: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sleep.sub").write_text(SLEEP_SUB.format(seconds=seconds))
    dag = folder / "t.dag"
    dag.write_text("JOB A sleep.sub\n")
    return dag


def _hold(dag: Path, code: str = HOLD_LOCAL, argv0: str | None = None) -> subprocess.Popen:
    """Start a process that holds the DAG's lock (started as ``argv0``, as the schedd names
    DAGMan), once it holds it."""
    argv = [argv0 or sys.executable, "-c", code, str(lock_path(dag) if argv0 else dag)]
    process = subprocess.Popen(argv, executable=sys.executable, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def _stop(process: subprocess.Popen, sig: int = signal.SIGKILL) -> str:
    """Signal a process, wait for its end; its standard output."""
    if process.poll() is None:
        process.send_signal(sig)
    return process.communicate(timeout=60)[0]


def _submits(nodes_log: Path) -> int:
    """How many jobs a nodes log says were submitted (000 events)."""
    text = nodes_log.read_text() if nodes_log.exists() else ""
    return len(re.findall(r"^000 \(", text, re.M))


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# --- two runs of one DAG on this machine -----------------------------------------------------


def test_a_second_run_of_a_live_dag_refuses_naming_the_process(tmp_path: Path) -> None:
    """Before: the second ``condorml run`` started its own job for the same node and exited 0."""
    dag = _sleep_dag(tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "condorml", "run", str(dag)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        nodes_log = tmp_path / "t.dag.nodes.log"
        wait_for(lambda: _submits(nodes_log) == 1, 60, "the first run's job")
        assert lock_path(dag).read_text().startswith(f"{LOCAL_TAG}, pid {first.pid} ")
        second = condorml_cli("run", str(dag), timeout=60)
        assert second.returncode == 2
        line = _one_line(second.stderr)
        assert f"{dag}: already running (a local run, pid {first.pid}: " in line, line
        assert f"Ctrl-C where it runs, or kill -INT {first.pid}" in line, line
        assert _submits(nodes_log) == 1  # no second job for the node
    finally:
        output = _stop(first, signal.SIGINT)  # Ctrl-C: the job removed, the rescue DAG written
    assert first.returncode == 1 and "interrupted" in output
    assert not lock_path(dag).exists()  # deleted at the end, as DAGMan does


def test_two_runs_in_one_process_refuse_too(tmp_path: Path) -> None:
    """POSIX locks belong to a process: the second run in the same process must see the first."""
    dag = _sleep_dag(tmp_path)
    handle = LocalBackend().submit_dag(dag)
    try:
        with pytest.raises(
            CondormlError, match=rf"already running \(a local run, pid {os.getpid()}"
        ):
            LocalBackend().submit_dag(dag)
        assert holder(dag) is not None
    finally:
        handle.cancel()
        assert handle.wait(60).state == "removed"
    assert holder(dag) is None and not lock_path(dag).exists()
    quick = _sleep_dag(tmp_path, seconds=0)
    assert LocalBackend().submit_dag(quick).wait(60).state == "done"  # free again


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tmp_path: Path) -> None:
    dag = _sleep_dag(tmp_path, seconds=0)
    killed = _hold(dag)
    _stop(killed)  # kill -9: the kernel drops the lock, the file and its line stay
    assert lock_path(dag).read_text().startswith(f"{LOCAL_TAG}, pid {killed.pid} ")
    run = condorml_cli("run", str(dag), timeout=60)
    assert run.returncode == 0, run.stderr
    note = f"t.dag.lock: taken over from a local run (pid {killed.pid} on "
    assert note in run.stderr and "which is no longer running" in run.stderr
    assert note in (tmp_path / "t.dag.dagman.out").read_text()
    assert not lock_path(dag).exists()


def test_an_empty_lock_left_by_a_dead_dagman_is_taken_over(tmp_path: Path) -> None:
    dag = _sleep_dag(tmp_path, seconds=0)
    lock_path(dag).touch(mode=0o600)  # what a killed condor_dagman leaves
    run = condorml_cli("run", str(dag), timeout=60)
    assert run.returncode == 0, run.stderr
    assert "t.dag.lock: taken over from a DAGMan" in run.stderr
    assert not lock_path(dag).exists()


def test_the_local_backend_refuses_a_dag_that_dagman_runs(tmp_path: Path) -> None:
    """DAGMan's lock (an empty file, held by the scheduler-universe job's process) is read for
    what it is; the pool test below does the same with a real DAGMan."""
    dag = _sleep_dag(tmp_path)
    dagman = _hold(dag, HOLD_EMPTY, argv0="condor_scheduniv_exec.208.0")
    try:
        run = condorml_cli("run", str(dag), timeout=60)
        assert run.returncode == 2
        line = _one_line(run.stderr)
        assert f"already running (DAGMan job 208, pid {dagman.pid})" in line, line
        assert "stop it first: condor_rm 208" in line, line
        assert lock_path(dag).read_text() == ""  # DAGMan's file, left as it was
        assert not (tmp_path / "t.dag.nodes.log").exists()
    finally:
        _stop(dagman)


# --- condorml sweep onto a live run ----------------------------------------------------------


SPEC = """\
[data]
train = "train.zip"
test = "test.zip"

[train]
epochs = {epochs}
"""


def _spec(folder: Path, epochs: int = 2) -> Path:
    for data in ("train.zip", "test.zip"):
        (folder / data).touch()  # nothing reads them here
    spec = folder / "spec.toml"
    spec.write_text(SPEC.format(epochs=epochs))
    return spec


def test_sweep_refuses_to_rewrite_or_move_a_live_run(tmp_path: Path) -> None:
    """Before: ``condorml sweep --out RUN`` rewrote the files of the run in progress, and
    ``--force`` moved them into previous-1 under it."""
    spec, run = _spec(tmp_path), tmp_path / "run"
    assert CliRunner().invoke(app, ["sweep", str(spec), "--out", str(run)]).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    running = _hold(run / "sweep.dag")  # another process runs it, as `condorml run` does
    try:
        again = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(run)])
        assert again.exit_code == 2
        line = _one_line(again.output)
        assert f"{run} is a live run (a local run, pid {running.pid}: " in line, line
        assert "condorml sweep would rewrite its files under it; stop it first: Ctrl-C" in line
        _spec(tmp_path, epochs=3)  # another spec: --force would move the run aside
        forced = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(run), "--force"])
        assert forced.exit_code == 2
        assert "--force would move it into a previous-N folder while it runs" in forced.output
        assert f"kill -INT {running.pid}" in forced.output
        assert not (run / "previous-1").exists()
        assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten
    finally:
        _stop(running)
    # once it ended (here: killed), --force starts over as before
    forced = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(run), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (run / "previous-1" / "sweep.dag").exists()


# --- the condor backend -----------------------------------------------------------------------


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """DAGs the condor backend would hand to condor_submit_dag (nothing is submitted)."""
    calls: list[Path] = []

    def submit(dag_file: Path, _schedd: object = None) -> int:
        calls.append(dag_file)
        return 42

    monkeypatch.setattr(condor, "_submit_dag", submit)
    monkeypatch.setattr(condor, "DAGMAN_REFUSED_PREFIX", "/no-such-folder")  # pytest's /tmp
    return calls


def test_the_condor_backend_refuses_a_dag_that_runs_here(
    tmp_path: Path, submitted: list[Path]
) -> None:
    """condor_submit_dag would start a second DAGMan that exits 1 at once (seen on the pool)."""
    dag = _sleep_dag(tmp_path)
    running = _hold(dag)
    try:
        with pytest.raises(CondormlError) as refused:
            condor.CondorBackend().submit_dag(dag)
        message = str(refused.value)
        assert f"already running (a local run, pid {running.pid}: " in message
        assert "condor_submit_dag would start a second DAGMan, which exits" in message
        assert submitted == []
    finally:
        _stop(running)


def test_the_condor_backend_removes_a_killed_local_runs_lock_but_not_dagmans(
    tmp_path: Path, submitted: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """DAGMan takes an existing lock file for its own crash and replays the nodes log: with the
    local run's job ids it aborts ("DAGMan lost track of node A (ClusterId=1)", seen on the
    pool). A lock that DAGMan left is its own to recover from."""
    dag = _sleep_dag(tmp_path)
    _stop(_hold(dag))
    with caplog.at_level(logging.WARNING):
        condor.CondorBackend().submit_dag(dag)
    assert submitted == [dag] and not lock_path(dag).exists()
    assert "removed t.dag.lock, left by a local run that is no longer running" in caplog.text
    lock_path(dag).touch(mode=0o600)  # DAGMan's, empty
    condor.CondorBackend().submit_dag(dag)
    assert submitted == [dag, dag] and lock_path(dag).exists()


# --- choosing the backend: a schedd is not enough -------------------------------------------


@pytest.fixture
def no_dagman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH without condor_dagman (nor condor_submit_dag), as after ``pip install``; returns
    a folder to put tools in."""
    tools = tmp_path / "bin"
    tools.mkdir()
    monkeypatch.setenv("PATH", str(tools))
    return tools


def test_no_backend_means_local_where_a_dag_cannot_be_submitted(
    monkeypatch: pytest.MonkeyPatch, no_dagman: Path
) -> None:
    """Before: a schedd answering was enough, and the submission failed ("Failed to locate
    condor_dagman executable in PATH")."""
    monkeypatch.setattr(backends, "schedd_available", lambda: True)
    chosen = choose_backend(None)
    assert chosen.name == "local"
    assert chosen.why == (
        "a schedd answers, but condor_dagman is not on PATH "
        "(condor_submit_dag and the Python bindings need it)"
    )
    dagman = no_dagman / "condor_dagman"
    dagman.write_text("#!/bin/sh\n")
    dagman.chmod(0o755)
    chosen = choose_backend(None)
    assert (chosen.name, chosen.why) == ("condor", "a schedd answers and condor_dagman is on PATH")


def test_backend_condor_where_no_dag_can_be_submitted_refuses_naming_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_dagman: Path
) -> None:
    monkeypatch.setattr(condor, "DAGMAN_REFUSED_PREFIX", "/no-such-folder")  # pytest's /tmp
    spec, run = _spec(tmp_path), tmp_path / "run"
    result = CliRunner().invoke(
        app, ["sweep", str(spec), "--out", str(run), "--submit", "--backend", "condor"]
    )
    assert result.exit_code == 2
    line = _one_line(result.output)
    assert "condor_dagman is not on PATH" in line and line.endswith("--backend local"), line
    assert not run.exists()  # refused before anything was written


def test_submit_dag_says_what_failed_to_locate_condor_dagman_means(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_dagman: Path
) -> None:
    """The bindings' own error (no schedd is asked: it fails before)."""
    monkeypatch.setattr(condor, "DAGMAN_REFUSED_PREFIX", "/no-such-folder")
    dag = _sleep_dag(tmp_path)
    with pytest.raises(CondormlError, match=r"condor_dagman is not on PATH .*: --backend local$"):
        condor.CondorBackend().submit_dag(dag)
    assert not (tmp_path / "t.dag.condor.sub").exists()


# --- on the pool: DAGMan itself ----------------------------------------------------------------


def _dagman_ended(folder: Path, cluster: int) -> int | None:
    """The return value of DAGMan job ``cluster``, from its own log, once it ended."""
    log = folder / "t.dag.dagman.log"
    text = log.read_text() if log.exists() else ""
    ended = re.search(
        rf"^005 \({cluster:03d}\.000\.000\).*?\n\s*\(1\) Normal termination \(return value (\d+)\)",
        text,
        re.M,
    )
    return int(ended.group(1)) if ended else None


def _removed(folder: Path, cluster: int) -> bool:
    log = folder / "t.dag.dagman.log"
    return log.exists() and re.search(rf"^009 \({cluster:03d}\.", log.read_text(), re.M) is not None


@pytest.mark.slow
def test_on_the_pool_dagman_and_the_local_backend_refuse_each_others_dag(pool: Pool) -> None:
    """A real DAGMan holds the lock: ``condorml run`` refuses naming its job and condor_rm; the
    local backend holds it: a DAGMan submitted for the same DAG aborts (exit 1) without
    starting a job, and the local run goes on."""
    work = pool.workdir("lock")
    dag = _sleep_dag(work, seconds=300)
    pool.own(work)
    nodes_log = work / "t.dag.nodes.log"

    # DAGMan runs it: the local backend refuses
    cluster = pool.submitted_cluster(pool.check("condor_submit_dag t.dag", work))
    try:
        found = wait_for(lambda: holder(dag), 120, "DAGMan to take its lock")
        assert (found.what.split(",")[0], found.stop) == (
            f"DAGMan job {cluster}",
            f"condor_rm {cluster}",
        )
        assert lock_path(dag).read_text() == ""  # HTCondor 25.0 writes nothing in it
        wait_for(lambda: _submits(nodes_log) == 1, 120, "DAGMan's node job")
        run = pool.run(f"{CONDORML} run t.dag", work, timeout=60)
        assert run.returncode == 2, run.stdout + run.stderr
        line = _one_line(run.stderr)
        assert f"already running (DAGMan job {cluster}, pid " in line, line
        assert f"stop it first: condor_rm {cluster}" in line, line
        assert _submits(nodes_log) == 1
    finally:
        pool.run(f"condor_rm {cluster}", work)
    wait_for(lambda: _removed(work, cluster) and not lock_path(dag).exists(), 120,
             "DAGMan's end (condor_rm deletes the lock)")  # fmt: skip

    # the local backend runs it: a second DAGMan aborts
    local = pool.popen(f"{CONDORML} run t.dag", work)
    try:
        wait_for(lambda: LOCAL_TAG in (lock_path(dag).read_text() if lock_path(dag).exists()
                                       else ""), 60, "the local run's lock")  # fmt: skip
        wait_for(lambda: (work / "sleep.log").exists() and _submits(work / "sleep.log") == 2, 60,
                 "the local run's job")  # fmt: skip
        second = pool.submitted_cluster(pool.check("condor_submit_dag -f t.dag", work))
        assert wait_for(lambda: _dagman_ended(work, second) is not None, 120,
                        "the second DAGMan's end") == 1  # fmt: skip
        assert _dagman_ended(work, second) == 1
        out = (work / "t.dag.dagman.out").read_text()
        assert "Aborting because it looks like another instance of DAGMan is currently" in out
        assert _submits(work / "sleep.log") == 2  # DAGMan's job, the local run's: no third
        assert local.poll() is None and LOCAL_TAG in lock_path(dag).read_text()
    finally:
        os.killpg(local.pid, signal.SIGINT)  # Ctrl-C: removes its job, writes a rescue DAG
        output = local.communicate(timeout=120)[0]
    assert "interrupted" in output, output
    assert not lock_path(dag).exists()


POOL_SPEC = """\
[data]
train = "data/train.zip"
test = "data/test.zip"

[train]
model = "cnn"
image_size = 48
epochs = 50
batch_size = 16
precision = "fp32"

[resources]
python = "{python}"
cpus = 1
memory = "1GB"
disk = "1GB"
"""


@pytest.mark.slow
def test_on_the_pool_sweep_refuses_to_rewrite_a_run_dagman_runs(pool: Pool) -> None:
    work = pool.workdir("lock-sweep")
    made = condorml_cli("data", "synth", str(work / "data"), "--n-train", "32", "--n-test", "8",
                        "--size", "56x44", "--zip")  # fmt: skip
    assert made.returncode == 0, made.stderr
    (work / "spec.toml").write_text(POOL_SPEC.format(python=os.path.abspath(sys.executable)))
    pool.own(work)
    pool.check(f"{CONDORML} sweep spec.toml --out run", work)
    run = work / "run"
    cluster = pool.submitted_cluster(pool.check("condor_submit_dag sweep.dag", run))
    try:
        wait_for(lambda: holder(run / "sweep.dag"), 120, "DAGMan to take its lock")
        again = pool.run(f"{CONDORML} sweep spec.toml --out run", work)
        assert again.returncode == 2, again.stdout + again.stderr
        line = _one_line(again.stderr)
        assert f"run is a live run (DAGMan job {cluster}, pid " in line, line
        assert f"rewrite its files under it; stop it first: condor_rm {cluster}" in line, line
    finally:
        pool.run(f"condor_rm {cluster}", run)
    wait_for(lambda: not lock_path(run / "sweep.dag").exists(), 120, "DAGMan's end")
