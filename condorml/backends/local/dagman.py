"""The local DAGMan: run a DAG's nodes on this machine with DAGMan's rules.

A node runs PRE script -> job(s) -> POST script; its result is that of the last part that ran
(a POST script can turn a failed job into a success). A failed node is retried up to its RETRY
count unless it exited with its UNLESS-EXIT value; ABORT-DAG-ON stops everything. Ready nodes
run in parallel as far as this machine's CPU cores and memory, ``--max-jobs`` and the DAG's
CATEGORY/MAXJOBS throttles allow, higher PRIORITY first. When nothing more can run, the FINAL
node runs (with ``$(DAG_STATUS)`` and ``$(FAILED_COUNT)``) and decides the result; as in DAGMan,
it also runs after ABORT-DAG-ON and after an interrupt (the local ``condor_rm``).

An interrupt removes the running jobs as ``condor_rm`` does: their spooled checkpoints are
discarded with them, so a re-run resumes from what the jobs last transferred back (for a sweep
member: the ``ckpt/`` of its last job that ended), exactly as on a pool.

If the DAG fails or is interrupted (Ctrl-C, SIGTERM), a rescue DAG is written in DAGMan's
format; running the DAG again applies the newest rescue file, so no node that succeeded runs
again. Events go to each job's ``log`` and to ``<dag>.nodes.log``; progress to
``<dag>.dagman.out``.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from condorml.backends.local.dagfile import (
    Dag,
    Node,
    Script,
    apply_rescue,
    read_dag,
    rescue_files,
    write_rescue,
)
from condorml.backends.local.eventlog import EventLog, JobId, next_cluster_id
from condorml.backends.local.jobspec import JobSpec, load_jobs
from condorml.backends.local.starter import Evictions, JobOutcome, Starter
from condorml.errors import CondormlError
from condorml.htcondor.events import JobView
from condorml.monitor.accounting import LEADERBOARD_COLUMNS, counts_line

log = logging.getLogger(__name__)

LOCAL_FOLDER = ".condorml-local"
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
class NodeState:
    """Run-time state of a node."""

    node: Node
    status: str = "not_ready"  # not_ready ready pre queued post done error futile
    attempts: int = 0
    return_value: int = 0
    reason: str = ""
    cluster: int | None = None
    runs: list[JobOutcome] = field(default_factory=list)
    jobs: list[JobView] = field(default_factory=list)  # every job of every attempt, as logged


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

    def summary(self) -> str:
        """``8/9 nodes done, 1 failed; node jobs: 6 runs, 5 checkpoints, 1 eviction``."""
        done = len(self.done) + self.final_done
        counts = counts_line(*(sum(getattr(j, c) for j in self.jobs) for c in LEADERBOARD_COLUMNS))
        return f"{done}/{self.nodes} nodes done, {len(self.failed)} failed; node jobs: {counts}"


@dataclass
class _Finished:
    name: str
    success: bool
    value: int
    reason: str


class DagRunner:
    """Run one DAG file with the local backend (see module docstring).

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
        self._rescue_setup()
        self.states = {name: NodeState(node) for name, node in self.dag.nodes.items()}
        self.local = self.dag.folder / LOCAL_FOLDER
        self.nodes_log = self.dag_path.with_name(self.dag_path.name + ".nodes.log")
        self.out_path = self.dag_path.with_name(self.dag_path.name + ".dagman.out")
        self.cancel = threading.Event()
        self.finished: queue.Queue[_Finished] = queue.Queue()
        if hasattr(os, "sched_getaffinity"):
            available = sorted(os.sched_getaffinity(0))
        else:  # pragma: no cover
            available = list(range(os.cpu_count() or 1))
        self.free_cores = available[: options.cpus or len(available)]
        self.cpus = len(self.free_cores)
        self.memory_free = options.memory_mb or _available_memory_mb()
        self.running: dict[
            str, tuple[list[int], int, str | None]
        ] = {}  # node -> cores, memory, category
        self.abort: tuple[str, int] | None = None
        self._status_line = ""  # the last node-count line in dagman.out

    # --- set-up ----------------------------------------------------------------------------

    def _rescue_setup(self) -> None:
        rescues = rescue_files(self.dag_path)
        if rescues and self.options.restart:
            for path in rescues:
                path.rename(path.with_name(path.name + ".old"))
            rescues = []
        if rescues:
            apply_rescue(self.dag, rescues[-1])

    def _out(self, message: str) -> None:
        stamp = time.strftime("%m/%d/%y %H:%M:%S")
        with open(self.out_path, "a") as handle:
            handle.write(f"{stamp} {message}\n")
        log.debug(message)

    # --- the main loop -----------------------------------------------------------------------

    def run(self) -> DagResult:
        """Run the DAG to its end; Ctrl-C and SIGTERM stop it and write a rescue DAG."""
        self.local.mkdir(parents=True, exist_ok=True)
        self._out("****** condorml local backend (DAGMan semantics) STARTING UP")
        self._out(f"DAG Input file is {self.dag_path.name}")
        if self.dag.rescue is not None:
            self._out(f"Using rescue DAG {self.dag.rescue.name}")
        for state in self.states.values():
            if state.node.done:
                state.status = "done"
        self._out(
            f"Number of pre-completed nodes: {sum(s.status == 'done' for s in self.states.values())}"
        )
        previous = (
            {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            if _main_thread()
            else {}
        )

        def stop(signum: int, _frame: object) -> None:
            self._out(
                f"Received {signal.Signals(signum).name}: removing jobs and writing a rescue DAG"
            )
            self.cancel.set()

        for sig in previous:
            signal.signal(sig, stop)
        try:
            interrupted = self._run_nodes()
            self._update_readiness()  # children of the last failures become futile
            self._changed()
            status = self._dag_status(interrupted)
            final_ok = None
            if self.dag.final:
                if interrupted:
                    self._out(
                        "Running the FINAL node after the removal (interrupt again to skip it)"
                    )
                if self.cancel.is_set():  # DAGMan runs FINAL after condor_rm and ABORT-DAG-ON too
                    self.cancel = threading.Event()
                final_ok = self._run_final(status)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._finish(status, final_ok, interrupted)

    def _run_nodes(self) -> bool:
        while True:
            self._update_readiness()
            if not self.cancel.is_set() and self.abort is None:
                self._start_ready()
            if not self.running:
                break
            self._collect(block=True)
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
        ready = [
            (-s.node.priority, i, s)
            for i, s in enumerate(self.states.values())
            if s.status == "ready"
        ]
        heapq.heapify(ready)
        while ready:
            _, _, state = heapq.heappop(ready)
            if not self._fits(state):
                continue
            self._launch(state)

    def _fits(self, state: NodeState) -> bool:
        node = state.node
        if self.options.max_jobs and len(self.running) >= self.options.max_jobs:
            return False
        category = node.category
        if category in self.dag.maxjobs:
            in_category = sum(1 for _, _, c in self.running.values() if c == category)
            if in_category >= self.dag.maxjobs[category]:
                return False
        cpus, memory = self._request(state)
        return not (self.running and (cpus > len(self.free_cores) or memory > self.memory_free))

    def _request(self, state: NodeState) -> tuple[int, int]:
        """(cores, MiB) the node's job asks for, clamped to this machine."""
        if state.node.noop:
            return 0, 0
        try:
            job = load_jobs(
                Path(state.node.submit_file), self._node_dir(state.node), 0, state.node.vars
            )[0]
        except CondormlError:
            return 1, 0  # the error is reported when the node runs
        return min(max(job.cpus, 1), self.cpus), min(job.memory_mb, self.memory_free)

    def _launch(self, state: NodeState) -> None:
        cpus, memory = self._request(state)
        cores = [self.free_cores.pop(0) for _ in range(min(cpus, len(self.free_cores)))]
        self.memory_free -= memory
        self.running[state.node.name] = (cores, memory, state.node.category)
        state.status = "pre" if state.node.pre else "queued"
        thread = threading.Thread(
            target=self._node_thread,
            args=(state, cores),
            daemon=True,
            name=f"node-{state.node.name}",
        )
        thread.start()

    def _collect(self, block: bool) -> None:
        try:
            finished = self.finished.get(timeout=0.5 if block else 0)
        except queue.Empty:
            return
        state = self.states[finished.name]
        cores, memory, _ = self.running.pop(finished.name)
        self.free_cores = sorted(self.free_cores + cores)
        self.memory_free += memory
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
            self._out(
                f"Aborting DAG because of ABORT-DAG-ON for node {node.name} (value {finished.value})"
            )
            self.cancel.set()
        if finished.success:
            state.status = "done"
            self._out(f"Node {node.name} completed successfully.")
        elif self.cancel.is_set():
            state.status = "error" if self.abort else "ready"
        elif state.attempts <= node.retries and not (
            node.retry_unless_exit is not None and finished.value == node.retry_unless_exit
        ):
            self._out(f"Retrying node {node.name} (retry #{state.attempts} of {node.retries})...")
            state.status = "ready"
        else:
            state.status = "error"
            self._out(f"Node {node.name} failed: {finished.reason}")

    def _changed(self) -> None:
        counts = {
            k: 0 for k in ("done", "pre", "queued", "post", "ready", "not_ready", "error", "futile")
        }
        for state in self.states.values():
            counts[state.status] = counts.get(state.status, 0) + 1
        line = (
            f"Of {len(self.states)} nodes total: Done {counts['done']} Pre {counts['pre']} Queued {counts['queued']} "
            f"Post {counts['post']} Ready {counts['ready']} Un-Ready {counts['not_ready']} Failed {counts['error']} "
            f"Futile {counts['futile']}"
        )
        if line != self._status_line:  # called at every poll: a line only when a count changed
            self._out(line)
            self._status_line = line
        if self.on_change:
            self.on_change(self)

    # --- one node ----------------------------------------------------------------------------

    def _node_dir(self, node: Node) -> Path:
        return self.dag.folder / node.directory if node.directory else self.dag.folder

    def _node_thread(self, state: NodeState, cores: list[int]) -> None:
        try:
            result = self._run_node(state, cores)
        except CondormlError as err:
            result = _Finished(state.node.name, False, 1, str(err))
        except Exception as err:  # a bug must not hang the DAG
            log.exception("node %s", state.node.name)
            result = _Finished(state.node.name, False, 1, f"internal error: {err}")
        self.finished.put(result)

    def _run_node(
        self, state: NodeState, cores: list[int], dag_macros: dict[str, str] | None = None
    ) -> _Finished:
        node = state.node
        retry = state.attempts
        state.attempts += 1
        macros = self._script_macros(node, retry)
        pre_value = None
        if node.pre:
            pre_value = self._run_script(node, node.pre, macros)
            if node.pre_skip is not None and pre_value == node.pre_skip:
                return _Finished(node.name, True, 0, "PRE_SKIP")
            if pre_value != 0:
                return _Finished(
                    node.name, False, pre_value, f"PRE script failed with status {pre_value}"
                )
        state.status = "queued"
        outcomes: list[JobOutcome] = []
        cluster = None
        if not node.noop:
            cluster = next_cluster_id(self.local / "cluster")
            state.cluster = cluster
            jobs = load_jobs(
                Path(node.submit_file),
                self._node_dir(node),
                cluster,
                node.vars,
                {"JOB": node.name, "RETRY": str(retry), **(dag_macros or {})},
            )
            self._out(
                f"Submitting node {node.name} from file {node.submit_file}: {len(jobs)} job(s), cluster {cluster}"
            )
            for job in jobs:
                if self.cancel.is_set():
                    break
                outcomes.append(self._run_job(node, job, cores))
        state.runs.extend(outcomes)
        failed = [o for o in outcomes if o.status != "exited" or o.return_value != 0]
        job_value = failed[0].return_value if failed else 0
        reason = _describe(failed[0]) if failed else ""
        if self.cancel.is_set() and (
            len(outcomes) < (0 if node.noop else 1) or any(o.status == "removed" for o in outcomes)
        ):
            return _Finished(node.name, False, job_value or 1, "removed")
        if node.post:
            state.status = "post"
            post_macros = {
                **macros,
                "$RETURN": str(job_value),
                "$JOBID": f"{cluster}.{len(outcomes) - 1}" if cluster else "",
                "$CLUSTERID": str(cluster or ""),
                "$JOB_COUNT": str(len(outcomes)),
                "$JOB_ABORT_COUNT": str(sum(o.status == "removed" for o in outcomes)),
                "$SUCCESS": "true" if not failed else "false",
                "$EXIT_CODES": ",".join(str(o.return_value) for o in outcomes),
                "$PRE_SCRIPT_RETURN": str(pre_value) if pre_value is not None else "-1",
            }
            value = self._run_script(node, node.post, post_macros)
            EventLog([], JobId(cluster or 0), node.name, self.nodes_log).post_script_terminated(
                value
            )
            if value != 0:
                return _Finished(
                    node.name,
                    False,
                    value,
                    f"{reason + ' and ' if reason else ''}POST script failed with status {value}",
                )
            return _Finished(node.name, True, 0, "")
        return _Finished(node.name, not failed, job_value, reason)

    def _run_job(self, node: Node, job: JobSpec, cores: list[int]) -> JobOutcome:
        events = EventLog(
            [job.log] if job.log else [], JobId(job.cluster, job.proc), node.name, self.nodes_log
        )
        for note in job.notes:
            self._out(f"Node {node.name}: {note}")
        spool = self.local / "spool" / f"{job.cluster}.{job.proc}"
        runner = Starter(
            job, events, self.local / "execute", spool, cores, self.options.evictions, self.cancel
        )
        outcome = runner.run()
        self.states[node.name].jobs.append(events.view)
        view = events.view  # counted as watch and report count them, from the same events
        self._out(
            f"Node {node.name} job proc ({job.cluster}.{job.proc}.0) {_describe(outcome) or 'completed successfully'}; "
            + counts_line(*(getattr(view, c) for c in LEADERBOARD_COLUMNS))
        )
        return outcome

    def _script_macros(self, node: Node, retry: int) -> dict[str, str]:
        statuses = [s.status for s in self.states.values()]
        return {
            "$NODE": node.name,
            "$JOB": node.name,
            "$RETRY": str(retry),
            "$MAX_RETRIES": str(node.retries),
            "$NODE_COUNT": str(len(statuses)),
            "$QUEUED_COUNT": str(statuses.count("queued")),
            "$DONE_COUNT": str(statuses.count("done")),
            "$FAILED_COUNT": str(statuses.count("error")),
            "$FUTILE_COUNT": str(statuses.count("futile")),
            "$DAGID": "0",
            "$DAG_STATUS": str(self._dag_status(False)),
        }

    def _run_script(self, node: Node, script: Script, macros: dict[str, str]) -> int:
        argv = [script.executable, *(macros.get(arg, arg) for arg in script.arguments)]
        cwd = self._node_dir(node)
        if not os.path.isabs(argv[0]) and (cwd / argv[0]).exists():
            argv[0] = str(cwd / argv[0])
        while True:
            try:
                value = subprocess.run(
                    argv, cwd=cwd, check=False, stdin=subprocess.DEVNULL
                ).returncode
            except OSError as err:
                self._out(
                    f"Node {node.name}: cannot run script {script.executable}: {err.strerror or err}"
                )
                return 1
            if script.defer_status is None or value != script.defer_status or self.cancel.is_set():
                return value
            time.sleep(script.defer_seconds)

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
        self._out(
            f"Running FINAL node {state.node.name} (DAG_STATUS {status}, FAILED_COUNT {failed})"
        )
        macros = {"DAG_STATUS": str(status), "FAILED_COUNT": str(failed)}
        cores = self.free_cores[: max(1, self.cpus)]
        state.status = "queued"
        try:
            result = self._run_node(state, cores, macros)
        except CondormlError as err:
            result = _Finished(state.node.name, False, 1, str(err))
        state.status = "done" if result.success else "error"
        state.reason, state.return_value = result.reason, result.value
        self._out(
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
            self._out(f"Writing Rescue DAG to {rescue.name}...")
        if interrupted:
            exit_code = 1
        elif self.abort is not None:
            exit_code = self.abort[1]
        elif final_ok is not None:
            exit_code = 0 if final_ok else 1
        else:
            exit_code = 0 if not unfinished else 1
        self._out(f"**** condorml local backend EXITING WITH STATUS {exit_code}")
        jobs = [job for state in self.states.values() for job in state.jobs]
        final_done = self.dag.final is not None and self.states[self.dag.final].status == "done"
        return DagResult(exit_code, status, done, failed, rescue, interrupted, len(self.states),
                         final_done, jobs)  # fmt: skip


def _describe(outcome: JobOutcome) -> str:
    if outcome.status == "held":
        return f"was held: {outcome.reason}"
    if outcome.status == "removed":
        return "was removed"
    if outcome.signal is not None:
        return f"was killed by signal {outcome.signal}"
    if outcome.exit_code:
        return f"failed with status {outcome.exit_code}"
    return ""


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _available_memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    except (ValueError, OSError, AttributeError):
        return 1 << 20
