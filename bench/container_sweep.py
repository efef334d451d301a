"""A sweep whose jobs run in condorml's job image against the same sweep run vanilla, on the pool.

Both arms are the container sweep of the pool tests (tests/test_pool_containers.py: 2 members,
2 epochs of the CHTC CNN at 48 px, a checkpoint exit each epoch, then inference and the collect
step): the vanilla arm names this interpreter (``[resources] python``), the container arm the
image (``container_image = docker://IMAGE``). The arms alternate (``--rounds`` times each) on the
same pool; each is timed from ``condorml sweep --submit`` to DAGMan's exit, and both must end
with the same ``dog_probs.csv`` (the image holds this machine's torch; see tests/containers.py).

Usage (as root; the pool with Docker, and the image pushed, e.g. by the test suite's
``job_image`` fixture or tests.containers.build_job_image)::

    python bench/container_sweep.py [--rounds 1] [--image 127.0.0.1:5000/condorml:test]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.containers import JOB_IMAGE
from tests.pool import CONDORML, Pool
from tests.test_pool import _make_data, _wait_dag
from tests.test_pool_containers import CONTAINER_SPEC


def run_arm(pool: Pool, folder: Path, spec: str) -> tuple[float, bytes]:
    """Run one sweep to its end: seconds from submission to DAGMan's exit, and dog_probs.csv."""
    folder.mkdir(parents=True)
    _make_data(folder)
    (folder / "spec.toml").write_text(spec)
    pool.own(folder)
    start = time.monotonic()
    pool.check(f"{CONDORML} sweep spec.toml --out run --submit --backend condor", folder)
    status = _wait_dag(folder / "run")
    seconds = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"{folder}: DAGMan exited with {status}")
    return seconds, (folder / "run" / "dog_probs.csv").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--image", default=JOB_IMAGE)
    args = parser.parse_args()
    pool, why = Pool.find()
    if pool is None:
        raise SystemExit(why)
    container = CONTAINER_SPEC.replace("{image}", args.image)
    python = f'python = "{os.path.abspath(sys.executable)}"'
    vanilla = container.replace(f'container_image = "docker://{args.image}"', python)
    root = pool.workdir(f"bench-container-sweep-{int(time.time())}")
    times: dict[str, list[float]] = {"vanilla": [], "container": []}
    outputs = set()
    for round_ in range(args.rounds):
        for arm, spec in (("vanilla", vanilla), ("container", container)):
            seconds, probs = run_arm(pool, root / f"{arm}{round_}", spec)
            times[arm].append(seconds)
            outputs.add(probs)
            print(f"round {round_ + 1} {arm}: {seconds:.1f} s", flush=True)
    base, boxed = statistics.median(times["vanilla"]), statistics.median(times["container"])
    print(f"sweep wall time, median of {args.rounds}: vanilla {base:.1f} s, container "
          f"{boxed:.1f} s, ratio container/vanilla {boxed / base:.2f}")  # fmt: skip
    print("dog_probs.csv identical in every run" if len(outputs) == 1 else
          f"dog_probs.csv differs between runs ({len(outputs)} versions)")  # fmt: skip


if __name__ == "__main__":
    main()
