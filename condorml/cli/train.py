"""``condorml train``: the checkpointing trainer (exit 85 = checkpointed, run me again)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from condorml.cli._common import call, make_progress, setup_logging

# typer needs the choices as types; they repeat condorml.config's tables (a test keeps them equal).
Model = Literal["cnn", "resnet18"]
Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["constant", "cosine", "step"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def train_command(
    data_dir: Path = typer.Option(
        ..., "--data-dir", "-d", help="Folder or .zip with train/cat.N.jpg and train/dog.N.jpg."
    ),
    checkpoint_dir: Path = typer.Option(
        ...,
        "--checkpoint-dir",
        "-c",
        help="Where model.pth, model.prev.pth and metrics.csv go; resumed from on every start.",
    ),
    epochs: int = typer.Option(10, "--epochs", "-e", help="Total epochs to train."),
    checkpoint_every: int = typer.Option(
        5, "--checkpoint-every", help="Checkpoint (and exit 85) every N epochs."
    ),
    checkpoint_minutes: float | None = typer.Option(
        None,
        "--checkpoint-minutes",
        help="Also checkpoint at the first batch boundary after M minutes of this run, even mid-epoch.",
    ),
    model: Model = typer.Option(
        "cnn",
        "--model",
        help="Architecture: the CHTC example's CNN or ResNet-18 for transfer learning.",
    ),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per batch."),
    optimizer: Optimizer = typer.Option("adam", "--optimizer", help="Optimizer."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Weight decay."),
    momentum: float = typer.Option(0.9, "--momentum", help="Momentum (sgd only)."),
    scheduler: Scheduler = typer.Option(
        "constant", "--scheduler", help="Learning-rate schedule, stepped once per epoch."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of initialisation and data order (one per ensemble member)."
    ),
    split_seed: int = typer.Option(
        0, "--split-seed", help="Seed of the validation split (keep it equal across members)."
    ),
    val_fraction: float = typer.Option(
        0.1, "--val-fraction", help="Fraction of the images held out for validation."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Image decoding threads [default: the CPUs this job was given]."
    ),
    device: Device = typer.Option("auto", "--device", help="auto picks cuda, then mps, then cpu."),
    precision: Precision = typer.Option(
        "auto",
        "--precision",
        help="auto: bf16 where the CPU/GPU computes it natively, fp16 on older GPUs, else fp32; recorded in the checkpoint.",
    ),
    image_size: int = typer.Option(224, "--image-size", help="Images are resized to SIZE x SIZE."),
    pretrained_weights: Path | None = typer.Option(
        None,
        "--pretrained-weights",
        help="Local ResNet-18 state_dict for transfer learning (nothing is downloaded).",
    ),
    freeze_backbone: bool = typer.Option(
        False,
        "--freeze-backbone",
        help="Train only the new 2-class head (fixed-feature extraction).",
    ),
    no_exit_on_checkpoint: bool = typer.Option(
        False,
        "--no-exit-on-checkpoint",
        help="Keep training in this process after each checkpoint (laptops).",
    ),
    force_restart: bool = typer.Option(
        False,
        "--force-restart",
        help="Set aside a checkpoint of another configuration, or an unreadable one, and start over; a matching one is still resumed.",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where decoded images are cached [default: $_CONDOR_SCRATCH_DIR/.condorml-cache in a job, else ~/.cache/condorml].",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Train a cat/dog classifier, checkpointing the HTCondor way.

    Every --checkpoint-every epochs it writes CHECKPOINT_DIR/model.pth and exits with code 85
    (HTCondor's checkpoint_exit_code); the next start resumes exactly where it stopped. Exit
    codes: 0 finished, 85 checkpointed, 2 bad input, 1 unexpected failure, 143/130 stopped by
    SIGTERM/SIGINT after saving.
    """
    from condorml.devices import keep_freed_memory_for_reuse
    from condorml.train import TrainConfig, train

    setup_logging(verbose)
    keep_freed_memory_for_reuse()
    config = TrainConfig(
        data_dir=data_dir,
        checkpoint_dir=checkpoint_dir,
        epochs=epochs,
        checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes,
        model=model,
        image_size=image_size,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        weight_decay=weight_decay,
        momentum=momentum,
        scheduler=scheduler,
        seed=seed,
        split_seed=split_seed,
        val_fraction=val_fraction,
        precision=precision,
        device=device,
        workers=workers,
        pretrained_weights=pretrained_weights,
        freeze_backbone=freeze_backbone,
        exit_on_checkpoint=not no_exit_on_checkpoint,
        force_restart=force_restart,
        cache_dir=cache_dir,
    )
    progress = make_progress()
    try:
        result = call(train, config, progress)
    finally:
        progress.close()
    raise typer.Exit(result.exit_code)
