"""The local backend (``condorml run``): DAGMan's rules and an execute point's behaviour, here.

Most tests run tiny shell jobs written into ``tmp_path``; their event logs are read back with
``htcondor2.JobEventLog`` and compared with what a real HTCondor 25.0 pool wrote
(``tests/fixtures/htcondor/``). The ``slow`` tests run a real sweep of tiny models.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import htcondor2
import pytest

from condorml.backends.local.dagman import DAG_STATUS_ABORT, DagResult, DagRunner, RunOptions
from condorml.backends.local.starter import Evictions
from tests.helpers import condorml_cli, tiny_sweep_spec

FIXTURES = Path(__file__).parent / "fixtures" / "htcondor"  # real HTCondor 25.0 output
HEADER = re.compile(r"^\d{3} \(\d{3}\.\d{3}\.\d{3}\) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S")
SUBMIT, EVICTED, TERMINATED, ABORTED, HELD, POST_SCRIPT, TRANSFER = 0, 4, 5, 9, 12, 16, 40
IMAGE_SIZE_EVENT = 6  # a real pool's 006 events; the local backend writes none
TRANSFER_NAMES = {2: "in-start", 3: "in-done", 5: "out-start", 6: "out-done"}


# --- helpers ---------------------------------------------------------------------------------


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(0o755)
    return path


def _submit(path: Path, executable: str, **commands: str) -> Path:
    """A submit file with file transfer on; ``commands`` add to or override the defaults."""
    values = {
        "executable": executable,
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "log": "job.log",
        **commands,
    }
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items() if v is not None) + "queue\n")
    return path


def _dag(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _run(dag: Path, **options) -> DagResult:
    return DagRunner(dag, RunOptions(**options)).run()


def _events(log: Path) -> list:
    """Every event of an event log, as htcondor2 reads it."""
    return list(htcondor2.JobEventLog(str(log)).events(0))


CHIRP_EVENTS = (33, 8)  # attribute update, generic (ulog)


def _shape(events: list, cluster: int | None = None) -> list[str]:
    """Event codes in order (040 with its direction), a real pool's 006 events and the live
    progress a training job sends through Chirp (033 attribute updates, 008 lines) left out."""
    shape = []
    for event in events:
        if cluster is not None and event.cluster != cluster:
            continue
        code = int(event.type)
        if code in (IMAGE_SIZE_EVENT, *CHIRP_EVENTS):
            continue
        shape.append(f"040 {TRANSFER_NAMES[event['Type']]}" if code == TRANSFER else f"{code:03d}")
    return shape


def _without_transfers(shape: list[str]) -> list[str]:
    """What DAGMan's nodes log holds of a job's events: all but its 040 file transfers."""
    return [code for code in shape if not code.startswith("040")]


def _headers_match_htcondor(log: Path) -> None:
    """Every line is an event header, a tab-indented body line, or the ``...`` terminator."""
    lines = log.read_text().splitlines()
    assert lines and lines[-1] == "..."
    for line in lines:
        assert (
            HEADER.match(line) or line.startswith("\t") or line.startswith("    ") or line == "..."
        ), line


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _intervals(record: Path) -> dict[str, tuple[float, float]]:
    spans = {}
    for line in _lines(record):
        name, start, end = line.split()
        spans[name] = (float(start), float(end))
    return spans


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# A job that appends "NAME" to RECORD (outside its sandbox), then exits with the code given for
# this attempt (the last code repeats): `counted.sh RECORD NAME 3 0` fails once, then succeeds.
COUNTED_JOB = """\
    #!/bin/sh
    record=$1; name=$2; shift 2
    echo "$name" >> "$record"
    attempt=$(grep -cx "$name" "$record")
    while [ "$attempt" -gt 1 ] && [ $# -gt 1 ]; do shift; attempt=$((attempt - 1)); done
    exit "${1:-0}"
"""


def _counted_dag(tmp_path: Path, dag_text: str, codes: dict[str, str] | None = None) -> Path:
    """A DAG whose nodes run COUNTED_JOB with ``$(codes)`` from VARS (default: succeed)."""
    _script(tmp_path / "counted.sh", COUNTED_JOB)
    _submit(
        tmp_path / "counted.sub",
        "counted.sh",
        arguments=f"{tmp_path / 'runs.txt'} $(JOB) $(codes)",
        log="counted.log",
    )
    extra = "".join(f'VARS {n} codes="{c}"\n' for n, c in (codes or {}).items())
    return _dag(tmp_path / "test.dag", textwrap.dedent(dag_text).lstrip() + extra)


def _runs(tmp_path: Path) -> list[str]:
    return _lines(tmp_path / "runs.txt")


# --- one job: checkpoints, evictions, transfers, holds ----------------------------------------

CHECKPOINTING_JOB = """\
    #!/bin/sh
    # $1: a record outside the sandbox. runs.txt lives in the sandbox only (no transfer at all).
    runs=$(( $(cat runs.txt 2>/dev/null || echo 0) + 1 )); echo "$runs" > runs.txt
    mkdir -p ckpt
    step=$(( $(cat ckpt/step.txt 2>/dev/null || echo 0) + 1 )); echo "$step" > ckpt/step.txt
    echo "run $runs step $step in $(pwd)" >> "$1"
    echo "run $runs step $step"
    [ "$(wc -l < "$1")" -gt 5 ] && exit 1   # never loop for ever
    [ "$runs" -lt 3 ] && exit 85
    echo "runs=$runs step=$step" > final.txt
"""


def test_exit_85_restarts_in_the_same_sandbox_with_checkpoint_transfer_events(
    tmp_path: Path,
) -> None:
    _script(tmp_path / "ckpt.sh", CHECKPOINTING_JOB)
    _submit(
        tmp_path / "ckpt.sub",
        "ckpt.sh",
        arguments=str(tmp_path / "record.txt"),
        checkpoint_exit_code="85",
        transfer_checkpoint_files="ckpt/step.txt",
        preserve_relative_paths="true",
        transfer_output_files="final.txt",
        output="ckpt.out",
        error="ckpt.err",
        log="ckpt.log",
    )
    dag = _dag(tmp_path / "ckpt.dag", "JOB a ckpt.sub\n")

    result = _run(dag)

    assert (result.exit_code, result.done, result.failed) == (0, ["a"], {})
    # runs.txt survived the restarts: the same sandbox, as HTCondor's starter does
    assert (tmp_path / "final.txt").read_text() == "runs=3 step=3\n"
    record = _lines(tmp_path / "record.txt")
    assert [line.split(" in ")[0] for line in record] == [f"run {i} step {i}" for i in (1, 2, 3)]
    assert len({line.split(" in ")[1] for line in record}) == 1
    # stdout is part of every checkpoint, so it holds all three runs
    assert _lines(tmp_path / "ckpt.out") == [f"run {i} step {i}" for i in (1, 2, 3)]
    assert not (tmp_path / "runs.txt").exists() and not (tmp_path / "ckpt").exists()

    checkpoint_pair = ["040 out-start", "040 out-done"]
    expected = ["000", "040 in-start", "040 in-done", "001", *checkpoint_pair * 3, "005"]
    # the job's own log has every event; DAGMan's nodes log has no 040 transfers (as on a pool)
    for log, shape in ((tmp_path / "ckpt.log", expected),
                       (tmp_path / "ckpt.dag.nodes.log", _without_transfers(expected))):  # fmt: skip
        events = _events(log)
        assert _shape(events) == shape, log
        (terminated,) = [e for e in events if int(e.type) == TERMINATED]
        assert terminated["TerminatedNormally"] and terminated["ReturnValue"] == 0
        _headers_match_htcondor(log)
    # the nodes log names the node in the submit event, as DAGMan's does
    submit = _events(tmp_path / "ckpt.dag.nodes.log")[0]
    assert submit["LogNotes"] == "DAG Node: a"


EVICTABLE_JOB = """\
    #!/bin/sh
    # $1: a record outside the sandbox; $2: how long the second start takes.
    touch "$1"
    start=$(( $(wc -l < "$1") + 1 ))
    mkdir -p ckpt
    step=$(cat ckpt/step.txt 2>/dev/null || echo 0)
    echo "start=$start step=$step sandbox=$(pwd) files=$(find . -type f | sort | tr '\\n' ' ')" >> "$1"
    [ "$start" -gt 8 ] && exit 1   # never loop for ever
    [ "$start" -eq 2 ] && sleep "$2"
    step=$((step + 1)); echo "$step" > ckpt/step.txt
    [ "$step" -lt 3 ] && exit 85
    cat input.txt ckpt/step.txt > result.txt
"""


def _eviction_job(folder: Path, slow_seconds: float) -> Path:
    folder.mkdir()
    _script(folder / "job.sh", EVICTABLE_JOB)
    (folder / "input.txt").write_text("the input\n")
    _submit(
        folder / "job.sub",
        "job.sh",
        arguments=f"{folder / 'record.txt'} {slow_seconds}",
        transfer_input_files="input.txt",
        checkpoint_exit_code="85",
        transfer_checkpoint_files="ckpt/step.txt",
        preserve_relative_paths="true",
        transfer_output_files="result.txt",
        output="job.out",
        log="job.log",
    )
    return _dag(folder / "job.dag", "JOB a job.sub\n")


def test_injected_eviction_resumes_in_a_fresh_sandbox_from_the_spooled_checkpoint(
    tmp_path: Path,
) -> None:
    # Every start is evicted 0.4-0.8 s after it begins; only the slow second start lasts that long.
    evicted = _eviction_job(tmp_path / "evicted", slow_seconds=3)
    result = _run(evicted, evictions=Evictions(1.0, (0.4, 0.8), grace=1.0, seed=1))
    assert (result.exit_code, result.done) == (0, ["a"])

    starts = [
        dict(kv.split("=", 1) for kv in line.split(" files=")[0].split())
        for line in _lines(tmp_path / "evicted" / "record.txt")
    ]
    files = [
        line.split(" files=")[1].split() for line in _lines(tmp_path / "evicted" / "record.txt")
    ]
    # the evicted start's work is lost: the fresh sandbox resumes from checkpoint 1 again
    assert [s["step"] for s in starts] == ["0", "1", "1", "2"]
    assert starts[0]["sandbox"] == starts[1]["sandbox"] != starts[2]["sandbox"]
    # the fresh sandbox got the executable, the inputs and the spooled checkpoint
    assert {"./job.sh", "./input.txt", "./ckpt/step.txt"} <= set(files[2])
    assert {"./job.sh", "./input.txt"} <= set(files[0]) and "./ckpt/step.txt" not in files[0]

    # the same sequence of events as the real pool's evicted checkpointing job
    real = _shape(_events(FIXTURES / "checkpoint" / "ckpt.log"))
    assert "004" in real
    assert _shape(_events(tmp_path / "evicted" / "job.log")) == real
    assert _shape(_events(tmp_path / "evicted" / "job.dag.nodes.log")) == _without_transfers(real)
    eviction = next(e for e in _events(evicted.parent / "job.log") if int(e.type) == EVICTED)
    assert "eviction" in eviction["Reason"]

    # the same result as a run that was never evicted
    plain = _eviction_job(tmp_path / "plain", slow_seconds=0.5)
    assert _run(plain).exit_code == 0
    assert "004" not in _shape(_events(tmp_path / "plain" / "job.log"))
    result_text = (tmp_path / "evicted" / "result.txt").read_text()
    assert result_text == (tmp_path / "plain" / "result.txt").read_text() == "the input\n3\n"


@pytest.mark.parametrize(
    ("preserve", "input_at", "output_at"),
    [("true", "./data/in.txt", "sub/dir/file.txt"), ("false", "./in.txt", "file.txt")],
)
def test_outputs_come_back_to_initialdir_with_relative_paths_and_remaps(
    tmp_path: Path, preserve: str, input_at: str, output_at: str
) -> None:
    _script(
        tmp_path / "job.sh",
        """\
        #!/bin/sh
        mkdir -p sub/dir
        find . -name in.txt > sub/dir/file.txt
        echo top > top.txt
        echo scratch > not_listed.txt
        echo "to stdout"; echo "to stderr" >&2
        """,
    )
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "in.txt").write_text("input\n")
    _submit(
        tmp_path / "job.sub",
        "job.sh",  # relative to the submitting folder; everything else to initialdir
        initialdir="out",
        transfer_input_files="data/in.txt",
        transfer_output_files="sub/dir/file.txt, top.txt",
        transfer_output_remaps='"top.txt=renamed/top.txt"',
        preserve_relative_paths=preserve,
        output="logs/job.out",
        error="logs/job.err",
    )
    result = _run(_dag(tmp_path / "job.dag", "JOB a job.sub\n"))

    assert result.exit_code == 0, result.failed
    assert (out / output_at).read_text() == f"{input_at}\n"
    assert (out / "renamed" / "top.txt").read_text() == "top\n"
    assert not (out / "top.txt").exists() and not (out / "not_listed.txt").exists()
    assert (out / "logs" / "job.out").read_text() == "to stdout\n"
    assert (out / "logs" / "job.err").read_text() == "to stderr\n"
    assert _shape(_events(out / "job.log"))[-1] == "005"


def test_a_missing_output_holds_the_job_and_fails_the_node_with_the_reason(
    tmp_path: Path,
) -> None:
    _script(tmp_path / "job.sh", "#!/bin/sh\necho made > made.csv\n")
    _submit(
        tmp_path / "held.sub",
        "job.sh",
        transfer_output_files="made.csv, missing.csv",
        log="held.log",
    )
    _counted_dag(tmp_path, "JOB a held.sub\nJOB b counted.sub\nPARENT a CHILD b\n")

    result = _run(tmp_path / "test.dag")

    assert result.exit_code == 1 and result.done == []
    assert "held" in result.failed["a"] and "missing.csv" in result.failed["a"]
    assert _runs(tmp_path) == []  # the child never ran
    events = _events(tmp_path / "held.log")
    assert _shape(events)[-1] == "012" and "005" not in _shape(events)
    held = events[-1]
    # as the real pool holds a job whose output is missing
    (real,) = [e for e in _events(FIXTURES / "held" / "held.log") if int(e.type) == HELD]
    assert (held["HoldReasonCode"], held["HoldReasonSubCode"]) == (
        real["HoldReasonCode"],
        real["HoldReasonSubCode"],
    )
    assert held["HoldReason"].startswith("Transfer output files failure at execution point")
    assert "missing.csv" in held["HoldReason"]
    assert "DONE a" not in result.rescue.read_text()


def test_retry_runs_a_failed_node_again(tmp_path: Path) -> None:
    dag = _counted_dag(tmp_path, "JOB a counted.sub\nRETRY a 2\n", {"a": "3 0"})
    result = _run(dag)
    assert (result.exit_code, result.done) == (0, ["a"])
    assert _runs(tmp_path) == ["a", "a"]
    # two jobs (clusters) for the node, the first returned 3
    events = _events(tmp_path / "test.dag.nodes.log")
    submits = [e for e in events if int(e.type) == SUBMIT]
    assert [e["LogNotes"] for e in submits] == ["DAG Node: a"] * 2
    assert [e["ReturnValue"] for e in events if int(e.type) == TERMINATED] == [3, 0]


def test_retry_gives_up_after_its_count(tmp_path: Path) -> None:
    dag = _counted_dag(tmp_path, "JOB a counted.sub\nRETRY a 2\n", {"a": "3"})
    result = _run(dag)
    assert result.exit_code == 1 and "failed with status 3" in result.failed["a"]
    assert _runs(tmp_path) == ["a"] * 3


def test_retry_unless_exit_does_not_retry_that_exit_code(tmp_path: Path) -> None:
    dag = _counted_dag(
        tmp_path,
        "JOB a counted.sub\nRETRY a 2 UNLESS-EXIT 3\nJOB b counted.sub\nRETRY b 2 UNLESS-EXIT 3\n",
        {"a": "3 0", "b": "4 0"},
    )
    result = _run(dag)
    assert result.done == ["b"] and set(result.failed) == {"a"}
    assert sorted(_runs(tmp_path)) == ["a", "b", "b"]  # a exited 3: not retried; b was


# --- PRE and POST scripts ----------------------------------------------------------------------

SCRIPT = """\
    #!/bin/sh
    # $1: PRE or POST, $2: exit code, then the macros
    kind=$1; code=$2; shift 2
    echo "$kind $*" >> scripts.log
    exit "$code"
"""


def test_pre_and_post_scripts_get_dagman_macros(tmp_path: Path) -> None:
    _script(tmp_path / "script.sh", SCRIPT)
    # the POST script exits with $RETURN: it passes the job's failure on, so the node is retried
    dag = _counted_dag(
        tmp_path,
        """\
        JOB a counted.sub
        RETRY a 1
        SCRIPT PRE a script.sh PRE 0 $NODE $JOB $RETRY $MAX_RETRIES
        SCRIPT POST a script.sh POST $RETURN $NODE $RETURN $RETRY $MAX_RETRIES $DAG_STATUS $FAILED_COUNT
        """,
        {"a": "3 0"},
    )

    result = _run(dag)

    assert (result.exit_code, result.done) == (0, ["a"])
    # $RETRY counts from 0 and $RETURN is the job's exit code, as fixtures/htcondor/dag/post.log
    assert _lines(tmp_path / "scripts.log") == [
        "PRE a a 0 1",
        "POST a 3 0 1 0 0",
        "PRE a a 1 1",
        "POST a 0 1 1 0 0",
    ]
    posts = [e for e in _events(tmp_path / "test.dag.nodes.log") if int(e.type) == POST_SCRIPT]
    assert [e["ReturnValue"] for e in posts] == [3, 0]
    assert all(e["DAGNodeName"] == "a" for e in posts)


def test_post_script_decides_the_node_result(tmp_path: Path) -> None:
    _script(tmp_path / "script.sh", SCRIPT)
    dag = _counted_dag(
        tmp_path,
        """\
        JOB rescued counted.sub
        SCRIPT POST rescued script.sh POST 0 $JOB $RETURN
        JOB spoiled counted.sub
        SCRIPT POST spoiled script.sh POST 4 $JOB $RETURN
        """,
        {"rescued": "7", "spoiled": "0"},
    )
    result = _run(dag)
    assert result.done == ["rescued"] and set(result.failed) == {"spoiled"}
    assert "POST script failed with status 4" in result.failed["spoiled"]
    assert sorted(_lines(tmp_path / "scripts.log")) == ["POST rescued 7", "POST spoiled 0"]


def test_pre_skip_skips_the_job_and_a_failed_pre_script_fails_the_node(tmp_path: Path) -> None:
    _script(tmp_path / "script.sh", SCRIPT)
    dag = _counted_dag(
        tmp_path,
        """\
        JOB skipped counted.sub
        SCRIPT PRE skipped script.sh PRE 5 $JOB
        SCRIPT POST skipped script.sh POST 0 $JOB
        PRE_SKIP skipped 5
        JOB after counted.sub
        PARENT skipped CHILD after
        JOB broken counted.sub
        SCRIPT PRE broken script.sh PRE 1 $JOB
        PRE_SKIP broken 5
        """,
    )
    result = _run(dag)
    assert sorted(result.done) == ["after", "skipped"] and set(result.failed) == {"broken"}
    assert "PRE script failed with status 1" in result.failed["broken"]
    assert _runs(tmp_path) == ["after"]  # neither skipped's nor broken's job ran
    assert sorted(_lines(tmp_path / "scripts.log")) == ["PRE broken", "PRE skipped"]  # no POST


# --- throttles and order -----------------------------------------------------------------------

TIMED_JOB = """\
    #!/usr/bin/env python3
    import sys, time
    start = time.time()
    time.sleep(0.4)
    with open(sys.argv[1], "a") as record:
        record.write(f"{sys.argv[2]} {start} {time.time()}\\n")
"""


def _timed_dag(tmp_path: Path, extra: str = "") -> Path:
    _script(tmp_path / "timed.py", TIMED_JOB)
    _submit(tmp_path / "timed.sub", "timed.py", arguments=f"{tmp_path / 'times.txt'} $(JOB)")
    return _dag(
        tmp_path / "timed.dag", "JOB a timed.sub\nJOB b timed.sub\nJOB c timed.sub\n" + extra
    )


def test_category_maxjobs_keeps_its_nodes_apart(tmp_path: Path) -> None:
    dag = _timed_dag(tmp_path, "CATEGORY a slow\nCATEGORY b slow\nMAXJOBS slow 1\n")
    assert _run(dag).exit_code == 0
    spans = _intervals(tmp_path / "times.txt")
    assert set(spans) == {"a", "b", "c"}
    assert not _overlap(spans["a"], spans["b"])
    if _cores() >= 2:  # the node outside the category did run beside them
        assert _overlap(spans["a"], spans["c"]) or _overlap(spans["b"], spans["c"])


def test_max_jobs_option_runs_one_node_at_a_time(tmp_path: Path) -> None:
    dag = _timed_dag(tmp_path)
    run = condorml_cli("run", str(dag), "--max-jobs", "1")
    assert run.returncode == 0, run.stderr
    assert "DAG finished: 3/3 nodes done, 0 failed" in run.stdout
    spans = list(_intervals(tmp_path / "times.txt").values())
    assert len(spans) == 3
    assert not any(_overlap(x, y) for i, x in enumerate(spans) for y in spans[i + 1 :])


def test_a_submit_file_is_parsed_once_per_node_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting nodes are considered at every scheduling pass; their submit file is not re-read."""
    parses = []
    real = htcondor2.Submit

    def counting(*args, **kwargs):
        parses.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(htcondor2, "Submit", counting)
    text = "JOB a counted.sub\nJOB b counted.sub\nJOB c counted.sub\nJOB d counted.sub\nRETRY a 1\n"
    dag = _counted_dag(tmp_path, text, {"a": "3 0"})
    result = _run(dag, max_jobs=1)  # b, c, d wait while a runs, twice
    assert result.exit_code == 0 and sorted(_runs(tmp_path)) == ["a", "a", "b", "c", "d"]
    assert len(parses) == 5  # one per attempt: a twice, b, c, d once


def test_max_jobs_0_means_no_limit_and_a_negative_one_is_refused(tmp_path: Path) -> None:
    """As ``condor_submit_dag -maxjobs 0``: every node runs (it ran only the FINAL node)."""
    dag = _counted_dag(tmp_path, "JOB A counted.sub\nJOB B counted.sub\nFINAL F counted.sub\n")
    assert _run(dag, max_jobs=0).done == ["A", "B"] and sorted(_runs(tmp_path)) == ["A", "B", "F"]
    bad = condorml_cli("run", str(dag), "--max-jobs", "-1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("condorml: error: Invalid value for '--max-jobs'")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_run_accepts_a_run_folder_and_refuses_one_without_a_single_dag(tmp_path: Path) -> None:
    dag = _counted_dag(tmp_path, "JOB A counted.sub\n")
    run = condorml_cli("run", str(tmp_path))  # was an IsADirectoryError
    assert run.returncode == 0, run.stderr
    assert f"running {dag} with the local backend" in run.stdout and _runs(tmp_path) == ["A"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, message in ((empty, "no *.dag files here (none)"),
                            (tmp_path / "nope", "no such file or folder")):  # fmt: skip
        bad = condorml_cli("run", str(folder))
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and message in bad.stderr


def test_priority_orders_ready_nodes(tmp_path: Path) -> None:
    dag = _counted_dag(
        tmp_path,
        """\
        JOB low counted.sub
        JOB mid counted.sub
        JOB high counted.sub
        JOB default counted.sub
        PRIORITY low -5
        PRIORITY mid 5
        PRIORITY high 10
        """,
    )
    assert _run(dag, max_jobs=1).exit_code == 0
    assert _runs(tmp_path) == ["high", "mid", "default", "low"]


# --- rescue DAGs -------------------------------------------------------------------------------


def test_a_failed_dag_writes_a_rescue_dag_and_a_rerun_continues_from_it(tmp_path: Path) -> None:
    dag = _counted_dag(
        tmp_path,
        "JOB A counted.sub\nJOB B counted.sub\nPARENT A CHILD B\nRETRY B 1\n",
        {"B": "1 1 0"},
    )

    first = _run(dag)

    assert (first.exit_code, first.done, list(first.failed)) == (1, ["A"], ["B"])
    assert first.rescue == tmp_path / "test.dag.rescue001"
    # DAGMan's format (fixtures/htcondor/dag/sweep.dag.rescue001): comments, DONE, the RETRY left
    real = (FIXTURES / "dag" / "sweep.dag.rescue001").read_text().splitlines()
    ours = first.rescue.read_text().splitlines()
    assert [line for line in ours if not line.startswith("#")] == ["", "DONE A", "RETRY B 1"]
    assert ours[:2] == [real[0], "#   the test.dag DAG file"]
    assert "#   B,<ENDLIST>" in ours and "# Nodes that failed: 1" in ours

    # B "fixed" (its third run succeeds): A does not run again
    second = _run(dag)
    assert (second.exit_code, sorted(second.done)) == (0, ["A", "B"])
    assert second.rescue is None
    assert _runs(tmp_path) == ["A", "B", "B", "B"]

    # --restart ignores the rescue file (set aside as .old) and runs everything again
    third = _run(dag, restart=True)
    assert third.exit_code == 0
    assert _runs(tmp_path) == ["A", "B", "B", "B", "A", "B"]
    assert (tmp_path / "test.dag.rescue001.old").exists()
    assert not (tmp_path / "test.dag.rescue001").exists()


def test_the_newest_rescue_file_wins(tmp_path: Path) -> None:
    dag = _counted_dag(
        tmp_path,
        "JOB A counted.sub\nJOB B counted.sub\nJOB C counted.sub\n",
        {"B": "1", "C": "1 0"},
    )
    assert _run(dag, max_jobs=1).rescue.name == "test.dag.rescue001"  # DONE A
    assert _run(dag, max_jobs=1).rescue.name == "test.dag.rescue002"  # DONE A, DONE C
    assert _run(dag, max_jobs=1).rescue.name == "test.dag.rescue003"
    assert _runs(tmp_path) == ["A", "B", "C", "B", "C", "B"]


SLOW_ONCE = """\
    #!/bin/sh
    # $1: record; sleeps on its first run, so that it can be interrupted
    echo "start" >> "$1"
    if [ "$(wc -l < "$1")" -eq 1 ]; then sleep 30; fi
    echo done > out.txt
"""


def test_an_interrupted_run_writes_a_rescue_dag_and_a_rerun_finishes(tmp_path: Path) -> None:
    _script(tmp_path / "slow.sh", SLOW_ONCE)
    _submit(tmp_path / "slow.sub", "slow.sh", arguments=str(tmp_path / "slow.txt"), log="slow.log")
    dag = _counted_dag(tmp_path, "JOB A counted.sub\nJOB B slow.sub\nPARENT A CHILD B\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "condorml", "run", str(dag)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _lines(tmp_path / "slow.txt") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _lines(tmp_path / "slow.txt") == ["start"], "B never started"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert time.monotonic() - started < 10  # B's job was stopped, not waited for
    assert process.returncode != 0
    assert "interrupted" in stdout and "Traceback" not in stderr
    rescue = tmp_path / "test.dag.rescue001"
    assert "DONE A" in _lines(rescue) and "DONE B" not in _lines(rescue)
    removed = _events(tmp_path / "slow.log")[-1]
    assert int(removed.type) == ABORTED and "condorml run" in removed["Reason"]
    assert not (tmp_path / "out.txt").exists()

    again = condorml_cli("run", str(dag))
    assert again.returncode == 0, again.stderr
    assert _runs(tmp_path) == ["A"]  # not run again
    assert _lines(tmp_path / "slow.txt") == ["start", "start"]
    assert (tmp_path / "out.txt").read_text() == "done\n"


RESUMABLE_JOB = """\
    #!/bin/sh
    # $1: record. Like condorml's training job: ckpt/ is input, checkpoint and output, and it
    # changes only when a checkpoint is taken. Its second start hangs ($2 = hang) or crashes.
    n=$(cat ckpt/state.txt 2>/dev/null || echo 0)
    echo "restored $n" >> "$1"
    if [ "$(wc -l < "$1")" -eq 2 ]; then
        [ "$2" = hang ] && sleep 30
        exit 1
    fi
    n=$((n + 1)); echo "$n" > ckpt/state.txt
    [ "$n" -lt 3 ] && exit 85
    exit 0
"""


def _resumable_dag(tmp_path: Path, second_start: str) -> tuple[Path, Path]:
    _script(tmp_path / "job.sh", RESUMABLE_JOB)
    (tmp_path / "ckpt").mkdir()
    record = tmp_path / "record.txt"
    _submit(
        tmp_path / "job.sub",
        "job.sh",
        arguments=f"{record} {second_start}",
        transfer_input_files="ckpt",
        checkpoint_exit_code="85",
        transfer_checkpoint_files="ckpt",
        transfer_output_files="ckpt",
    )
    return _dag(tmp_path / "job.dag", "JOB a job.sub\n"), record


def test_a_failed_job_brings_its_checkpoint_back_and_the_rescue_rerun_resumes(
    tmp_path: Path,
) -> None:
    """The sweep's mechanism: ckpt/ is an output, so it comes back when the job ends, also when
    it fails (a crash, an OOM kill), and it is the input of the node's next attempt."""
    dag, record = _resumable_dag(tmp_path, "crash")
    first = _run(dag)
    assert first.exit_code == 1 and first.failed and first.rescue is not None
    assert "DONE a" not in first.rescue.read_text()
    assert (tmp_path / "ckpt" / "state.txt").read_text() == "1\n"  # the checkpoint came back

    second = _run(dag)
    assert (second.exit_code, second.done) == (0, ["a"])
    assert _lines(record) == ["restored 0", "restored 1", "restored 1", "restored 2"]
    assert (tmp_path / "ckpt" / "state.txt").read_text() == "3\n"


def test_an_interrupt_discards_the_spool_like_condor_rm(tmp_path: Path) -> None:
    """HTCondor deletes a removed job's spooled checkpoint; the local backend does too, so a
    sweep tested here does not promise what a pool will not keep."""
    dag, record = _resumable_dag(tmp_path, "hang")
    runner = DagRunner(dag, RunOptions())

    def interrupt() -> None:  # Ctrl-C once the second start hangs
        deadline = time.monotonic() + 20
        while len(_lines(record)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.cancel.set()

    watcher = threading.Thread(target=interrupt)
    watcher.start()
    first = runner.run()
    watcher.join()
    assert first.interrupted and first.exit_code == 1 and first.done == []
    assert not (tmp_path / "ckpt" / "state.txt").exists()  # nothing came back

    second = _run(dag)
    assert (second.exit_code, second.done) == (0, ["a"])
    assert _lines(record) == ["restored 0", "restored 1", "restored 0", "restored 1", "restored 2"]


# --- ABORT-DAG-ON, FINAL, DONE, NOOP -----------------------------------------------------------


def test_abort_dag_on_stops_the_dag_with_its_return_value(tmp_path: Path) -> None:
    _script(tmp_path / "slow.sh", SLOW_ONCE)
    _submit(tmp_path / "slow.sub", "slow.sh", arguments=str(tmp_path / "slow.txt"), log="slow.log")
    dag = _counted_dag(
        tmp_path,
        """\
        JOB A counted.sub
        JOB B counted.sub
        PARENT A CHILD B
        JOB S slow.sub
        RETRY A 3
        ABORT-DAG-ON A 3 RETURN 7
        """,
        {"A": "3"},
    )
    started = time.monotonic()
    result = _run(dag)
    assert time.monotonic() - started < 15  # S was removed, not waited for
    assert (result.exit_code, result.status) == (7, DAG_STATUS_ABORT)
    assert _runs(tmp_path) == ["A"]  # no retry, and B never ran
    assert "A" in result.failed and "B" not in result.done
    assert [line for line in _lines(result.rescue) if line.startswith("DONE")] == []
    if _lines(tmp_path / "slow.txt"):  # S had started beside A: it was removed
        assert _shape(_events(tmp_path / "slow.log"))[-1] == "009"
    assert not (tmp_path / "out.txt").exists()


def _final_dag(tmp_path: Path, codes: dict[str, str]) -> Path:
    _script(tmp_path / "final.sh", '#!/bin/sh\necho "$@" > "$1.txt"\nexit "$4"\n')
    _submit(
        tmp_path / "final.sub",
        "final.sh",
        arguments=f"{tmp_path / 'final'} $(DAG_STATUS) $(FAILED_COUNT) $(final_exit)",
        log="final.log",
    )
    return _counted_dag(
        tmp_path,
        """\
        JOB A counted.sub
        JOB B counted.sub
        PARENT A CHILD B
        FINAL F final.sub
        """,
        codes,
    )


@pytest.mark.parametrize(
    ("a_code", "final_exit", "final_args", "dag_exit"),
    [
        ("0", "0", "0 0 0", 0),  # all well
        ("1", "0", "2 1 0", 0),  # A failed, B never ran; the FINAL node decides: success
        ("0", "9", "0 0 9", 1),  # a failing FINAL node fails the DAG
    ],
)
def test_final_node_runs_last_with_dag_status_and_decides(
    tmp_path: Path, a_code: str, final_exit: str, final_args: str, dag_exit: int
) -> None:
    dag = _final_dag(tmp_path, {"A": a_code})
    with dag.open("a") as handle:
        handle.write(f'VARS F final_exit="{final_exit}"\n')
    result = _run(dag)
    assert (tmp_path / "final.txt").read_text().split()[1:] == final_args.split()
    assert result.exit_code == dag_exit
    assert _runs(tmp_path) == (["A", "B"] if a_code == "0" else ["A"])
    # F ran after everything else
    clusters = [
        e.cluster for e in _events(tmp_path / "test.dag.nodes.log") if int(e.type) == SUBMIT
    ]
    assert clusters[-1] == _events(tmp_path / "final.log")[0].cluster


def test_final_node_runs_after_abort_dag_on_and_after_an_interrupt(tmp_path: Path) -> None:
    """DAGMan runs FINAL whatever happened, condor_rm and ABORT-DAG-ON included."""
    dag = _final_dag(tmp_path / "abort", {"A": "5"})
    with dag.open("a") as handle:
        handle.write('ABORT-DAG-ON A 5 RETURN 6\nVARS F final_exit="0"\n')
    result = _run(dag)
    assert result.exit_code == 6
    assert (tmp_path / "abort" / "final.txt").read_text().split()[1:] == ["3", "1", "0"]

    folder = tmp_path / "interrupt"
    _script(folder / "slow.sh", SLOW_ONCE)
    _submit(folder / "slow.sub", "slow.sh", arguments=str(folder / "slow.txt"), log="slow.log")
    _final_dag(folder, {})
    dag = _dag(folder / "test.dag", 'JOB S slow.sub\nFINAL F final.sub\nVARS F final_exit="0"\n')
    runner = DagRunner(dag, RunOptions())

    def interrupt() -> None:
        deadline = time.monotonic() + 20
        while not _lines(folder / "slow.txt") and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.cancel.set()

    watcher = threading.Thread(target=interrupt)
    watcher.start()
    result = runner.run()
    watcher.join()
    assert result.interrupted and result.exit_code == 1
    assert (folder / "final.txt").read_text().split()[1:] == ["4", "0", "0"]  # DAG_STATUS 4 (rm)
    assert "DONE S" not in result.rescue.read_text()


def test_done_and_noop_nodes_do_not_run_but_count_as_done(tmp_path: Path) -> None:
    _script(tmp_path / "script.sh", SCRIPT)
    dag = _counted_dag(
        tmp_path,
        """\
        JOB A counted.sub DONE
        JOB N no-such-file.sub NOOP
        SCRIPT POST N script.sh POST 0 $NODE
        JOB C counted.sub
        JOB D counted.sub
        DONE D
        PARENT A N CHILD C
        """,
    )
    result = _run(dag)
    assert (result.exit_code, sorted(result.done)) == (0, ["A", "C", "D", "N"])
    assert _runs(tmp_path) == ["C"]
    assert _lines(tmp_path / "scripts.log") == ["POST N"]  # a NOOP node still runs its scripts


# --- what the local backend refuses ------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "SUBDAG EXTERNAL inner inner.dag",
        "SPLICE inner inner.dag",
        "SERVICE watcher watcher.sub",
        "PROVISIONER prov prov.sub",
        "INCLUDE other.dag",
        "SCRIPT HOLD A hold.sh",
    ],
)
def test_unsupported_commands_are_one_line_errors_naming_the_line(
    tmp_path: Path, line: str
) -> None:
    dag = _counted_dag(tmp_path, f"JOB A counted.sub\n{line}\n")
    run = condorml_cli("run", str(dag))
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1
    assert f"{dag}:2:" in run.stderr and line.split()[0] in run.stderr
    assert _runs(tmp_path) == [] and not (tmp_path / "test.dag.nodes.log").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JOB A counted.sub\nPARENT A CHILD Z\n", "test.dag:2: unknown node Z"),
        ("JOB A counted.sub\nRETRY A many\n", "test.dag:2: malformed RETRY line"),
        ("JOB A counted.sub\nJOB A counted.sub\n", "test.dag:2: node A is defined twice"),
        ("JOB A missing.sub\n", "missing.sub: no such submit file"),
    ],
)
def test_mistakes_in_a_dag_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    dag = _counted_dag(tmp_path, text)
    run = condorml_cli("run", str(dag))
    assert "Traceback" not in run.stderr
    assert run.returncode != 0 and message in run.stderr


# --- one run, the same numbers everywhere ----------------------------------------------------------

# A sweep's jobs in miniature: training checkpoints (exit 85) after its first two "epochs", as
# condorml's trainer with ckpt/ as input, checkpoint and output; inference writes predictions.
MINI_TRAIN = """\
    #!/bin/sh
    n=$(cat ckpt/state.txt 2>/dev/null || echo 0)
    sleep 0.4
    n=$((n + 1)); echo "$n" > ckpt/state.txt
    [ "$n" -lt 3 ] && exit 85
    exit 0
"""
MINI_INFER = """\
    #!/bin/sh
    mkdir -p out && printf 'fileid,prob\\n1,0.25\\n' > out/dog_probs.csv
"""


def _mini_sweep(run: Path) -> Path:
    """Members m000 (all well) and m001, whose inference input is missing (the job is held)."""
    _script(run / "train.sh", MINI_TRAIN)
    _script(run / "infer.sh", MINI_INFER)
    streams = {"log": "$(kind).log", "error": "$(kind).$(ClusterId).$(ProcId).err"}
    _submit(run / "train.sub", str(run / "train.sh"), initialdir="$(member_dir)",
            transfer_input_files="ckpt", checkpoint_exit_code="85",
            transfer_checkpoint_files="ckpt", transfer_output_files="ckpt", **streams)  # fmt: skip
    _submit(run / "infer.sub", str(run / "infer.sh"), initialdir="$(member_dir)",
            transfer_input_files="$(test)", transfer_output_files="out", **streams)  # fmt: skip
    _submit(run / "collect.sub", "/bin/true", universe="local", log="collect.log",
            should_transfer_files=None, when_to_transfer_output=None)  # fmt: skip
    (run / "members.csv").write_text("member,seed\nm000,0\nm001,1\n")
    lines = []
    for member, test in (("m000", "ckpt"), ("m001", "missing_test.zip")):
        folder = run / "members" / member
        (folder / "ckpt").mkdir(parents=True)
        lines += [f"JOB train_{member} train.sub", f"JOB infer_{member} infer.sub",
                  f'VARS train_{member} member_dir="{folder}" kind="train"',
                  f'VARS infer_{member} member_dir="{folder}" kind="infer" test="{test}"',
                  f"PARENT train_{member} CHILD infer_{member}"]  # fmt: skip
    return _dag(run / "sweep.dag", "\n".join([*lines, "FINAL collect collect.sub", ""]))


def test_one_run_gives_the_same_counts_in_every_output_and_says_why_a_member_failed(
    tmp_path: Path,
) -> None:
    """runs = 001 events, checkpoints = 040 transfers back while running, evictions = 004 not
    announcing a hold or removal: the same in dagman.out, run's last line, watch, the collect
    step's leaderboard and the report (it said 6 starts / 5 checkpoints in dagman.out,
    "8 nodes done" against watch's 9/9, 6/6 in the leaderboard and 1/5 in the HTCondor table)."""
    import pandas as pd

    from condorml.cli.watch import summary_line
    from condorml.monitor.gather import gather
    from condorml.monitor.report import render_html
    from condorml.monitor.watch import Watch
    from condorml.sweep.collect import collect

    run = tmp_path / "run"
    _mini_sweep(run)
    done = condorml_cli("run", str(run))  # the folder, as watch and report take it
    assert done.returncode == 0, done.stderr
    snapshot = Watch([run]).snapshot()
    jobs = [sum(getattr(j, c) for j in snapshot.jobs) for c in ("runs", "checkpoints", "evictions")]
    assert jobs == [4, 4, 0]  # 2 trainings of 1 run and 2 checkpoints, 1 inference, collect
    assert snapshot.counts()["done"] == 4 and snapshot.total == 5  # FINAL included
    assert done.stdout.splitlines()[-1] == (
        "DAG finished: 4/5 nodes done, 1 failed; node jobs: 4 runs, 4 checkpoints, 0 evictions"
    )
    out = _lines(run / "sweep.dag.dagman.out")
    job_line = re.compile(r"Node train_m000 job proc \(\d+\.0\.0\) completed successfully; "
                          r"1 run, 2 checkpoints, 0 evictions$")  # fmt: skip
    assert any(job_line.search(line) for line in out), out
    status = [line.split(" ", 2)[2] for line in out if " nodes total: " in line]
    assert all(a != b for a, b in itertools.pairwise(status)), status  # a line per change only

    watched = {m.member: m for m in snapshot.members}
    board = pd.read_csv(collect(run).leaderboard, dtype={"member": str}).set_index("member")
    data = gather(run, use_defaults=False)
    condor = data.condor.set_index("member")
    shown = data.members.set_index("member")
    for member in ("m000", "m001"):
        train = watched[member].train
        expected = [1, 2, 0]
        assert [train.total(c) for c in ("runs", "checkpoints", "evictions")] == expected
        for table in (board, condor, shown):
            assert table.loc[member, ["runs", "checkpoints", "evictions"]].tolist() == expected
    assert "Training jobs of 2 member(s), in all: 2 runs, 4 checkpoints, 0 evictions;" in (
        render_html(data, [], [], [])
    )
    # the real cause, with the hold reason, where it said "inference did not finish"
    held = "Transfer input files failure: reading from file missing_test.zip: No such file or directory"  # fmt: skip
    assert board.at["m001", "status"] == f"failed: no predictions (inference held: {held})"
    assert shown.at["m001", "status"] == f"failed: no predictions (inference held: {held})"
    assert condor.at["m001", "note"] == held and board.at["m000", "status"] == "ok"
    assert watched["m001"].note == held
    assert f"m001 infer: held: {held[:40]}" in summary_line(snapshot)


# --- a real sweep on the local backend (slow) --------------------------------------------------

MEMBER = Path("members") / "m000"


@pytest.fixture(scope="module")
def sweep_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-member sweep of a tiny CNN: 2 epochs, a checkpoint (exit 85) after the first."""
    from condorml.job.synth import make_synthetic_dataset

    folder = tmp_path_factory.mktemp("local-sweep")
    make_synthetic_dataset(
        folder / "data", n_train=40, n_test=10, seed=5, size=(48, 48), make_zips=True
    )
    spec = folder / "spec.toml"
    spec.write_text(tiny_sweep_spec(folder / "data", members=1, retries=0))
    return spec


@pytest.fixture(scope="module")
def reference_run(sweep_spec: Path) -> Path:
    """The sweep run with ``condorml sweep --submit --backend local``, never interrupted."""
    run_dir = sweep_spec.parent / "reference"
    done = condorml_cli(
        "sweep",
        str(sweep_spec),
        "--out",
        str(run_dir),
        "--submit",
        "--backend",
        "local",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return run_dir


def _weights(run_dir: Path) -> dict:
    import torch

    checkpoint = torch.load(
        run_dir / MEMBER / "ckpt" / "model.pth", map_location="cpu", weights_only=True
    )
    return checkpoint["model"]


def _assert_same_model(run_dir: Path, reference: Path) -> None:
    import torch

    ours, theirs = _weights(run_dir), _weights(reference)
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    # and so the same predictions
    assert (run_dir / "dog_probs.csv").read_bytes() == (reference / "dog_probs.csv").read_bytes()


def _train_clusters(run_dir: Path) -> list[int]:
    events = _events(run_dir / "sweep.dag.nodes.log")
    return [
        e.cluster
        for e in events
        if int(e.type) == SUBMIT and e["LogNotes"] == "DAG Node: train_m000"
    ]


def _state(run_dir: Path) -> dict:
    import json

    state = json.loads((run_dir / MEMBER / "ckpt" / "state.json").read_text())
    return {k: state[k] for k in ("epoch", "batch", "finished", "checkpoints", "runs")}


def _training_process(run_dir: Path) -> int | None:
    """The pid of the training job running in one of the local backend's sandboxes."""
    sandboxes = str(run_dir / ".condorml-local" / "execute")
    for entry in Path("/proc").iterdir():
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if cwd.startswith(sandboxes) and b"train" in command:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds the job through /proc")
def test_a_member_rerun_from_a_rescue_dag_resumes_from_its_last_checkpoint(
    sweep_spec: Path, reference_run: Path
) -> None:
    """Issue 5: a training job killed after its first checkpoint (as an OOM kill would) fails
    its node; ckpt/ comes back with the job, and the re-run from the rescue DAG resumes from it."""
    run_dir = sweep_spec.parent / "killed"
    train_log = run_dir / MEMBER / "train.log"  # the job's own log: DAGMan's has no transfers
    process = subprocess.Popen(
        [sys.executable, "-m", "condorml", "sweep", str(sweep_spec), "--out", str(run_dir),
         "--submit", "--backend", "local"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed = False
    try:  # once the job checkpointed (exit 85) after epoch 1, kill its restarted trainer
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not killed:
            if train_log.exists() and "Finished transferring output files" in train_log.read_text():
                pid = _training_process(run_dir)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
            time.sleep(0.02)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert killed, "the restarted training job was not found"
    assert process.returncode == 1, stdout + stderr
    assert "DONE train_m000" not in (run_dir / "sweep.dag.rescue001").read_text()
    # the checkpoint of epoch 1 came back with the killed job, where the re-run takes its input
    assert _state(run_dir)["epoch"] == 1
    first_epoch = _lines(run_dir / MEMBER / "ckpt" / "metrics.csv")
    assert len(first_epoch) == 2  # header, epoch 1

    again = condorml_cli("run", str(run_dir / "sweep.dag"), timeout=300)
    assert again.returncode == 0, again.stderr

    # the re-run started from epoch 1: one start that trained epoch 2, no checkpoint exit
    _, rerun = _train_clusters(run_dir)
    assert _shape(_events(train_log), rerun) == [
        "000", "040 in-start", "040 in-done", "001", "040 out-start", "040 out-done", "005",
    ]  # fmt: skip
    assert "1 of 2 epochs done" in (run_dir / MEMBER / f"train.{rerun}.0.err").read_text()
    metrics = _lines(run_dir / MEMBER / "ckpt" / "metrics.csv")
    assert metrics[:2] == first_epoch and [row.split(",")[0] for row in metrics[1:]] == ["1", "2"]
    # as many runs, checkpoints and epochs as the run that was never interrupted, the same model
    assert _state(run_dir) == _state(reference_run)
    _assert_same_model(run_dir, reference_run)


def _eviction_seed(probability: float, window: tuple[float, float]) -> int:
    """A seed whose draws evict the training job's second start only, and not the inference job."""
    from types import SimpleNamespace

    for seed in range(1000):
        evictions = Evictions(probability, window, seed=seed)
        train = evictions.rng(SimpleNamespace(cluster=1, proc=0))
        hits = []
        for _ in range(3):  # as Starter draws: evicted?, then when
            hits.append(train.random() < probability)
            if hits[-1]:
                train.uniform(*window)
        infer = evictions.rng(SimpleNamespace(cluster=2, proc=0)).random() < probability
        if hits == [False, True, False] and not infer:
            return seed
    raise AssertionError("no seed found")


@pytest.mark.slow
def test_a_sweep_with_injected_evictions_trains_the_same_model(
    sweep_spec: Path, reference_run: Path
) -> None:
    run_dir = sweep_spec.parent / "evicted"
    written = condorml_cli("sweep", str(sweep_spec), "--out", str(run_dir))
    assert written.returncode == 0, written.stderr
    seed = _eviction_seed(0.5, (0.5, 2.0))
    run = condorml_cli(
        "run",
        str(run_dir / "sweep.dag"),
        "--inject-evictions",
        "0.5",
        "--eviction-window",
        "2",
        "--seed",
        str(seed),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr

    (train,) = _train_clusters(run_dir)
    shape = _shape(_events(run_dir / "sweep.dag.nodes.log"), train)
    assert shape.count("004") == 1 and shape.count("001") == 2  # evicted once, then resumed
    assert _state(run_dir) == _state(reference_run)
    _assert_same_model(run_dir, reference_run)


# --- the job's environment ----------------------------------------------------------------------

ENV_JOB = """\
    #!/bin/sh
    env > env.txt
"""


def test_jobs_get_a_jobs_environment_not_the_submitting_shells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a pool: what HTCondor sets, getenv and environment; nothing else of the shell's."""
    monkeypatch.setenv("CONDORML_SECRET", "shell-only")
    monkeypatch.setenv("CONDORML_PASSED", "by-getenv")
    _script(tmp_path / "env.sh", ENV_JOB)
    _submit(tmp_path / "plain.sub", "env.sh", transfer_output_files="env.txt", request_cpus="1",
            initialdir="plain")  # fmt: skip
    _submit(tmp_path / "asked.sub", "env.sh", transfer_output_files="env.txt",
            initialdir="asked", getenv="CONDORML_PASS*",
            environment='"CONDORML_PASSED=environment-wins GREETING=\'hello world\'"')  # fmt: skip
    _submit(tmp_path / "local.sub", "env.sh", universe="local", initialdir="here",
            should_transfer_files=None, when_to_transfer_output=None)  # fmt: skip
    for folder in ("plain", "asked", "here"):
        (tmp_path / folder).mkdir()
    dag = _dag(
        tmp_path / "env.dag", "JOB plain plain.sub\nJOB asked asked.sub\nJOB here local.sub\n"
    )
    assert _run(dag).exit_code == 0

    def env(folder: str) -> dict[str, str]:
        lines = (tmp_path / folder / "env.txt").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    plain, asked, here = env("plain"), env("asked"), env("here")
    assert "CONDORML_SECRET" not in plain and "CONDORML_PASSED" not in plain
    assert plain["OMP_NUM_THREADS"] == "1" and plain["BATCH_SYSTEM"] == "HTCondor"
    assert plain["_CONDOR_SCRATCH_DIR"] == plain["_CONDOR_JOB_IWD"] != str(tmp_path / "plain")
    # this machine's condorml stands in for the job image's
    assert plain["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert asked["CONDORML_PASSED"] == "environment-wins" and asked["GREETING"] == "hello world"
    assert "CONDORML_SECRET" not in asked
    # a local-universe job runs on the access point with no PATH of the submitter's
    assert "CONDORML_SECRET" not in here and str(Path(sys.executable).parent) not in here.get(
        "PATH", ""
    )
    assert here["_CONDOR_JOB_IWD"] == str(tmp_path / "here")


def test_every_proc_of_a_cluster_gets_its_own_process_macros(tmp_path: Path) -> None:
    """``$(Cluster)``/``$(Process)`` are HTCondor's older names of ``$(ClusterId)``/``$(ProcId)``."""
    from condorml.backends.local.jobspec import load_jobs

    sub = tmp_path / "q.sub"
    sub.write_text("executable = /bin/echo\narguments = $(Cluster).$(Process) $(ClusterId).$(ProcId)\n"
                   "output = out.$(Process)\nqueue 2\n")  # fmt: skip
    jobs = load_jobs(sub, tmp_path, 7)
    assert [job.arguments for job in jobs] == [["7.0", "7.0"], ["7.1", "7.1"]]


# --- SCRIPT DEFER and PRE_SKIP (as HTCondor 25.0's DAGMan, checked on a pool) -------------------

SEQ_PRE = """\
    #!/bin/sh
    # $1 node, $2 codes "a,b,c": the n-th run exits the n-th code (the last repeats), $3 $RETRY
    n=$(( $(cat "$1.count" 2>/dev/null || echo 0) + 1 )); echo $n > "$1.count"
    code=$(echo "$2" | awk -F, -v n=$n '{ if (n > NF) n = NF; print $n }')
    echo "$1 $3 $code" >> pre.log
    exit $code
"""


def test_a_deferred_pre_script_holds_no_job_slot_and_uses_no_retry(tmp_path: Path) -> None:
    """While slow's PRE script is deferred, other (same category, MAXJOBS 1, --max-jobs 1) runs;
    deferrals keep $RETRY at 0 and only the failure (exit 1) uses slow's one retry."""
    _script(tmp_path / "seq.sh", SEQ_PRE)
    dag = _counted_dag(
        tmp_path,
        """\
        JOB slow counted.sub
        SCRIPT DEFER 4 1 PRE slow seq.sh slow 4,4,1,0 $RETRY
        RETRY slow 1
        CATEGORY slow c
        JOB other counted.sub
        CATEGORY other c
        MAXJOBS c 1
        """,
    )
    result = _run(dag, max_jobs=1)
    assert (result.exit_code, sorted(result.done)) == (0, ["other", "slow"])
    assert _runs(tmp_path) == ["other", "slow"]
    assert _lines(tmp_path / "pre.log") == ["slow 0 4", "slow 0 4", "slow 0 1", "slow 1 0"]
    out = (tmp_path / "test.dag.dagman.out").read_text()
    assert out.count("Deferring PRE script of node slow for 1 seconds (exit status was 4)...") == 2


def test_removing_a_dag_ends_a_deferred_pre_script_at_once(tmp_path: Path) -> None:
    """As condor_rm on a pool: no wait for the 60 s DEFER; the rescue DAG keeps w to run."""
    _script(tmp_path / "seq.sh", SEQ_PRE)
    dag = _counted_dag(
        tmp_path,
        """\
        JOB v counted.sub
        JOB w counted.sub
        PARENT v CHILD w
        SCRIPT DEFER 4 60 PRE w seq.sh w 4 $RETRY
        RETRY w 2
        """,
    )
    runner, results = DagRunner(dag, RunOptions()), []
    thread = threading.Thread(target=lambda: results.append(runner.run()))
    thread.start()
    pre_log = tmp_path / "pre.log"
    deadline = time.monotonic() + 30
    while not pre_log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    runner.cancel.set()
    thread.join(20)
    assert not thread.is_alive() and time.monotonic() - started < 10
    result = results[0]
    assert result.interrupted and result.done == ["v"] and not result.failed
    rescue = _lines(result.rescue)
    assert "DONE v" in rescue and "RETRY w 2" in rescue and "DONE w" not in rescue


def test_pre_skip_after_a_retry_or_after_deferrals_ends_the_node_done(tmp_path: Path) -> None:
    """q's PRE fails, then (retried) exits PRE_SKIP; r's is deferred twice, then exits PRE_SKIP.
    Neither job nor r's POST script runs; each node gets DAGMan's 034 event in the nodes log."""
    _script(tmp_path / "seq.sh", SEQ_PRE)
    dag = _counted_dag(
        tmp_path,
        """\
        JOB q counted.sub
        SCRIPT PRE q seq.sh q 1,3 $RETRY
        PRE_SKIP q 3
        RETRY q 2
        JOB r counted.sub
        SCRIPT DEFER 4 1 PRE r seq.sh r 4,4,3 $RETRY
        SCRIPT POST r seq.sh r-post 0 $RETRY
        PRE_SKIP r 3
        """,
    )
    result = _run(dag)
    assert (result.exit_code, sorted(result.done)) == (0, ["q", "r"])
    assert _runs(tmp_path) == []
    assert sorted(_lines(tmp_path / "pre.log")) == ["q 0 1", "q 1 3", "r 0 3", "r 0 4", "r 0 4"]
    skips = [e for e in _events(tmp_path / "test.dag.nodes.log") if int(e.type) == 34]
    assert sorted(e["SkipEventLogNotes"] for e in skips) == ["DAG Node: q", "DAG Node: r"]
    assert {(e.cluster, e.proc) for e in skips} == {(0, 2**31 - 1)}
    assert sorted(e["Subproc"] for e in skips) == [1, 2]
    out = (tmp_path / "test.dag.dagman.out").read_text()
    assert "PRE_SKIP return value 3 indicates we are done (successfully) with node r" in out
    assert not (tmp_path / "test.dag.rescue001").exists()


def test_script_arguments_are_split_at_spaces_quotes_and_all(tmp_path: Path) -> None:
    """DAGMan 25.0 passed ``"1 0"`` to a PRE script as two arguments, ``"1`` and ``0"``."""
    _script(tmp_path / "script.sh", SCRIPT)
    dag = _counted_dag(tmp_path, 'JOB a counted.sub\nSCRIPT PRE a script.sh PRE 0 "1 0" $RETRY\n')
    assert _run(dag).exit_code == 0
    assert _lines(tmp_path / "scripts.log") == ['PRE "1 0" 0']


def test_a_start_refused_as_text_file_busy_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another job's fork can hold this sandbox's fresh copy of the executable open for a moment
    (seen at 1,000 members: the node was held, "Text file busy"); the start is tried again."""
    import errno

    from condorml.backends.local import starter

    real, refused = subprocess.Popen, []

    def busy_twice(*args, **kwargs):
        if len(refused) < 2:
            refused.append(args[0])
            raise OSError(errno.ETXTBSY, "Text file busy")
        return real(*args, **kwargs)

    monkeypatch.setattr(starter.subprocess, "Popen", busy_twice)
    _script(tmp_path / "job.sh", "#!/bin/sh\necho ran > out.txt\n")
    _submit(tmp_path / "job.sub", "job.sh", transfer_output_files="out.txt")
    result = _run(_dag(tmp_path / "test.dag", "JOB a job.sub\n"))
    assert (result.exit_code, result.done, len(refused)) == (0, ["a"], 2)
    assert (tmp_path / "out.txt").read_text() == "ran\n"
