"""``condorml report``: tables, plots and one self-contained HTML page of a sweep's run folder."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from condorml.cli._common import call, setup_logging


def report_command(
    run_dir: Path = typer.Argument(..., help="The sweep's run folder (finished or not)."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Folder for report.html, the plots (PNG) and tables (CSV) [default: RUN_DIR/report].",
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="fileid,label (or fileid,is_dog) CSV, or a labelled test set, to score the members and "
        "the ensemble [default: the run's data.labels, else its test set when laid out with labels].",
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="Test images (zip or folder) for the sample and misclassified grids [default: the "
        "run's data.test, when it is a local path].",
    ),
) -> None:
    """Report on a sweep: leaderboard, learning curves, accuracy against each swept hyperparameter,
    the ensemble against its members and its size, calibration, the confusion matrix, per-class
    recall, the most confused classes, misclassified and sample test images, and the HTCondor view (runs, checkpoints, evictions, committed and lost time) in RUN_DIR/report/report.html,
    one file that opens offline. An adaptive search adds its history, the metric per epoch with the
    rungs, and the hyperparameters' importance. A partly finished run gets a partial report saying
    what is missing."""
    from condorml.monitor.report import make_report

    setup_logging()
    # matplotlib logs its font cache at INFO; the user's output is about the report
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    result = call(make_report, run_dir, output, labels, images)
    typer.echo(
        f"wrote {result.html} ({len(result.plots)} plot(s)) and its files in {result.html.parent}"
    )
    for note in result.missing:
        typer.echo(f"  not in the report: {note}")
