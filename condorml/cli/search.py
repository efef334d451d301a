"""``condorml search pre|post``: the PRE and POST scripts of a search's nodes (DAGMan runs them).

A thin layer over :mod:`condorml.sweep.steps`: the decision becomes the exit code that the DAG's
``PRE_SKIP`` and ``SCRIPT DEFER`` lines name (:class:`condorml.errors.ScriptExit`), and its reason
one line on stdout, which DAGMan keeps in ``dagman.out`` (the local backend too).
"""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, setup_logging

app = typer.Typer(
    help="A search's PRE and POST scripts, run by DAGMan on the access point (see sweep.dag).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("pre")
def pre_command(
    run_dir: Path = typer.Argument(..., help="The sweep's run folder (DAGMan runs it there: .)."),
    node: str = typer.Argument(..., help="The node about to run ($NODE), e.g. train_m007_r2."),
) -> None:
    """Decide whether a member's next node runs (exit 0), is skipped because the member stopped
    (exit 3, PRE_SKIP) or waits for other members' results (exit 4, SCRIPT DEFER)."""
    from condorml.sweep.steps import DECISION_EXIT, pre_step

    setup_logging()
    decision, reason = call(pre_step, run_dir, node)
    if reason:
        typer.echo(f"condorml search: {node}: {reason}")
    raise typer.Exit(DECISION_EXIT[decision])


@app.command("post")
def post_command(
    run_dir: Path = typer.Argument(..., help="The sweep's run folder (DAGMan runs it there: .)."),
    node: str = typer.Argument(..., help="The node whose job ended ($NODE)."),
    code: int = typer.Argument(..., help="The job's exit code ($RETURN)."),
    retry: int = typer.Argument(0, help="This attempt's number ($RETRY)."),
    retries: int = typer.Argument(0, help="The node's retries ($MAX_RETRIES)."),
) -> None:
    """Record a training node's result in the member's trial.json and exit with the job's code."""
    from condorml.sweep.steps import post_step

    setup_logging()
    raise typer.Exit(call(post_step, run_dir, node, code, retry, retries))
