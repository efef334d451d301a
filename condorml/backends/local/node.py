"""One node of a DAG and one attempt at it: PRE script -> job(s) -> POST script.

The attempt's result is that of the last part that ran (a POST script can turn a failed job into
a success). The PRE script runs apart (:meth:`NodeAttempt.run_pre`), before the node holds a job
slot: as in DAGMan, a PRE script (deferred or running) counts against no MAXJOBS, category or
``--max-jobs`` throttle. A PRE script that exits the node's PRE_SKIP value ends the node as a
success with no job, no POST script and one 034 event in the nodes log. Its submit file is parsed once per attempt: when the scheduler first asks what the
job requests, and not again when the job starts unless the PRE script changed the file.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from condorml.backends.local.container import without_image_note
from condorml.backends.local.dagfile import Node
from condorml.backends.local.dagman_out import DagmanOut
from condorml.backends.local.eventlog import NO_JOB_PROC, EventLog, JobId, next_cluster_id
from condorml.backends.local.jobqueue import COMPLETED, REMOVED, KeptJob, job_left
from condorml.backends.local.jobspec import JobSpec, SubmitFile, expand_jobs, read_submit
from condorml.backends.local.scripts import post_macros, run_script
from condorml.backends.local.starter import Evictions, JobOutcome, Starter
from condorml.errors import CondormlError
from condorml.htcondor.events import JobView
from condorml.sweep.accounting import LEADERBOARD_COLUMNS, counts_line
from condorml.sweep.rundir import local_job_ad, local_spool


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
class NodeResult:
    """How one attempt at a node ended."""

    name: str
    success: bool
    value: int  # DAGMan's return value: of the POST script, else of the first failed job
    reason: str
    pre_passed: bool = False  # only the PRE script ran, with success: the job waits for a slot


@dataclass
class Surroundings:
    """What every attempt shares with the DAG run: its folders, logs and the cancel flag."""

    local: Path  # the DAG's .condorml-local folder: cluster ids, spool, sandboxes
    nodes_log: Path
    out: DagmanOut
    evictions: Evictions
    cancel: threading.Event
    skips: Iterator[int] = field(default_factory=lambda: itertools.count(1))  # 034 event ids
    kept: list[KeptJob] = field(default_factory=list)  # removed jobs leave_in_queue keeps
    noted: set[str] = field(default_factory=set)  # notes already in dagman.out: each said once


class NodeAttempt:
    """One attempt at a node (the first, or a retry).

    Parameters
    ----------
    state : NodeState
        The node; its ``attempts`` count is taken as this attempt's ``$(RETRY)``.
    dag_folder : Path
        The DAG's folder (a node's ``DIR`` is relative to it).
    """

    def __init__(self, state: NodeState, dag_folder: Path) -> None:
        self.state, self.node = state, state.node
        self.retry = state.attempts
        directory = self.node.directory
        self.folder = dag_folder / directory if directory else dag_folder
        self._submit: SubmitFile | None = None
        self._request: tuple[int, int] | None = None
        self.begun = False  # run_pre was called: the attempt is counted, its PRE script ran
        self.pre_value: int | None = None

    def request(self) -> tuple[int, int]:
        """(cores, MiB) the node's first job asks for; (0, 0) for a NOOP node.

        An unreadable submit file asks for one core: its error is reported when the node runs.
        """
        if self.node.noop:
            return 0, 0
        if self._request is None:
            try:
                job = self._jobs(0, {})[0]
                self._request = job.cpus, job.memory_mb
            except CondormlError:
                self._request = 1, 0
        return self._request

    def _jobs(self, cluster: int, dag_macros: dict[str, str]) -> list[JobSpec]:
        self._submit = read_submit(Path(self.node.submit_file), self.folder, self._submit)
        macros = {"JOB": self.node.name, "RETRY": str(self.retry), **dag_macros}
        return expand_jobs(self._submit, self.folder, cluster, self.node.vars, macros)

    def run_pre(self, around: Surroundings, macros: dict[str, str]) -> NodeResult | None:
        """Begin the attempt: run the PRE script (blocking, through its DEFER waits).

        Returns the attempt's result if the PRE script ended it (PRE_SKIP: a success; any other
        non-zero status: a failure), else None: the job may be submitted. Called again, or for a
        node without a PRE script, it only counts the attempt (once) and returns None.
        """
        node, state = self.node, self.state
        if self.begun:
            return None
        self.begun = True
        state.attempts += 1
        if not node.pre:
            return None
        value = run_script(node, node.pre, macros, self.folder, around.cancel, around.out.write)
        self.pre_value = value
        if node.pre_skip is not None and value == node.pre_skip and not around.cancel.is_set():
            around.out.write(f"PRE Script of Node {node.name} failed with status {value}")
            around.out.write(
                f"PRE_SKIP return value {value} indicates we are done (successfully) with node {node.name}"
            )  # DAGMan's words
            job = JobId(0, NO_JOB_PROC, next(around.skips))
            EventLog([], job, node.name, around.nodes_log).pre_skip()
            return NodeResult(node.name, True, 0, "PRE_SKIP")
        if value != 0:
            return NodeResult(node.name, False, value, f"PRE script failed with status {value}")
        return None

    def run(self, around: Surroundings, cores: list[int], macros: dict[str, str],
            dag_macros: dict[str, str] | None = None) -> NodeResult:  # fmt: skip
        """Run the PRE script (unless :meth:`run_pre` ran it), jobs and POST script (blocking).

        ``macros`` are the scripts' (:func:`.scripts.script_macros`); ``dag_macros`` are more
        macros for the submit file (the FINAL node's ``DAG_STATUS`` and ``FAILED_COUNT``).
        """
        node, state = self.node, self.state
        ended = self.run_pre(around, macros)
        if ended is not None:
            return ended
        pre_value = self.pre_value
        state.status = "queued"
        outcomes = [] if node.noop else self._run_jobs(around, cores, dag_macros or {})
        state.runs.extend(outcomes)
        failed = [o for o in outcomes if o.status != "exited" or o.return_value != 0]
        job_value = failed[0].return_value if failed else 0
        reason = describe(failed[0]) if failed else ""
        if around.cancel.is_set() and (
            len(outcomes) < (0 if node.noop else 1) or any(o.status == "removed" for o in outcomes)
        ):
            return NodeResult(node.name, False, job_value or 1, "removed")
        if not node.post:
            return NodeResult(node.name, not failed, job_value, reason)
        state.status = "post"
        cluster = state.cluster if not node.noop else None
        value = run_script(node, node.post, post_macros(macros, outcomes, cluster, pre_value),
                           self.folder, around.cancel, around.out.write, "POST")  # fmt: skip
        EventLog([], JobId(cluster or 0), node.name, around.nodes_log).post_script_terminated(value)
        if value != 0:
            why = f"{reason + ' and ' if reason else ''}POST script failed with status {value}"
            return NodeResult(node.name, False, value, why)
        return NodeResult(node.name, True, 0, "")

    def _run_jobs(self, around: Surroundings, cores: list[int], dag_macros: dict[str, str]) -> list[JobOutcome]:  # fmt: skip
        node = self.node
        cluster = next_cluster_id(around.local / "cluster")
        self.state.cluster = cluster
        jobs = self._jobs(cluster, dag_macros)
        around.out.write(
            f"Submitting node {node.name} from file {node.submit_file}: {len(jobs)} job(s), cluster {cluster}"
        )
        outcomes = []
        for job in jobs:
            if around.cancel.is_set():
                break
            outcomes.append(self._run_job(around, job, cores))
        return outcomes

    def _run_job(self, around: Surroundings, job: JobSpec, cores: list[int]) -> JobOutcome:
        name = self.node.name
        log_files = [job.log] if job.log else []
        events = EventLog(log_files, JobId(job.cluster, job.proc), name, around.nodes_log)
        for note in [*job.notes, without_image_note(job)]:
            if note and note not in around.noted:
                around.noted.add(note)
                around.out.write(f"Node {name}: {note}")
        job_id, dag_folder = f"{job.cluster}.{job.proc}", around.local.parent
        spool, job_ad = local_spool(dag_folder, job_id), local_job_ad(dag_folder, job_id)
        starter = Starter(job, events, around.local / "execute", spool, cores, around.evictions,
                          around.cancel, job_ad)  # fmt: skip
        outcome = starter.run()
        # it leaves the queue with its spool, or stays (leave_in_queue): a held job, which the
        # local backend cannot keep waiting, leaves as a removed one
        status = COMPLETED if outcome.status == "exited" else REMOVED
        kept = job_left(job, status, outcome.checkpoints, outcome.starts, around.local, name,
                        around.nodes_log)  # fmt: skip
        if kept is not None:
            around.kept.append(kept)
            around.out.write(
                f"Node {name} job proc ({job.cluster}.{job.proc}.0) stays in the queue with its "
                f"checkpoint (leave_in_queue)"
            )
        view = events.view  # counted as watch and report count them, from the same events
        self.state.jobs.append(view)
        around.out.write(
            f"Node {name} job proc ({job.cluster}.{job.proc}.0) {describe(outcome) or 'completed successfully'}; "
            + counts_line(*(getattr(view, c) for c in LEADERBOARD_COLUMNS))
        )
        return outcome


def describe(outcome: JobOutcome) -> str:
    """Why a job failed, for dagman.out and the DAG's result ("" if it did not fail)."""
    if outcome.status == "held":
        return f"was held: {outcome.reason}"
    if outcome.status == "removed":
        return "was removed"
    if outcome.signal is not None:
        return f"was killed by signal {outcome.signal}"
    if outcome.exit_code:
        return f"failed with status {outcome.exit_code}"
    return ""
