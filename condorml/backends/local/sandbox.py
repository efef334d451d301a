"""An execution's sandbox and the file transfers in and out of it, as an execute point does them.

* In: the executable and ``transfer_input_files`` (``file://`` URLs too; another scheme holds
  the job; a trailing slash sends a folder's contents), plus the spooled checkpoint when the job
  ran before.
* Checkpoint: ``transfer_checkpoint_files`` (and stdout/stderr) replace the spool folder whole.
* Out: ``transfer_output_files`` (or every new top-level file) back to ``initialdir``, with
  ``preserve_relative_paths`` and ``transfer_output_remaps``.

A missing file raises :class:`Held` with HTCondor's hold reason and codes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from condorml.backends.local.eventlog import EventLog
from condorml.backends.local.jobspec import JobSpec

STDOUT, STDERR = "_condor_stdout", "_condor_stderr"  # the names in a sandbox, as HTCondor's
CHIRP_CONFIG = ".chirp.config"  # the Chirp proxy's address and cookie (want_io_proxy)


class Held(Exception):
    """The job goes on hold: ``str(held)`` is the hold reason, with HTCondor's code and subcode."""

    def __init__(self, reason: str, code: int, subcode: int) -> None:
        super().__init__(reason)
        self.code, self.subcode = code, subcode


def prepare_sandbox(job: JobSpec, events: EventLog, folder: Path, spool: Path) -> None:
    """Make ``folder`` a fresh sandbox: the executable, the inputs, the spooled checkpoint."""
    events.transfer("input", finished=False)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if job.transfer_executable:
        if not job.executable.exists():
            raise Held(
                f"Failed to transfer the executable {job.executable}: (errno 2) No such file or directory",
                13,
                2,
            )
        shutil.copy2(job.executable, folder / job.executable.name)
    for entry in job.inputs:
        _transfer_in(job, entry, folder)
    if spool.exists():  # the checkpoint comes back after an eviction
        _copy_contents(spool, folder)
    events.transfer("input", finished=True)


def _transfer_in(job: JobSpec, entry: str, sandbox: Path) -> None:
    source = entry
    if "://" in entry:
        scheme, _, rest = entry.partition("://")
        if scheme != "file":
            raise Held(
                f"Transfer input files failure: no {scheme}:// plugin in the local backend ({entry})",
                13,
                0,
            )
        source = rest
    path = Path(source) if Path(source).is_absolute() else job.iwd / source
    if not path.exists():
        raise Held(
            f"Transfer input files failure: reading from file {path}: (errno 2) No such file or directory",
            13,
            2,
        )
    if path.is_dir() and source.endswith("/"):
        _copy_contents(path, sandbox)
        return
    keep_path = job.preserve_relative_paths and not Path(source).is_absolute()
    target = sandbox / (source.rstrip("/") if keep_path else path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy(path, target)


def spool_checkpoint(job: JobSpec, events: EventLog, sandbox: Path, spool: Path) -> None:
    """Spool ``transfer_checkpoint_files`` as HTCondor 25.0 does (checked on a pool).

    Without ``preserve_relative_paths`` an entry comes back under its last name
    (``ckpt/model.pth`` as ``model.pth``, ``sub/deep`` as ``deep``), a trailing slash
    (``ckpt/``) sends the folder's contents, and a listed file that does not exist fails
    the upload: the checkpoint is not committed, the job is evicted and held (code 36).
    """
    events.transfer("output", finished=False)
    entries = job.checkpoint_files if job.checkpoint_files is not None else (job.outputs or [])
    staged = spool.with_name(spool.name + ".new")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    listed = job.checkpoint_files or []
    if any(not (sandbox / entry).exists() for entry in listed):
        shutil.rmtree(staged, ignore_errors=True)
        events.transfer("output", finished=True)
        reason = f"Error from slot1@{os.uname().nodename}: Starter failed to upload checkpoint"
        events.evicted(reason)
        raise Held(reason, 36, -1)
    for entry in [*entries, STDOUT, STDERR]:  # stdout/err are part of a checkpoint (9.0.6+)
        source = sandbox / entry
        if not source.exists():  # stdout/stderr of a job that wrote nothing
            continue
        if entry.endswith("/") and source.is_dir():
            _copy_contents(source, staged)
            continue
        name = entry if job.preserve_relative_paths else Path(entry).name
        (staged / name).parent.mkdir(parents=True, exist_ok=True)
        _copy(source, staged / name)
    old = spool.with_name(spool.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if spool.exists():
        spool.rename(old)
    staged.rename(spool)  # the new checkpoint replaces the old one whole
    shutil.rmtree(old, ignore_errors=True)
    events.transfer("output", finished=True)


def transfer_output(job: JobSpec, events: EventLog, sandbox: Path) -> None:
    """Send the job's outputs and its stdout/stderr back to ``initialdir``."""
    events.transfer("output", finished=False)
    if job.outputs is None:
        skip = {job.executable.name, STDOUT, STDERR, CHIRP_CONFIG}  # the starter's, not the job's
        entries = [p.name for p in sandbox.iterdir() if p.is_file() and p.name not in skip]
    else:
        entries = job.outputs
    for entry in entries:
        source = sandbox / entry.rstrip("/")
        if not source.exists():
            raise Held(
                "Transfer output files failure at execution point while sending files to access point. "
                f"Details: reading from file {source}: (errno 2) No such file or directory", 12, 2,
            )  # fmt: skip
        name = entry.rstrip("/") if job.preserve_relative_paths else source.name
        target = job.iwd / job.output_remaps.get(name, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(source, target)
    for stream, path in ((STDOUT, job.stdout), (STDERR, job.stderr)):
        if path and (sandbox / stream).exists():
            (job.iwd / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sandbox / stream, job.iwd / path)
    events.transfer("output", finished=True)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def _copy_contents(folder: Path, target: Path) -> None:
    for item in folder.iterdir():
        _copy(item, target / item.name)
