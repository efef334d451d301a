"""``condorml evaluate``: score dog_probs.csv against labels."""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, setup_logging


def evaluate_command(
    predictions: Path = typer.Argument(..., help="A predictions CSV (fileid,prob)."),
    labels: Path = typer.Option(..., "--labels", help="CSV with fileid,is_dog (1 = dog)."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Also write the scores and the coverage counts as JSON (e.g. metrics.json).",
    ),
) -> None:
    """Print accuracy, log loss, ROC AUC and the confusion matrix at 0.5, over the images that
    have both a prediction and a label (the others are counted, not scored)."""
    from condorml.results.evaluate import evaluate_file

    setup_logging()
    scores = call(evaluate_file, predictions, labels, output)
    (tn, fp), (fn, tp) = scores.confusion
    auc = "n/a (one class)" if scores.roc_auc is None else f"{scores.roc_auc:.4f}"
    unscored = [
        f"{count} {what}"
        for count, what in (
            (scores.missing_predictions, "labelled without a prediction"),
            (scores.unlabelled_predictions, "predicted without a label"),
        )
        if count
    ]
    typer.echo(
        f"images    {scores.n}" + (f"  (not scored: {'; '.join(unscored)})" if unscored else "")
    )
    typer.echo(f"accuracy  {scores.accuracy:.4f}")
    typer.echo(f"log loss  {scores.log_loss:.4f}")
    typer.echo(f"ROC AUC   {auc}")
    typer.echo(f"confusion at {scores.threshold}:   predicted cat  predicted dog")
    typer.echo(f"  cat              {tn:13d}  {fp:13d}")
    typer.echo(f"  dog              {fn:13d}  {tp:13d}")
    if output is not None:
        typer.echo(f"wrote {output}")
