"""Growth with the member count: watch, report, the collect step and the local backend's DAG.

For 10, 100 and 1,000 members (``--members``), each step runs in a fresh subprocess whose wall
time (of the step itself, imports excluded) and peak RSS (``ru_maxrss`` from ``os.wait4``) are
measured:

1. ``watch``: ``Watch([run]).snapshot()`` of a run whose training jobs run and have sent back
   their first checkpoint (the first refresh), then again after every log grew (training
   finished, inference ran: the second refresh), in the same process;
2. ``collect``: the FINAL node's ``condorml collect`` (the collect step's arguments of
   ``collect.sub``): the ensemble ``dog_probs.csv``, ``leaderboard.csv``, ``metrics.json``;
3. ``report``: ``condorml report`` of the finished run (gather, plots, ``report.html``);
4. ``run``: the local backend running a DAG of the sweep's shape (train -> infer per member, a
   FINAL node) whose jobs are a trivial shell script, against the same jobs run directly with
   the same parallelism: its own cost per node.

The run folders are made without training: one real one-member sweep of a tiny CNN runs first
on the local backend (the template, about 20 s), then each size is ``condorml sweep``'s own run
folder with every member's files copied from the template's member with per-member changes
(metrics, state, probabilities, the predictions' sidecar; ``model.pth`` hard-linked) and its
event logs (its job logs, DAGMan's nodes log) written by the local backend's own writer
(``EventLog``), event for event as the template's jobs wrote them. The baseline of the memory
figures is a subprocess that imports the same modules and does nothing; the time ratios are
per member against the smallest size. Goals (issue 21): linear growth, a watch refresh under
1 s and a report under 60 s at 1,000 members.

Usage:  python bench/growth.py [--members 10,100,1000] [--run-members 10,100,1000]
                               [--work DIR] [--profile STEP]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# bench.local_overhead (its trivial job, its direct baseline) and tests.helpers (the suite's tiny
# sweep) are imported where used: each measured step's process imports this file, and its peak
# memory is measured against a baseline without them.

N_TRAIN, N_TEST = 40, 100
STEPS = ("watch", "collect", "report", "run")


def condorml(*args: str) -> None:
    """Run ``python -m condorml ARGS``; stop with its output if it fails."""
    done = subprocess.run([sys.executable, "-m", "condorml", *args], capture_output=True,
                          text=True, check=False, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"condorml {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


# --- the template: one real member -------------------------------------------------------------


def template(work: Path) -> Path:
    """A real one-member sweep of a tiny CNN run on the local backend (made once per --work)."""
    run = work / "template" / "run"
    if (run / "metrics.json").exists():
        return run
    from condorml.job.synth import make_synthetic_dataset
    from tests.helpers import IMAGE_SIZE, tiny_sweep_spec

    folder = run.parent
    shutil.rmtree(folder, ignore_errors=True)
    make_synthetic_dataset(folder / "data", n_train=N_TRAIN, n_test=N_TEST, seed=5,
                           size=(IMAGE_SIZE, IMAGE_SIZE), make_zips=True)  # fmt: skip
    spec = folder / "spec.toml"
    spec.write_text(tiny_sweep_spec(folder / "data", members=1, retries=0))
    condorml("sweep", str(spec), "--out", str(run), "--submit", "--backend", "local")
    return run


# --- a run folder of N members made from the template ------------------------------------------


class Synth:
    """Writes an N-member run folder from the template's member, in two phases (see module)."""

    def __init__(self, tpl: Path, run: Path, members: int) -> None:
        from condorml.sweep.rundir import RunDir
        from tests.helpers import tiny_sweep_spec

        self.tpl, self.run = tpl, run
        shutil.rmtree(run, ignore_errors=True)
        spec = run.parent / f"spec{members}.toml"
        spec.write_text(tiny_sweep_spec(tpl.parent / "data", members=members, retries=0))
        condorml("sweep", str(spec), "--out", str(run))
        self.members = RunDir(run).member_ids()
        self.member0 = tpl / "members" / RunDir(tpl).member_ids()[0]
        self.metrics = list(csv.DictReader(io.StringIO((self.member0 / "ckpt/metrics.csv").read_text())))  # fmt: skip
        self.state = json.loads((self.member0 / "ckpt/state.json").read_text())
        self.ad = json.loads(next((tpl / ".condorml-local/ads").glob("*.json")).read_text())
        self.probs = (self.member0 / "out/dog_probs.csv").read_text().splitlines()
        self.sidecar = json.loads((self.member0 / "out/dog_probs.csv.json").read_text())
        self.streams = {
            kind: {p.name.split(".")[-1]: p.read_bytes() for p in self.member0.glob(f"{kind}.*.*")
                   if p.suffix in (".out", ".err")}
            for kind in ("train", "infer")
        }  # fmt: skip
        self.nodes = run / "sweep.dag.nodes.log"
        self.trains: list = []

    def _log(self, cluster: int, member: str, kind: str):
        from condorml.backends.local.eventlog import EventLog, JobId

        log = self.run / "members" / member / f"{kind}.log"
        return EventLog([log], JobId(cluster), f"{kind}_{member}", self.nodes)

    def _epoch(self, events, member: str, epoch: int) -> None:
        """What the template's training job logged for one epoch and its checkpoint: 033
        attribute updates (Chirp), the 008 lines, the checkpoint's output transfer."""
        row = self._row(member, epoch)
        for name, value in (("CondormlEpochs", 2), ("CondormlBatches", 3),
                            ("CondormlCheckpoints", epoch - 1), ("CondormlEpoch", epoch),
                            ("CondormlBatch", 0), ("CondormlTrainLoss", row["train_loss"]),
                            ("CondormlTrainAcc", row["train_acc"]),
                            ("CondormlValLoss", row["val_loss"]),
                            ("CondormlValAcc", row["val_acc"]), ("CondormlBatch", 3),
                            ("CondormlImagesPerSecond", row["images_per_s"]),
                            ("CondormlCheckpoints", epoch), ("CondormlUpdated", int(time.time()))):  # fmt: skip
            events.attribute_update(name, str(value)[:6], None if epoch == 1 else str(value)[:6])
        events.generic(f"condorml: epoch {epoch}/2 val_loss {float(row['val_loss']):.4f}")
        events.generic(f"condorml: checkpoint {epoch} at epoch {epoch} batch 0")
        events.transfer("output", finished=False)
        events.transfer("output", finished=True)

    def _row(self, member: str, epoch: int) -> dict[str, str]:
        factor = 1 + random.Random(f"{member}-{epoch}").uniform(-0.05, 0.05)
        row = dict(self.metrics[epoch - 1])
        for key in ("train_loss", "val_loss"):
            row[key] = repr(float(row[key]) * factor)
        row["val_acc"] = repr(min(1.0, float(row["val_acc"]) * (2 - factor)))
        return row

    def _ckpt(self, folder: Path, member: str, epoch: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rows = [self._row(member, e) for e in range(1, epoch + 1)]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(self.metrics[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (folder / "metrics.csv").write_text(text.getvalue())
        state = {**self.state, "member": member, "epoch": epoch, "checkpoints": epoch,
                 "runs": epoch, "finished": epoch == self.state["epochs"]}  # fmt: skip
        (folder / "state.json").write_text(json.dumps(state, indent=1))
        model = folder / "model.pth"
        model.unlink(missing_ok=True)
        os.link(self.member0 / "ckpt/model.pth", model)

    def phase1(self) -> None:
        """Every training job runs and has sent back its first checkpoint (spooled)."""
        (self.run / "sweep.dag.dagman.out").write_text(
            time.strftime("%m/%d/%y %H:%M:%S") + " ****** condorml local backend (DAGMan "
            "semantics) STARTING UP\n"
        )  # fmt: skip
        ads = self.run / ".condorml-local" / "ads"
        ads.mkdir(parents=True, exist_ok=True)
        for i, member in enumerate(self.members):
            cluster = i + 1
            events = self._log(cluster, member, "train")
            events.submitted()
            events.transfer("input", finished=False)
            events.transfer("input", finished=True)
            events.executing(self.run / f".condorml-local/execute/dir_{cluster}_0_0_1", 1, 1024)
            self._epoch(events, member, 1)
            self._ckpt(self.run / f".condorml-local/spool/{cluster}.0/ckpt", member, 1)
            (ads / f"{cluster}.0.json").write_text(json.dumps({**self.ad, "CondormlEpoch": 1}))
            for stream, data in self.streams["train"].items():
                (self.run / "members" / member / f"train.{cluster}.0.{stream}").write_bytes(data)
            self.trains.append(events)

    def phase2(self) -> None:
        """Every training job finished (its checkpoint back, its spool gone) and every member's
        inference ran; DAGMan's FINAL node not yet."""
        count = len(self.members)
        for i, (member, events) in enumerate(zip(self.members, self.trains, strict=True)):
            self._epoch(events, member, 2)
            events.terminated(0)
            shutil.rmtree(self.run / f".condorml-local/spool/{i + 1}.0")
            folder = self.run / "members" / member
            self._ckpt(folder / "ckpt", member, 2)
            cluster = count + i + 1
            infer = self._log(cluster, member, "infer")
            infer.submitted()
            infer.transfer("input", finished=False)
            infer.transfer("input", finished=True)
            infer.executing(self.run / f".condorml-local/execute/dir_{cluster}_0_0_1", 1, 1024)
            self._predictions(folder / "out", member)
            infer.transfer("output", finished=False)
            infer.transfer("output", finished=True)
            infer.terminated(0)
            for stream, data in self.streams["infer"].items():
                (folder / f"infer.{cluster}.0.{stream}").write_bytes(data)

    def _predictions(self, out: Path, member: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        rng = random.Random(member)
        lines = [self.probs[0]]
        for line in self.probs[1:]:
            fileid, prob = line.split(",")
            noisy = min(max(float(prob) + rng.uniform(-0.3, 0.3), 0.0), 1.0)
            lines.append(f"{fileid},{noisy!r}")
        (out / "dog_probs.csv").write_text("\n".join(lines) + "\n")
        sidecar = json.loads(json.dumps(self.sidecar))
        for model in sidecar.get("models", []):
            model["member"] = member
        (out / "dog_probs.csv.json").write_text(json.dumps(sidecar, indent=2) + "\n")

    def finish(self) -> None:
        """DAGMan's FINAL node ran: its exit status in dagman.out."""
        with open(self.run / "sweep.dag.dagman.out", "a") as out:
            out.write(time.strftime("%m/%d/%y %H:%M:%S") + " **** condorml local backend "
                      "EXITING WITH STATUS 0\n")  # fmt: skip


# --- the steps, each in its own subprocess -----------------------------------------------------


def child(step: str, run: Path, profile: bool) -> None:
    """One step in this process; prints one JSON line of seconds. ``watch`` waits for a line
    on stdin between its two refreshes."""
    from condorml.monitor.report import make_report
    from condorml.monitor.watch import Watch
    from condorml.sweep.collect import collect

    def timed(function, *args):
        started = time.perf_counter()
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            value = profiler.runcall(function, *args)
            stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative")
            stats.print_stats(35)
        else:
            value = function(*args)
        return time.perf_counter() - started, value

    found: dict[str, float] = {}
    if step == "imports":
        import pandas  # noqa: F401  (every step reads frames)
    elif step == "watch":
        watch = Watch([run])
        found["first"], snap = timed(watch.snapshot)
        assert {m.state for m in snap.members} == {"train: running"}, {m.state for m in snap.members}  # fmt: skip
        print("ready", flush=True)
        sys.stdin.readline()
        found["second"], snap = timed(watch.snapshot)
        assert {m.state for m in snap.members} == {"infer: done"}, {m.state for m in snap.members}  # fmt: skip
        found["third"], _ = timed(watch.snapshot)  # nothing changed
    elif step == "collect":
        labels = Path(json.loads((run / "run.json").read_text())["data"]["labels"]["local"])
        found["seconds"], result = timed(collect, run, 1, labels)
        assert result.joined and not result.failed, result.failed
    elif step == "report":
        found["seconds"], result = timed(make_report, run)
        assert result.html.exists()
    print(json.dumps(found), flush=True)


def measure(step: str, run: Path, synth: Synth | None = None, profile: bool = False):
    """Run ``step`` in a fresh subprocess: (its JSON line, peak RSS in MiB)."""
    argv = [sys.executable, __file__, "--child", step, str(run)] + (["--profile", step] if profile else [])  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    if step == "watch":
        line = process.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"watch: {line}")
        assert synth is not None
        synth.phase2()  # every log grows between the two refreshes
        synth.finish()
        process.stdin.write("go\n")
        process.stdin.flush()
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"step {step} on {run} failed ({process.returncode})")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


# --- the local backend's DAG of trivial jobs ---------------------------------------------------

SUBMIT = """universe = vanilla
initialdir = $(member_dir)
executable = {root}/job.sh
arguments = "input.txt $(n)"
transfer_input_files = {root}/input.txt
transfer_output_files = out_$(n).txt
should_transfer_files = YES
log = {kind}.log
output = {kind}_$(n).out
error = {kind}_$(n).err
request_cpus = 1
request_memory = 64MB
queue
"""


def write_dag(folder: Path, members: int) -> tuple[Path, int]:
    """A DAG of the sweep's shape: train_mX -> infer_mX per member in members/mX, a FINAL."""
    from bench.local_overhead import JOB

    folder.mkdir(parents=True)
    (folder / "job.sh").write_text(JOB)
    (folder / "job.sh").chmod(0o755)
    (folder / "input.txt").write_text("hello\n")
    for kind in ("train", "infer", "collect"):
        (folder / f"{kind}.sub").write_text(SUBMIT.format(root=folder, kind=kind))
    lines = []
    for i in range(members):
        member = f"m{i:04d}"
        (folder / "members" / member).mkdir(parents=True)
        for kind in ("train", "infer"):
            lines += [f"JOB {kind}_{member} {kind}.sub",
                      f'VARS {kind}_{member} n="{kind}{i}" member_dir="members/{member}"']  # fmt: skip
        lines.append(f"PARENT train_{member} CHILD infer_{member}")
    lines += ["FINAL collect collect.sub", 'VARS collect n="collect" member_dir="."']
    dag = folder / "sweep.dag"
    dag.write_text("\n".join(lines) + "\n")
    return dag, 2 * members + 1


def run_child(dag: Path) -> None:
    from condorml.backends.local.dagman import DagRunner, RunOptions

    started = time.perf_counter()
    result = DagRunner(dag, RunOptions(max_jobs=2)).run()
    seconds = time.perf_counter() - started
    if result.exit_code != 0 or result.failed:
        raise SystemExit(f"the DAG failed: {result.failed}")
    print(
        json.dumps({"seconds": seconds, "done": len(result.done) + result.final_done}), flush=True
    )


def run_step(work: Path, members: int) -> tuple[dict, float]:
    """The DAG's time and peak RSS, and the same jobs run directly (2 at a time)."""
    folder = work / f"dag{members}"
    shutil.rmtree(folder, ignore_errors=True)
    dag, nodes = write_dag(folder, members)
    from bench.local_overhead import baseline as direct_run

    baseline = direct_run(folder, nodes, 2)  # the same jobs run directly, 2 at a time
    process = subprocess.Popen([sys.executable, __file__, "--child", "run", str(dag)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return {"failed": True, "nodes": nodes, "baseline": baseline}, usage.ru_maxrss / 1024
    found = json.loads(output.strip().splitlines()[-1])
    if found["done"] != nodes:
        raise SystemExit(f"the DAG of {members} members ran {found['done']} of {nodes} nodes")
    found["baseline"], found["nodes"] = baseline, nodes
    found["per_node"] = (found["seconds"] - baseline) * 2 / nodes
    return found, usage.ru_maxrss / 1024


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="10,100,1000", help="comma-separated sizes")
    parser.add_argument("--run-members", default="10,100,1000",
                        help="sizes for the local backend's DAG ('' to skip it)")  # fmt: skip
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")  # fmt: skip
    parser.add_argument("--profile", choices=STEPS[:3], help="print cProfile's top functions of a step")  # fmt: skip
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, path = args.child
        if step == "run":
            run_child(Path(path))
        else:
            child(step, Path(path), args.profile == step)
        return
    sizes = [int(n) for n in args.members.split(",") if n]
    run_sizes = [int(n) for n in args.run_members.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"growth with the member count ({os.cpu_count()} CPUs); template: a real "
              f"one-member sweep, {N_TEST} test images", flush=True)  # fmt: skip
        tpl = template(work)
        _, base_rss = measure("imports", tpl)
        print(f"baseline: a subprocess importing the modules: peak RSS {base_rss:.0f} MiB")
        rows: dict[int, dict[str, tuple[float, float]]] = {}
        for n in sizes:
            started = time.perf_counter()
            synth = Synth(tpl, work / f"run{n}", n)
            synth.phase1()
            made = time.perf_counter() - started
            watch, watch_rss = measure("watch", synth.run, synth, args.profile == "watch")
            made_all = time.perf_counter() - started
            collected, collect_rss = measure("collect", synth.run, profile=args.profile == "collect")  # fmt: skip
            reported, report_rss = measure("report", synth.run, profile=args.profile == "report")  # fmt: skip
            rows[n] = {
                "watch, first refresh": (watch["first"], watch_rss),
                "watch, refresh after every log grew": (watch["second"], watch_rss),
                "watch, refresh of nothing new": (watch["third"], watch_rss),
                "collect step": (collected["seconds"], collect_rss),
                "report (with report.html)": (reported["seconds"], report_rss),
            }
            print(f"{n} members: run folder made in {made:.1f} s (phase 1) + "
                  f"{made_all - made - watch['first'] - watch['second']:.1f} s", flush=True)  # fmt: skip
        for n in run_sizes:
            found, rss = run_step(work, n)
            if found.get("failed"):
                print(f"{n} members: the local DAG of {found['nodes']} trivial nodes FAILED "
                      "(its reason above); not in the table", flush=True)  # fmt: skip
                continue
            rows.setdefault(n, {})["run: local DAG of trivial jobs"] = (found["seconds"], rss)
            print(f"{n} members: local DAG of {found['nodes']} trivial nodes {found['seconds']:.2f} s, "
                  f"the jobs alone {found['baseline']:.2f} s: {found['per_node'] * 1000:.1f} ms per node "
                  f"(2 at a time)", flush=True)  # fmt: skip
        report(rows, base_rss)


def report(rows: dict[int, dict[str, tuple[float, float]]], base_rss: float) -> None:
    """The table: seconds and peak RSS per step and size, the time per member, and the growth
    of the time per added member from one size to the next (1 = linear, > 1 = superlinear)."""
    sizes = sorted(rows)
    steps = list(dict.fromkeys(step for row in rows.values() for step in row))
    print(f"\nseconds of the step, peak RSS of its process (baseline {base_rss:.0f} MiB); "
          "ms per member; growth = time per added member, each size step against the first")  # fmt: skip
    print("| step | " + " | ".join(f"{n} members" for n in sizes) + " | ms per member, "
          + " / ".join(str(n) for n in sizes) + " | growth |")  # fmt: skip
    print("|---|" + "---|" * (len(sizes) + 2))
    for step in steps:
        known = [(n, *rows[n][step]) for n in sizes if step in rows[n]]
        cells = [f"{rows[n][step][0]:.3f} s, {rows[n][step][1]:.0f} MiB" if step in rows[n] else "-"
                 for n in sizes]  # fmt: skip
        per = " / ".join(f"{s / n * 1000:.2f}" for n, s, _ in known)
        added = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairwise(known)]
        growth = " / ".join(f"{x / added[0]:.2f}" if added[0] > 0 else "-" for x in added)
        print(f"| {step} | " + " | ".join(cells) + f" | {per} | {growth or '-'} |")
    big = max(sizes)
    if big >= 1000 and "report (with report.html)" in rows[big]:
        refresh = max(rows[big][s][0] for s in rows[big] if s.startswith("watch"))
        report_s = rows[big]["report (with report.html)"][0]
        print(f"\ngoals at {big} members: watch refresh {refresh:.2f} s (goal < 1 s) -> "
              f"{'OK' if refresh < 1 else 'MISSED'}; report {report_s:.1f} s (goal < 60 s) -> "
              f"{'OK' if report_s < 60 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
