"""Any classes, any model (issue 20): 10 classes against 2, resnet18 against its ceiling, one run.

The N-class path against the 2-class one on the same images, and a torchvision model chosen by
name against its own training step's ceiling, each with its baseline measured in the same run.

Prints, for the device condorml picks (``--device``, default auto: CUDA where there is one):

1. The CHTC CNN on one set of images labelled twice, so that only the labels differ: 10 classes
   (class folders, ``train/<class>/K.jpg``) and 2 (cat/dog: a ``path,label`` CSV beside the data,
   ``--labels-csv``, mapping the ten classes alternately to cat and dog). Both arms read the same
   decoded-image cache (its key is the files, not their labels).

   * training, in rounds: each round trains both arms ``--epochs`` more epochs (the trainer
     resumes from its checkpoint), in alternating order (A B, B A, ...); the first epoch of each
     arm (decoding, warm-up) is not counted. Three figures per arm and round: the median over
     its epochs of ``images_per_s`` in ``metrics.csv`` (the training loop's rate, validation
     excluded), and the batch size over the median and over the lower-quartile time of one
     batch of the loop (timed between the trainer's progress calls). The batch figures tell
     the arms' own speed apart from other work on the machine, which slows whole stretches of
     batches down (up to 10x for two threads on two shared cores) rather than all of them.
   * inference: ``infer``'s images/s (``InferResult.images_per_s``: decoding, model, writing) of
     each arm's model on the same test images, writing ``probs.csv`` (10 classes) and
     ``dog_probs.csv`` (cat/dog): after each round's training, two calls per arm (A B B A),
     the faster counting (a call takes a fraction of a second: other work easily slows it).

   Then the ratios 10-class / 2-class of every round: median [min .. max]; goal >= 0.90.
2. ``resnet18`` by name, 10 classes, trained by condorml (``--precision auto``), against its
   ceiling: the same model's training step (zero_grad, forward + cross-entropy under condorml's
   autocast, backward, Adam, fused where the device has it, as the trainer builds it) on ready
   random tensors in condorml's layout (channels-last, the input in the dtype condorml's input
   normaliser produces, the same batch size), without data and without reading the loss back.
   In rounds, each ``--resnet-epochs`` condorml epochs and a ceiling measurement of as many
   steps back to back (alternating which comes first: the same work, so that a stretch of
   other work on the machine weighs the same on both); the ratio of each round as mean rates
   (``metrics.csv`` against steps / time), medians (a batch against a step) and lower
   quartiles; goal >= 85%.
3. The device; on CUDA also the GPU's utilisation, sampled every 0.1 s while the training
   epochs run (validation included) with ``torch.cuda.utilization``, which needs pynvml: it is
   said to be unmeasured without.

The machines here are shared and noisy: compare the ratios, each between measurements made
seconds apart, not the absolute figures. About 3 minutes on 2 CPU cores with little else running
(much longer when other work takes the cores); ``--quick``: under a minute.

Usage:  python bench/classes.py [--images 1920] [--size 128x96] [--image-size 96] [--epochs 3]
            [--repeat 11] [--resnet-size 64] [--resnet-epochs 1] [--resnet-repeat 7]
            [--device auto] [--data DIR] [--work DIR] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from condorml.job.devices import (
    autocast,
    job_cpus,
    keep_freed_memory_for_reuse,
    resolve_device,
    resolve_precision,
)
from condorml.job.files import CHECKPOINT_FILE, METRICS_FILE
from condorml.job.infer import InferConfig, infer
from condorml.job.layouts import training_set
from condorml.job.models import build_model, logits_of
from condorml.job.synth import make_synthetic_dataset, parse_size
from condorml.job.train import TrainConfig, train

BATCH = 64  # condorml's default batch size: every arm and the ceiling
CLASSES = 10
TWO_CLASSES = ("cat", "dog")
RESNET = "resnet18"


# --- the data: one set of images, two labellings -------------------------------------------------


@dataclass(frozen=True)
class Data:
    """The images and their two labellings.

    Attributes
    ----------
    root : Path
        The training data; its own layout gives the N-class labels.
    two_classes_csv : Path
        ``path,label`` beside the data: the same images as cat/dog.
    test : Path
        The test images for inference.
    classes : tuple of str
        The N classes.
    n_train : int
        Training images.
    """

    root: Path
    two_classes_csv: Path
    test: Path
    classes: tuple[str, ...]
    n_train: int


def prepare_data(args: argparse.Namespace, work: Path) -> Data:
    """Make the synthetic set (or take ``--data``) and write the two-class labels beside it."""
    root = args.data
    if root is None:
        root = work / "data"
        made = {"images": args.images, "size": args.size, "classes": CLASSES}
        marker = work / "data.json"
        if not marker.is_file() or json.loads(marker.read_text()) != made:
            marker.unlink(missing_ok=True)
            make_synthetic_dataset(
                root,
                n_train=args.images,
                n_test=args.images // 2,
                size=parse_size(args.size),
                classes=CLASSES,
                layout="folders",
                test_layout="flat",
                replace=True,
            )
            marker.write_text(json.dumps(made))
    test = root / "test" if (root / "test").is_dir() else root / "train"
    listed = training_set(root)
    try:
        classes = listed.classes or ()
        if listed.labels is None or len(classes) < 3:
            raise SystemExit(f"{root}: needs a labelled training set of 3 classes or more")
        csv_path = work / "two_classes.csv"
        with open(csv_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            for image, label in zip(listed.files, listed.labels, strict=True):
                path = os.path.relpath(root / image.name, csv_path.parent)
                writer.writerow([path, TWO_CLASSES[label % 2]])
        n_train = len(listed.files)
    finally:
        listed.source.close()
    return Data(root, csv_path, test, tuple(classes), n_train)


# --- condorml's trainer, resumed round after round --------------------------------------------


class BatchClock:
    """A :class:`condorml.progress.Progress` that times every batch of the training epochs (the
    time between two of the trainer's progress calls: the batch's data, the step, the reports;
    the decoding progress is ignored) and says whether an epoch is running (the GPU is sampled
    only then)."""

    def __init__(self) -> None:
        self.active = threading.Event()
        self.durations: list[float] = []
        self._last = 0.0

    def start(self, description: str, total: int, completed: int = 0) -> None:
        if description.startswith("epoch"):
            self._last = time.perf_counter()
            self.active.set()

    def advance(self, steps: int = 1, status: str = "") -> None:
        if self.active.is_set():
            now = time.perf_counter()
            self.durations.append(now - self._last)
            self._last = now

    def finish(self, summary: str = "") -> None:
        self.active.clear()

    def close(self) -> None:
        self.active.clear()

    def take(self) -> list[float]:
        """The batch times recorded since the last call."""
        durations, self.durations = self.durations, []
        return durations


def fast_quartile(seconds: Sequence[float]) -> float:
    """The lower quartile of some durations: the time of a step that other work on the machine
    did not slow down, as long as it left a quarter of them alone."""
    return statistics.quantiles(seconds, n=4)[0] if len(seconds) > 1 else seconds[0]


@dataclass(frozen=True)
class Epochs:
    """What one call of :meth:`Arm.train_more` measured."""

    loop_rates: list[float]  # images_per_s of metrics.csv, one per epoch
    batch_seconds: list[float]  # every batch of those epochs

    @property
    def loop_rate(self) -> float:
        """Median of the epochs' training-loop rates."""
        return statistics.median(self.loop_rates)

    @property
    def batch_rate(self) -> float:
        """Images/s of the median batch."""
        return BATCH / statistics.median(self.batch_seconds)

    @property
    def fast_rate(self) -> float:
        """Images/s of the lower-quartile batch (:func:`fast_quartile`)."""
        return BATCH / fast_quartile(self.batch_seconds)


@dataclass
class Arm:
    """One condorml training run, trained some epochs further at each call: each call resumes
    from the last one's checkpoint (``epochs`` raised; the learning rate is constant)."""

    name: str
    config: TrainConfig
    done: int = 0

    def train_more(self, epochs: int, clock: BatchClock) -> Epochs:
        """Train ``epochs`` more epochs and return their rates."""
        self.done += epochs
        clock.take()
        train(replace(self.config, epochs=self.done), clock)
        rows = read_metrics(self.config.checkpoint_dir / METRICS_FILE)
        if len(rows) != self.done:
            raise SystemExit(f"{self.name}: metrics.csv has {len(rows)} rows, not {self.done}")
        return Epochs([float(row["images_per_s"]) for row in rows[-epochs:]], clock.take())

    @property
    def model_path(self) -> Path:
        return self.config.checkpoint_dir / CHECKPOINT_FILE


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv``."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def make_arm(name: str, data: Data, work: Path, args: argparse.Namespace, image_size: int,
             model: str = "cnn", labels_csv: Path | None = None) -> Arm:  # fmt: skip
    """A fresh training arm writing into ``work/<name>`` (emptied: a kept ``--work`` keeps its
    data, not its runs); every arm shares one decoded-image cache."""
    shutil.rmtree(work / name, ignore_errors=True)
    config = TrainConfig(
        data_dir=data.root, labels_csv=labels_csv, checkpoint_dir=work / name, epochs=1,
        checkpoint_every=1000, model=model, image_size=image_size, batch_size=BATCH,
        precision="auto", device=args.device, cache_dir=work / "cache", exit_on_checkpoint=False,
    )  # fmt: skip
    return Arm(name, config)


def infer_rate(arm: Arm, data: Data, work: Path, device: str) -> float:
    """``infer``'s images/s with ``arm``'s model on the test images."""
    config = InferConfig(models=(arm.model_path,), images=data.test,
                         output=work / f"{arm.name}-predictions.csv", device=device)  # fmt: skip
    return infer(config).images_per_s


# --- the ceiling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ceiling:
    """Images/s of the bare training step: ``mean`` (steps / time), ``median`` and ``fast`` (of
    the median and the lower-quartile step time; on an accelerator, of groups of 5 steps
    between synchronisations)."""

    mean: float
    median: float
    fast: float


def ceiling(model_name: str, n_classes: int, size: int, device: torch.device, precision: str,
            steps: int, warmup: int = 3) -> Ceiling:  # fmt: skip
    """The training step of ``model_name`` on ready random tensors, in condorml's layout.

    The trainer's step without its data and without reading the loss back: zero_grad, forward +
    cross-entropy under condorml's autocast, backward (with a gradient scaler for fp16), Adam
    (fused where available, as ``condorml.job.train`` builds it). The input is channels-last in
    the dtype condorml's input normaliser produces (bf16 under bf16: autocast has no input cast
    to do). Times ``steps`` steps after ``warmup``; on an accelerator it synchronises only
    every 5 steps (``steps`` rounded up), so that its queue never runs dry.
    """
    torch.manual_seed(0)
    model = build_model(model_name, size, num_classes=n_classes)
    model = model.to(device=device, memory_format=torch.channels_last).train()
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.Adam(params, lr=1e-3)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x = torch.randn(BATCH, 3, size, size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_classes, (BATCH,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(logits_of(model(x)), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for _ in range(warmup):
        step()
    synchronize(device)
    group = 1 if device.type == "cpu" else 5
    durations: list[float] = []
    started = last = time.perf_counter()
    for _ in range(max(3, -(-steps // group))):
        for _ in range(group):
            step()
        synchronize(device)
        now = time.perf_counter()
        durations.append(now - last)
        last = now
    return Ceiling(
        len(durations) * group * BATCH / (last - started),
        group * BATCH / statistics.median(durations),
        group * BATCH / fast_quartile(durations),
    )


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing an accelerator)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --- the GPU's utilisation ---------------------------------------------------------------------


class UtilisationSampler:
    """Samples ``torch.cuda.utilization`` every ``period`` seconds while ``clock`` says an epoch
    runs, filed under the name given with :meth:`label`."""

    def __init__(self, device: torch.device, clock: BatchClock, period: float = 0.1) -> None:
        self.device, self.clock, self.period = device, clock, period
        self.samples: dict[str, list[float]] = {}
        self.unavailable = self._check()
        self._label = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _check(self) -> str | None:
        """Why the utilisation cannot be measured here, or None."""
        if self.device.type != "cuda":
            return "no CUDA device"
        try:
            torch.cuda.utilization(self.device)
        except Exception as err:  # ModuleNotFoundError without pynvml, NVML's own errors
            return f"torch.cuda.utilization: {type(err).__name__}: {err}"
        return None

    @contextmanager
    def label(self, name: str) -> Iterator[None]:
        """File the samples taken inside under ``name``."""
        self._label = name
        try:
            yield
        finally:
            self._label = ""

    def __enter__(self) -> UtilisationSampler:
        if self.unavailable is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            label = self._label
            if label and self.clock.active.is_set():
                value = float(torch.cuda.utilization(self.device))
                self.samples.setdefault(label, []).append(value)

    def summary(self, name: str) -> str:
        if self.unavailable is not None:
            return f"not measured ({self.unavailable})"
        values = self.samples.get(name, [])
        if not values:
            return "not measured (no sample fell inside an epoch)"
        return (
            f"mean {statistics.fmean(values):.0f}%, median {statistics.median(values):.0f}% "
            f"({len(values)} samples in the epochs)"
        )


# --- reporting -----------------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str = "{:7.1f}") -> str:
    """``median [min .. max]``."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} [{fmt.format(low).strip()} .. {fmt.format(high).strip()}]"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_device(device: torch.device) -> str:
    threads = f"{job_cpus()} CPU thread(s)"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB; {cpu_model()}, {threads}"
    return f"{device.type}: {cpu_model()}, {threads}"


def warm_up(arm: Arm, clock: BatchClock, gpu: UtilisationSampler, what: str) -> Epochs:
    """The arm's first epoch (decoding into the cache, first steps), not counted."""
    started = time.perf_counter()
    with gpu.label(f"{arm.name} (first epoch)"):
        first = arm.train_more(1, clock)
    print(f"  {arm.name}: first epoch ({what}), not counted: "
          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    return first


# --- the benchmark -------------------------------------------------------------------------------


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def classes_vs_two(data: Data, work: Path, device: torch.device, args: argparse.Namespace,
                   clock: BatchClock, gpu: UtilisationSampler) -> None:  # fmt: skip
    """Part 1: the CNN, N classes against 2, training and inference, in alternating rounds."""
    n = len(data.classes)
    many = make_arm(f"cnn{n}", data, work, args, args.image_size)
    two = make_arm("cnn2", data, work, args, args.image_size, labels_csv=data.two_classes_csv)
    print(f"1. CNN at {args.image_size} px, batch {BATCH}: {n} classes (class folders) against 2 "
          f"(cat/dog, a labels CSV), the same {data.n_train} images; {args.repeat} rounds of "
          f"{args.epochs} epochs per arm, then inference on {data.test}", flush=True)  # fmt: skip
    warm_up(many, clock, gpu, "decoding into the cache, warm-up")
    warm_up(two, clock, gpu, "cache reused, warm-up")
    for arm in (many, two):  # the first inference of a model pays for oneDNN's first primitives
        infer_rate(arm, data, work, args.device)
    trained: dict[str, list[Epochs]] = {many.name: [], two.name: []}
    inferred: dict[str, list[float]] = {many.name: [], two.name: []}
    for r in range(args.repeat):
        order = (many, two) if r % 2 == 0 else (two, many)
        for arm in order:
            with gpu.label(arm.name):
                trained[arm.name].append(arm.train_more(args.epochs, clock))
        calls: dict[str, list[float]] = {many.name: [], two.name: []}
        for arm in (*order, *reversed(order)):  # A B B A: a short call is easily disturbed
            calls[arm.name].append(infer_rate(arm, data, work, args.device))
        for name, values in calls.items():
            inferred[name].append(max(values))
        a, b = trained[many.name][-1], trained[two.name][-1]
        ia, ib = inferred[many.name][-1], inferred[two.name][-1]
        print(f"  round {r + 1} ({n} / 2 classes, img/s): train loop {a.loop_rate:6.0f} / "
              f"{b.loop_rate:6.0f} = {a.loop_rate / b.loop_rate:.3f}, median batch "
              f"{a.batch_rate:6.0f} / {b.batch_rate:6.0f} = {a.batch_rate / b.batch_rate:.3f}, "
              f"fast batch {a.fast_rate:6.0f} / {b.fast_rate:6.0f} = "
              f"{a.fast_rate / b.fast_rate:.3f}; infer {ia:6.0f} / {ib:6.0f} = {ia / ib:.3f}",
              flush=True)  # fmt: skip

    def rates(arm: Arm, measure: str) -> list[float]:
        return [getattr(epochs, measure) for epochs in trained[arm.name]]

    print(f"\n  {args.repeat} rounds; img/s, median of the rounds [min .. max]:")
    for arm, label in ((many, f"{n} classes"), (two, "2 classes")):
        print(
            f"  {label:10s}: train loop (metrics.csv) {spread(rates(arm, 'loop_rate'))}; "
            f"median batch {spread(rates(arm, 'batch_rate'))}; fast-quartile batch "
            f"{spread(rates(arm, 'fast_rate'))}; infer {spread(inferred[arm.name])}, "
            f"best {max(inferred[arm.name]):.1f}"
        )
    print(
        f"  ratio {n}/2 of each round, median [min .. max] (goal >= 0.90 for training and inference):"
    )
    for measure, label in (("loop_rate", "train loop (metrics.csv)"),
                           ("batch_rate", "train, median batch"),
                           ("fast_rate", "train, fast-quartile batch")):  # fmt: skip
        print(
            f"    {label:27s} {spread(ratios(rates(many, measure), rates(two, measure)), '{:.3f}')}"
        )
    infer_ratios = ratios(inferred[many.name], inferred[two.name])
    best = max(inferred[many.name]) / max(inferred[two.name])
    print(f"    {'infer':27s} {spread(infer_ratios, '{:.3f}')}; best / best {best:.3f}")
    if device.type == "cuda":
        for arm in (many, two):
            print(f"  GPU utilisation, {arm.name}: {gpu.summary(arm.name)}")


def model_vs_ceiling(data: Data, work: Path, device: torch.device, precision: str,
                     args: argparse.Namespace, clock: BatchClock,
                     gpu: UtilisationSampler) -> None:  # fmt: skip
    """Part 2: a torchvision model by name against its training step's ceiling."""
    n = len(data.classes)
    arm = make_arm(RESNET, data, work, args, args.resnet_size, model=RESNET)
    print(f"2. {RESNET} by name, {n} classes, {args.resnet_size} px, batch {BATCH}, {precision}: "
          f"{args.resnet_repeat} rounds of ({args.resnet_epochs} condorml epoch(s) of "
          f"{data.n_train} images, a ceiling of as many steps)", flush=True)  # fmt: skip
    first = warm_up(arm, clock, gpu, f"decoding at {args.resnet_size} px, warm-up")
    steps = len(first.batch_seconds) * args.resnet_epochs

    def measure() -> Ceiling:
        return ceiling(RESNET, n, args.resnet_size, device, precision, steps)

    rounds: list[tuple[Ceiling, Epochs]] = []
    for r in range(args.resnet_repeat):
        before = measure() if r % 2 == 0 else None
        with gpu.label(arm.name):
            ours = arm.train_more(args.resnet_epochs, clock)
        roof = before or measure()
        rounds.append((roof, ours))
        print(f"  round {r + 1} (condorml / ceiling, img/s): mean {ours.loop_rate:6.1f} / "
              f"{roof.mean:6.1f} = {ours.loop_rate / roof.mean:6.1%}, median {ours.batch_rate:6.1f}"
              f" / {roof.median:6.1f} = {ours.batch_rate / roof.median:6.1%}, fast quartile "
              f"{ours.fast_rate:6.1f} / {roof.fast:6.1f} = {ours.fast_rate / roof.fast:6.1%}",
              flush=True)  # fmt: skip
    print(f"\n  {args.resnet_repeat} rounds; img/s, median of the rounds [min .. max]:")
    print(
        f"  condorml: train loop (metrics.csv) {spread([o.loop_rate for _, o in rounds])}; median "
        f"batch {spread([o.batch_rate for _, o in rounds])}; fast-quartile batch "
        f"{spread([o.fast_rate for _, o in rounds])}"
    )
    print(
        f"  ceiling : steps / time             {spread([c.mean for c, _ in rounds])}; median "
        f"step  {spread([c.median for c, _ in rounds])}; fast-quartile step  "
        f"{spread([c.fast for c, _ in rounds])}"
    )
    print("  condorml / ceiling of each round, median [min .. max] (goal >= 85%):")
    for label, ours_of, roof_of in (
        ("train loop / steps per time", lambda o: o.loop_rate, lambda c: c.mean),
        ("median batch / median step", lambda o: o.batch_rate, lambda c: c.median),
        ("fast quartiles", lambda o: o.fast_rate, lambda c: c.fast),
    ):
        shares = [ours_of(o) / roof_of(c) for c, o in rounds]
        print(f"    {label:28s} {spread(shares, '{:.1%}')}")
    if device.type == "cuda":
        print(f"  GPU utilisation in training: {gpu.summary(arm.name)}   (goal >= 90% at 224 px)")


# Option defaults: (full run, --quick). Options given on the command line override both.
DEFAULTS: dict[str, tuple[int, int]] = {
    "images": (1920, 640),
    "epochs": (3, 2),
    "repeat": (11, 2),
    "resnet_repeat": (7, 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=int,
        help="synthetic training images over 10 classes, and half as many test images "
        "(default 1920: 1728 for training + 192 for validation, 27 batches of 64)",
    )
    parser.add_argument(
        "--size", default="128x96", help="nominal size of the synthetic JPEGs (default 128x96)"
    )
    parser.add_argument(
        "--image-size", type=int, default=96, help="the CNN's image size (default 96)"
    )
    parser.add_argument("--epochs", type=int, help="CNN epochs per arm and round (default 3)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="CNN rounds, each training both arms and inferring with both (default 11)",
    )
    parser.add_argument(
        "--resnet-size", type=int, help="resnet18's image size (default 64 on the CPU, 224 on CUDA)"
    )
    parser.add_argument(
        "--resnet-epochs",
        type=int,
        default=1,
        help="condorml resnet18 epochs per round (default 1)",
    )
    parser.add_argument(
        "--resnet-repeat",
        type=int,
        help="resnet18 rounds (condorml epochs and a ceiling) (default 7)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        help="as condorml's --device (default auto: cuda where there is one)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="use this set instead of a synthetic one: a folder of labelled training data "
        "with 3 or more classes in a layout condorml reads, test images in DIR/test (else "
        "DIR/train is predicted)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the data, checkpoints and predictions in this folder (default: a "
        "temporary one, removed at the end); a later run with the same --work reuses its "
        "synthetic data if --images and --size are the same, never its runs",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of under a minute: 640 images, 2 rounds of 2 epochs, 2 resnet18 "
        "rounds at 32 px (options given override these)",
    )
    args = parser.parse_args()
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.quick and args.resnet_size is None:
        args.resnet_size = 32

    keep_freed_memory_for_reuse()  # what `condorml train` and `condorml infer` do
    torch.set_num_threads(job_cpus())
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    if args.resnet_size is None:
        args.resnet_size = 224 if device.type == "cuda" else 64
    print(
        f"device {describe_device(device)}; torch {torch.__version__}; --precision auto = "
        f"{precision}; {datetime.date.today().isoformat()}"
    )

    with tempfile.TemporaryDirectory(prefix="condorml-bench-classes-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = prepare_data(args, work)
        clock = BatchClock()
        with UtilisationSampler(device, clock) as gpu:
            print(f"GPU utilisation: {gpu.summary('') if gpu.unavailable else 'sampled'}")
            classes_vs_two(data, work, device, args, clock, gpu)
            print()
            model_vs_ceiling(data, work, device, precision, args, clock, gpu)


if __name__ == "__main__":
    main()
