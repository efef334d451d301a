"""From a submit file (and a DAG node's VARS) to the jobs the local backend runs.

Every value goes through ``htcondor2.Submit`` and ``Submit.expand``, so macros (``$(ProcId)``,
VARS, ``$(JOB)``) mean what HTCondor makes of them. Paths follow condor_submit: the executable
relative to the submitting folder (the DAG's folder, or the node's DIR), ``initialdir`` relative
to it too, and inputs, outputs, ``output``, ``error`` and ``log`` relative to ``initialdir``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condorml.errors import CondormlError
from condorml.htcondor.quoting import split_condor_arguments

_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


@dataclass
class JobSpec:
    """One job (one proc of a cluster), its values expanded."""

    submit_file: Path
    cluster: int
    proc: int
    iwd: Path
    universe: str
    executable: Path
    transfer_executable: bool
    arguments: list[str]
    environment: dict[str, str]  # getenv's variables, then ``environment`` (which wins)
    inputs: list[str]
    outputs: list[str] | None  # None: every file the job creates at the top of its sandbox
    output_remaps: dict[str, str]
    checkpoint_files: list[str] | None
    checkpoint_exit_code: int | None
    stdout: str | None
    stderr: str | None
    log: Path | None
    cpus: int = 1
    memory_mb: int = 0
    preserve_relative_paths: bool = False
    want_io_proxy: bool = False  # the starter offers the job a Chirp proxy (:mod:`.chirp`)
    leave_in_queue: str | None = None  # a ClassAd expression (:mod:`.jobqueue`)
    image: str | None = None  # container_image or docker_image, as written (:mod:`.container`)
    network_type: str | None = None  # docker_network_type (``host``: the execute point's network)
    notes: list[str] = field(default_factory=list)


def _split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("true", "yes", "1", "t", "y")


def megabytes(value: str | None) -> int:
    """``request_memory`` in MiB (``8GB`` -> 8192; a bare number is MiB)."""
    if not value:
        return 0
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", value, re.IGNORECASE)
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()]) if match else 0


def parse_arguments(value: str | None) -> list[str]:
    """Split ``arguments``: the new syntax (in double quotes) or the old (white space)."""
    if not value:
        return []
    if value.startswith('"'):
        return split_condor_arguments(value)
    return [word.replace('\\"', '"') for word in value.split()]


def parse_environment(value: str | None) -> dict[str, str]:
    """Parse ``environment``: new syntax (``"A=1 B='x y'"``) or old (``A=1;B=2``)."""
    if not value:
        return {}
    entries = split_condor_arguments(value) if value.startswith('"') else value.split(";")
    env = {}
    for entry in entries:
        if "=" in entry:
            key, _, val = entry.partition("=")
            env[key.strip()] = val
    return env


def getenv_variables(value: str | None, environ: dict[str, str]) -> dict[str, str]:
    """What ``getenv`` copies from the submitting environment, as condor_submit does.

    ``true`` copies everything, ``false`` (the default) nothing, otherwise a comma or space
    separated list of names, each possibly with ``*`` wildcards (``getenv = PATH, LC_*``).
    """
    if value is None or value.strip().lower() in ("", "false", "no", "f", "n", "0"):
        return {}
    if value.strip().lower() in ("true", "yes", "t", "y", "1"):
        return dict(environ)
    patterns = [p for p in re.split(r"[\s,]+", value.strip()) if p]
    return {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def _expand(description: object, key: str) -> str | None:
    if key not in description:  # type: ignore[operator]
        return None
    try:
        return description.expand(key)  # type: ignore[attr-defined]
    except KeyError:
        return None


@dataclass
class SubmitFile:
    """A submit file as htcondor2 parsed it, with the text it was parsed from."""

    path: Path
    text: str
    description: Any  # htcondor2.Submit; macros set on it (VARS, JOB...) stay set


def read_submit(
    submit_file: Path, submit_dir: Path, previous: SubmitFile | None = None
) -> SubmitFile:
    """Read and parse a submit file; ``previous`` is returned as it is if the text is the same.

    The DAG runner reads a node's submit file once per attempt to learn its request, and again
    when the job starts, after the PRE script, which may have rewritten it: only a changed file
    is parsed again.

    Raises
    ------
    CondormlError
        For a missing or invalid file.
    """
    import htcondor2

    path = submit_file if submit_file.is_absolute() else submit_dir / submit_file
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CondormlError(f"{path}: no such submit file") from None
    if previous is not None and previous.path == path and previous.text == text:
        return previous
    try:
        return SubmitFile(path, text, htcondor2.Submit(text))
    except (htcondor2.HTCondorException, ValueError) as err:
        raise CondormlError(f"{path}: not a valid submit description ({err})") from None


def expand_jobs(
    submit: SubmitFile,
    submit_dir: Path,
    cluster: int,
    vars_: dict[str, str] | None = None,
    dag_macros: dict[str, str] | None = None,
) -> list[JobSpec]:
    """Describe each job the ``queue`` statement of a parsed submit file creates.

    The arguments are those of :func:`load_jobs`. Expanding the same file again with the same
    VARS (and other ``cluster`` or ``dag_macros``) gives what a fresh parse would.

    Raises
    ------
    CondormlError
        For a queue statement the local backend does not support, or a missing executable.
    """
    description, path = submit.description, submit.path
    for key, value in {**(dag_macros or {}), **(vars_ or {})}.items():
        if key not in description or key in (dag_macros or {}):
            description[key] = value
    queue = (description.getQArgs() or "1").strip()
    if not queue.isdigit():
        raise CondormlError(
            f"{path}: queue {queue} is not supported by the local backend (queue N is)"
        )
    jobs = []
    for proc in range(int(queue)):
        description["ClusterId"], description["ProcId"] = str(cluster), str(proc)
        description["Cluster"], description["Process"] = str(cluster), str(proc)  # older names
        jobs.append(_job(description, path, submit_dir, cluster, proc))
    return jobs


def load_jobs(
    submit_file: Path,
    submit_dir: Path,
    cluster: int,
    vars_: dict[str, str] | None = None,
    dag_macros: dict[str, str] | None = None,
) -> list[JobSpec]:
    """Read a submit file and describe each job its ``queue`` statement creates.

    Parameters
    ----------
    submit_file : Path
        The submit description (relative paths relative to ``submit_dir``).
    submit_dir : Path
        The folder condor_submit would run in (DAG folder, or the node's DIR).
    cluster : int
        Cluster id for ``$(ClusterId)``.
    vars_ : dict, optional
        The node's VARS (prepended: the file's own definitions win, as DAGMan's default).
    dag_macros : dict, optional
        ``JOB``, ``RETRY`` and the like, as DAGMan defines them for node jobs.

    Raises
    ------
    CondormlError
        For an unreadable file, a queue statement the local backend does not support, or a
        missing executable.
    """
    return expand_jobs(read_submit(submit_file, submit_dir), submit_dir, cluster, vars_, dag_macros)


def _job(description: object, path: Path, submit_dir: Path, cluster: int, proc: int) -> JobSpec:
    get = lambda key: _expand(description, key)  # noqa: E731
    iwd = submit_dir / (get("initialdir") or ".")
    executable = get("executable")
    if not executable:
        raise CondormlError(f"{path}: no executable")
    universe = (get("universe") or "vanilla").lower()
    if get("container_image") or get("docker_image"):
        universe = universe if universe != "vanilla" else "container"
    remaps = {}
    for pair in (get("transfer_output_remaps") or "").strip('"').split(";"):
        if "=" in pair:
            source, _, target = pair.partition("=")
            remaps[source.strip()] = target.strip()
    code = get("checkpoint_exit_code")
    job = JobSpec(
        submit_file=path, cluster=cluster, proc=proc, iwd=iwd, universe=universe,
        executable=(submit_dir / executable) if not Path(executable).is_absolute() else Path(executable),
        transfer_executable=_bool(get("transfer_executable"), True),
        arguments=parse_arguments(get("arguments")), environment={**getenv_variables(get("getenv"), dict(os.environ)), **parse_environment(get("environment"))},
        inputs=_split_list(get("transfer_input_files")),
        outputs=_split_list(get("transfer_output_files")) if get("transfer_output_files") is not None else None,
        output_remaps=remaps,
        checkpoint_files=_split_list(get("transfer_checkpoint_files")) if get("transfer_checkpoint_files") is not None else None,
        checkpoint_exit_code=int(code) if code else None,
        stdout=get("output"), stderr=get("error"),
        log=(iwd / get("log")) if get("log") else None,
        cpus=int(float(get("request_cpus") or 1)), memory_mb=megabytes(get("request_memory")),
        preserve_relative_paths=_bool(get("preserve_relative_paths"), False),
        want_io_proxy=_bool(get("want_io_proxy") or get("MY.WantIOProxy"), False),
        leave_in_queue=get("leave_in_queue"),
        image=get("container_image") or get("docker_image"),
        network_type=get("docker_network_type"),
    )  # fmt: skip
    if int(float(get("request_gpus") or 0)):
        job.notes.append(
            "request_gpus: the local backend gives the job this machine's devices (maybe none)"
        )
    return job
