"""What publishing live progress through Chirp costs a training run.

The same `condorml train` run (synthetic data, fp32, CPU) twice in one invocation, alternating:
baseline without a Chirp configuration (nothing is published), and with `_CONDOR_CHIRP_CONFIG`
pointing at a Chirp server (the local backend's proxy, which htchirp speaks to as to a starter's),
so the trainer's background thread publishes every --interval seconds and at each epoch end.
Prints the training images/s of each (median over --repeats) and the ratio, and how many
attributes and event-log lines the run sent.

Usage:  python bench/live_overhead.py [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from condorml.backends.local.chirp import ChirpProxy, JobAttributes
from condorml.backends.local.eventlog import EventLog, JobId
from condorml.job.synth import make_synthetic_dataset


def _train(data: Path, folder: Path, epochs: int, env: dict[str, str]) -> float:
    """One training run; its mean training images/s (metrics.csv)."""
    ckpt = folder / "ckpt"
    args = [sys.executable, "-m", "condorml", "train", "--data-dir", str(data / "train.zip"),
            "--checkpoint-dir", str(ckpt), "--epochs", str(epochs), "--image-size", "64",
            "--batch-size", "32", "--precision", "fp32", "--no-exit-on-checkpoint"]  # fmt: skip
    subprocess.run(args, check=True, cwd=folder, env=env, capture_output=True)
    lines = (ckpt / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    speeds = [float(line.split(",")[header.index("images_per_s")]) for line in lines[1:]]
    return statistics.mean(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_synthetic_dataset(
            work / "data", n_train=800, n_test=4, seed=0, size=(64, 64), make_zips=True
        )
        base_env = {k: v for k, v in os.environ.items() if k != "_CONDOR_CHIRP_CONFIG"}
        base_env["OMP_NUM_THREADS"] = "1"
        plain, live, sent = [], [], {}
        for repeat in range(options.repeats):
            folder = work / f"plain{repeat}"
            folder.mkdir()
            plain.append(_train(work / "data", folder, options.epochs, base_env))
            folder = work / f"live{repeat}"
            folder.mkdir()
            attributes = JobAttributes(folder / "ad.json", {"ClusterId": "1", "ProcId": "0"})
            events = EventLog([folder / "train.log"], JobId(1, 0))
            with ChirpProxy(events, attributes) as proxy:
                config = proxy.write_config(folder)
                live.append(_train(work / "data", folder, options.epochs,
                                   {**base_env, "_CONDOR_CHIRP_CONFIG": str(config)}))  # fmt: skip
            log = (folder / "train.log").read_text()
            sent = {"attribute events (033)": log.count("\n033 ") + log.startswith("033 "),
                    "event-log lines (008)": log.count("\n008 ") + log.startswith("008 "),
                    "attributes in the ad": len(json.loads((folder / "ad.json").read_text()))}  # fmt: skip
        p, q = statistics.median(plain), statistics.median(live)
        print(
            f"{options.epochs} epochs x 800 images at 64 px, 1 thread, median of {options.repeats}"
        )
        print(f"baseline (no Chirp):      {p:8.1f} images/s  {[round(x, 1) for x in plain]}")
        print(f"publishing through Chirp: {q:8.1f} images/s  {[round(x, 1) for x in live]}")
        print(f"ratio live / baseline: {q / p:.3f}")
        print("sent by the last live run: " + ", ".join(f"{k} {v}" for k, v in sent.items()))


if __name__ == "__main__":
    main()
