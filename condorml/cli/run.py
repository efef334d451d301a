"""``condorml run``: run a DAG and its submit files on this machine (the local backend)."""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, print_command, setup_logging

# The local backend's options that `condorml sweep --submit --backend local` passes on too
MAX_JOBS_OPTION = typer.Option(
    None,
    "--max-jobs",
    min=0,  # checked before `sweep --submit` writes anything
    help="At most N node jobs at once; 0 for no limit, as condor_submit_dag -maxjobs [default: as CPUs and memory allow].",
)
INJECT_EVICTIONS_OPTION = typer.Option(
    0.0,
    "--inject-evictions",
    min=0.0,
    max=1.0,
    help="Evict each start of a job with this probability, at a random moment (SIGTERM, SIGKILL after a grace period; a fresh sandbox follows).",
)


def run_command(
    dag_file: Path = typer.Argument(
        ..., help="The DAG file (e.g. RUN_DIR/sweep.dag), or a run folder holding one."
    ),
    max_jobs: int | None = MAX_JOBS_OPTION,
    inject_evictions: float = INJECT_EVICTIONS_OPTION,
    eviction_window: float = typer.Option(
        20.0,
        "--eviction-window",
        help="An injected eviction happens within this many seconds of the start.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the injected evictions."),
    restart: bool = typer.Option(
        False, "--restart", help="Ignore rescue files (renamed .old) and run every node again."
    ),
) -> None:
    """Run a DAG here with DAGMan's semantics: submit files read by HTCondor's parser, sandboxes,
    file transfer, exit-85 restarts, RETRY, PRE/POST scripts, throttles, HTCondor event logs, and a
    rescue DAG on failure or Ctrl-C (running again continues from it)."""
    setup_logging()
    run_dag_here(
        dag_file,
        max_jobs=max_jobs,
        evictions=inject_evictions,
        window=eviction_window,
        seed=seed,
        restart=restart,
    )


def run_dag_here(
    dag_file: Path,
    max_jobs: int | None = None,
    evictions: float = 0.0,
    window: float = 20.0,
    seed: int = 0,
    restart: bool = False,
) -> None:
    """Run a DAG with the local backend and exit with its result (see ``condorml run``)."""
    from condorml.backends.local.dagfile import find_dag
    from condorml.backends.local.dagman import DagRunner, RunOptions
    from condorml.backends.local.starter import Evictions

    if not 0.0 <= evictions <= 1.0:
        typer.echo(
            f"condorml: error: --inject-evictions {evictions}: a probability between 0 and 1",
            err=True,
        )
        raise typer.Exit(2)
    dag_file = call(find_dag, dag_file)
    options = RunOptions(
        max_jobs=max_jobs,
        evictions=Evictions(evictions, (0.5, max(window, 0.5)), seed=seed),
        restart=restart,
    )
    runner = call(DagRunner, dag_file, options)
    typer.echo(
        f"running {dag_file} with the local backend; progress in {runner.out_path.name}, events in {runner.nodes_log.name}"
    )
    print_command("follow it with:", ["condorml", "watch", dag_file.parent])
    result = runner.run()
    summary = result.summary()
    if result.interrupted:
        typer.echo(
            f"interrupted: {summary}; rescue DAG {result.rescue}; run the same command again to continue"
        )
    elif result.exit_code == 0:
        typer.echo(f"DAG finished: {summary}")
    else:
        for node, reason in result.failed.items():
            typer.echo(f"node {node} failed: {reason}", err=True)
        typer.echo(
            f"DAG failed (exit {result.exit_code}): {summary}"
            + (f"; rescue DAG {result.rescue}; run again to continue" if result.rescue else ""),
            err=True,
        )
    raise typer.Exit(result.exit_code)
