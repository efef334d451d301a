"""``condorml stop RUN_DIR``: stop a sweep so that it resumes (:mod:`condorml.backends.stop`)."""

from __future__ import annotations

from pathlib import Path

import typer

from condorml.cli._common import call, print_command, setup_logging


def stop_command(
    run_dir: Path = typer.Argument(
        ..., help="The run folder (or its DAG file) of the sweep to stop."
    ),
    timeout: float = typer.Option(
        120.0, "--timeout", help="Seconds to wait for the DAG to end once removed."
    ),
) -> None:
    """Stop a sweep so that it resumes: remove its DAG (condor_rm on a pool, Ctrl-C of a
    condorml run here), bring each removed training job's last checkpoint back into its member
    folder where it is newer, and let the job go (condor_rm -forcex). Then condor_submit_dag
    (or condorml run) resumes every member from it."""
    from condorml.backends.local.resume import describe_all
    from condorml.backends.stop import stop_run

    setup_logging()
    result = call(stop_run, run_dir, timeout)
    if result.local_run is not None:
        typer.echo(f"stopped {result.local_run} (SIGINT, as Ctrl-C)")
    for cluster in result.removed:
        typer.echo(f"removed DAGMan job {cluster} (condor_rm {cluster}); DAGMan has ended")
    for line in [*result.returned, *result.returned_here]:
        typer.echo(line)
    for line in describe_all(result.resume, stopped=True):
        typer.echo(line)
    folder = result.dag.resolve().parent
    here = result.local_run is not None
    if result.on_pool or not here:
        print_command(
            "resume it on the pool with:", ["cd", folder], ["condor_submit_dag", result.dag.name]
        )
    if here or not result.on_pool:
        print_command("resume it on this machine with:", ["condorml", "run", folder])
