"""``condorml infer``: one or many models -> dog_probs.csv (fileid,prob) and its sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from condorml.cli._common import call, make_progress, setup_logging
from condorml.cli.train import Device, Model

InferPrecision = Literal["auto", "fp32", "bf16"]


def infer_command(
    model: list[Path] = typer.Option(
        ...,
        "--model",
        "-m",
        help="A condorml checkpoint (C/model.pth) or a bare state_dict; repeat for an ensemble.",
    ),
    images: Path = typer.Option(
        ..., "--images", "-i", help="Folder or .zip of images; id = file name without extension."
    ),
    output: Path = typer.Option(
        Path("dog_probs.csv"),
        "--output",
        "-o",
        help="The CSV (fileid,prob); its provenance goes to OUTPUT.json.",
    ),
    batch_size: int = typer.Option(
        256,
        "--batch-size",
        help="Images per batch (decoded together, then run through every model).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Decoding threads [default: the CPUs this job was given]."
    ),
    device: Device = typer.Option("auto", "--device", help="auto picks cuda, then mps, then cpu."),
    precision: InferPrecision = typer.Option(
        "auto", "--precision", help="auto: bf16 where the CPU/GPU computes it natively, else fp32."
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="I/N: process slice I (from 0, like $(ProcId)) of N; merge the parts with `condorml merge`.",
    ),
    model_arch: Model | None = typer.Option(
        None,
        "--model-arch",
        help="Architecture of a bare state_dict [default: recognised from its parameter names].",
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Image size of a bare state_dict [default: 224]."
    ),
    with_stats: bool = typer.Option(
        False, "--with-stats", help="Add prob_std,n_models columns (spread over the ensemble)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Exit 2 if any image could not be decoded (the CSV is still written).",
    ),
) -> None:
    """Predict the probability of dog for every image: one row per image, sorted by id, the
    ensemble mean with several --model. Undecodable images are left out and listed in the
    sidecar; the CSV appears only when complete."""
    from condorml.infer import InferConfig, Shard, infer

    setup_logging()
    config = InferConfig(
        models=tuple(model), images=images, output=output, batch_size=batch_size, workers=workers,
        device=device, precision=precision, shard=call(Shard.parse, shard) if shard else None,
        model_arch=model_arch, image_size=image_size, with_stats=with_stats,
    )  # fmt: skip
    progress = make_progress()
    try:
        result = call(infer, config, progress)
    finally:
        progress.close()
    typer.echo(
        f"wrote {result.output} ({result.predicted} images, {result.images_per_s:.0f} img/s) and {result.sidecar}"
    )
    if strict and result.failed:
        typer.echo(
            f"condorml: error: {len(result.failed)} image(s) could not be decoded (--strict); see {result.sidecar}",
            err=True,
        )
        raise typer.Exit(2)
