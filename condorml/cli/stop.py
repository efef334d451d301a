"""``condorml stop RUN_DIR``: stop a sweep so that it resumes, on a pool or on this machine.

HTCondor deletes a job's spool, where a self-checkpointing job's last checkpoint lives, when the
job leaves the queue; ``condor_rm`` of a sweep's DAG would take every running member's training
with it. A sweep's training jobs therefore stay in the queue once removed after a checkpoint
(``leave_in_queue``, :data:`condorml.htcondor.submit.KEEP_REMOVED_CHECKPOINT`), and this command
does the rest of the stop:

* a DAG that DAGMan runs: ``condor_rm`` of its DAGMan job (DAGMan removes the node jobs, runs
  the FINAL node, writes a rescue DAG), then, for each removed job of the run folder that the
  queue keeps, its spooled checkpoint (``condor_evicted_files dir``) copied into its member
  folder where it is newer than what is there, then ``condor_rm -forcex`` (the job and its spool
  go). Jobs kept by an earlier plain ``condor_rm`` are brought back the same way.
* a DAG that ``condorml run`` runs here: SIGINT to that process (Ctrl-C), which does the same
  with the local backend's queue.

Then ``condor_submit_dag sweep.dag`` (or ``condorml run``) resumes every member from its last
checkpoint; this command lists where each will resume from.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import typer

from condorml.cli._common import call, print_command, setup_logging
from condorml.errors import CondormlError


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
    from condorml.backends.local.dagfile import find_dag
    from condorml.backends.local.resume import describe_all

    setup_logging()
    dag = call(find_dag, run_dir)
    folder = dag.resolve().parent
    here = call(_stop_local_run, dag, timeout)
    pool = call(_stop_on_pool, folder, timeout)
    call(_bring_back_local, folder)
    for line in describe_all(call(_resume_points, dag), stopped=True):
        typer.echo(line)
    if pool or not here:
        print_command(
            "resume it on the pool with:", ["cd", folder], ["condor_submit_dag", dag.name]
        )
    if here or not pool:
        print_command("resume it on this machine with:", ["condorml", "run", folder])


def _stop_local_run(dag: Path, timeout: float) -> bool:
    """Ctrl-C of the ``condorml run`` that runs the DAG on this machine, if one does; whether
    one did."""
    from condorml.backends.daglock import holder

    found = holder(dag)
    if found is None or found.stop.startswith("condor_rm"):  # none, or DAGMan's (the pool's)
        return False
    pid = re.search(r"kill -INT (\d+)", found.stop)
    if pid is None:
        raise CondormlError(f"{dag} runs elsewhere ({found.what}); stop it there: {found.stop}")
    os.kill(int(pid.group(1)), signal.SIGINT)
    typer.echo(f"stopping {found.what} (SIGINT, as Ctrl-C)")
    deadline = time.monotonic() + timeout
    while holder(dag) is not None:
        if time.monotonic() > deadline:
            raise CondormlError(f"{found.what} still runs after {timeout:.0f} s")
        time.sleep(0.2)
    return True


def _stop_on_pool(folder: Path, timeout: float) -> bool:
    """``condor_rm`` of the run folder's DAG, then each kept checkpoint brought back; whether
    the pool had anything of it."""
    from condorml.backends import condor

    if condor.pool_tool("condor_q") is None:
        return False
    removed = condor.remove_dags(folder, timeout)
    for cluster in removed:
        typer.echo(f"removed DAGMan job {cluster} (condor_rm {cluster}); DAGMan has ended")
    returned = condor.bring_back_kept(folder)
    for line in returned:
        typer.echo(line)
    return bool(removed or returned)


def _bring_back_local(folder: Path) -> None:
    """What a killed ``condorml run`` left in the local backend's queue comes back too."""
    from condorml.backends.local.jobqueue import bring_back
    from condorml.sweep.rundir import LOCAL_FOLDER

    local = folder / LOCAL_FOLDER
    if not local.is_dir():
        return
    for item in bring_back(local):
        what = ", ".join(item.copied) or "nothing newer than what it holds"
        typer.echo(
            f"local job {item.job}: its checkpoint came back into "
            f"{os.path.relpath(item.iwd, folder)} ({what}); let go"
        )


def _resume_points(dag: Path) -> list:
    """Where each member that has not finished training resumes from."""
    from condorml.backends.local.dagfile import read_dag
    from condorml.backends.local.resume import resume_points

    points = resume_points(dag.resolve().parent, read_dag(dag).nodes)
    return [p for p in points if p.state is None or not p.state.finished]
