"""Sweep generation time: spec -> DAG + submit files + members.csv, for 100, 1,000 and 10,000 members.

Prints seconds per size and per member; the target is <= 2 s for 10,000 members, growing
linearly (the per-member time should stay flat). Each size is the best of --repeat runs into a
fresh folder.

Usage:  python bench/sweep_scale.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from condorml.sweep.plan import plan_sweep, write_sweep

SPEC = """
[data]
train = "train.zip"
test = "test.zip"
[train]
epochs = 20
[grid]
lr = [{lrs}]
[ensemble]
members = 10
[resources]
gpus = 1
gpu_capability_min = 7.5
container_image = "docker://condorml/condorml:0.1.0"
profile = "chtc"
"""


def generate(members: int, work: Path) -> float:
    """Seconds to plan and write a sweep of ``members`` members (10 seeds per learning rate)."""
    lrs = ", ".join(repr(1e-4 * (1 + i)) for i in range(members // 10))
    spec = work / f"spec{members}.toml"
    spec.write_text(SPEC.format(lrs=lrs))
    run = work / f"run{members}-{time.monotonic_ns()}"
    started = time.perf_counter()
    write_sweep(plan_sweep(spec, run))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate(100, work)  # warm-up: imports
        results = {
            n: min(generate(n, work) for _ in range(args.repeat)) for n in (100, 1_000, 10_000)
        }
    base = results[100] / 100
    for n, seconds in results.items():
        per = seconds / n
        print(
            f"{n:>6} members: {seconds:6.3f} s, {per * 1e6:7.1f} us/member ({per / base:4.2f}x the 100-member rate)"
        )
    print(f"10,000 members in {results[10_000]:.2f} s (target <= 2 s)")


if __name__ == "__main__":
    main()
