"""How long `condorml --help` and each subcommand's --help take, against a bare interpreter start.

Usage:  python bench/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["train"], ["data", "synth"], ["demo"]]


def seconds(argv: list[str], runs: int) -> float:
    """Median wall time of running ``argv`` ``runs`` times."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bare = seconds([sys.executable, "-c", "pass"], args.runs)
    print(f"python -c pass              : {bare * 1000:6.0f} ms")
    for command in COMMANDS:
        took = seconds([sys.executable, "-m", "condorml", *command, "--help"], args.runs)
        label = " ".join(["condorml", *command, "--help"])
        print(f"{label:28s}: {took * 1000:6.0f} ms  ({took / bare:4.1f}x a bare start)")


if __name__ == "__main__":
    main()
