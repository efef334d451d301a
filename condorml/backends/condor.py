"""Handing jobs and DAGs to a schedd: the pool's own tools first, the Python bindings otherwise.

``condor_submit`` and ``condor_submit_dag`` are the access point's own release, so they always
speak its schedd's protocol. The ``htcondor2`` bindings that pip installs are often newer than
the access point (which typically runs an LTS release), and bindings newer than the schedd can
fail to authenticate ("FS:1004: Client extension not valid" in its SchedLog): when only the
bindings are at hand and the schedd refuses them, the error names both versions and what to
install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.htcondor.quoting import shell_line

_SUBMITTED = re.compile(r"submitted to cluster (\d+)")
_VERSION = re.compile(r"\$CondorVersion:\s*(\d+)\.(\d+)\.(\d+)")
# DAGMan refuses a node log whose path starts with this (a string prefix: /tmpx too), fatally
# under its default DAGMAN_USE_STRICT = 1 (checked on HTCondor 25.0.13)
DAGMAN_REFUSED_PREFIX = "/tmp"


def pool_tool(name: str) -> str | None:
    """The pool's own command (``condor_submit``...) when it is on PATH."""
    return shutil.which(name)


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


def submit_job(description: Any, submit_file: Path, schedd: Any = None) -> int:
    """Submit a written job and return its cluster id: ``condor_submit``, else the bindings.

    Parameters
    ----------
    description : htcondor2.Submit
        As built by :func:`condorml.htcondor.submit.train_description` and friends; used
        when ``condor_submit`` is not on PATH.
    submit_file : Path
        Where it was written (``condor_submit`` runs in its folder, as the user would).
    schedd : htcondor2.Schedd, optional
        Submit through these bindings even if ``condor_submit`` is on PATH (tests).

    Raises
    ------
    CondormlError
        If no schedd can be reached or it refuses the job.
    """
    folder = submit_file.resolve().parent
    tool = pool_tool("condor_submit") if schedd is None else None
    if tool is not None:
        proc = _run([tool, submit_file.name], folder)
        return _cluster(
            proc, "condor_submit", shell_line(["cd", folder], ["condor_submit", submit_file.name])
        )
    import htcondor2

    # Relative paths in the description mean "relative to the submit file's folder" (see
    # condorml.htcondor.submit): the copy handed to the schedd gets that folder as initialdir
    # and an absolute executable (which HTCondor resolves against the submitting process's
    # working directory, not initialdir).
    copy = htcondor2.Submit(dict(description))
    copy["initialdir"] = str(folder)
    copy["executable"] = str(folder / description["executable"])
    copy.setQArgs(description.getQArgs())
    try:
        schedd = schedd if schedd is not None else htcondor2.Schedd()
        result = schedd.submit(copy)
    except htcondor2.HTCondorException as err:
        raise bindings_error(
            err, shell_line(["cd", folder], ["condor_submit", submit_file.name])
        ) from None
    return int(result.cluster())


def submit_dag(dag_file: Path, schedd: Any = None) -> int | None:
    """Submit a DAG (``condor_submit_dag`` in its folder, else the bindings); its DAGMan job id.

    Raises
    ------
    CondormlError
        If the folder is one DAGMan refuses (/tmp), or the DAG cannot be submitted.
    """
    check_dag_folder(dag_file)
    folder = dag_file.resolve().parent
    by_hand = shell_line(["cd", folder], ["condor_submit_dag", dag_file.name])
    tool = pool_tool("condor_submit_dag") if schedd is None else None
    if tool is not None:
        return _cluster(_run([tool, dag_file.name], folder), "condor_submit_dag", by_hand)
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
