"""The backend interface (:mod:`condorml.backends`): the same scenarios on both backends.

Each scenario submits through ``Backend.submit_dag`` / ``submit_job`` and reads the handle's
``status``, ``wait`` and ``cancel``. On the local backend it runs here, in pytest's process; on
a pool it runs as the pool's submitting user from a folder outside /tmp (HTCondor refuses jobs
owned by root, DAGMan node logs under /tmp; see ``tests/pool.py``), through this module's
``__main__``, which prints the scenario's result as JSON. Without a pool the condor cases skip
(with ``CONDORML_REQUIRE_POOL=1`` they fail instead).
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from condorml.backends import choose_backend
from condorml.backends.base import Backend, Status
from condorml.errors import CondormlError
from tests.pool import ROOT, Pool, wait_for

WAIT_S = 300  # a pool's negotiation cycle and DAGMan's submit interval, plus the jobs
SWEEP_WAIT_S = 900

ECHO_JOB = """\
#!/bin/sh
# $1: a name; writes it to out_NAME.txt (transferred back), exits with $2 (default 0)
echo "$1" > "out_$1.txt"
[ -n "$3" ] && sleep "$3"
exit "${2:-0}"
"""


def _write_job(folder: Path, name: str, arguments: str, queue: str = "") -> Path:
    script = folder / "echo.sh"
    script.write_text(ECHO_JOB)
    script.chmod(0o755)
    submit = folder / f"{name}.sub"
    submit.write_text(
        textwrap.dedent(f"""\
        executable = echo.sh
        arguments = {arguments}
        should_transfer_files = YES
        when_to_transfer_output = ON_EXIT
        log = {name}.log
        output = {name}.$(ClusterId).$(ProcId).out
        error = {name}.$(ClusterId).$(ProcId).err
        request_cpus = 1
        request_memory = 64MB
        request_disk = 10MB
        queue {queue}
        """)
    )
    return submit


def _summary(status: Status) -> dict[str, Any]:
    return {"state": status.state, "counts": status.counts, "exit_code": status.exit_code}


# --- scenarios: run here (local) or as the pool's user (condor) ---------------------------------


def scenario_dag(backend: Backend, folder: Path) -> dict[str, Any]:
    """A two-node DAG (A then B) to its end."""
    _write_job(folder, "node", "$(JOB)")
    dag = folder / "tiny.dag"
    dag.write_text("JOB A node.sub\nJOB B node.sub\nPARENT A CHILD B\n")
    handle = backend.submit_dag(dag)
    first = handle.status()
    done = handle.wait(WAIT_S)
    outputs = sorted(p.name for p in folder.glob("out_*.txt"))
    return {"first": first.state, **_summary(done), "outputs": outputs, "kind": handle.kind}


def scenario_jobs(backend: Backend, folder: Path) -> dict[str, Any]:
    """A submit file that queues two jobs, the second failing with 1, to their end."""
    submit = _write_job(folder, "two", "p$(ProcId) $(ProcId)", queue="2")
    handle = backend.submit_job(submit)
    done = handle.wait(WAIT_S)
    outputs = sorted(p.name for p in folder.glob("out_*.txt"))
    return {**_summary(done), "outputs": outputs, "kind": handle.kind}


def scenario_cancel(backend: Backend, folder: Path) -> dict[str, Any]:
    """A job that sleeps, cancelled once it runs."""
    submit = _write_job(folder, "sleepy", "z 0 120")
    handle = backend.submit_job(submit)
    wait_for(lambda: handle.status().counts.get("running"), WAIT_S, "the job to run", every=1)
    started = time.monotonic()
    handle.cancel()
    done = handle.wait(WAIT_S)
    return {**_summary(done), "seconds": time.monotonic() - started}


def scenario_sweep(backend: Backend, folder: Path) -> dict[str, Any]:
    """A whole tiny sweep (one member, one epoch): plan, write, submit the DAG, wait."""
    from condorml.job.synth import make_synthetic_dataset
    from condorml.sweep.plan import plan_sweep, write_sweep

    make_synthetic_dataset(folder / "data", n_train=64, n_test=8, seed=1, size=(56, 44),
                           make_zips=True)  # fmt: skip
    spec = folder / "spec.toml"
    spec.write_text((SWEEP_SPEC + RESOURCES).format(python=os.path.abspath(sys.executable)))
    plan = plan_sweep(spec, folder / "run")
    backend.check_dag(plan.dag_file)
    write_sweep(plan)
    done = backend.submit_dag(plan.dag_file).wait(SWEEP_WAIT_S)
    return {**_summary(done), "ensemble": (folder / "run" / "dog_probs.csv").exists()}


def scenario_halving(backend: Backend, folder: Path) -> dict[str, Any]:
    """A successive-halving sweep of 3 members (rungs at 1 and 2 epochs, the best 1 goes on)."""
    from condorml.job.synth import make_synthetic_dataset
    from condorml.sweep.plan import plan_sweep, write_sweep
    from condorml.sweep.trials import read_trials

    make_synthetic_dataset(folder / "data", n_train=64, n_test=8, seed=1, size=(56, 44),
                           make_zips=True)  # fmt: skip
    spec = folder / "spec.toml"
    spec.write_text((SWEEP_SPEC + RESOURCES).format(python=os.path.abspath(sys.executable)).replace(
        "epochs = 1", "epochs = 2").replace("[ensemble]\nmembers = 1\n", HALVING_SEARCH))  # fmt: skip
    plan = plan_sweep(spec, folder / "run")
    write_sweep(plan)
    done = backend.submit_dag(plan.dag_file).wait(SWEEP_WAIT_S)
    trials = read_trials(folder / "run", [m.member for m in plan.members])
    return {
        **_summary(done),
        "ensemble": (folder / "run" / "dog_probs.csv").exists(),
        "states": {m: t.state for m, t in trials.items()},
        "first_rung": {m: t.value(1, "val_loss") for m, t in trials.items()},
    }


HALVING_SEARCH = """\
[search]
method = "random"
trials = 3
recheck_seconds = 1
[search.space]
lr = { log_uniform = [1e-4, 3e-2] }
[search.halving]
min_epochs = 1
eta = 3
"""


def scenario_classes(backend: Backend, folder: Path) -> dict[str, Any]:
    """A 3-class sweep of class-folder zips (a labelled test set, no labels file), the model
    swept over the CHTC CNN and a user's model file, each member exiting 85 after its first
    epoch: the ensemble's probs.csv, scored against the test set's own labels, and a report."""
    from condorml.job.synth import make_synthetic_dataset
    from condorml.monitor.report import make_report
    from condorml.sweep.plan import plan_sweep, write_sweep
    from tests.helpers import SMALL_NET

    make_synthetic_dataset(folder / "data", n_train=60, n_test=9, seed=2, size=(48, 36), classes=3,
                           layout="folders", test_layout="folders", make_zips=True)  # fmt: skip
    (folder / "models").mkdir()
    (folder / "models" / "net.py").write_text(SMALL_NET)
    spec = folder / "spec.toml"
    spec.write_text((CLASSES_SPEC + RESOURCES).format(python=os.path.abspath(sys.executable)))
    plan = plan_sweep(spec, folder / "run")
    backend.check_dag(plan.dag_file)
    write_sweep(plan)
    done = backend.submit_dag(plan.dag_file).wait(SWEEP_WAIT_S)
    run = folder / "run"
    probs = run / "probs.csv"
    metrics = (
        json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    )
    report = make_report(run, run / "report") if probs.exists() else None
    return {
        **_summary(done),
        "header": probs.read_text().splitlines()[0] if probs.exists() else None,
        "rows": len(probs.read_text().splitlines()) - 1 if probs.exists() else 0,
        "dog_probs": (run / "dog_probs.csv").exists(),
        "member_csvs": sorted(
            p.relative_to(run).as_posix() for p in run.glob("members/*/out/*.csv")
        ),
        "classes": metrics.get("classes"),
        "scored": metrics.get("n"),
        "macro_f1": metrics.get("macro_f1"),
        "report": sorted(p.name for p in (run / "report").iterdir()) if report else [],
    }


CLASSES_SPEC = """\
[data]
train = "data/train.zip"
test = "data/test.zip"

[train]
image_size = 40
epochs = 2
checkpoint_every = 1
batch_size = 16
precision = "fp32"

[grid]
model = ["cnn", "models/net.py:Net"]

[ensemble]
members = 1

"""

SWEEP_SPEC = """\
[data]
train = "data/train.zip"
test = "data/test.zip"
labels = "data/test_labels.csv"

[train]
model = "cnn"
image_size = 48
epochs = 1
batch_size = 16
precision = "fp32"

[ensemble]
members = 1

"""
# the jobs' resources: small, one CPU; the interpreter that runs the tests
RESOURCES = """\
[resources]
python = "{python}"
cpus = 1
memory = "1GB"
disk = "1GB"

[inference.resources]
cpus = 1
memory = "1GB"
disk = "1GB"
"""

# A PRE script for DEFER and PRE_SKIP: the n-th run exits the n-th code of $2 (the last repeats)
PRE_SEQ = """\
#!/bin/sh
n=$(cat "$1.count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1.count"
code=$(echo "$2" | awk -F, -v n=$n '{ if (n > NF) n = NF; print $n }')
echo "$1 $n $(date +%s.%N) $3 $code" >> pre.log
exit $code
"""


def _pre_runs(folder: Path) -> list[list[str]]:
    """pre.log's lines: node, run number, time, $RETRY, exit code."""
    log = folder / "pre.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _chain_dag(folder: Path, name: str, nodes: str, extra: str) -> Path:
    """A chain of echo.sh nodes (``nodes``: three names) plus ``extra`` DAG lines."""
    _write_job(folder, "node", "$(JOB)")
    (folder / "pre.sh").write_text(PRE_SEQ)
    (folder / "pre.sh").chmod(0o755)
    first, middle, last = nodes.split()
    dag = folder / f"{name}.dag"
    dag.write_text(
        "".join(f"JOB {n} node.sub\n" for n in (first, middle, last))
        + f"PARENT {first} CHILD {middle}\nPARENT {middle} CHILD {last}\n"
        + textwrap.dedent(extra)
    )
    return dag


def scenario_defer(backend: Backend, folder: Path) -> dict[str, Any]:
    """a -> b -> c, b's PRE script deferred twice (DEFER 4 1) and then going on; RETRY b 1."""
    dag = _chain_dag(folder, "defer", "a b c", """\
        SCRIPT DEFER 4 1 PRE b pre.sh b 4,4,0 $RETRY
        RETRY b 1
        """)  # fmt: skip
    done = backend.submit_dag(dag).wait(WAIT_S)
    runs = _pre_runs(folder)
    gaps = [float(b[2]) - float(a[2]) for a, b in itertools.pairwise(runs)]
    outputs = sorted(p.name for p in folder.glob("out_*.txt"))
    return {**_summary(done), "outputs": outputs, "pre": [[r[1], r[3], r[4]] for r in runs],
            "gaps": gaps}  # fmt: skip


def scenario_skip(backend: Backend, folder: Path) -> dict[str, Any]:
    """x -> y -> z, y's PRE script exiting its PRE_SKIP value 3; a POST script on y."""
    dag = _chain_dag(folder, "skip", "x y z", """\
        SCRIPT PRE y pre.sh y 3 $RETRY
        SCRIPT POST y pre.sh y-post 0 $RETRY
        PRE_SKIP y 3
        """)  # fmt: skip
    done = backend.submit_dag(dag).wait(WAIT_S)
    nodes_log = (folder / "skip.dag.nodes.log").read_text()
    skip_events = [line for line in nodes_log.splitlines() if line.startswith("034 ")]
    outputs = sorted(p.name for p in folder.glob("out_*.txt"))
    return {**_summary(done), "outputs": outputs, "pre": [r[0] for r in _pre_runs(folder)],
            "skip_events": [e.split()[1] for e in skip_events],
            "y_in_nodes_log": nodes_log.count("DAG Node: y")}  # fmt: skip


SCENARIOS: dict[str, Callable[[Backend, Path], dict[str, Any]]] = {
    "dag": scenario_dag,
    "jobs": scenario_jobs,
    "cancel": scenario_cancel,
    "sweep": scenario_sweep,
    "defer": scenario_defer,
    "skip": scenario_skip,
    "halving": scenario_halving,
    "classes": scenario_classes,
}


# --- running a scenario on a backend ------------------------------------------------------------


@pytest.fixture(
    params=["local", pytest.param("condor", marks=[pytest.mark.pool, pytest.mark.slow])]
)
def run_scenario(request: pytest.FixtureRequest, tmp_path: Path):
    """``run_scenario(name)``: the scenario's result on the parametrised backend."""
    if request.param == "local":
        return lambda name: SCENARIOS[name](choose_backend("local"), tmp_path)
    pool: Pool = request.getfixturevalue("pool")

    def on_pool(name: str) -> dict[str, Any]:
        folder = pool.workdir(f"backend-{name}")
        command = f"{shlex.quote(sys.executable)} -m tests.test_backends {name} {shlex.quote(str(folder))}"
        proc = pool.run(command, ROOT, timeout=SWEEP_WAIT_S + 60)
        assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return on_pool


def test_a_dag_runs_to_its_end(run_scenario) -> None:
    result = run_scenario("dag")
    assert result["kind"] == "dag" and result["first"] in ("idle", "running")
    assert result["state"] == "done" and result["exit_code"] == 0
    assert result["counts"] == {"done": 2}
    assert result["outputs"] == ["out_A.txt", "out_B.txt"]


def test_jobs_report_each_procs_state_and_the_failed_exit_code(run_scenario) -> None:
    result = run_scenario("jobs")
    assert result["kind"] == "job" and result["outputs"] == ["out_p0.txt", "out_p1.txt"]
    assert result["counts"] == {"done": 1, "failed": 1}
    assert result["state"] == "failed" and result["exit_code"] == 1


def test_a_cancelled_job_is_removed(run_scenario) -> None:
    result = run_scenario("cancel")
    assert result["state"] == "removed" and result["counts"] == {"removed": 1}
    assert result["seconds"] < 60  # stopped, not waited for (it sleeps 120 s)


def test_a_deferred_pre_script_runs_again_and_the_node_goes_on(run_scenario) -> None:
    """SCRIPT DEFER 4 1: b's PRE script runs again after >= 1 s while it exits 4 (HTCondor 25.0:
    $RETRY stays 0, no retry is used), then its job and c run."""
    result = run_scenario("defer")
    assert result["state"] == "done" and result["exit_code"] == 0, result
    assert result["pre"] == [["1", "0", "4"], ["2", "0", "4"], ["3", "0", "0"]]
    assert all(gap >= 0.9 for gap in result["gaps"]), result["gaps"]
    assert result["outputs"] == ["out_a.txt", "out_b.txt", "out_c.txt"]
    assert result["counts"] == {"done": 3}


def test_a_pre_skip_node_is_done_without_its_job_and_its_child_runs(run_scenario) -> None:
    """PRE_SKIP y 3 (HTCondor 25.0): y is done with no job and no POST script, z runs, the DAG
    succeeds; y's only trace in the nodes log is a 034 event (id 0.2147483647.1), so the node
    counts (from submitted jobs) leave it out."""
    result = run_scenario("skip")
    assert result["state"] == "done" and result["exit_code"] == 0, result
    assert result["outputs"] == ["out_x.txt", "out_z.txt"]
    assert result["pre"] == ["y"]  # and no y-post
    assert result["skip_events"] == ["(000.2147483647.001)"]
    assert result["y_in_nodes_log"] == 1
    assert result["counts"] == {"done": 3}  # the skipped node is done, as DAGMan counts it


@pytest.mark.slow
def test_a_whole_tiny_sweep_ends_with_an_ensemble(run_scenario) -> None:
    result = run_scenario("sweep")
    assert result["state"] == "done" and result["exit_code"] == 0, result
    assert result["ensemble"]
    assert result["counts"] == {"done": 3}  # train, infer, the FINAL collect


@pytest.mark.slow
def test_a_three_class_sweep_of_class_folders_ends_with_probs_csv_scores_and_a_report(
    run_scenario,
) -> None:
    result = run_scenario("classes")
    assert result["state"] == "done" and result["exit_code"] == 0, result
    classes = result["classes"]
    assert len(classes) == 3 and result["scored"] == 9  # the test set's own labels
    assert result["header"] == "fileid,predicted," + ",".join(classes)
    assert result["rows"] == 9 and not result["dog_probs"]
    assert result["member_csvs"] == ["members/m000/out/probs.csv", "members/m001/out/probs.csv"]
    assert 0.0 <= result["macro_f1"] <= 1.0
    assert "report.html" in result["report"]


@pytest.mark.slow
def test_successive_halving_stops_the_same_members_on_both_backends(run_scenario) -> None:
    """PRE scripts decide on the access point: the best member after one epoch goes on, the
    other two are stopped (their later rung and inference skipped, PRE_SKIP), and the DAG ends
    done: 3 + 1 training, 1 inference, 2 skipped rungs, 2 skipped inferences, the FINAL."""
    result = run_scenario("halving")
    assert result["state"] == "done" and result["exit_code"] == 0, result
    assert result["ensemble"]
    best = min(result["first_rung"], key=result["first_rung"].get)
    assert result["states"] == {
        m: "complete" if m == best else "stopped" for m in result["first_rung"]
    }
    assert result["counts"] == {"done": 10}


def test_a_job_submitted_again_on_the_local_backend_counts_only_its_own_jobs(
    tmp_path: Path,
) -> None:
    submit = _write_job(tmp_path, "twice", "p$(ProcId)", queue="2")
    backend = choose_backend("local")
    for _ in range(2):
        assert backend.submit_job(submit).wait(60).counts == {"done": 2}


def test_sigterm_while_waiting_on_the_local_backend_removes_the_job_as_condor_rm(
    tmp_path: Path,
) -> None:
    """wait() on the main thread keeps `condorml run`'s Ctrl-C/SIGTERM: a removal, not a kill."""
    handle = choose_backend("local").submit_job(_write_job(tmp_path, "sleepy", "z 0 120"))
    wait_for(lambda: handle.status().counts.get("running"), 30, "the job to run", every=0.1)
    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    status = handle.wait()
    assert status.state == "removed" and time.monotonic() - started < 30
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is given back


# --- choosing ------------------------------------------------------------------------------------


def test_choose_backend_says_which_and_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import condorml.backends as backends

    monkeypatch.setattr(backends, "schedd_available", lambda: False)
    chosen = choose_backend(None)
    assert (chosen.name, chosen.why, chosen.detached) == ("local", "no schedd answers here", False)
    monkeypatch.setattr(backends, "schedd_available", lambda: True)
    dagman = tmp_path / "condor_dagman"  # a DAG can be submitted (tests/test_run_lock.py: else)
    dagman.write_text("#!/bin/sh\n")
    dagman.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    chosen = choose_backend(None)
    why = "a schedd answers and condor_dagman is on PATH"
    assert (chosen.name, chosen.why, chosen.detached) == ("condor", why, True)
    assert choose_backend("local").why == ""
    with pytest.raises(CondormlError, match="--backend slurm: choose one of local, condor"):
        choose_backend("slurm")


def test_the_condor_backend_refuses_a_job_it_could_not_follow(tmp_path: Path) -> None:
    submit = tmp_path / "nolog.sub"
    submit.write_text("executable = /bin/true\nqueue\n")
    with pytest.raises(CondormlError, match="no log command"):
        choose_backend("condor").submit_job(submit)


def test_the_local_backend_refuses_a_submit_file_a_dag_cannot_name(tmp_path: Path) -> None:
    submit = _write_job(tmp_path, "job", "x")
    spaced = submit.rename(tmp_path / "my job.sub")
    with pytest.raises(CondormlError, match="spaces"):
        choose_backend("local").submit_job(spaced)


if __name__ == "__main__":  # python -m tests.test_backends SCENARIO FOLDER [BACKEND]: one JSON line
    name, where = sys.argv[1], Path(sys.argv[2])
    outcome = SCENARIOS[name](choose_backend(sys.argv[3] if len(sys.argv) > 3 else "condor"), where)
    print(json.dumps(outcome))
