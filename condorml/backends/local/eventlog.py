"""Job event logs in HTCondor's own text format, so the same tools read local and pool runs.

Modelled on what a real HTCondor 25.0 pool wrote (``tests/fixtures/htcondor/``): a header line
``NNN (CLUSTER.PROC.SUBPROC) YYYY-MM-DD HH:MM:SS text``, tab-indented body lines, and ``...`` to
end each event. A self-checkpoint is a pair of 040 "transferring output files" events while the
job keeps running (there is no checkpoint event); an eviction is 004, then 040 input transfer
and a new 001. A job's Chirp requests (:mod:`.chirp`) add what a pool's shadow writes: 008 for
``ulog`` (the text on the header line, the event's ``Info``; in the nodes log too) and 033 for
``set_job_attr`` (the job's own log only). ``htcondor2.JobEventLog`` and
``condor_watch_q -files`` read these files.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from htcondor2 import FileTransferEventType as F
from htcondor2 import JobEventType as T

from condorml.htcondor.events import Event, JobView

_HOST = "<127.0.0.1:0?alias={host}&condorml-local>"
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()

# The event numbers, from HTCondor's own bindings
SUBMIT, EXECUTE, EVICTED = T.SUBMIT, T.EXECUTE, T.JOB_EVICTED
TERMINATED, ABORTED, HELD = T.JOB_TERMINATED, T.JOB_ABORTED, T.JOB_HELD
POST_SCRIPT_TERMINATED, FILE_TRANSFER = T.POST_SCRIPT_TERMINATED, T.FILE_TRANSFER
PRESKIP = T.PRESKIP
GENERIC, ATTRIBUTE_UPDATE = T.GENERIC, T.ATTRIBUTE_UPDATE  # a job's Chirp ulog, set_job_attr
# DAGMan's id for the events of a node that has no job (034 PRE_SKIP): 0.INT_MAX.n, n counting up
NO_JOB_PROC = 2**31 - 1
# 040's FileTransferEventType: (direction, finished) -> type
_TRANSFER_TYPES = {
    ("input", False): F.IN_STARTED,
    ("input", True): F.IN_FINISHED,
    ("output", False): F.OUT_STARTED,
    ("output", True): F.OUT_FINISHED,
}
# what a real DAGMan's nodes log leaves out (checked on HTCondor 25.0: the job's own log has them)
NOT_IN_NODES_LOG = frozenset({FILE_TRANSFER, ATTRIBUTE_UPDATE})


def _lock(path: Path) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(path, threading.Lock())


@dataclass(frozen=True)
class JobId:
    """A job's (cluster, proc) id."""

    cluster: int
    proc: int = 0
    subproc: int = 0  # only DAGMan's pseudo ids of job-less events use it

    def __str__(self) -> str:
        return f"{self.cluster}.{self.proc}"


class EventLog:
    """Append events of one job to its own log and to the DAG's nodes log, as a pool does.

    Parameters
    ----------
    paths : list of Path
        The job's own log(s): every event is appended (files created if missing).
    job : JobId
        The job the events are about.
    node : str, optional
        The DAG node, written into submit and POST-script events as DAGMan does.
    nodes_log : Path, optional
        DAGMan's ``<dag>.nodes.log``: it gets only the events a real DAGMan's nodes log has,
        no 040 file transfers (checked on HTCondor 25.0: they are in the job's own log only).

    Attributes
    ----------
    clock : callable
        The time of each event (``time.time``; tests set other times).
    view : JobView
        The job as a reader of its own log sees it (runs, checkpoints, evictions counted as
        :class:`condorml.htcondor.events.JobView` counts them for ``watch`` and ``report``), kept up to
        date with every event written.
    """

    def __init__(
        self, paths: list[Path], job: JobId, node: str | None = None, nodes_log: Path | None = None
    ) -> None:
        self.paths = [Path(p).absolute() for p in dict.fromkeys(paths)]
        self.nodes_log = Path(nodes_log).absolute() if nodes_log is not None else None
        self.job, self.node = job, node
        self.host = _HOST.format(host=socket.gethostname())
        self.view = JobView(job.cluster, job.proc)
        self.clock = time.time

    def _write(self, code: int, text: str, body: list[str] = (), **values: object) -> None:
        now = self.clock()
        self.view.apply(Event(code, float(int(now)), **values))  # type: ignore[arg-type]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        job = self.job
        header = f"{code:03d} ({job.cluster:03d}.{job.proc:03d}.{job.subproc:03d}) {stamp} {text}"
        event = "\n".join([header, *body, "..."]) + "\n"
        paths = list(self.paths)
        if self.nodes_log is not None and code not in NOT_IN_NODES_LOG:
            paths.append(self.nodes_log)
        for path in dict.fromkeys(paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            with _lock(path), open(path, "a") as handle:  # one event at a time per file
                handle.write(event)
                handle.flush()

    def _node_line(self) -> list[str]:
        return [f"    DAG Node: {self.node}"] if self.node else []

    def submitted(self) -> None:
        self._write(
            SUBMIT, f"Job submitted from host: {self.host}", self._node_line(), node=self.node
        )

    def executing(self, scratch: Path, cpus: int, memory_mb: int) -> None:
        self._write(
            EXECUTE,
            f"Job executing on host: {self.host}",
            [
                f"\tSlotName: slot1@{socket.gethostname()}",
                f'\tCondorScratchDir = "{scratch}"',
                f"\tCpus = {cpus}",
                "\tGPUs = 0",
                f"\tMemory = {memory_mb}",
            ],
        )

    def transfer(self, direction: str, finished: bool) -> None:
        """040: ``direction`` is ``input`` or ``output``."""
        what = "Finished" if finished else "Started"
        body = (
            [f"\tTransferring to host: {self.host}"]
            if direction == "input" and not finished
            else []
        )
        self._write(FILE_TRANSFER, f"{what} transferring {direction} files", body,
                    transfer=_TRANSFER_TYPES[direction, finished])  # fmt: skip

    def evicted(self, reason: str) -> None:
        self._write(
            EVICTED,
            "Job was evicted.",
            [
                "\t(0) CPU times",
                "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage",
                "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage",
                # HTCondor's reader only finds the Reason after these two lines
                "\t0  -  Run Bytes Sent By Job",
                "\t0  -  Run Bytes Received By Job",
                f"\tReason: {reason}",
            ],
        )

    def terminated(self, return_value: int | None, signal: int | None = None) -> None:
        if signal is None:
            status = [f"\t(1) Normal termination (return value {return_value})"]
        else:
            status = [f"\t(0) Abnormal termination (signal {signal})", "\t(0) No core file"]
        usage = ("Run Remote", "Run Local", "Total Remote", "Total Local")
        body = [f"\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  {kind} Usage" for kind in usage]
        self._write(TERMINATED, "Job terminated.", status + body, normal=signal is None,
                    return_value=return_value, signal=signal)  # fmt: skip

    def generic(self, text: str) -> None:
        """008: a line the job appended through Chirp (``ulog``); the text is the event's ``Info``."""
        self._write(GENERIC, text)

    def attribute_update(self, name: str, value: str, old: str | None = None) -> None:
        """033: the job set an attribute of its ad through Chirp (``set_job_attr``), worded as a
        pool's shadow words it (``old``: the value it had, if any)."""
        if old is None:
            self._write(ATTRIBUTE_UPDATE, f"Setting job attribute {name} to {value}")
        else:
            self._write(ATTRIBUTE_UPDATE, f"Changing job attribute {name} from {old} to {value}")

    def held(self, reason: str, code: int, subcode: int) -> None:
        self._write(HELD, "Job was held.", [f"\t{reason}", f"\tCode {code} Subcode {subcode}"],
                    reason=reason)  # fmt: skip

    def aborted(self, reason: str) -> None:
        self._write(ABORTED, "Job was aborted.", [f"\t{reason}"], reason=reason)

    def pre_skip(self) -> None:
        """034: the PRE script exited with the node's PRE_SKIP value (DAGMan: nodes log only)."""
        self._write(PRESKIP, "PRE script return value is PRE_SKIP value", self._node_line())

    def post_script_terminated(self, return_value: int) -> None:
        self._write(
            POST_SCRIPT_TERMINATED,
            "POST Script terminated.",
            [f"\t(1) Normal termination (return value {return_value})", *self._node_line()],
            return_value=return_value,
        )


def next_cluster_id(counter: Path) -> int:
    """A cluster id that grows across runs of the same DAG (kept in a small counter file)."""
    with _lock(counter):
        try:
            last = int(counter.read_text().strip() or 0)
        except (OSError, ValueError):
            last = 0
        counter.parent.mkdir(parents=True, exist_ok=True)
        tmp = counter.with_name(counter.name + f".{os.getpid()}")
        tmp.write_text(f"{last + 1}\n")
        os.replace(tmp, counter)
        return last + 1
