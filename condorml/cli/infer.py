"""``condorml infer``: one or many models -> dog_probs.csv (fileid,prob) and its sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from condorml.cli._common import call, make_progress, setup_logging
from condorml.cli._options import inference_options, with_options
from condorml.errors import ExitCode
from condorml.job.files import PREDICTIONS_FILE


@with_options(inference_options)
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
        Path(PREDICTIONS_FILE),
        "--output",
        "-o",
        help="The CSV (fileid,prob); its provenance goes to OUTPUT.json.",
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="I/N: process slice I (from 0, like $(ProcId)) of N; merge the parts with `condorml merge`.",
    ),
    **options: Any,
) -> None:
    """Predict the probability of dog for every image: one row per image, sorted by id, the
    ensemble mean with several --model. Undecodable images are left out and listed in the
    sidecar; the CSV appears only when complete."""
    from condorml.fileio import check_output_file
    from condorml.job.devices import keep_freed_memory_for_reuse
    from condorml.job.infer import InferConfig, Shard, infer

    setup_logging()
    call(check_output_file, output, "--output")  # before minutes of inference, not after
    keep_freed_memory_for_reuse()
    strict = options.pop("strict")
    config = InferConfig(
        models=tuple(model),
        images=images,
        output=output,
        shard=call(Shard.parse, shard) if shard else None,
        **options,
    )
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
        raise typer.Exit(ExitCode.PERMANENT)
