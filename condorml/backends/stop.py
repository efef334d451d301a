"""Stop a sweep so that it resumes, on a pool or on this machine (``condorml stop``).

HTCondor deletes a job's spool, where a self-checkpointing job's last checkpoint lives, when the
job leaves the queue; ``condor_rm`` of a sweep's DAG would take every running member's training
with it. A sweep's training jobs therefore stay in the queue once removed after a checkpoint
(``leave_in_queue``, :data:`condorml.htcondor.submit.KEEP_REMOVED_CHECKPOINT`), and
:func:`stop_run` does the rest of the stop:

* a DAG that DAGMan runs: ``condor_rm`` of its DAGMan job (DAGMan removes the node jobs, runs
  the FINAL node, writes a rescue DAG), then, for each removed job of the run folder that the
  queue keeps, its spooled checkpoint (``condor_evicted_files dir``) copied into its member
  folder where it is newer than what is there, then ``condor_rm -forcex`` (the job and its spool
  go). Jobs kept by an earlier plain ``condor_rm`` are brought back the same way.
* a DAG that ``condorml run`` runs here: SIGINT to that process (Ctrl-C), which does the same
  with the local backend's queue; what a killed run left in that queue comes back too.

Then ``condor_submit_dag sweep.dag`` (or ``condorml run``) resumes every member from its last
checkpoint; the result lists where each will resume from.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from condorml.backends.local.resume import ResumePoint
from condorml.errors import CondormlError


@dataclass
class StopResult:
    """What a stop did, for the command line to say."""

    dag: Path
    local_run: str | None = None  # the condorml run stopped here (its description), if any
    removed: list[int] = field(default_factory=list)  # DAGMan jobs removed on the pool
    returned: list[str] = field(default_factory=list)  # the pool's kept checkpoints back (lines)
    returned_here: list[str] = field(default_factory=list)  # the local backend's (lines)
    resume: list[ResumePoint] = field(default_factory=list)  # unfinished members, where from

    @property
    def on_pool(self) -> bool:
        """Whether the pool had anything of the run (a DAG removed, a checkpoint kept)."""
        return bool(self.removed or self.returned)


def stop_run(run_dir: Path, timeout: float) -> StopResult:
    """Stop the sweep of a run folder (or DAG file) and bring every kept checkpoint back.

    Raises
    ------
    CondormlError
        If there is no DAG, it runs somewhere this command cannot stop, or does not end within
        ``timeout`` seconds.
    """
    from condorml.backends.local.dagfile import find_dag

    dag = find_dag(run_dir)
    folder = dag.resolve().parent
    result = StopResult(dag)
    result.local_run = _stop_local_run(dag, timeout)
    _stop_on_pool(folder, timeout, result)
    result.returned_here = _bring_back_local(folder)
    result.resume = _resume_points(dag)
    return result


def _stop_local_run(dag: Path, timeout: float) -> str | None:
    """Ctrl-C of the ``condorml run`` that runs the DAG on this machine, if one does: what it
    was."""
    from condorml.backends.daglock import holder

    found = holder(dag)
    if found is None or found.stop.startswith("condor_rm"):  # none, or DAGMan's (the pool's)
        return None
    pid = re.search(r"kill -INT (\d+)", found.stop)
    if pid is None:
        raise CondormlError(f"{dag} runs elsewhere ({found.what}); stop it there: {found.stop}")
    os.kill(int(pid.group(1)), signal.SIGINT)
    deadline = time.monotonic() + timeout
    while holder(dag) is not None:
        if time.monotonic() > deadline:
            raise CondormlError(f"{found.what} still runs after {timeout:.0f} s")
        time.sleep(0.2)
    return found.what


def _stop_on_pool(folder: Path, timeout: float, result: StopResult) -> None:
    """``condor_rm`` of the run folder's DAG, then each kept checkpoint brought back."""
    from condorml.backends import condor

    if condor.pool_tool("condor_q") is None:
        return
    result.removed = condor.remove_dags(folder, timeout)
    result.returned = condor.bring_back_kept(folder)


def _bring_back_local(folder: Path) -> list[str]:
    """What a killed ``condorml run`` left in the local backend's queue comes back too."""
    from condorml.backends.local.jobqueue import bring_back
    from condorml.sweep.rundir import LOCAL_FOLDER

    local = folder / LOCAL_FOLDER
    if not local.is_dir():
        return []
    lines = []
    for item in bring_back(local):
        what = ", ".join(item.copied) or "nothing newer than what it holds"
        lines.append(
            f"local job {item.job}: its checkpoint came back into "
            f"{os.path.relpath(item.iwd, folder)} ({what}); let go"
        )
    return lines


def _resume_points(dag: Path) -> list[ResumePoint]:
    """Where each member that has not finished training resumes from."""
    from condorml.backends.local.dagfile import read_dag
    from condorml.backends.local.resume import resume_points

    points = resume_points(dag.resolve().parent, read_dag(dag).nodes)
    return [p for p in points if p.state is None or not p.state.finished]
