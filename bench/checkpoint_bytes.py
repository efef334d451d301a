"""Bytes a training job sends to the access point per checkpoint, before and after issue 12.

A job lists its checkpoint folder in ``transfer_checkpoint_files`` (``ckpt``), so every exit 85
moves the whole folder. Before, the folder held two generations (``model.pth`` and
``model.prev.pth``); now, inside a job, the previous generation stays in the sandbox beside the
folder (``.condorml-previous/``), as HTCondor commits each checkpoint transfer atomically anyway.

For each model the real trainer runs two epochs with a checkpoint after each, twice in this
invocation: once as outside a job (both generations in the folder: the old layout) and once as
inside one (``_CONDOR_SCRATCH_DIR`` set: the new layout). The figure is the size of everything in
the folder after the second checkpoint, i.e. what the next exit 85 transfers.

Usage:  python bench/checkpoint_bytes.py [--models cnn resnet18] [--optimizer adam]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from condorml.job.checkpoint import PREVIOUS_FILE, previous_path
from condorml.job.synth import make_synthetic_dataset
from condorml.job.train import TrainConfig, train

IMAGE_SIZES = {"cnn": 224, "resnet18": 64}  # the CNN's size sets its fc1; ResNet-18's does not


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``: what transferring it moves."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bytes_per_checkpoint(data: Path, work: Path, model: str, optimizer: str, in_job: bool) -> int:
    """Train two epochs (two checkpoints) and measure the checkpoint folder."""
    sandbox = work / ("job" if in_job else "laptop") / model
    sandbox.mkdir(parents=True)
    config = TrainConfig(
        data_dir=data, checkpoint_dir=sandbox / "ckpt", epochs=2, checkpoint_every=1,
        model=model, image_size=IMAGE_SIZES[model], batch_size=16, optimizer=optimizer,
        precision="fp32", exit_on_checkpoint=False, cache_dir=work / "cache",
    )  # fmt: skip
    saved = os.environ.pop("_CONDOR_SCRATCH_DIR", None)
    if in_job:
        os.environ["_CONDOR_SCRATCH_DIR"] = str(sandbox)
    try:
        train(config)
        previous = previous_path(config.checkpoint_dir)
    finally:
        os.environ.pop("_CONDOR_SCRATCH_DIR", None)
        if saved is not None:
            os.environ["_CONDOR_SCRATCH_DIR"] = saved
    inside = previous.parent == config.checkpoint_dir
    assert previous.exists() and inside != in_job, previous  # a previous generation is kept
    assert (config.checkpoint_dir / PREVIOUS_FILE).exists() == (not in_job)
    return folder_bytes(config.checkpoint_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet18"])
    parser.add_argument("--optimizer", default="adam")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_synthetic_dataset(work / "data", n_train=32, n_test=0, seed=0).out
        print(f"bytes sent per checkpoint (transfer_checkpoint_files = ckpt), {args.optimizer}:")
        for model in args.models:
            started = time.perf_counter()
            before = bytes_per_checkpoint(data, work, model, args.optimizer, in_job=False)
            after = bytes_per_checkpoint(data, work, model, args.optimizer, in_job=True)
            print(
                f"  {model:9s} before (2 generations): {before / 1e6:8.1f} MB   "
                f"after (1 generation): {after / 1e6:8.1f} MB   "
                f"after/before: {after / before:.3f}   ({time.perf_counter() - started:.0f} s)"
            )


if __name__ == "__main__":
    main()
