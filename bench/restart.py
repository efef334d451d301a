"""Restart cost: from exit 85 to the next trained batch, before and after issue 21's changes.

A training job that exits 85 is started again by HTCondor (or the local backend) with the same
command, and the new process resumes from the checkpoint. This benchmark measures that restart:
from the process start (``python -m condorml train ...``, as a job's wrapper runs it) to the end
of the first training batch after resuming, split into its phases.

Both variants run in this invocation, alternating: the baseline is the package as it was at
``--baseline`` (a commit before the changes; ``git archive`` of its ``condorml/`` into a
temporary folder, put first on ``PYTHONPATH``), the other is this checkout. Each variant first
trains epoch 1 of the demo's job (the synthetic cat/dog zip of 2,000 images, the CNN at 64 px,
batch 32, Adam, a checkpoint exit every epoch) in its own sandbox (``_CONDOR_SCRATCH_DIR``: the
decoded-image cache lives there, as in a job, and survives the restarts). Each measured run then
starts from a fresh copy of that checkpoint, and a small start-up hook (``--child``) stamps the
phases and ends the process right after the first batch.

Phases (each a span between two stamps, in the order they happen):

- interpreter: process start until the hook runs (Python, ``site``, the editable install);
- CLI imports: typer, rich and ``condorml.cli``, until ``main()`` runs;
- option parsing: typer builds the command and parses the options, until the command first
  imports torch or ``condorml.job``;
- torch + job imports: until ``train()`` is called (logging and the configuration too);
- setup: ``train()`` until the data is listed (validation, device, threads, the model's name);
- data listing (:func:`~condorml.job.layouts.training_set`), model check
  (``Architecture.check_input``), fingerprint (``ImageSet.fingerprint``), checkpoint load
  (:func:`~condorml.job.train_state.resume_point`), image cache open
  (:func:`~condorml.job.imagecache.load_decoded`), each its function's own time;
- model build: the trainer built (batches, model, optimizer, scheduler);
- state restore: the checkpoint's states loaded into them;
- first batch: the run's start (job ad, TensorBoard, the epoch's order) and the first step;
- other: what falls between the stamps above.

Usage:  python bench/restart.py [--runs 7] [--baseline REV] [--keep DIR]
"""

from __future__ import annotations

import os
import sys
import time

EVENTS_ENV = "CONDORML_BENCH_RESTART_EVENTS"  # the file the child writes its stamps to
BASELINE_REV = "ef24582"  # the last commit before issue 21's restart changes
GOAL_S = 1.5
# (module, attribute, stamp name): functions whose entry and exit the child stamps.
WATCHED = (
    ("condorml.job.train", "train", "train"),
    ("condorml.job.train", "training_set", "data listing"),
    ("condorml.job.models", "Architecture.check_input", "model check"),
    ("condorml.job.layouts", "ImageSet.fingerprint", "fingerprint"),
    ("condorml.job.train", "resume_point", "checkpoint load"),
    ("condorml.job.train", "load_decoded", "image cache open"),
    ("condorml.job.train", "_Trainer.__init__", "model build"),
    ("condorml.job.train", "_Trainer.restore", "state restore"),
    ("condorml.job.train", "train_step", "first batch"),
)
# The command's first imports of the job's side (the CLI's own imports take no torch).
FIRST_JOB_IMPORTS = frozenset({"torch", "condorml.job.devices", "condorml.job.train"})
PHASES = (
    "interpreter",
    "CLI imports",
    "option parsing",
    "torch + job imports",
    "setup",
    "data listing",
    "model check",
    "fingerprint",
    "checkpoint load",
    "image cache open",
    "model build",
    "state restore",
    "first batch",
    "other",
)


# --- the child: runs condorml train with stamps -------------------------------------------------
# It imports nothing beyond what the interpreter has loaded at start, so that the stamps time
# condorml's start-up and not the hook's.


def child(events_file: str, argv: list[str]) -> None:
    """Run ``condorml`` with ``argv``, stamping the phases; exit right after the first batch."""
    import importlib.abc
    import runpy

    stamps: list[tuple[str, float]] = [("hook", time.monotonic())]
    modules = {module for module, _, _ in WATCHED} | {"condorml.cli"}

    def done() -> None:
        stamps.append(("cpu", sum(os.times()[:2])))
        with open(events_file, "w") as handle:
            handle.write(repr(stamps))
        os._exit(0)

    def watch(name: str, fn: object, last: bool = False) -> object:
        def watched(*args: object, **kwargs: object) -> object:
            stamps.append((f"{name}>", time.monotonic()))
            result = fn(*args, **kwargs)  # type: ignore[operator]
            stamps.append((f"{name}<", time.monotonic()))
            if last:
                done()
            return result

        return watched

    def patch(module: object, name: str) -> None:
        if name == "condorml.cli":
            main = module.main  # type: ignore[attr-defined]
            module.main = lambda: (stamps.append(("main", time.monotonic())), main())  # type: ignore[attr-defined]
        for module_name, attribute, stamp in WATCHED:
            if module_name != name:
                continue
            owner_name, _, function = attribute.rpartition(".")
            owner = getattr(module, owner_name) if owner_name else module
            if hasattr(owner, function):
                wrapped = watch(stamp, getattr(owner, function), last=stamp == "first batch")
                setattr(owner, function, wrapped)

    class Stamps(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object, target: object = None) -> object:
            if name in FIRST_JOB_IMPORTS and not any(s == "job imports" for s, _ in stamps):
                stamps.append(("job imports", time.monotonic()))
            if name not in modules:
                return None
            for finder in sys.meta_path:
                found = None if finder is self else finder.find_spec(name, path, target)  # type: ignore[attr-defined]
                if found is not None:
                    break
            else:
                return None
            loader, run = found.loader, found.loader.exec_module

            def exec_module(module: object) -> None:
                run(module)
                patch(module, name)

            loader.exec_module = exec_module
            return found

    sys.meta_path.insert(0, Stamps())
    sys.argv = ["condorml", *argv]
    try:
        runpy.run_module("condorml", run_name="__main__", alter_sys=True)
    finally:  # it ended before a batch: say so with the stamps it has
        stamps.append(("exit", time.monotonic()))
        with open(events_file, "w") as handle:
            handle.write(repr(stamps))


# --- the parent: data, sandboxes, alternating runs ----------------------------------------------


def phases(started: float, stamps: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds per phase of one run, from the parent's start time and the child's stamps."""
    at = dict(stamps)
    if "first batch<" not in at:
        raise RuntimeError(f"the run ended before its first batch: {stamps}")
    if "state restore<" not in at:
        raise RuntimeError("the run did not resume from the checkpoint")
    spans = {
        "interpreter": at["hook"] - started,
        "CLI imports": at["main"] - at["hook"],
        "option parsing": at["job imports"] - at["main"],
        "torch + job imports": at["train>"] - at["job imports"],
        "setup": at["data listing>"] - at["train>"],
        "first batch": at["first batch<"] - at["state restore<"],
    }
    for name in PHASES:
        if f"{name}>" in at and name not in spans:
            spans[name] = at[f"{name}<"] - at[f"{name}>"]
    total = at["first batch<"] - started
    spans["other"] = total - sum(spans.values())
    spans["total"] = total
    spans["cpu"] = at["cpu"]
    return {name: spans.get(name, 0.0) for name in (*PHASES, "total", "cpu")}


def main() -> None:
    import argparse
    import shutil
    import statistics
    import subprocess
    import tarfile
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs of each variant")
    parser.add_argument("--baseline", default=BASELINE_REV, help="the commit to compare with")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    work = args.keep or Path(tempfile.mkdtemp(prefix="condorml-restart-"))
    work.mkdir(parents=True, exist_ok=True)

    from condorml.job.synth import make_synthetic_dataset

    data = work / "data"
    if not (data / "train.zip").exists():
        make_synthetic_dataset(data, n_train=2000, n_test=0, make_zips=True, replace=True)
    baseline = work / "baseline-code"
    if not (baseline / "condorml").exists():
        archive = subprocess.run(["git", "-C", str(repo), "archive", args.baseline, "condorml"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(baseline, filter="data")
    command = ["train", "--data-dir", str(data / "train.zip"), "--checkpoint-dir", "ckpt",
               "--epochs", "6", "--checkpoint-every", "1", "--model", "cnn", "--image-size", "64",
               "--lr", "0.001", "--batch-size", "32", "--optimizer", "adam", "--seed", "0",
               "--precision", "auto", "--device", "auto", "--member", "0"]  # fmt: skip
    variants = {"baseline": str(baseline), "this checkout": ""}

    def environment(sandbox: Path, pythonpath: str) -> dict[str, str]:
        env = {**os.environ, "_CONDOR_SCRATCH_DIR": str(sandbox)}
        env.pop("PYTHONPATH", None)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        return env

    for name, pythonpath in variants.items():  # epoch 1, its checkpoint and the warm cache
        sandbox = work / f"sandbox-{name.replace(' ', '-')}"
        if not (sandbox / "ckpt").exists():
            sandbox.mkdir()
            done = subprocess.run([sys.executable, "-m", "condorml", *command], cwd=sandbox,
                                  env=environment(sandbox, pythonpath), capture_output=True)  # fmt: skip
            if done.returncode != 85:
                raise SystemExit(
                    f"{name}: epoch 1 exited {done.returncode}: {done.stderr[-2000:]!r}"
                )
            shutil.copytree(sandbox / "ckpt", sandbox / "ckpt.epoch1")
            shutil.copytree(sandbox / ".condorml-previous", sandbox / "previous.epoch1")

    figures: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    events = work / "events.txt"
    for run in range(args.runs + 1):  # run 0 of each warms the page cache: not counted
        for name, pythonpath in variants.items():
            sandbox = work / f"sandbox-{name.replace(' ', '-')}"
            for kept, folder in (
                ("ckpt.epoch1", "ckpt"),
                ("previous.epoch1", ".condorml-previous"),
            ):
                shutil.rmtree(sandbox / folder, ignore_errors=True)
                shutil.copytree(sandbox / kept, sandbox / folder)
            env = {**environment(sandbox, pythonpath), EVENTS_ENV: str(events)}
            started = time.monotonic()
            done = subprocess.run([sys.executable, __file__, "--child", *command], cwd=sandbox,
                                  env=env, capture_output=True)  # fmt: skip
            stamps = __import__("ast").literal_eval(events.read_text())
            try:
                measured = phases(started, stamps)
            except RuntimeError as err:
                raise SystemExit(f"{name}: {err}\n{done.stderr.decode()[-3000:]}") from None
            if run:
                figures[name].append(measured)
            print(f"run {run} {name:14s} {measured['total']:6.2f} s", file=sys.stderr)

    medians = {name: {phase: statistics.median(r[phase] for r in runs)
                      for phase in (*PHASES, "total", "cpu")}
               for name, runs in figures.items()}  # fmt: skip
    base, now = medians["baseline"], medians["this checkout"]
    print(f"exit 85 to the next trained batch, median of {args.runs} runs each, alternating "
          f"(baseline: {args.baseline})")  # fmt: skip
    print(f"{'phase':22s} {'baseline':>9s} {'now':>9s}")
    for phase in PHASES:
        print(f"{phase:22s} {base[phase]:8.3f}s {now[phase]:8.3f}s")
    print(f"{'total':22s} {base['total']:8.3f}s {now['total']:8.3f}s   "
          f"(goal: under {GOAL_S} s: {'met' if now['total'] < GOAL_S else 'not met'})")  # fmt: skip
    print(f"{'CPU time (user+sys)':22s} {base['cpu']:8.3f}s {now['cpu']:8.3f}s")
    pairs = zip(figures["baseline"], figures["this checkout"], strict=True)
    ratios = [b["total"] / n["total"] for b, n in pairs]
    totals = ", ".join(f"{r['total']:.2f}" for r in figures["this checkout"])
    print(
        f"baseline / now: {statistics.median(ratios):.2f}x (median of the runs' ratios; "
        f"totals now: {totals} s)"
    )
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(os.environ[EVENTS_ENV], sys.argv[2:])
    else:
        main()
