"""``condorml infer``: one or many models -> dog_probs.csv (cat/dog) or probs.csv, and its sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from condorml.cli._common import call, make_progress, setup_logging
from condorml.cli._options import inference_options, with_options
from condorml.errors import ExitCode


@with_options(inference_options)
def infer_command(
    model: list[Path] = typer.Option(
        ...,
        "--model",
        "-m",
        help="A condorml checkpoint (C/model.pth) or a bare state_dict; repeat for an ensemble.",
    ),
    images: Path = typer.Option(
        ...,
        "--images",
        "-i",
        help="Folder or .zip of images, flat (id = file name without extension) or laid out like training data (labelled), or torchvision's dataset files (their test split).",
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        help="The CSV; its provenance goes to OUTPUT.json. A folder (ending in /): the file in it [default: dog_probs.csv for cat/dog models, else probs.csv].",
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="I/N: process slice I (from 0, like $(ProcId)) of N; merge the parts with `condorml merge`.",
    ),
    **options: Any,
) -> None:
    """Predict every image's class probabilities: one row per image, sorted by id, the ensemble
    mean with several --model. Cat/dog models write dog_probs.csv (fileid,prob: the probability
    of dog), others probs.csv (fileid,predicted,<one column per class>). Undecodable images are
    left out and listed in the sidecar; the CSV appears only when complete."""
    from condorml.config import InferConfig, Shard
    from condorml.fileio import check_output_file
    from condorml.job.devices import keep_freed_memory_for_reuse
    from condorml.job.infer import infer

    setup_logging()
    folder = output is None or output.endswith("/") or Path(output).is_dir()
    # writable before minutes of inference, not after (a folder: any file in it)
    call(
        check_output_file, Path(output or ".") / "probs.csv" if folder else Path(output), "--output"
    )
    keep_freed_memory_for_reuse()
    strict = options.pop("strict")
    options["model_files"] = tuple(options["model_files"])
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
