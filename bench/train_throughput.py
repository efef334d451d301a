"""Training throughput: the CHTC example's pipeline against condorml's trainer, same images, one run.

Prints images/s of
  * the original pipeline (PIL open, Resize((224, 224)), ToTensor, Normalize, DataLoader with its
    default of no workers, the same CNN, Adam, batch 64), steady state = its second epoch;
  * condorml's trainer (decode-once cache, channels-last, --precision auto), steady state = the
    median of its epochs after the first, measured in rounds of 3 epochs each paired with a
    ceiling measurement just before it;
  * the ceiling: the model's own forward+backward rate on random tensors in condorml's layout and
    precision, i.e. training once decoding is out of the way;
and the ratios condorml/original and condorml/ceiling. Machines here are noisy: compare the
ratios, which are measured in the same process minutes apart, not the absolute figures.

Usage:  python bench/train_throughput.py [--images 768] [--size 500x375] [--repeat 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from chtc_original import CatDogDataset
from torch.utils.data import DataLoader

from condorml.job.devices import autocast, job_cpus, keep_freed_memory_for_reuse, resolve_precision
from condorml.job.models import CatAndDogConvNet
from condorml.job.synth import make_synthetic_dataset, parse_size
from condorml.job.train import TrainConfig, train

BATCH = 64


def original_epochs(train_dir: Path, epochs: int = 2) -> list[float]:
    """Images/s of each epoch of the example's training loop."""
    paths = sorted(str(p) for p in train_dir.iterdir())
    loader = DataLoader(CatDogDataset(paths), batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    model = CatAndDogConvNet(224)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        rates.append(len(paths) / (time.perf_counter() - started))
    return rates


def condorml_epochs(data_dir: Path, work: Path, epochs: int) -> tuple[list[float], list[float]]:
    """Train (or resume) condorml's trainer up to ``epochs``; per-epoch (loop, whole) images/s."""
    config = TrainConfig(
        data_dir=data_dir, checkpoint_dir=work / "ckpt", epochs=epochs, checkpoint_every=1000,
        batch_size=BATCH, val_fraction=0.0, cache_dir=work / "cache", exit_on_checkpoint=False,
    )  # fmt: skip
    result = train(config)
    train_rates = [row["images_per_s"] for row in result.metrics]
    images = sum(1 for _ in (data_dir / "train").iterdir())
    epoch_rates = [images / row["seconds"] for row in result.metrics]
    return train_rates, epoch_rates


def ceiling(precision: str, channels_last: bool, steps: int = 20) -> float:
    """Forward+backward images/s of the CNN on ready random tensors (no optimizer, no data).

    The tensors come in the dtype condorml feeds (bf16 under bf16 autocast), so autocast has no
    input cast to do: the strictest ceiling.
    """
    torch.manual_seed(0)
    model = CatAndDogConvNet(224)
    x = torch.randn(
        BATCH, 3, 224, 224, dtype=torch.bfloat16 if precision == "bf16" else torch.float32
    )
    y = torch.randint(0, 2, (BATCH,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    device = torch.device("cpu")

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        loss.backward()

    for _ in range(3):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=768, help="synthetic training images (default 768)"
    )
    parser.add_argument(
        "--size", default="500x375", help="their nominal size (default 500x375, photo-like)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="paired (ceiling, 3 condorml epochs) rounds (default 3)",
    )
    parser.add_argument(
        "--data", type=Path, help="use this Kaggle-layout folder instead of synthetic images"
    )
    args = parser.parse_args()

    torch.set_num_threads(job_cpus())
    precision = resolve_precision("auto", torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            data = work / "data"
            make_synthetic_dataset(data, n_train=args.images, n_test=0, size=parse_size(args.size))
        n = sum(1 for _ in (data / "train").iterdir())
        print(
            f"{n} training images ({args.size if args.data is None else data}), batch {BATCH}, "
            f"{job_cpus()} CPU thread(s), torch {torch.__version__}, condorml precision {precision}"
        )

        base = original_epochs(data / "train")  # as published: glibc's default malloc settings
        keep_freed_memory_for_reuse()  # what `condorml train` does; the ceiling runs with it too
        started = time.perf_counter()
        condorml_epochs(data, work, 1)
        first_run = n / (time.perf_counter() - started)  # decoding, setup, one epoch, checkpoint
        rounds = []  # (ceiling, condorml steady state) measured back to back
        for r in range(args.repeat):
            roof = ceiling(precision, channels_last=True)
            _, epoch_rates = condorml_epochs(data, work, 1 + 3 * (r + 1))  # resumes: 3 more epochs
            rounds.append((roof, statistics.median(epoch_rates[-3:])))
        roof_fp32 = ceiling("fp32", channels_last=False)

    original = base[-1]
    for r, (roof, ours) in enumerate(rounds, 1):
        print(
            f"round {r}: ceiling {roof:7.1f} img/s, condorml {ours:7.1f} img/s = {ours / roof:6.1%}"
        )
    steady = statistics.median(ours for _, ours in rounds)
    share = statistics.median(ours / roof for roof, ours in rounds)
    print(
        f"original pipeline   : epoch 1 {base[0]:7.1f} img/s, steady state (epoch 2) {original:7.1f} img/s"
    )
    print(
        f"condorml trainer    : first run {first_run:7.1f} img/s (decoding, setup, 1 epoch), "
        f"steady state {steady:7.1f} img/s (median epoch after the first)"
    )
    print(
        f"ceiling (fwd+bwd)   : {statistics.median(r for r, _ in rounds):7.1f} img/s channels-last "
        f"{precision} (median); {roof_fp32:7.1f} img/s NCHW fp32 for reference"
    )
    print(f"condorml / original : {steady / original:5.2f}x   (target >= 4x)")
    print(f"condorml / ceiling  : {share:5.1%}   (median of the rounds; target >= 85%)")


if __name__ == "__main__":
    main()
