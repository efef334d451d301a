"""A DAG of 200 tiny nodes on the real pool: do DAGMan and condorml's monitoring keep up?

Builds a run folder shaped like a sweep of ``--members`` members (default 100: 200 nodes,
``train_mNNN`` then ``infer_mNNN``, each member's jobs in ``members/mNNN`` with their own logs,
as ``condorml sweep`` lays them out), whose jobs are shell scripts: a training job checkpoints
once (writes ``ckpt/``, exits 85: HTCondor transfers it and the starter runs the job again in
its sandbox, without a new execution), then exits 0;
an inference job writes ``out/`` and exits 0. It submits the DAG to the pool with
``condor_submit_dag`` (as the pool's submitting user) and, while DAGMan runs it, refreshes a
:class:`condorml.monitor.watch.Watch` of the folder every second, timing each refresh.

At the end it checks that nothing was lost: DAGMan's exit, every node done, every training job
with 1 run and 1 checkpoint in condorml's view and in the pool's own ``condor_history``
(``NumJobStarts``, ``CheckpointNumber``: 0 after one, as the pool numbers them), the jobs' count; and it
times ``condorml report``'s reading of the run's HTCondor accounting (``member_accounting``).

The baseline of the ratio is DAGMan's own pace: the refresh time against the mean time between
two node completions (a watch that refreshes faster than nodes finish keeps up).

Usage (the pool running; more slots make the DAG go faster, e.g.
``CML_POOL_CPUS=16 ../shared/htcondor/pool start`` after ``pool stop``)::

    python bench/pool_dag.py [--members 100] [--keep]
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from condorml.monitor.watch import Watch
from condorml.sweep.accounting import member_accounting
from tests.pool import Pool

TRAIN_SH = """\
#!/bin/sh
# checkpoint once, then finish: one checkpoint transferred back, the job run again in place
if [ -f ckpt/state ]; then echo trained > ckpt/model; exit 0; fi
mkdir -p ckpt && echo 1 > ckpt/state && exit 85
"""
INFER_SH = """\
#!/bin/sh
mkdir -p out && echo "fileid,prob" > out/dog_probs.csv
"""
SUBMIT = """\
executable = {script}
checkpoint_exit_code = {checkpoint}
transfer_checkpoint_files = {output}
transfer_output_files = {output}
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
log = {kind}.log
output = {kind}.$(ClusterId).$(ProcId).out
error = {kind}.$(ClusterId).$(ProcId).err
request_cpus = 1
request_memory = 32M
request_disk = 1M
queue
"""


def write_run(run: Path, members: list[str]) -> None:
    """The run folder: members.csv, the scripts, the submit files, sweep.dag."""
    (run / "members.csv").write_text(
        "member,seed\n" + "".join(f"{m},{i}\n" for i, m in enumerate(members))
    )
    for kind, script, output, checkpoint in (
        ("train", TRAIN_SH, "ckpt", "85"),
        ("infer", INFER_SH, "out", ""),
    ):
        path = run / f"{kind}.sh"
        path.write_text(script)
        path.chmod(0o755)
        text = SUBMIT.format(script=path, checkpoint=checkpoint, output=output, kind=kind)
        if not checkpoint:
            text = "".join(
                line + "\n"
                for line in text.splitlines()
                if not line.startswith("checkpoint_") and not line.startswith("transfer_checkpoint")
            )
        (run / f"{kind}.sub").write_text(text)
    lines = []
    for m in members:
        (run / "members" / m).mkdir(parents=True)
        lines += [f"JOB train_{m} {run / 'train.sub'} DIR members/{m}",
                  f"JOB infer_{m} {run / 'infer.sub'} DIR members/{m}",
                  f"PARENT train_{m} CHILD infer_{m}"]  # fmt: skip
    (run / "sweep.dag").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100, help="members (2 nodes each)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for DAGMan")
    args = parser.parse_args()
    pool, why = Pool.find()
    if pool is None:
        raise SystemExit(why)
    members = [f"m{i:03d}" for i in range(args.members)]
    run = pool.workdir(f"dag{2 * args.members}")
    write_run(run, members)
    pool.own(run)
    slots = pool.check("condor_status -af TotalSlotCpus | head -1", Path("/")).strip()
    started = time.monotonic()
    out = pool.check("condor_submit_dag -batch-name pool-dag-bench sweep.dag", run)
    dagman = pool.submitted_cluster(out)
    print(
        f"{2 * args.members} nodes submitted (DAGMan job {dagman}) to a pool of {slots} CPUs; watching {run}"
    )

    watch = Watch([run])
    refreshes: list[float] = []
    done_at: list[float] = []
    snap = None
    while time.monotonic() - started < args.timeout:
        t = time.perf_counter()
        snap = watch.snapshot()
        refreshes.append(time.perf_counter() - t)
        done_at.append(time.monotonic() - started)
        if snap.finished():
            break
        time.sleep(1)
    wall = time.monotonic() - started
    assert snap is not None
    counts = snap.counts()
    trains = [m.train for m in snap.members]
    runs = sorted({t.total("runs") for t in trains if t is not None})
    ckpts = sorted({t.total("checkpoints") for t in trains if t is not None})
    states = sorted({m.state for m in snap.members})
    print(f"DAG finished: {snap.finished()}, exit {snap.dag_exit}, {wall:.0f} s; member states {states}; "
          f"training runs per member {runs}, checkpoints {ckpts}; node counts {counts}")  # fmt: skip

    history = pool.history(
        f"DAGManJobId == {dagman}", ["DAGNodeName", "NumJobStarts", "CheckpointNumber", "ExitCode"]
    )
    train_rows = [r for r in history if r[0].startswith("train_")]
    starts = sorted({int(r[1]) for r in train_rows})
    checkpointed = sum(r[2] == "0" for r in train_rows)  # numbered from 0
    print(f"condor_history: {len(history)} jobs ({len(train_rows)} training: NumJobStarts {starts}, "
          f"{checkpointed} with CheckpointNumber 0: one checkpoint), exit codes {sorted({r[3] for r in history})}")  # fmt: skip

    t = time.perf_counter()
    rows, _ = member_accounting(run, members)
    accounting = time.perf_counter() - t
    steady = refreshes[1:] or refreshes
    pace = wall / (2 * args.members)
    print(f"watch refresh: first {refreshes[0]:.3f} s, then median {statistics.median(steady):.3f} s, "
          f"max {max(steady):.3f} s over {len(refreshes)} refreshes")  # fmt: skip
    print(
        f"DAGMan's pace: one node every {pace:.3f} s; median refresh / pace = {statistics.median(steady) / pace:.3f}"
    )
    print(
        f"report's HTCondor accounting of {0 if rows is None else len(rows)} members: {accounting:.3f} s"
    )
    print(
        f"peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    lost = []
    if not snap.finished() or snap.dag_exit != 0:
        lost.append("the DAG did not succeed")
    if runs != [1] or ckpts != [1] or states != ["infer: done"]:
        lost.append("watch's view differs from what ran")
    if len(history) != 2 * args.members or starts != [1] or checkpointed != args.members:
        lost.append("the pool's history differs from what ran")
    print("nothing lost" if not lost else "LOST: " + "; ".join(lost))
    if not args.keep:
        pool.run(f"rm -rf {shlex.quote(str(run))}", Path("/"))
    raise SystemExit(1 if lost else 0)


if __name__ == "__main__":
    main()
