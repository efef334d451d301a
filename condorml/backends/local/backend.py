"""The local backend behind :class:`condorml.backends.base.Backend`: DAGs and jobs on this machine.

A submitted DAG runs at once in a worker thread (:class:`~condorml.backends.local.dagman.
DagRunner`), so that :meth:`LocalHandle.status` and :meth:`LocalHandle.cancel` work while it
runs, as they do on a pool. The DAG lives only as long as this process: :meth:`LocalHandle.wait`
is where a command spends its time, and there, on the main thread, Ctrl-C and SIGTERM act as
``condor_rm`` does (the running jobs are removed, the FINAL node runs, a rescue DAG is written;
a second interrupt skips the FINAL node), as ``condorml run`` has always done; a sweep's training
jobs stay in the queue with their checkpoints (``leave_in_queue``), which then come back into
the members' folders, as the documented stop of a sweep on a pool does (:mod:`.jobqueue`).

A job (a submit file) runs as a one-node DAG written beside it (``<submit file>.dag``), so it
gets the same sandboxes, transfers, checkpoint restarts, event logs and removal semantics.

As DAGMan, a run holds the DAG's lock (``<dag>.lock``) while it runs, and a DAG that runs
already, on this machine or by DAGMan, is refused (:mod:`condorml.backends.daglock`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from condorml.backends.base import (
    Backend,
    Handle,
    Status,
    jobs_status,
    node_counts,
)
from condorml.backends.local.dagman import DagResult, DagRunner, RunOptions
from condorml.backends.local.resume import ResumePoint
from condorml.errors import CondormlError
from condorml.fileio import atomic_write_text
from condorml.htcondor.events import EventFollower

JOB_DAG_SUFFIX = ".dag"  # a job's one-node DAG: <submit file>.dag


class LocalHandle(Handle):
    """A DAG (or a job's one-node DAG) running on this machine in a worker thread.

    Attributes
    ----------
    dag_file, progress_file, nodes_log : Path
        The DAG, its ``dagman.out`` and DAGMan's nodes log.
    result : DagResult or None
        How the DAG ended, once it has (failed nodes and their reasons, the rescue file, the
        checkpoints that came back, where the members of a sweep stopped).
    resume : list of ResumePoint
        Where each member of a sweep that still has to train resumes from, as the run started
        (after the checkpoints a killed run left in the queue came back).
    """

    def __init__(self, runner: DagRunner, kind: str = "dag") -> None:
        self.kind, self._runner = kind, runner
        self.dag_file, self.progress_file = runner.dag_path, runner.out_path
        self.nodes_log = runner.nodes_log
        self.resume: list[ResumePoint] = runner.resume
        self.result: DagResult | None = None
        self._error: BaseException | None = None
        self._follower = EventFollower([self.nodes_log])
        self._follower.poll()  # what an earlier run of the same file logged is not this run
        self._earlier = set(self._follower.jobs)
        self._thread = threading.Thread(target=self._run, name=f"dag-{self.dag_file.name}")
        self._thread.daemon = True  # lives as long as this process, as the local DAGMan does
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._runner.run()
        except BaseException as err:  # handed to wait(): a bug must not pass silently
            self._error = err

    @property
    def message(self) -> str:
        return (
            f"running {self.dag_file} with the local backend; progress in "
            f"{self.progress_file.name}, events in {self.nodes_log.name}"
        )

    def status(self) -> Status:
        running = self._thread.is_alive()
        if self.kind == "job":  # as on a pool: from the jobs' events alone
            self._follower.poll()
            jobs = [j for key, j in self._follower.jobs.items() if key not in self._earlier]
            return jobs_status(jobs, finished=not running)
        counts, result = node_counts(self._follower), self.result
        if running or result is None:  # None after the thread: wait() raises its error
            return Status("running" if running else "failed", counts)
        state = "removed" if result.interrupted else "done" if result.exit_code == 0 else "failed"
        return Status(state, counts, result.exit_code)

    def cancel(self) -> None:
        # the runner's current event: it arms a new one for the FINAL node after an interrupt,
        # so a second cancel removes that too, as a second condor_rm would
        self._runner.cancel.set()

    def wait(self, timeout: float | None = None) -> Status:
        """Wait for the DAG's end (or ``timeout``); on the main thread, Ctrl-C and SIGTERM
        cancel it and the wait goes on until the removal is done and the rescue DAG written.

        Raises
        ------
        CondormlError
            If the DAG stopped on an error of its own.
        """
        on_main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if on_main else ()
        previous = {sig: signal.getsignal(sig) for sig in signals}

        def stop(_signum: int, _frame: Any) -> None:
            self.cancel()

        for sig in signals:
            signal.signal(sig, stop)
        try:
            self._thread.join(timeout)  # signals interrupt it: their handler runs meanwhile
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._error is not None:
            raise self._error
        return self.status()


class LocalBackend(Backend):
    """Run DAGs and jobs on this machine with HTCondor's semantics (see the module docstring).

    Parameters
    ----------
    options : RunOptions, optional
        ``--max-jobs``, injected evictions, ``--restart``.
    on_change : callable, optional
        Called (from the worker thread) with the DAG runner whenever a node changes state.
    """

    name = "local"
    detached = False

    def __init__(
        self,
        options: RunOptions | None = None,
        on_change: Callable[[DagRunner], None] | None = None,
    ) -> None:
        self.options = options or RunOptions()
        self.on_change = on_change

    def submit_dag(self, dag_file: Path) -> LocalHandle:
        """Start the DAG in a worker thread (its errors of form are raised here, before).

        Raises
        ------
        CondormlError
            If the DAG file cannot be read or uses what the local backend does not support, or
            if the DAG runs already, here or by DAGMan (its ``<dag>.lock`` is held), naming
            the process and how to stop it.
        """
        return _start(DagRunner(dag_file, self.options, on_change=self.on_change), "dag")

    def submit_job(self, submit_file: Path) -> LocalHandle:
        """Run the submit file's jobs as a one-node DAG ``<submit file>.dag`` beside it.

        Raises
        ------
        CondormlError
            If the submit file is missing or the DAG cannot be written.
        """
        if not submit_file.is_file():
            raise CondormlError(f"{submit_file}: no such submit file")
        if len(submit_file.name.split()) != 1:
            raise CondormlError(
                f"{submit_file}: the local backend runs a job as a one-node DAG, and a DAG's "
                "JOB line cannot name a submit file with spaces in its name; rename it"
            )
        dag_file = submit_file.with_name(submit_file.name + JOB_DAG_SUFFIX)
        node = "".join(c if c.isalnum() or c in "_-" else "_" for c in submit_file.stem) or "job"
        text = f"# the local backend runs {submit_file.name} as this one-node DAG\nJOB {node} {submit_file.name}\n"
        try:
            atomic_write_text(dag_file, text)
        except OSError as err:
            raise CondormlError(f"{dag_file}: cannot write ({err.strerror or err})") from err
        # restart: a job submitted again runs again (a rescue file would mark it done)
        options = replace(self.options, restart=True)
        return _start(DagRunner(dag_file, options, on_change=self.on_change), "job")


def _start(runner: DagRunner, kind: str) -> LocalHandle:
    """The runner's handle, its thread started; the DAG's lock let go if that fails."""
    try:
        return LocalHandle(runner, kind)
    except BaseException:
        runner.lock.release()
        raise
