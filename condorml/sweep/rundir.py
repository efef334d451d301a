"""Names in a sweep's run folder that several stages read: one place for each.

``condorml sweep`` writes, the jobs fill, and ``collect``, ``watch`` and ``report`` read::

    RUN_DIR/<dag>.nodes.log            DAGMan's log of every node job (no file transfers)
    RUN_DIR/collect.log                the collect job's own event log
    RUN_DIR/members/<id>/train.log     a member's training jobs' own event log (040 transfers:
    RUN_DIR/members/<id>/infer.log     the checkpoints), and its inference jobs'
"""

from __future__ import annotations

from pathlib import Path

MEMBERS_FOLDER = "members"
JOB_KINDS = ("train", "infer", "collect")
MEMBER_JOB_KINDS = ("train", "infer")  # the jobs that run in a member's folder


def job_log_name(kind: str) -> str:
    """The ``log`` of a ``train``, ``infer`` or ``collect`` job, relative to its initialdir."""
    return f"{kind}.log"


def job_stream_name(kind: str, stream: str, job: str) -> str:
    """A job's ``output`` (``stream="out"``) or ``error`` (``"err"``) file: ``KIND.JOB.STREAM``.

    ``job`` is ``CLUSTER.PROC``, or the ``$(ClusterId).$(ProcId)`` macros in a description.
    """
    return f"{kind}.{job}.{stream}"


def member_folder(run_dir: Path, member: str) -> Path:
    """``RUN_DIR/members/<id>``: the member's initialdir."""
    return run_dir / MEMBERS_FOLDER / member


def job_logs(run_dir: Path, members: list[str]) -> list[Path]:
    """Every job's own event log in a sweep's run folder (existing or not yet)."""
    logs = [member_folder(run_dir, m) / job_log_name(k) for m in members for k in MEMBER_JOB_KINDS]
    return [*logs, run_dir / job_log_name("collect")]
