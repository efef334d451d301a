"""``condorml evaluate``: score dog_probs.csv or probs.csv against labels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from condorml.cli._common import call, setup_logging

if TYPE_CHECKING:
    from condorml.results.evaluate import Scores

MATRIX_MAX_CLASSES = 12  # above this, the most frequent confusions instead of the whole matrix
SHOWN_CONFUSIONS = 10


def evaluate_command(
    predictions: Path = typer.Argument(
        ...,
        help="A predictions CSV: dog_probs.csv (fileid,prob) or probs.csv "
        "(fileid,predicted,<one probability column per class>).",
    ),
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="The true classes: a CSV fileid,label (a class name or index; fileid,is_dog for "
        "cat/dog), or a labelled test set, a folder or .zip laid out like training data (class "
        "folders, a labels.csv, Kaggle names, torchvision's dataset files).",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Also write the scores and the coverage counts as JSON (e.g. metrics.json).",
    ),
) -> None:
    """Print accuracy, log loss, macro F1 and the confusion matrix (cat/dog: ROC AUC too, at
    0.5; other classes: per-class precision and recall, and top-5 accuracy above 5 classes),
    over the images that have both a prediction and a label (the others are counted, not
    scored)."""
    from condorml.results.evaluate import evaluate_file
    from condorml.results.predictions import is_cat_dog

    setup_logging()
    scores = call(evaluate_file, predictions, labels, output)
    if is_cat_dog(scores.classes):
        _print_cat_dog(scores)
    else:
        _print_classes(scores)
    if output is not None:
        typer.echo(f"wrote {output}")


def _images_line(scores: Scores, width: int) -> str:
    unscored = [
        f"{count} {what}"
        for count, what in (
            (scores.missing_predictions, "labelled without a prediction"),
            (scores.unlabelled_predictions, "predicted without a label"),
        )
        if count
    ]
    line = f"{'images':<{width}}{scores.n}"
    return line + (f"  (not scored: {'; '.join(unscored)})" if unscored else "")


def _auc(scores: Scores) -> str:
    return "n/a (one class)" if scores.roc_auc is None else f"{scores.roc_auc:.4f}"


def _print_cat_dog(scores: Scores) -> None:
    """Today's lines, unchanged, and macro F1."""
    (tn, fp), (fn, tp) = scores.confusion
    typer.echo(_images_line(scores, 10))
    typer.echo(f"accuracy  {scores.accuracy:.4f}")
    typer.echo(f"log loss  {scores.log_loss:.4f}")
    typer.echo(f"ROC AUC   {_auc(scores)}")
    typer.echo(f"macro F1  {scores.macro_f1:.4f}")
    typer.echo(f"confusion at {scores.threshold}:   predicted cat  predicted dog")
    typer.echo(f"  cat              {tn:13d}  {fp:13d}")
    typer.echo(f"  dog              {fn:13d}  {tp:13d}")


def _print_classes(scores: Scores) -> None:
    """The summary, a per-class table and the confusions of any class list."""
    from condorml.results.evaluate import top_confusions

    width = 16
    typer.echo(_images_line(scores, width))
    typer.echo(f"{'accuracy':<{width}}{scores.accuracy:.4f}")
    if scores.top5_accuracy is not None:
        typer.echo(f"{'top-5 accuracy':<{width}}{scores.top5_accuracy:.4f}")
    typer.echo(f"{'log loss':<{width}}{scores.log_loss:.4f}")
    if len(scores.classes) == 2:
        typer.echo(f"{'ROC AUC':<{width}}{_auc(scores)}")
    typer.echo(f"{'macro F1':<{width}}{scores.macro_f1:.4f}")

    name_width = max(len("class"), *(len(c) for c in scores.classes))
    typer.echo(f"  {'class':<{name_width}}  precision     recall    support")
    for name, row in scores.per_class.items():
        typer.echo(
            f"  {name:<{name_width}}  {row.precision:9.4f}  {row.recall:9.4f}  {row.support:9d}"
        )

    if len(scores.classes) > MATRIX_MAX_CLASSES:
        confused = top_confusions(scores, SHOWN_CONFUSIONS)
        typer.echo(f"most frequent confusions (true -> predicted), {len(confused)} shown:")
        for true, predicted, count in confused:
            typer.echo(f"  {true} -> {predicted}: {count}")
        if not confused:
            typer.echo("  none: every image is predicted as its true class")
        return
    typer.echo("confusion (rows: true class, columns: predicted class):")
    cell = max(
        *(len(c) for c in scores.classes), *(len(str(n)) for r in scores.confusion for n in r)
    )
    typer.echo(f"  {'':<{name_width}}" + "".join(f"  {c:>{cell}}" for c in scores.classes))
    for name, row in zip(scores.classes, scores.confusion, strict=True):
        typer.echo(f"  {name:<{name_width}}" + "".join(f"  {n:>{cell}d}" for n in row))
