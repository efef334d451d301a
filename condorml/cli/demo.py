"""``condorml demo``: the Quickstart's main job, end to end on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, setup_logging


def demo_command(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Run folder."),
    epochs: int = typer.Option(20, "--epochs", help="Epochs to train."),
    checkpoint_every: int = typer.Option(
        5, "--checkpoint-every", help="Checkpoint and exit 85 every N epochs."
    ),
) -> None:
    """Make synthetic cat/dog data, train the CHTC CNN on it with checkpoint exits (code 85),
    restarting the job after each one as HTCondor does, then write dog_probs.csv and score it."""
    from rich.console import Console
    from rich.table import Table

    from condorml.demo import run_demo

    setup_logging()
    console = Console()

    def show(attempt) -> None:
        meaning = {0: "finished", 85: "checkpointed: restarting it, as HTCondor would"}
        console.print(
            f"[bold]{attempt.job} run {attempt.number}[/] exited {attempt.exit_code} after "
            f"{attempt.seconds:.1f} s: {meaning.get(attempt.exit_code, 'failed')}"
        )

    result = call(run_demo, out, epochs=epochs, checkpoint_every=checkpoint_every, on_attempt=show)
    if result.exit_code != 0:
        job = result.attempts[-1].job if result.attempts else "training"
        typer.echo(
            f"condorml: error: the {job} job failed with exit code {result.exit_code}", err=True
        )
        raise typer.Exit(1)
    import pandas as pd

    columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s"]
    metrics = pd.read_csv(result.metrics_csv)[columns]
    runs = sum(1 for a in result.attempts if a.job == "train")
    table = Table(title=f"{result.metrics_csv}  ({runs} runs)")
    for column in metrics.columns:
        table.add_column(column, justify="right")
    for row in metrics.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
    scores = result.scores
    console.print(f"final model: {result.out / 'checkpoints' / 'model.pth'}")
    console.print(
        f"predictions: {result.predictions} ({scores.n} test images): accuracy "
        f"{scores.accuracy:.3f}, log loss {scores.log_loss:.3f}, ROC AUC {scores.roc_auc:.3f}"
    )
