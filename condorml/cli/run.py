"""``condorml run``: run a DAG and its submit files on this machine (the local backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from condorml.cli._common import call, print_command, setup_logging

if TYPE_CHECKING:
    from condorml.backends.local.backend import LocalBackend
    from condorml.backends.local.dagman import RunOptions

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
    rescue DAG on failure or Ctrl-C (running again continues from it). Ctrl-C is condor_rm: a
    sweep's training jobs leave their last checkpoint in their member folders, and a run says
    where each member resumes from. As DAGMan, it holds the DAG's lock (DAG.lock) while it runs: a
    DAG that runs already, here or under DAGMan, is refused."""
    from condorml.backends import choose_backend
    from condorml.backends.local.dagfile import find_dag

    setup_logging()
    options = local_options(max_jobs, inject_evictions, eviction_window, seed, restart)
    run_here(call(choose_backend, "local", options), call(find_dag, dag_file))


def local_options(
    max_jobs: int | None, evictions: float, window: float = 20.0, seed: int = 0,
    restart: bool = False,
) -> RunOptions:  # fmt: skip
    """The local backend's options from the command line (``condorml run``, ``sweep --submit``)."""
    from condorml.backends.local.dagman import RunOptions
    from condorml.backends.local.starter import Evictions

    window_s = (0.5, max(window, 0.5))
    return RunOptions(max_jobs=max_jobs, evictions=Evictions(evictions, window_s, seed=seed),
                      restart=restart)  # fmt: skip


def run_here(backend: LocalBackend, dag_file: Path) -> NoReturn:
    """Run a DAG on the local backend until it ends, say how it ended, exit with its result."""
    from condorml.backends.local.resume import describe_all

    handle = call(backend.submit_dag, dag_file)
    typer.echo(handle.message)
    for line in describe_all(handle.resume):  # a sweep: what its members' next jobs start from
        typer.echo(line)
    print_command("follow it with:", ["condorml", "watch", handle.dag_file.parent])
    # Ctrl-C: condor_rm, then the removed training jobs' checkpoints come back (condorml stop)
    call(handle.wait)
    result = handle.result
    summary = result.summary()
    for line in describe_all(result.stopped, stopped=True):
        typer.echo(line)
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
