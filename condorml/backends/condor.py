"""The pool's backend (:class:`CondorBackend`): jobs and DAGs handed to a schedd, the pool's own
tools first, the Python bindings otherwise; followed through their event logs, removed with
``condor_rm`` (or ``Schedd.act``).

``condor_submit`` and ``condor_submit_dag`` are the access point's own release, so they always
speak its schedd's protocol. The ``htcondor2`` bindings that pip installs are often newer than
the access point (which typically runs an LTS release), and bindings newer than the schedd can
fail to authenticate ("FS:1004: Client extension not valid" in its SchedLog): when only the
bindings are at hand and the schedd refuses them, the error names both versions and what to
install.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from condorml.backends.base import (
    ENDED,
    Backend,
    Handle,
    Status,
    jobs_status,
    node_counts,
)
from condorml.backends.daglock import clear_left_by_local, refuse_if_running
from condorml.errors import CondormlError
from condorml.htcondor.events import DAGMAN_LOG_SUFFIX, NODES_LOG_SUFFIX, EventFollower
from condorml.htcondor.quoting import shell_line

log = logging.getLogger(__name__)

_SUBMITTED = re.compile(r"submitted to cluster (\d+)")
_VERSION = re.compile(r"\$CondorVersion:\s*(\d+)\.(\d+)\.(\d+)")
# DAGMan refuses a node log whose path starts with this (a string prefix: /tmpx too), fatally
# under its default DAGMAN_USE_STRICT = 1 (checked on HTCondor 25.0.13)
DAGMAN_REFUSED_PREFIX = "/tmp"
# condor_submit_dag and htcondor2.Submit.from_dag both look for condor_dagman on PATH, and fail
# with this (HTCondor 25.0 and the 25.x bindings) when it is not there
DAGMAN = "condor_dagman"
_DAGMAN_MISSING = f"Failed to locate {DAGMAN} executable in PATH"


def pool_tool(name: str) -> str | None:
    """The pool's own command (``condor_submit``...) when it is on PATH."""
    return shutil.which(name)


def dag_submit_problem() -> str | None:
    """Why a DAG cannot be submitted from here, or None.

    A schedd that answers is not enough: ``condor_submit_dag`` and the bindings'
    ``Submit.from_dag`` both need ``condor_dagman`` on PATH (the bindings that pip installs come
    without it). The schedd itself is not asked here (see
    :func:`condorml.backends.schedd_available`).
    """
    if pool_tool(DAGMAN) is None:
        return f"{DAGMAN} is not on PATH (condor_submit_dag and the Python bindings need it)"
    return None


def dagman_missing_error(dag_file: Path) -> CondormlError:
    """The one-line refusal of a DAG that cannot be submitted without ``condor_dagman``."""
    by_hand = shell_line(["cd", dag_file.resolve().parent], ["condor_submit_dag", dag_file.name])
    return CondormlError(
        f"cannot submit a DAG to HTCondor from here: {DAGMAN} is not on PATH (condor_submit_dag "
        "and the Python bindings need it: put the pool's bin folder on PATH); on an access "
        f"point: {by_hand}; without a pool, run it here: --backend local"
    )


def check_dag_folder(dag_file: Path) -> None:
    """Refuse a DAG that DAGMan would refuse to run because its node log is under /tmp.

    Raises
    ------
    CondormlError
        Naming the folder and what to do instead.
    """
    folder = dag_file.resolve().parent
    if str(folder).startswith(DAGMAN_REFUSED_PREFIX):
        raise CondormlError(
            f"{folder}: DAGMan refuses a DAG whose node log is under {DAGMAN_REFUSED_PREFIX} "
            "(fatal under its default DAGMAN_USE_STRICT); write the run folder elsewhere "
            "(--out ~/runs/NAME) or run it on this machine: --backend local"
        )


def _submit_job(submit_file: Path, schedd: Any = None) -> int:
    """Submit a written job and return its cluster id: ``condor_submit``, else the bindings.

    ``schedd`` (an ``htcondor2.Schedd``): submit through these bindings even if
    ``condor_submit`` is on PATH (tests).
    """
    folder = submit_file.resolve().parent
    by_hand = shell_line(["cd", folder], ["condor_submit", submit_file.name])
    tool = pool_tool("condor_submit") if schedd is None else None
    if tool is not None:
        return _cluster(_run([tool, submit_file.name], folder), "condor_submit", by_hand)
    import htcondor2

    description = _read_submit(submit_file)
    # Relative paths in the description mean "relative to the submit file's folder" (see
    # condorml.htcondor.submit): the copy handed to the schedd gets that folder as initialdir
    # and an absolute executable (which HTCondor resolves against the submitting process's
    # working directory, not initialdir).
    copy = htcondor2.Submit(dict(description))
    copy["initialdir"] = str(folder / description.get("initialdir", "."))
    copy["executable"] = str(folder / description["executable"])
    copy.setQArgs(description.getQArgs())
    try:
        schedd = schedd if schedd is not None else htcondor2.Schedd()
        result = schedd.submit(copy)
    except htcondor2.HTCondorException as err:
        raise bindings_error(err, by_hand) from None
    return int(result.cluster())


def _read_submit(submit_file: Path) -> Any:
    """The ``htcondor2.Submit`` of a submit file, its queue statement included."""
    import htcondor2

    try:
        return htcondor2.Submit(submit_file.read_text())
    except OSError as err:
        raise CondormlError(f"{submit_file}: cannot read it ({err.strerror or err})") from None
    except Exception as err:  # htcondor2 raises plain exceptions for what it cannot parse
        raise CondormlError(f"{submit_file}: not a submit description ({err})") from None


def _submit_dag(dag_file: Path, schedd: Any = None) -> int:
    """Submit a DAG (``condor_submit_dag`` in its folder, else the bindings); its DAGMan job id."""
    check_dag_folder(dag_file)
    folder = dag_file.resolve().parent
    by_hand = shell_line(["cd", folder], ["condor_submit_dag", dag_file.name])
    tool = pool_tool("condor_submit_dag") if schedd is None else None
    if tool is not None:
        proc = _run([tool, dag_file.name], folder)
        if proc.returncode != 0 and _DAGMAN_MISSING in proc.stdout + proc.stderr:
            raise dagman_missing_error(dag_file)
        return _cluster(proc, "condor_submit_dag", by_hand)
    import htcondor2

    condor_sub = folder / f"{dag_file.name}.condor.sub"
    existed = condor_sub.exists()
    cwd = Path.cwd()
    try:
        os.chdir(folder)  # DAGMan's files are relative to the DAG's folder
        description = htcondor2.Submit.from_dag(dag_file.name, {})
        schedd = schedd if schedd is not None else htcondor2.Schedd()
        return int(schedd.submit(description).cluster())
    except htcondor2.HTCondorException as err:
        if not existed:  # else condor_submit_dag by hand would refuse to overwrite it
            condor_sub.unlink(missing_ok=True)
        if _DAGMAN_MISSING in str(err):
            raise dagman_missing_error(dag_file) from None
        raise bindings_error(err, by_hand) from None
    finally:
        os.chdir(cwd)


def _run(argv: list[str], folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=False)


def _cluster(proc: subprocess.CompletedProcess, tool: str, by_hand: str) -> int:
    """The cluster id ``condor_submit(_dag)`` printed, or its error as one line."""
    match = _SUBMITTED.search(proc.stdout)
    if proc.returncode == 0 and match:
        return int(match.group(1))
    lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines()]
    errors = [line for line in lines if "ERROR" in line.upper()] or [line for line in lines if line]
    reason = "; ".join(dict.fromkeys(errors[:3])) or f"exit status {proc.returncode}"
    raise CondormlError(f"{tool} refused it ({reason}); by hand: {by_hand}")


def bindings_error(err: Exception, by_hand: str) -> CondormlError:
    """A one-line error for a schedd that refused the bindings, naming versions that disagree."""
    import htcondor2

    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    ours = _version(htcondor2.version())
    theirs = _schedd_version() if "authenticat" in reason.lower() else None
    if ours and theirs and ours[:2] != theirs[:2]:
        series = f"{theirs[0]}.{theirs[1]}"
        return CondormlError(
            f"the schedd (HTCondor {'.'.join(map(str, theirs))}) refused the htcondor Python bindings "
            f"{'.'.join(map(str, ours))} ({reason[:160]}); bindings newer than the access point often "
            f"cannot authenticate: install its series (pip install 'htcondor=={series}.*') or put its "
            f"condor_submit on PATH; by hand: {by_hand}"
        )
    return CondormlError(
        f"no HTCondor schedd accepted it ({reason[:200]}); on an access point: {by_hand}; "
        "without a pool, run it here with the local backend (condorml run, --backend local)"
    )


def _version(text: str | None) -> tuple[int, int, int] | None:
    match = _VERSION.search(text or "")
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def _schedd_version() -> tuple[int, int, int] | None:
    """The schedd's HTCondor version, from the collector (reading needs no authentication)."""
    import htcondor2

    try:
        ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd)
        return _version(str(ad.get("CondorVersion", "")))
    except Exception:  # no collector: nothing more to say than the error itself
        return None


class CondorHandle(Handle):
    """A DAG or job in a schedd's queue, followed through its event logs.

    Attributes
    ----------
    cluster : int
        The DAGMan job's cluster (a DAG) or the job's.
    logs : list of Path
        A DAG: DAGMan's own job log and its nodes log; a job: its ``log`` per proc.
    """

    def __init__(self, kind: str, cluster: int, logs: list[Path], procs: int = 1,
                 schedd: Any = None) -> None:  # fmt: skip
        self.kind, self.cluster, self.logs, self.procs = kind, cluster, logs, procs
        self._schedd = schedd
        self._followers = [EventFollower([log]) for log in logs]

    @property
    def message(self) -> str:
        """What was submitted and how to follow it, as ``condorml`` prints it."""
        what = "DAGMan job" if self.kind == "dag" else "cluster"
        return f"{what} {self.cluster} submitted; follow it with: condor_watch_q -clusters {self.cluster}"

    def status(self) -> Status:
        if self.kind == "dag":
            own, nodes = self._followers
            own.poll()
            dagman = own.jobs.get((self.cluster, 0))
            counts = node_counts(nodes)
            if dagman is None:  # DAGMan has not started (or logged) yet
                return Status("idle", counts)
            ended = dagman.state in ENDED
            return Status(dagman.state, counts, dagman.return_value if ended else None)
        for follower in self._followers:
            follower.poll()
        jobs = {k: j for f in self._followers for k, j in f.jobs.items() if k[0] == self.cluster}
        return jobs_status(list(jobs.values()), self.procs)

    def cancel(self) -> None:
        """``condor_rm`` the cluster (a DAG: DAGMan removes its node jobs, writes a rescue DAG).

        Raises
        ------
        CondormlError
            If the schedd cannot be reached or refuses.
        """
        tool = pool_tool("condor_rm") if self._schedd is None else None
        by_hand = f"condor_rm {self.cluster}"
        if tool is not None:
            proc = _run([tool, str(self.cluster)], Path.cwd())
            if proc.returncode != 0:
                reason = (proc.stderr or proc.stdout).strip().splitlines()
                raise CondormlError(
                    f"condor_rm refused it ({'; '.join(reason[:2])}); by hand: {by_hand}"
                )
            return
        import htcondor2

        try:
            schedd = self._schedd if self._schedd is not None else htcondor2.Schedd()
            schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {self.cluster}")
        except htcondor2.HTCondorException as err:
            raise bindings_error(err, by_hand) from None


class CondorBackend(Backend):
    """An HTCondor schedd: the pool's own ``condor_submit(_dag)`` when on PATH, else the
    ``htcondor2`` bindings (see the module docstring).

    Parameters
    ----------
    schedd : htcondor2.Schedd, optional
        Submit and remove through these bindings even if the tools are on PATH (tests).
    """

    name = "condor"
    detached = True

    def __init__(self, schedd: Any = None, why: str = "") -> None:
        self.schedd, self.why = schedd, why

    def check_dag(self, dag_file: Path) -> None:
        """Refuse a DAG in a folder DAGMan refuses (/tmp), or where no DAG can be submitted
        (no ``condor_dagman`` on PATH), naming ``--backend local``.

        Raises
        ------
        CondormlError
            Saying why and what to do instead.
        """
        check_dag_folder(dag_file)
        if dag_submit_problem() is not None:
            raise dagman_missing_error(dag_file)

    def submit_dag(self, dag_file: Path) -> CondorHandle:
        """Submit a DAG from its folder (as ``condor_submit_dag sweep.dag`` there).

        A DAG that runs already (its ``<dag>.lock`` held, by DAGMan or the local backend) is
        refused: ``condor_submit_dag`` would start a second DAGMan that exits at once (and says
        so only in ``dagman.out``). A lock that a killed local run left is removed first, or
        DAGMan would take it for its own crash and abort in recovery mode.

        Raises
        ------
        CondormlError
            If the folder is one DAGMan refuses (/tmp), the DAG runs already, or it cannot be
            submitted.
        """
        check_dag_folder(dag_file)
        refuse_if_running(
            dag_file, "condor_submit_dag would start a second DAGMan, which exits at once"
        )
        removed = clear_left_by_local(dag_file)
        if removed:
            log.warning("%s", removed)
        if self.schedd is None and pool_tool("condor_q") is not None:
            # a plain condor_rm of the DAG left its training jobs in the queue with their
            # checkpoints (leave_in_queue): they come back before the members resume
            try:
                for line in bring_back_kept(dag_file.resolve().parent):
                    log.warning("%s", line)
            except CondormlError as err:  # the schedd's answer decides; say what was not done
                log.warning("kept checkpoints not brought back: %s", err)
        cluster = _submit_dag(dag_file, self.schedd)
        folder, name = dag_file.resolve().parent, dag_file.name
        logs = [folder / f"{name}{DAGMAN_LOG_SUFFIX}", folder / f"{name}{NODES_LOG_SUFFIX}"]
        return CondorHandle("dag", cluster, logs, schedd=self.schedd)

    def submit_job(self, submit_file: Path) -> CondorHandle:
        """Submit a written submit file from its folder (as ``condor_submit`` there).

        Raises
        ------
        CondormlError
            If it has no ``log`` (its status is read there), or cannot be submitted.
        """
        description = _read_submit(submit_file)
        procs = _queue_count(description)
        log = description.get("log")
        if not log:
            raise CondormlError(
                f"{submit_file}: no log command; the backend follows a job through its event "
                "log: add one (log = job.log)"
            )
        cluster = _submit_job(submit_file, self.schedd)
        folder = submit_file.resolve().parent / description.get("initialdir", ".")
        logs = {folder / _job_macros(log, cluster, proc) for proc in range(procs)}
        return CondorHandle("job", cluster, sorted(logs), procs, self.schedd)


def _queue_count(description: Any) -> int:
    """How many jobs ``queue N`` makes (1 for other queue statements: counted as they log)."""
    args = (description.getQArgs() or "").strip()
    return int(args) if args.isdigit() else 1


def _job_macros(value: str, cluster: int, proc: int) -> str:
    """``$(Cluster)``, ``$(ClusterId)``, ``$(Process)``, ``$(ProcId)`` of one job, substituted."""
    for names, number in ((("Cluster", "ClusterId"), cluster), (("Process", "ProcId"), proc)):
        for macro in names:
            value = re.sub(rf"\$\({macro}\)", str(number), value, flags=re.IGNORECASE)
    return value


# --- stopping a sweep on the pool (condorml stop) ----------------------------------------------
# What HTCondor 25.0.13 did on the pool: condor_rm of a DAGMan job removes its node jobs
# (OtherJobRemoveRequirements) and DAGMan ends (FINAL node, rescue DAG, exit 2); a removed
# training job whose leave_in_queue is true (a sweep's, :data:`KEEP_REMOVED_CHECKPOINT` in
# condorml.htcondor.submit) stays in the queue with JobStatus 3 and its spool, whose folder
# ``condor_evicted_files dir CLUSTER.PROC`` names (owned by the job's owner, so readable); the
# spool holds the job's last checkpoint as ``ckpt/``; ``condor_rm -forcex`` then lets the job go
# and deletes the spool (009 "via condor_rm -forcex").


def _tool_lines(argv: list[str], folder: Path) -> list[str]:
    """A pool tool's output lines, or a one-line error naming the command."""
    tool = pool_tool(argv[0])
    if tool is None:
        raise CondormlError(f"{argv[0]} is not on PATH: stop the DAG where it was submitted")
    proc = _run([tool, *argv[1:]], folder)
    if proc.returncode != 0:
        reason = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[:2]
        raise CondormlError(f"{shell_line(argv)} failed: {'; '.join(reason) or proc.returncode}")
    return [line for line in proc.stdout.splitlines() if line.strip()]


def dagman_jobs(folder: Path) -> list[int]:
    """The clusters of the DAGMan jobs in the queue that run a DAG of ``folder``."""
    import classad2

    # quoted as a ClassAd string: a quote in the path must not widen what condor_rm removes
    constraint = f"JobUniverse == 7 && Iwd == {classad2.quote(str(folder.resolve()))}"
    lines = _tool_lines(["condor_q", "-constraint", constraint, "-af", "ClusterId"], folder)
    return [int(line) for line in lines if line.strip().isdigit()]


def kept_jobs(folder: Path) -> list[tuple[str, Path]]:
    """The removed jobs that ``leave_in_queue`` keeps with their spool, whose initialdir is in
    ``folder`` (a run folder's members): ``(CLUSTER.PROC, initialdir)``, oldest first."""
    constraint = "JobStatus == 3 && CheckpointNumber =!= undefined"
    argv = ["condor_q", "-constraint", constraint, "-af:t", "ClusterId", "ProcId", "Iwd"]
    root, found = folder.resolve(), []
    for line in _tool_lines(argv, folder):
        parts = line.split("\t", 2)
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            continue
        path = Path(parts[2])
        if path.is_relative_to(root):
            found.append(((int(parts[0]), int(parts[1])), path))
    return [(f"{c}.{p}", path) for (c, p), path in sorted(found)]


def spool_folder(job: str, folder: Path) -> Path | None:
    """The spool folder of a job in the queue (``condor_evicted_files dir``), or None."""
    lines = _tool_lines(["condor_evicted_files", "dir", job], folder)
    path = Path(lines[-1].strip()) if lines else None
    return path if path is not None and path.is_absolute() and path.is_dir() else None


def remove_dags(folder: Path, timeout: float = 120.0) -> list[int]:
    """``condor_rm`` the DAGMan jobs of ``folder`` and wait for them to leave the queue; the
    clusters removed."""
    import time

    clusters = dagman_jobs(folder)
    if not clusters:
        return []
    _tool_lines(["condor_rm", *map(str, clusters)], folder)
    deadline = time.monotonic() + timeout
    while dagman_jobs(folder):
        if time.monotonic() > deadline:
            raise CondormlError(
                f"DAGMan job(s) {', '.join(map(str, clusters))} still in the queue after "
                f"{timeout:.0f} s; run condorml stop again once condor_q no longer lists them"
            )
        time.sleep(1)
    return clusters


def forcex(job: str, folder: Path) -> None:
    """``condor_rm -forcex``: a removed job leaves the queue, its spool with it."""
    _tool_lines(["condor_rm", "-forcex", job], folder)


def bring_back_kept(folder: Path) -> list[str]:
    """For each removed job of ``folder`` that the queue keeps with its spool: its checkpoint
    copied into its initialdir where newer than what is there, then ``condor_rm -forcex``; a line
    per job saying what came back. A spool that cannot be copied leaves its job kept (and
    raises), so nothing is lost."""
    from condorml.backends.local.jobqueue import copy_newer

    said = []
    for job, iwd in kept_jobs(folder):
        spool = spool_folder(job, folder)
        try:
            copied = copy_newer(spool, iwd)[0] if spool is not None else ()
        except OSError as err:
            raise CondormlError(
                f"job {job}: its checkpoint could not be copied from {spool} into {iwd} "
                f"({err}); the job stays in the queue with it: fix that and run condorml stop again"
            ) from None
        forcex(job, folder)
        what = ", ".join(copied) or "nothing newer than what it holds"
        said.append(
            f"job {job}: its checkpoint came back into {os.path.relpath(iwd, folder)} ({what}); "
            f"let go (condor_rm -forcex {job})"
        )
    return said
