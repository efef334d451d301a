"""The local DAGMan: run a DAG's nodes on this machine with DAGMan's rules.

A node runs PRE script -> job(s) -> POST script; its result is that of the last part that ran
(a POST script can turn a failed job into a success). A failed node is retried up to its RETRY
count unless it exited with its UNLESS-EXIT value; ABORT-DAG-ON stops everything. Ready nodes
run in parallel as far as this machine's CPU cores and memory, ``--max-jobs`` and the DAG's
CATEGORY/MAXJOBS throttles allow, higher PRIORITY first. A PRE script runs before its node
takes any of that (DAGMan's throttles count submitted jobs): one deferred by ``SCRIPT DEFER``
holds no slot and uses no RETRY; PRE_SKIP ends its node done, with no job. When nothing more
can run, the FINAL node runs (with ``$(DAG_STATUS)`` and ``$(FAILED_COUNT)``) and decides the
result; as in DAGMan, it also runs after ABORT-DAG-ON and after an interrupt (the local
``condor_rm``).

An interrupt removes the running jobs as ``condor_rm`` does (:mod:`.jobqueue`): a job's spooled
checkpoint goes with it unless its ``leave_in_queue`` keeps it in the queue, as a sweep's
training jobs do. Once the DAG has ended, the runner does what the documented stop of a sweep
on a pool does next: each kept job's checkpoint is copied into its folder (where it is newer)
and the job let go, so a rerun, here or on a pool, resumes every member from its last
checkpoint. A run that was killed before it could do so leaves the kept jobs behind; the next
run of the DAG brings them back first. At its start a run says where each member of a sweep
resumes from (:mod:`.resume`).

If the DAG fails or is interrupted (Ctrl-C, SIGTERM), a rescue DAG is written in DAGMan's
format; running the DAG again applies the newest rescue file, so no node that succeeded runs
again. Events go to each job's ``log`` and to ``<dag>.nodes.log``; progress to
``<dag>.dagman.out``.

As DAGMan, a runner holds the DAG's lock (``<dag>.lock``, :mod:`condorml.backends.daglock`)
from its creation to the end of :meth:`DagRunner.run`: a second run of the DAG, here or by
DAGMan, is refused while it runs.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from condorml.backends.daglock import DagLock
from condorml.backends.local.dagfile import Dag, read_dag
from condorml.backends.local.dagman_out import DagmanOut
from condorml.backends.local.jobqueue import BroughtBack, KeptJob, bring_back, dag_left
from condorml.backends.local.node import NodeAttempt, NodeResult, NodeState, Surroundings
from condorml.backends.local.rescue import use_newest_rescue, write_rescue
from condorml.backends.local.resume import ResumePoint, resume_points
from condorml.backends.local.scripts import script_macros
from condorml.backends.local.slots import Slots
from condorml.backends.local.starter import Evictions
from condorml.errors import CondormlError
from condorml.htcondor.events import JobView
from condorml.sweep.accounting import LEADERBOARD_COLUMNS, counts_line
from condorml.sweep.rundir import LOCAL_FOLDER

log = logging.getLogger(__name__)

# DAGMan's DAG_STATUS values
DAG_STATUS_OK, DAG_STATUS_NODE_FAILED, DAG_STATUS_ABORT, DAG_STATUS_RM = 0, 2, 3, 4


@dataclass
class RunOptions:
    """How the local backend runs a DAG.

    Attributes
    ----------
    max_jobs : int or None
        At most this many node jobs at once (DAGMan's ``-maxjobs``); None or 0 (as for
        ``condor_submit_dag -maxjobs``): as resources allow.
    cpus, memory_mb : int
        The machine's share the jobs may use (defaults: the CPUs and memory available here).
    evictions : Evictions
        Injected evictions.
    restart : bool
        Ignore rescue files (rename them ``.old``) and run every node again.
    """

    max_jobs: int | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    evictions: Evictions = field(default_factory=Evictions)
    restart: bool = False


@dataclass
class DagResult:
    """How a DAG run ended."""

    exit_code: int
    status: int
    done: list[str]
    failed: dict[str, str]  # node -> reason
    rescue: Path | None
    interrupted: bool = False
    nodes: int = 0  # in the DAG, the FINAL node included (as watch counts them)
    final_done: bool = False  # the FINAL node succeeded
    jobs: list[JobView] = field(default_factory=list)  # every node job that ran, as logged
    brought_back: list[BroughtBack] = field(default_factory=list)  # kept checkpoints returned
    stopped: list[ResumePoint] = field(default_factory=list)  # sweep members left to train

    def summary(self) -> str:
        """``8/9 nodes done, 1 failed; node jobs: 6 runs, 5 checkpoints, 1 eviction``."""
        done = len(self.done) + self.final_done
        counts = counts_line(*(sum(getattr(j, c) for j in self.jobs) for c in LEADERBOARD_COLUMNS))
        return f"{done}/{self.nodes} nodes done, {len(self.failed)} failed; node jobs: {counts}"


class DagRunner:
    """Run one DAG file with the local backend (see module docstring).

    The pieces it drives: :class:`.slots.Slots` (what may start now), :class:`.node.NodeAttempt`
    (one node's PRE script, jobs and POST script), :class:`.dagman_out.DagmanOut` (the progress
    log) and :mod:`.rescue` (rescue DAGs).

    Example
    -------
    >>> DagRunner(Path("runs/x/sweep.dag"), RunOptions()).run().exit_code  # doctest: +SKIP
    0
    """

    def __init__(
        self,
        dag_path: Path,
        options: RunOptions,
        on_change: Callable[[DagRunner], None] | None = None,
    ) -> None:
        self.dag_path, self.options, self.on_change = dag_path.absolute(), options, on_change
        if options.max_jobs is not None and options.max_jobs < 0:
            raise CondormlError(
                f"--max-jobs {options.max_jobs}: give a number of jobs at once, or 0 for no limit"
            )
        self.dag: Dag = read_dag(self.dag_path)
        self.states = {name: NodeState(node) for name, node in self.dag.nodes.items()}
        self.local = self.dag.folder / LOCAL_FOLDER
        self.nodes_log = self.dag_path.with_name(self.dag_path.name + ".nodes.log")
        self.out_path = self.dag_path.with_name(self.dag_path.name + ".dagman.out")
        self.out = DagmanOut(self.out_path)
        self.cancel = threading.Event()
        self.finished: queue.Queue[NodeResult] = queue.Queue()
        self.slots = Slots(options.cpus, options.memory_mb, options.max_jobs, self.dag.maxjobs)
        self.pending: dict[str, NodeAttempt] = {}  # ready nodes' next attempts, parsed once
        self.in_pre: set[str] = set()  # nodes whose PRE script runs (or is deferred): no slot
        self.skips = itertools.count(1)  # ids of the 034 PRE_SKIP events
        self.abort: tuple[str, int] | None = None  # (node, exit code) after ABORT-DAG-ON
        # last, and before anything is written (--restart renames rescue files): as DAGMan,
        # one run of a DAG at a time
        self.lock = DagLock.acquire(self.dag_path)
        try:
            use_newest_rescue(self.dag, options.restart)  # marks the nodes that states hold
            # what a killed run left in the queue comes back before anything resumes from it
            self.brought_back: list[BroughtBack] = bring_back(self.local)
            self.resume: list[ResumePoint] = resume_points(self.dag.folder, self._to_run())
        except BaseException:
            self.lock.release()
            raise
        self.kept: list[KeptJob] = []  # jobs of this run that leave_in_queue keeps
        self.noted: set[str] = set()  # notes about jobs already in dagman.out (said once a run)

    # --- the main loop -----------------------------------------------------------------------

    def run(self) -> DagResult:
        """Run the DAG to its end; Ctrl-C and SIGTERM stop it and write a rescue DAG. The DAG's
        lock is let go at the end, whatever happens."""
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> DagResult:
        self.local.mkdir(parents=True, exist_ok=True)
        self.out.write("****** condorml local backend (DAGMan semantics) STARTING UP")
        self.out.write(f"DAG Input file is {self.dag_path.name}")
        self.out.write(f"DAG Lockfile is {self.lock.path.name}, held by pid {os.getpid()}")
        if self.lock.note:
            self.out.write(self.lock.note)
        if self.dag.rescue is not None:
            self.out.write(f"Using rescue DAG {self.dag.rescue.name}")
        for state in self.states.values():
            if state.node.done:
                state.status = "done"
        done = sum(s.status == "done" for s in self.states.values())
        self.out.write(f"Number of pre-completed nodes: {done}")
        for item in self.brought_back:  # left in the queue by a run that was killed
            self._said_brought_back(item)
        for point in self.resume:  # a sweep: what each member's next training job receives
            self.out.write(f"Member {point.describe()}")
        with self._stop_on_signals():
            interrupted = self._run_nodes()
            self._update_readiness()  # children of the last failures become futile
            self._changed()
            status = self._dag_status(interrupted)
            final_ok = None
            if self.dag.final:
                if interrupted:
                    self.out.write(
                        "Running the FINAL node after the removal (interrupt again to skip it)"
                    )
                if self.cancel.is_set():  # DAGMan runs FINAL after condor_rm and ABORT-DAG-ON too
                    self.cancel = threading.Event()
                final_ok = self._run_final(status)
            self._bring_back_kept()
        return self._finish(status, final_ok, interrupted)

    def _to_run(self) -> list[str]:
        """The nodes not done yet (FINAL aside), in the DAG's order."""
        return [n for n, s in self.states.items() if not s.node.final and s.status != "done"
                and not s.node.done]  # fmt: skip

    def _bring_back_kept(self) -> None:
        """The DAG leaves the queue: the schedd removes its kept jobs again (009); then, as the
        documented stop on a pool does, their checkpoints come back and they are let go."""
        dag_left(self.local, self.kept)
        returned = bring_back(self.local)
        for item in returned:
            self._said_brought_back(item)
        self.brought_back += returned

    def _said_brought_back(self, item: BroughtBack) -> None:
        what = ", ".join(item.copied) or "nothing newer than what it holds"
        self.out.write(
            f"Removed job {item.job} (node {item.node}) let go (condor_rm -forcex) after its "
            f"checkpoint came back into {os.path.relpath(item.iwd, self.dag.folder)}: {what}"
        )

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM set ``cancel`` (in the main thread; elsewhere they cannot be caught)."""
        signals = (signal.SIGINT, signal.SIGTERM) if _main_thread() else ()
        previous = {sig: signal.getsignal(sig) for sig in signals}

        def stop(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            self.out.write(f"Received {name}: removing jobs and writing a rescue DAG")
            self.cancel.set()

        for sig in previous:
            signal.signal(sig, stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run_nodes(self) -> bool:
        """Run nodes until none can run; True if interrupted (not aborted)."""
        while True:
            self._update_readiness()
            if not self.cancel.is_set() and self.abort is None:
                self._start_ready()
            if not self.slots and not self.in_pre:
                break
            self._collect()
            self._changed()
        return self.cancel.is_set() and self.abort is None

    def _update_readiness(self) -> None:
        for state in self.states.values():
            if state.status != "not_ready" or state.node.final:
                continue
            parents = [self.states[p].status for p in state.node.parents]
            if any(p in ("error", "futile") for p in parents):
                state.status = "futile"
            elif all(p == "done" for p in parents):
                state.status = "ready"

    def _start_ready(self) -> None:
        """Start the ready nodes that fit, higher PRIORITY first (then in DAG order).

        A node with a PRE script runs it first, holding nothing (DAGMan's throttles count
        submitted jobs, and a deferred PRE script not even against ``-maxpre``); its job then
        waits, as a ready node, for what it asks for.
        """
        ready = [
            (-s.node.priority, i, s)
            for i, s in enumerate(self.states.values())
            if s.status == "ready"
        ]
        heapq.heapify(ready)
        while ready:
            _, _, state = heapq.heappop(ready)
            name = state.node.name
            attempt = self.pending.get(name)
            if attempt is None:
                attempt = self.pending[name] = NodeAttempt(state, self.dag.folder)
            if state.node.pre and not attempt.begun:
                self._start_pre(attempt)
                continue
            request = self.slots.clamp(*attempt.request())
            if self.slots.fits(request, state.node.category):
                del self.pending[name]
                self._launch(attempt, request)

    def _launch(self, attempt: NodeAttempt, request: tuple[int, int]) -> None:
        state = attempt.state
        cores = self.slots.take(state.node.name, request, state.node.category)
        state.status = "queued"  # any PRE script has run (_start_pre)
        macros = self._script_macros(attempt)
        self._thread(state.node.name, lambda: attempt.run(self._surroundings(), cores, macros))

    def _thread(self, name: str, work: Callable[[], NodeResult]) -> None:
        """Run part of a node attempt in a thread; its result goes to ``finished``."""
        threading.Thread(
            target=self._node_thread, args=(name, work), daemon=True, name=f"node-{name}"
        ).start()

    def _start_pre(self, attempt: NodeAttempt) -> None:
        state = attempt.state
        state.status = "pre"
        self.in_pre.add(state.node.name)
        macros = self._script_macros(attempt)

        def pre() -> NodeResult:
            ended = attempt.run_pre(self._surroundings(), macros)
            return ended or NodeResult(state.node.name, True, 0, "", pre_passed=True)

        self._thread(state.node.name, pre)

    def _surroundings(self) -> Surroundings:
        return Surroundings(self.local, self.nodes_log, self.out, self.options.evictions,
                            self.cancel, self.skips, self.kept, self.noted)  # fmt: skip

    def _script_macros(self, attempt: NodeAttempt) -> dict[str, str]:
        statuses = [s.status for s in self.states.values()]
        return script_macros(attempt.node, attempt.retry, statuses, self._dag_status(False))

    def _node_thread(self, name: str, work: Callable[[], NodeResult]) -> None:
        try:
            result = work()
        except CondormlError as err:
            result = NodeResult(name, False, 1, str(err))
        except Exception as err:  # a bug must not hang the DAG
            log.exception("node %s", name)
            result = NodeResult(name, False, 1, f"internal error: {err}")
        self.finished.put(result)

    def _collect(self) -> None:
        """Wait a little for a node attempt to end; decide done, retry or failed."""
        try:
            finished = self.finished.get(timeout=0.5)
        except queue.Empty:
            return
        state = self.states[finished.name]
        self.in_pre.discard(finished.name)
        if finished.pre_passed:  # the job now waits for its slot, as a ready node
            state.status = "ready"
            return
        self.pending.pop(finished.name, None)  # the attempt ended (in its PRE script, maybe)
        if finished.name in self.slots.claims:
            self.slots.release(finished.name)
        state.return_value, state.reason = finished.value, finished.reason
        node = state.node
        if (
            node.abort_on is not None
            and finished.value == node.abort_on[0]
            and not self.cancel.is_set()
        ):
            self.abort = (
                node.name,
                node.abort_on[1] if node.abort_on[1] is not None else finished.value,
            )
            self.out.write(
                f"Aborting DAG because of ABORT-DAG-ON for node {node.name} (value {finished.value})"
            )
            self.cancel.set()
        if finished.success:
            state.status = "done"
            self.out.write(f"Node {node.name} completed successfully.")
        elif self.cancel.is_set():
            state.status = "error" if self.abort else "ready"
        elif state.attempts <= node.retries and not (
            node.retry_unless_exit is not None and finished.value == node.retry_unless_exit
        ):
            self.out.write(
                f"Retrying node {node.name} (retry #{state.attempts} of {node.retries})..."
            )
            state.status = "ready"
        else:
            state.status = "error"
            self.out.write(f"Node {node.name} failed: {finished.reason}")

    def _changed(self) -> None:
        """Called at every poll: the status line (written only when it changed), on_change."""
        self.out.status(s.status for s in self.states.values())
        if self.on_change:
            self.on_change(self)

    # --- the end -----------------------------------------------------------------------------

    def _dag_status(self, interrupted: bool) -> int:
        if self.abort is not None:
            return DAG_STATUS_ABORT
        if interrupted:
            return DAG_STATUS_RM
        if any(s.status == "error" for s in self.states.values() if not s.node.final):
            return DAG_STATUS_NODE_FAILED
        return DAG_STATUS_OK

    def _run_final(self, status: int) -> bool:
        state = self.states[self.dag.final]
        if state.status == "done":
            return True
        failed = sum(s.status == "error" for s in self.states.values() if not s.node.final)
        self.out.write(
            f"Running FINAL node {state.node.name} (DAG_STATUS {status}, FAILED_COUNT {failed})"
        )
        attempt = NodeAttempt(state, self.dag.folder)
        state.status = "queued"
        macros = self._script_macros(attempt)
        dag_macros = {"DAG_STATUS": str(status), "FAILED_COUNT": str(failed)}
        try:
            result = attempt.run(
                self._surroundings(), self.slots.cores_for_final(), macros, dag_macros
            )
        except CondormlError as err:
            result = NodeResult(state.node.name, False, 1, str(err))
        state.status = "done" if result.success else "error"
        state.reason, state.return_value = result.reason, result.value
        self.out.write(
            f"FINAL node {state.node.name} {'completed successfully' if result.success else 'failed: ' + result.reason}"
        )
        self._changed()
        return result.success

    def _finish(self, status: int, final_ok: bool | None, interrupted: bool) -> DagResult:
        done = [n for n, s in self.states.items() if s.status == "done" and not s.node.final]
        failed = {n: s.reason for n, s in self.states.items() if s.status == "error"}
        unfinished = [n for n, s in self.states.items() if s.status != "done" and not s.node.final]
        rescue = None
        if unfinished:
            failed_names = [n for n in failed if not self.states[n].node.final]
            rescue = write_rescue(self.dag, done, failed_names)
            self.out.write(f"Writing Rescue DAG to {rescue.name}...")
        if interrupted:
            exit_code = 1
        elif self.abort is not None:
            exit_code = self.abort[1]
        elif final_ok is not None:
            exit_code = 0 if final_ok else 1
        else:
            exit_code = 0 if not unfinished else 1
        stopped = resume_points(self.dag.folder, self._to_run()) if unfinished else []
        for point in stopped:
            self.out.write(f"Member {point.describe(stopped=True)}")
        self.out.write(f"**** condorml local backend EXITING WITH STATUS {exit_code}")
        jobs = [job for state in self.states.values() for job in state.jobs]
        final_done = self.dag.final is not None and self.states[self.dag.final].status == "done"
        return DagResult(exit_code, status, done, failed, rescue, interrupted, len(self.states),
                         final_done, jobs, self.brought_back, stopped)  # fmt: skip


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
