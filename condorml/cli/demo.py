"""``condorml demo``: the Quickstart's main job, end to end on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, print_command, setup_logging


def demo_command(
    out: Path = typer.Option(Path("demo-run"), "--out", help="Demo folder."),
    epochs: int = typer.Option(
        6, "--epochs", help="Epochs per member (a checkpoint exit after each)."
    ),
    inject_evictions: float = typer.Option(
        0.0,
        "--inject-evictions",
        min=0.0,
        max=1.0,
        help="Evict each job start with this probability; results stay the same (exact resume).",
    ),
) -> None:
    """Make synthetic cat/dog data and run a small ensemble sweep (2 learning rates x 2 members)
    through the local backend with HTCondor's semantics: training jobs exit 85 after every epoch
    and resume from their checkpoints, inference per member, then the collect step writes the
    ensemble dog_probs.csv and a leaderboard."""
    import time

    from rich.console import Console

    from condorml.cli.watch import SummaryLines, render
    from condorml.monitor.watch import Watch
    from condorml.sweep.demo import RUN_NAME, run_demo

    setup_logging()
    console = Console()
    run_dir = out / RUN_NAME
    show = SummaryLines(lambda: Watch([run_dir]))  # one line per change of the DAG's state
    print_command(f"demo in {out}: follow it from another terminal with", ["condorml", "watch", run_dir])  # fmt: skip
    started = time.monotonic()
    result = call(run_demo, out, epochs=epochs, evictions=inject_evictions, on_change=show.update)
    console.print(
        render(Watch([run_dir]).snapshot(), f"{run_dir}  ({time.monotonic() - started:.0f} s)")
    )
    if result.exit_code != 0:
        typer.echo(
            f"condorml: error: the demo's DAG failed (exit {result.exit_code}); see "
            f"{run_dir / 'sweep.dag.dagman.out'}"
            + (
                f"; run the demo again to continue from {result.rescue.name}"
                if result.rescue
                else ""
            ),
            err=True,
        )
        raise typer.Exit(1)
    import pandas as pd

    board = pd.read_csv(result.leaderboard)
    columns = [
        c
        for c in ("member", "lr", "seed", "val_acc", "test_accuracy", "test_log_loss")
        if c in board
    ]
    console.print(
        board[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"), highlight=False
    )
    scores = result.scores()
    if scores:
        console.print(
            f"ensemble of {len(board)}: accuracy {scores['accuracy']:.3f}, log loss "
            f"{scores['log_loss']:.3f}, ROC AUC {scores['roc_auc']:.3f} on {scores['n']} test images",
            highlight=False,
        )
    typer.echo(f"predictions: {result.predictions}")
    typer.echo(f"leaderboard: {result.leaderboard}")
    typer.echo(
        f"logs:        {run_dir / 'sweep.dag.nodes.log'} (DAGMan's), {run_dir / 'members'}/<id>/train.log "
        f"(each job's own, with its checkpoints), {run_dir / 'sweep.dag.dagman.out'}"
    )
    print_command("look again: ", ["condorml", "watch", "--once", run_dir])
