"""Adaptive search (issue 14): epochs and best member of random search, halving, TPE, Optuna.

On a synthetic set where hyperparameters matter (lr log-uniform over three decades, batch size,
weight decay; Adam, cosine schedule over the full budget), all in this invocation:

(a) random search of ``--trials`` members to the full budget (``[search]`` without halving),
(b) successive halving over the same members (min_epochs 1, eta 3: rungs at 1, 3, 9 epochs),
(c) TPE + halving (``method = "tpe"``, same trials),
each written by ``condorml sweep`` and run by ``condorml run`` on the local backend, then
(d) the peer a user would pick: the same search in one process with Optuna's own
``TPESampler`` and ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)`` around
condorml's trainer (``stop_after_epoch`` per rung, each trial resuming from its own checkpoint),
(e) (b) again with ``--inject-evictions``: the same members stopped at the same rungs, and the
members' weights compared bit for bit with (b)'s.

For each: epochs consumed (the sum of the members' trained epochs), the best member's validation
metric among the members trained to the full budget, the ensemble's test accuracy (top 3 by the
metric, of those with predictions) and wall time. The baseline of the ratios is (a). Noise: the
standard error of a validation accuracy, sqrt(p (1 - p) / n_val).

Usage:  python bench/search.py [--trials 9] [--epochs 9] [--n-train 3000] [--size 64]
            [--evictions 0.3] [--eviction-window 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from condorml.config import TrainConfig
from condorml.job.synth import make_synthetic_dataset
from condorml.job.train import train

SPACE = """\
[search.space]
lr = { log_uniform = [1e-4, 1e-1] }
batch_size = [16, 32, 64]
weight_decay = { log_uniform = [1e-6, 1e-2] }
"""
METRIC = "val_loss"
ETA = 3
VAL_FRACTION = 0.1  # the trainer's default, for the noise estimate


def spec_text(data: Path, args: argparse.Namespace, method: str, halving: bool) -> str:
    """The sweep spec of one arm: same data, budget, space and seed, by method and halving."""
    text = f"""\
[data]
train = "{data}/train.zip"
test = "{data}/test.zip"
labels = "{data}/test_labels.csv"

[train]
epochs = {args.epochs}
image_size = {args.size}
scheduler = "cosine"

[search]
method = "{method}"
trials = {args.trials}
metric = "{METRIC}"
seed = 0
recheck_seconds = 1

{SPACE}
[ensemble]
top_k = 3

[resources]
cpus = 1
memory = "2GB"

[inference.resources]
cpus = 1
memory = "2GB"

[throttle]
retries = 3
"""
    if halving:
        text += f"\n[search.halving]\nmin_epochs = 1\neta = {ETA}\n"
    return text


def condorml(*args: str) -> None:
    """Run the CLI; on failure print its output and stop (the benchmark asserts nothing else)."""
    done = subprocess.run([sys.executable, "-m", "condorml", *args], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        print(f"condorml {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        raise SystemExit(1)


def run_arm(work: Path, data: Path, args: argparse.Namespace, name: str, method: str,
            halving: bool, run_args: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Write and run one arm's sweep; its figures from the leaderboard and metrics.json."""
    spec, run = work / f"{name}.toml", work / name
    spec.write_text(spec_text(data, args, method, halving))
    started = time.perf_counter()
    condorml("sweep", str(spec), "-o", str(run))
    condorml("run", str(run / "sweep.dag"), *run_args)
    wall = time.perf_counter() - started
    with (run / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    epochs = sum(int(float(r.get("epochs_trained") or r.get("epochs_done") or 0)) for r in rows)
    full = [r for r in rows if int(float(r.get("epochs_done") or 0)) == args.epochs]
    best = min(full, key=lambda r: float(r[METRIC]), default=None)
    scores = (
        json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    )
    return {
        "name": name, "run": run, "epochs": epochs, "wall": wall, "full": len(full),
        "best_params": best and {k: best[k] for k in ("member", "lr", "batch_size", "weight_decay")},
        "best_loss": best and float(best["val_loss"]), "best_acc": best and float(best["val_acc"]),
        "test_acc": scores.get("accuracy"),
        "evictions": sum(int(float(r.get("evictions") or 0)) for r in rows),
        "stops": {r["member"]: (r.get("search_state"), r.get("rungs_done")) for r in rows},
    }  # fmt: skip


def optuna_peer(work: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """(d): Optuna's TPE sampler and successive-halving pruner around condorml's trainer."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    rungs = [1]
    while rungs[-1] * ETA < args.epochs:
        rungs.append(rungs[-1] * ETA)
    rungs.append(args.epochs)
    trained: dict[int, int] = {}
    finals: list[tuple[float, float]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        }
        for rung in rungs:
            config = TrainConfig(
                data_dir=data / "train.zip", checkpoint_dir=work / "optuna" / f"t{trial.number}",
                epochs=args.epochs, stop_after_epoch=rung if rung < args.epochs else None,
                image_size=args.size, scheduler="cosine", checkpoint_every=args.epochs,
                exit_on_checkpoint=False, cache_dir=work / "optuna-cache", **params,
            )  # fmt: skip
            result = train(config)
            trained[trial.number] = result.epochs_done
            last = result.metrics[-1]
            trial.report(last[METRIC], rung)
            if rung < args.epochs and trial.should_prune():
                raise optuna.TrialPruned()
        finals.append((last["val_loss"], last["val_acc"], {"trial": trial.number, **params}))
        return last[METRIC]

    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=pruner)  # fmt: skip
    logging.getLogger("condorml").setLevel(logging.WARNING)
    started = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    best = min(finals, key=lambda f: f[0], default=(None, None, None))
    return {"name": "d", "epochs": sum(trained.values()), "wall": time.perf_counter() - started,
            "full": len(finals), "best_loss": best[0], "best_acc": best[1], "best_params": best[2],
            "test_acc": None,
            "evictions": 0}  # fmt: skip


def same_weights(first: Path, second: Path, member: str) -> bool | None:
    """Whether a member's checkpointed model is bit-identical in two runs (None: one lacks it)."""
    paths = [run / "members" / member / "ckpt" / "model.pth" for run in (first, second)]
    if not all(p.exists() for p in paths):
        return None
    a, b = (torch.load(p, weights_only=True, map_location="cpu")["model"] for p in paths)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def compare_evicted(halving: dict[str, Any], evicted: dict[str, Any]) -> str:
    """(e) against (b): the same members stopped at the same rungs, the same weights."""
    same_stops = halving["stops"] == evicted["stops"]
    complete = [m for m, (state, _) in halving["stops"].items() if state == "complete"]
    checks = {m: same_weights(halving["run"], evicted["run"], m) for m in halving["stops"]}
    identical = sum(1 for m in complete if checks[m])
    all_identical = sum(1 for v in checks.values() if v)
    lines = [
        f"(e) vs (b): same members stopped at the same rungs: {same_stops}",
        f"    complete members' final weights bit-identical: {identical}/{len(complete)}; "
        f"every member's last checkpoint: {all_identical}/{len(checks)}",
        f"    evictions in (e): {evicted['evictions']}",
    ]
    if not same_stops:
        lines.append(f"    (b) {halving['stops']}\n    (e) {evicted['stops']}")
    return "\n".join(lines)


def table(arms: list[dict[str, Any]], n_val: int) -> str:
    """The compact figures table, ratios against (a)."""
    base = arms[0]
    noise = math.sqrt(base["best_acc"] * (1 - base["best_acc"]) / n_val) if base["best_acc"] else 0
    labels = {"a": "(a) random, full budget", "b": "(b) random + halving",
              "c": "(c) TPE + halving", "d": "(d) Optuna TPE + SH pruner, 1 process",
              "e": "(e) (b) with evictions"}  # fmt: skip
    out = ["| arm | epochs | epochs / (a) | full-budget members | best val_loss | best val_acc"
           " | ensemble test acc | wall s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for arm in arms:
        out.append(
            f"| {labels[arm['name']]} | {arm['epochs']} | {arm['epochs'] / base['epochs']:.3f} "
            f"| {arm['full']} | {fmt(arm['best_loss'], '.4f')} | {fmt(arm['best_acc'], '.3f')} "
            f"| {fmt(arm['test_acc'], '.3f')} | {arm['wall']:.0f} |"
        )
    out.append(f"noise: standard error of a val_acc near (a)'s best, n_val = {n_val}: {noise:.3f}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--evictions", type=float, default=0.3)
    parser.add_argument("--eviction-window", type=float, default=8.0)
    parser.add_argument("--keep", type=Path, help="work here and keep the runs (a new folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="condorml-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        data = make_synthetic_dataset(work / "data", n_train=args.n_train, n_test=args.n_test,
                                      size=(args.size, args.size), make_zips=True, seed=0).out  # fmt: skip
        print(f"{args.trials} trials x {args.epochs} epochs, {args.n_train} images at "
              f"{args.size} px, metric {METRIC}; work folder {work}", flush=True)  # fmt: skip
        arms = []
        for name, method, halving in (("a", "random", False), ("b", "random", True),
                                      ("c", "tpe", True)):  # fmt: skip
            arms.append(run_arm(work, data, args, name, method, halving))
            print(f"  ({name}) done: {arms[-1]['epochs']} epochs, {arms[-1]['wall']:.0f} s",
                  flush=True)  # fmt: skip
        arms.append(optuna_peer(work, data, args))
        print(f"  (d) done: {arms[-1]['epochs']} epochs, {arms[-1]['wall']:.0f} s", flush=True)
        evict = ("--inject-evictions", str(args.evictions),
                 "--eviction-window", str(args.eviction_window))  # fmt: skip
        arms.append(run_arm(work, data, args, "e", "random", True, evict))
        print(f"  (e) done: {arms[-1]['epochs']} epochs, {arms[-1]['wall']:.0f} s", flush=True)
        a, b, c, d = arms[:4]
        print()
        print(table(arms, n_val=round(args.n_train * VAL_FRACTION)))
        print(f"epochs (b)/(a) = {b['epochs'] / a['epochs']:.3f}, (c)/(a) = "
              f"{c['epochs'] / a['epochs']:.3f} (goal <= 0.333); (c)/(d) = "
              f"{c['epochs'] / d['epochs']:.3f}")  # fmt: skip
        for arm in arms:
            print(f"best of ({arm['name']}): {arm['best_params']}")
        print(compare_evicted(b, arms[4]))
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
