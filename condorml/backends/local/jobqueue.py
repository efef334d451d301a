"""What the local schedd keeps of a job once it has ended: its spool, and ``leave_in_queue``.

As on a pool (checked on HTCondor 25.0.13), a job's spool (its last checkpoint) goes when the job
leaves the queue: when it completes, or when it is removed (``condor_rm``, an interrupted or
aborted DAG). A removed job whose ``leave_in_queue`` expression is true stays in the queue
(``JobStatus`` 3, "X") with its spool, until the expression turns false or ``condor_rm -forcex``
lets it go. The schedd evaluates the expression against the job's ad; here a small ad with
``JobStatus``, ``CheckpointNumber`` (0 after the first checkpoint, undefined before it),
``EnteredCurrentStatus`` (the removal), ``NumJobStarts``, ``ClusterId`` and ``ProcId``, through
HTCondor's own ClassAd library.

What the pool writes, and what this module writes too, for a removed running job so kept: 004
and 009 at the removal; another 009 when the DAGMan job that submitted it leaves the queue (the
schedd removes the DAG's jobs again); a third 009 at ``condor_rm -forcex``; nothing when the
expression expires.

The documented stop of a sweep on a pool, ``condorml stop RUN_DIR`` (``condor_rm`` of its DAG,
then each kept training job's checkpoint copied into its folder where it is newer than what is
there, then ``condor_rm -forcex``; :mod:`condorml.backends.condor`), is what :func:`bring_back`
does with this queue, so a DAG the local backend stops (its Ctrl-C is ``condor_rm``) leaves
every member's last checkpoint in its folder, where a rerun here or on a pool resumes from it. A kept job is written down (``queue/<CLUSTER.PROC>.json`` beside
the spool), so one that a killed run left behind is brought back by the next run of the DAG.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from condorml.backends.local.eventlog import EventLog, JobId
from condorml.backends.local.jobspec import JobSpec
from condorml.backends.local.sandbox import STDERR, STDOUT
from condorml.fileio import atomic_write_text
from condorml.job.files import STATE_FILE
from condorml.sweep.rundir import local_spool

REMOVED, COMPLETED = 3, 4  # JobStatus values
QUEUE_FOLDER = "queue"  # in the local backend's folder: one record per kept job
# The reasons a pool writes into the later 009 events of a kept job (HTCondor 25.0's, for the
# forcex; the local DAG has no DAGMan job id to name)
DAG_LEFT_REASON = "removed because the DAG that submitted it (condorml run) left the queue"
FORCEX_REASON = "via condor_rm -forcex (by user {user})"


@dataclass
class KeptJob:
    """A removed job that ``leave_in_queue`` keeps, with its spool, in the local queue.

    Paths are relative to the DAG's folder, so that a run folder that moved keeps its queue.
    """

    job: str  # CLUSTER.PROC
    node: str | None
    iwd: str
    logs: list[str]
    nodes_log: str | None
    leave_in_queue: str
    entered: float  # EnteredCurrentStatus: when it was removed
    starts: int
    checkpoint_number: int | None
    cluster: int = 0
    proc: int = 0


@dataclass(frozen=True)
class BroughtBack:
    """A kept job's checkpoint, copied into its initialdir (or not: ``copied`` empty)."""

    job: str
    node: str | None
    iwd: Path
    copied: tuple[str, ...]  # the spool's entries now in iwd
    skipped: tuple[str, ...]  # entries iwd already had in a newer version


def stays_in_queue(expression: str | None, ad: dict[str, object]) -> bool:
    """Whether ``leave_in_queue`` keeps a job with the attributes ``ad``: only a value of
    true does (undefined, an error or an unparsable expression let it go, as the schedd's
    ``LookupBool`` does)."""
    if not expression:
        return False
    import classad2

    try:
        value = classad2.ExprTree(expression).eval(classad2.ClassAd(ad))
    except Exception:  # classad2 raises its own kinds for bad text; the job then leaves
        return False
    return value is True


def job_ad(cluster: int, proc: int, status: int, checkpoint_number: int | None, starts: int,
           entered: float) -> dict[str, object]:  # fmt: skip
    """The attributes of a job's ad that ``leave_in_queue`` expressions use."""
    ad: dict[str, object] = {"JobStatus": status, "EnteredCurrentStatus": int(entered),
                             "NumJobStarts": starts, "ClusterId": cluster, "ProcId": proc}  # fmt: skip
    if checkpoint_number is not None:
        ad["CheckpointNumber"] = checkpoint_number
    return ad


def job_left(job: JobSpec, status: int, checkpoints: int, starts: int, local: Path,
             node: str | None, nodes_log: Path | None) -> KeptJob | None:  # fmt: skip
    """The job ended (``status``: :data:`REMOVED` or :data:`COMPLETED`): keep it in the queue
    with its spool if ``leave_in_queue`` says so (removed jobs only), else let its spool go.

    Returns the kept job, or None.
    """
    dag_folder = local.parent
    spool = local_spool(dag_folder, f"{job.cluster}.{job.proc}")
    now = time.time()
    number = checkpoints - 1 if checkpoints else None  # HTCondor numbers checkpoints from 0
    if status == REMOVED:
        ad = job_ad(job.cluster, job.proc, status, number, starts, now)
        if stays_in_queue(job.leave_in_queue, ad):
            kept = KeptJob(
                f"{job.cluster}.{job.proc}", node, _relative(job.iwd, dag_folder),
                [_relative(job.log, dag_folder)] if job.log else [],
                _relative(nodes_log, dag_folder) if nodes_log else None,
                job.leave_in_queue or "", now, starts, number, job.cluster, job.proc,
            )  # fmt: skip
            atomic_write_text(_record(local, kept.job), json.dumps(asdict(kept), indent=1) + "\n")
            return kept
    shutil.rmtree(spool, ignore_errors=True)
    return None


def kept_jobs(local: Path) -> list[KeptJob]:
    """The jobs the local queue keeps, oldest cluster first (unreadable records are dropped)."""
    found = []
    for path in (local / QUEUE_FOLDER).glob("*.json"):
        try:
            found.append(KeptJob(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
    return sorted(found, key=lambda kept: (kept.cluster, kept.proc))


def dag_left(local: Path, jobs: list[KeptJob]) -> None:
    """The DAG that submitted ``jobs`` left the queue: the schedd removes them again (009)."""
    for kept in jobs:
        _events(local, kept).aborted(DAG_LEFT_REASON)


def bring_back(local: Path) -> list[BroughtBack]:
    """Do the documented stop's last steps for every kept job: copy what its spool holds into
    its initialdir where that is newer than what is there, then ``condor_rm -forcex`` it (009,
    the spool deleted). A job whose ``leave_in_queue`` has turned false left the queue before:
    its spool is deleted, nothing copied, no event (as a pool does).

    The spool holds the job's ``transfer_checkpoint_files`` under the names its output transfer
    gives them (``ckpt``), so a copied entry is what the job would have returned had it ended at
    its last checkpoint. Only a newer entry is copied (:func:`newer`): a later job of the same
    node that came back is never overwritten by an older checkpoint.
    """
    dag_folder, returned = local.parent, []
    for kept in kept_jobs(local):
        spool = local_spool(dag_folder, kept.job)
        ad = job_ad(kept.cluster, kept.proc, REMOVED, kept.checkpoint_number, kept.starts,
                    kept.entered)  # fmt: skip
        if stays_in_queue(kept.leave_in_queue, ad):
            iwd = dag_folder / kept.iwd
            copied, skipped = copy_newer(spool, iwd) if spool.is_dir() else ((), ())
            _events(local, kept).aborted(FORCEX_REASON.format(user=_user()))
            returned.append(BroughtBack(kept.job, kept.node, iwd, copied, skipped))
        shutil.rmtree(spool, ignore_errors=True)
        _record(local, kept.job).unlink(missing_ok=True)
    return returned


def copy_newer(spool: Path, iwd: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    copied, skipped = [], []
    for entry in sorted(spool.iterdir()):
        if entry.name in (STDOUT, STDERR):  # the job's stdout/err so far: not a returned file
            continue
        target = iwd / entry.name
        if target.exists() and not newer(entry, target):
            skipped.append(entry.name)
            continue
        _replace(entry, target)
        copied.append(entry.name)
    return tuple(copied), tuple(skipped)


def newer(source: Path, target: Path) -> bool:
    """Whether ``source`` holds a later checkpoint than ``target``: by the epochs their
    ``state.json`` counts where both have one (file times do not survive every transfer), else
    by the newest file in each."""
    epochs = [_epoch(path) for path in (source, target)]
    if None not in epochs:
        return epochs[0] > epochs[1]  # type: ignore[operator]
    return _newest(source) > _newest(target)


def _epoch(path: Path) -> int | None:
    """The epochs a checkpoint folder's ``state.json`` counts, or None."""
    try:
        return int(json.loads((path / STATE_FILE).read_text())["epoch"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _newest(path: Path) -> float:
    """The newest modification time of a file, or of the files in a folder (-1: none)."""
    if path.is_file():
        return path.stat().st_mtime
    times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
    return max(times, default=-1.0)


def _replace(source: Path, target: Path) -> None:
    """Put a copy of ``source`` at ``target`` (times kept), replacing it in one rename: an
    interruption leaves the old or the new, never half of each."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.condorml-returning")
    old = target.with_name(f".{target.name}.condorml-old")
    for leftover in (staged, old):
        _remove(leftover)
    if source.is_dir():
        shutil.copytree(source, staged)
    else:
        shutil.copy2(source, staged)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _events(local: Path, kept: KeptJob) -> EventLog:
    dag_folder = local.parent
    nodes_log = dag_folder / kept.nodes_log if kept.nodes_log else None
    return EventLog([dag_folder / log for log in kept.logs], JobId(kept.cluster, kept.proc),
                    kept.node, nodes_log)  # fmt: skip


def _record(local: Path, job: str) -> Path:
    return local / QUEUE_FOLDER / f"{job}.json"


def _relative(path: Path, folder: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
