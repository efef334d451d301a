"""The local backend's own overhead per job, on a DAG of trivial jobs.

A DAG of --jobs independent nodes (default 200) runs a job that reads its input file and writes
one output (a shell script that takes a few milliseconds), with a job log, stdout/stderr, file
transfer in and out. Baseline, in the same invocation: the very same script run directly the same
number of times with the same parallelism (plain subprocesses, no sandbox, no logs). Overhead per
job = (DAG wall time - baseline wall time) x parallelism / jobs. Target: <= 0.2 s per job.

Usage:  python bench/local_overhead.py [--jobs 200] [--parallel 1,2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from condorml.backends.local.dagman import DagRunner, RunOptions

JOB = """#!/bin/sh
cat "$1" > "out_$2.txt"
echo "job $2 done"
"""

SUBMIT = """universe = vanilla
executable = job.sh
arguments = "input.txt $(n)"
transfer_input_files = input.txt
transfer_output_files = out_$(n).txt
should_transfer_files = YES
log = jobs.log
output = job_$(n).out
error = job_$(n).err
request_cpus = 1
request_memory = 64MB
queue
"""


def write_dag(folder: Path, jobs: int) -> Path:
    """A DAG of ``jobs`` independent nodes running ``job.sh``."""
    folder.mkdir(parents=True)
    (folder / "job.sh").write_text(JOB)
    (folder / "job.sh").chmod(0o755)
    (folder / "input.txt").write_text("hello\n")
    (folder / "job.sub").write_text(SUBMIT)
    lines = []
    for n in range(jobs):
        lines += [f"JOB n{n} job.sub", f'VARS n{n} n="{n}"']
    dag = folder / "bench.dag"
    dag.write_text("\n".join(lines) + "\n")
    return dag


def baseline(folder: Path, jobs: int, parallel: int) -> float:
    """Seconds to run the job script ``jobs`` times directly, ``parallel`` at a time."""

    direct = folder.with_name(f"{folder.name}-direct")  # its own: the DAG's outputs are checked
    shutil.rmtree(direct, ignore_errors=True)
    direct.mkdir()
    (direct / "input.txt").write_text("hello\n")

    def one(n: int) -> None:
        subprocess.run([str(folder / "job.sh"), "input.txt", str(n)], cwd=direct, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(jobs)))
    return time.perf_counter() - started


def run_dag(dag: Path, parallel: int) -> float:
    """Seconds for the local backend to run the DAG with at most ``parallel`` jobs at once."""
    started = time.perf_counter()
    result = DagRunner(dag, RunOptions(max_jobs=parallel)).run()
    elapsed = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"the benchmark DAG failed: {result.failed}")
    # it really ran every job: outputs transferred back, one 005 per job in the nodes log
    import htcondor2

    jobs = len(list(dag.parent.glob("job_*.out")))
    outputs = len(list(dag.parent.glob("out_*.txt")))
    log = htcondor2.JobEventLog(str(dag.with_name(dag.name + ".nodes.log")))
    ended = sum(e.type == htcondor2.JobEventType.JOB_TERMINATED for e in log.events(0))
    if not jobs == outputs == ended == len(result.done):
        raise SystemExit(f"incomplete run: {jobs} stdout, {outputs} outputs, {ended} 005 events")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--parallel", default="1,2", help="comma-separated parallelism levels")
    args = parser.parse_args()
    print(f"local backend overhead: {args.jobs} trivial jobs, {os.cpu_count()} CPUs")
    for parallel in (int(p) for p in args.parallel.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            dag = write_dag(Path(tmp) / "dag", args.jobs)
            base = baseline(dag.parent, args.jobs, parallel)
            total = run_dag(dag, parallel)
            overhead = (total - base) * parallel / args.jobs
            print(
                f"parallel {parallel}: DAG {total:.2f} s, the jobs alone {base:.2f} s, "
                f"ratio {total / base:.1f}x; overhead {overhead * 1000:.0f} ms/job "
                f"(target <= 200 ms) -> {'OK' if overhead <= 0.2 else 'ABOVE TARGET'}"
            )


if __name__ == "__main__":
    main()
