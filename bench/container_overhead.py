"""What a container costs a job on the pool: N short jobs in a container against N vanilla ones.

Each arm is one cluster of ``--jobs`` jobs (default 20) that run ``/bin/sh -c 'sleep 1'`` with
file transfer on, one CPU each, on the running pool; the container arm adds ``container_image =
docker://localhost:5000/debian:bookworm`` (``pool docker`` and ``pool docker-base`` first). The
arms alternate (vanilla, container, vanilla, container, ... ``--rounds`` times) so that both see
the same machine. Per job, from the pool's own history: the wall time of its execution
(``RemoteWallClockTime``: the starter's set-up of the sandbox, the container's creation, start
and removal, and the second of sleep) and the time from submission to completion
(``CompletionDate - QDate``); the ratio container / vanilla of the medians is the container's
overhead, and the difference in seconds what each job pays for it.

Usage (as root, the pool and its Docker running)::

    python bench/container_overhead.py [--jobs 20] [--rounds 2] [--image docker://...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pool import Pool, wait_for

SUBMIT = """\
executable = /bin/sh
arguments = "-c 'sleep 1'"
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
request_cpus = 1
request_memory = 64M
request_disk = 10M
log = {name}.log
{extra}queue {jobs}
"""


def run_arm(
    pool: Pool, folder: Path, name: str, extra: str, jobs: int
) -> list[tuple[float, float]]:
    """Submit one cluster, wait for it to leave the queue: (wall, turnaround) per job."""
    (folder / f"{name}.sub").write_text(SUBMIT.format(name=name, extra=extra, jobs=jobs))
    pool.own(folder)
    cluster = pool.submitted_cluster(pool.check(f"condor_submit {name}.sub", folder))
    wait_for(lambda: not pool.check(f"condor_q {cluster} -af ProcId", folder).strip(), 900,
             f"cluster {cluster}", every=1)  # fmt: skip
    rows = pool.history(
        f"ClusterId == {cluster}", ["RemoteWallClockTime", "CompletionDate", "QDate", "ExitCode"]
    )
    if len(rows) != jobs or any(r[3] != "0" for r in rows):
        raise SystemExit(
            f"{name}: cluster {cluster} did not end with {jobs} jobs exiting 0: {rows}"
        )
    return [(float(r[0]), float(r[1]) - float(r[2])) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image", default="docker://localhost:5000/debian:bookworm")
    args = parser.parse_args()
    pool, why = Pool.find()
    if pool is None:
        raise SystemExit(why)
    folder = pool.workdir("container-overhead")
    slots = pool.check("condor_status -af TotalSlotCpus | head -1", Path("/")).strip()
    arms = {"vanilla": "", "container": f"container_image = {args.image}\n"}
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    started = time.monotonic()
    for round_ in range(args.rounds):
        for name, extra in arms.items():
            found[name] += run_arm(pool, folder, f"{name}{round_}", extra, args.jobs)
            print(f"round {round_} {name}: done", file=sys.stderr)
    print(f"{args.jobs} jobs x {args.rounds} rounds per arm, a pool of {slots} CPUs, "
          f"{time.monotonic() - started:.0f} s in all; image {args.image}")  # fmt: skip
    print(f"{'arm':10s} {'wall median':>12s} {'wall max':>9s} {'turnaround median':>18s}")
    medians = {}
    for name, rows in found.items():
        walls, turns = [r[0] for r in rows], [r[1] for r in rows]
        medians[name] = (statistics.median(walls), statistics.median(turns))
        print(f"{name:10s} {medians[name][0]:11.1f}s {max(walls):8.1f}s {medians[name][1]:17.1f}s")
    (wall_v, turn_v), (wall_c, turn_c) = medians["vanilla"], medians["container"]
    print(f"container / vanilla: wall {wall_c / wall_v:.2f}x (+{wall_c - wall_v:.1f} s a job), "
          f"turnaround {turn_c / turn_v:.2f}x (+{turn_c - turn_v:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
