"""``condorml train``: the checkpointing trainer (exit 85 = checkpointed, run me again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from condorml.cli._common import call, make_progress, setup_logging
from condorml.cli._options import training_options, with_options


@with_options(training_options)
def train_command(
    data_dir: Path = typer.Option(
        ...,
        "--data-dir",
        "-d",
        help="Folder or .zip of training images: class folders (train/CLASS/IMAGE), a labels.csv, Kaggle cat/dog names, or torchvision's dataset files (data/README.md).",
    ),
    checkpoint_dir: Path = typer.Option(
        ...,
        "--checkpoint-dir",
        "-c",
        help="Where model.pth, model.prev.pth (kept beside it in an HTCondor job) and metrics.csv go; resumed from on every start.",
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
    hyperparameters: Path | None = typer.Option(
        None,
        "--hyperparameters",
        help="A JSON object of swept options and the seed by name, as a search (TPE) chose them for this member; its values replace the command line's.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    **options: Any,
) -> None:
    """Train an image classifier of the data's classes, checkpointing the HTCondor way.

    Every --checkpoint-every epochs it writes CHECKPOINT_DIR/model.pth and exits with code 85
    (HTCondor's checkpoint_exit_code); the next start resumes exactly where it stopped. Exit
    codes: 0 finished (or stopped at --stop-after-epoch), 85 checkpointed, 2 bad input (never
    worth a retry), 75 transient (full disk, I/O error, damaged data, out of memory: worth a
    retry), 1 unexpected failure, 143/130 stopped by SIGTERM/SIGINT after saving.
    """
    from condorml.job.devices import defer_dynamo_import, keep_freed_memory_for_reuse
    from condorml.job.train import TrainConfig, train

    setup_logging(verbose)
    if hyperparameters is not None:
        from condorml.hyperparameters import read_hyperparameters

        options.update(call(read_hyperparameters, hyperparameters))
    keep_freed_memory_for_reuse()
    defer_dynamo_import()
    config = TrainConfig(
        data_dir=data_dir,
        checkpoint_dir=checkpoint_dir,
        exit_on_checkpoint=not no_exit_on_checkpoint,
        force_restart=force_restart,
        cache_dir=cache_dir,
        **options,
    )
    progress = make_progress()
    try:
        result = call(train, config, progress)
    finally:
        progress.close()
    raise typer.Exit(result.exit_code)
