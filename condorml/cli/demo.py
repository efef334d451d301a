"""``condorml demo``: the Quickstart's main job, end to end on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from condorml.cli._common import call, condorml_command, print_command, setup_logging

if TYPE_CHECKING:
    from rich.console import Console

    from condorml.sweep.demo import DemoResult


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
    print_command(f"demo in {out}: follow it from another terminal with", [*condorml_command(), "watch", run_dir])  # fmt: skip
    started = time.monotonic()
    result = call(run_demo, out, epochs=epochs, evictions=inject_evictions, on_change=show.update)
    console.print(
        render(Watch([run_dir]).snapshot(), f"{run_dir}  ({time.monotonic() - started:.0f} s)")
    )
    if result.exit_code != 0:
        _exit_dag_failed(result, run_dir)
    board_size = _print_leaderboard(console, result.leaderboard)
    _print_scores(console, result.scores(), board_size)
    _print_outputs(result, run_dir)


def _exit_dag_failed(result: DemoResult, run_dir: Path) -> NoReturn:
    """Say where to look when the demo's DAG failed (and how to continue), then exit 1."""
    typer.echo(
        f"condorml: error: the demo's DAG failed (exit {result.exit_code}); see "
        f"{run_dir / 'sweep.dag.dagman.out'}"
        + (f"; run the demo again to continue from {result.rescue.name}" if result.rescue else ""),
        err=True,
    )
    raise typer.Exit(1)


def _print_leaderboard(console: Console, leaderboard: Path) -> int:
    """Print the leaderboard's main columns; return its number of members."""
    import pandas as pd

    board = pd.read_csv(leaderboard)
    columns = [
        c
        for c in ("member", "lr", "seed", "val_acc", "test_accuracy", "test_log_loss")
        if c in board
    ]
    console.print(
        board[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"), highlight=False
    )
    return len(board)


def _print_scores(console: Console, scores: dict[str, Any] | None, members: int) -> None:
    """Print the ensemble's test scores (when the demo's labels gave any)."""
    if scores:
        console.print(
            f"ensemble of {members}: accuracy {scores['accuracy']:.3f}, log loss "
            f"{scores['log_loss']:.3f}, ROC AUC {scores['roc_auc']:.3f} on {scores['n']} test images",
            highlight=False,
        )


def _print_outputs(result: DemoResult, run_dir: Path) -> None:
    """Print where the predictions, leaderboard and logs are, and how to look again."""
    typer.echo(f"predictions: {result.predictions}")
    typer.echo(f"leaderboard: {result.leaderboard}")
    typer.echo(
        f"logs:        {run_dir / 'sweep.dag.nodes.log'} (DAGMan's), {run_dir / 'members'}/<id>/train.log "
        f"(each job's own, with its checkpoints), {run_dir / 'sweep.dag.dagman.out'}"
    )
    print_command("look again: ", [*condorml_command(), "watch", "--once", run_dir])
