"""The exceptions condorml raises for failures a user or a retry can fix, and its exit codes.

Library code raises these; the CLI prints ``str(error)`` as one line and exits with the error's
code (:func:`condorml.cli._common.call`). A :class:`CondormlError` is *permanent*: the command
line, the spec, the data or the checkpoint is wrong and running it again cannot help (exit 2,
which a sweep's ``RETRY n UNLESS-EXIT 2`` never retries). A :class:`TransientError` is the
machine's or the transfer's: a full disk, an I/O error, a damaged input zip, no memory; another
attempt, perhaps on another machine, may succeed (exit 75, retried). Anything else escaping a
command is a bug and exits with code 1 and a traceback.
"""

from __future__ import annotations

import enum
import errno
import os
import re
from pathlib import Path


class ExitCode(enum.IntEnum):
    """condorml's exit codes: the one table (commands, job wrappers, the DAG's RETRY)."""

    DONE = 0
    BUG = 1  # an unexpected exception: a traceback on stderr
    PERMANENT = 2  # a usage, spec, data or checkpoint mistake: never retried
    TOO_FEW_MEMBERS = 3  # the collect step (FINAL node): fewer members than min_members joined
    TRANSIENT = 75  # sysexits.h EX_TEMPFAIL: the machine or the transfer failed; retried
    CHECKPOINTED = 85  # HTCondor's checkpoint_exit_code: "checkpointed, run me again"
    SIGINT = 130  # 128 + 2: stopped by Ctrl-C after saving
    SIGTERM = 143  # 128 + 15: stopped by HTCondor (eviction, condor_rm) after saving


EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.DONE: "done",
    ExitCode.BUG: "unexpected failure (a bug: traceback on stderr); retried",
    ExitCode.TOO_FEW_MEMBERS: "the collect step (the FINAL node): fewer members than "
    "min_members produced predictions",
    ExitCode.PERMANENT: "bad options, spec, data or checkpoint; never retried",
    ExitCode.TRANSIENT: "the machine or the transfer failed (disk, I/O, damaged input, memory); retried",
    ExitCode.CHECKPOINTED: "checkpointed: HTCondor transfers the checkpoint and runs the job again",
    ExitCode.SIGINT: "stopped by SIGINT after saving",
    ExitCode.SIGTERM: "stopped by SIGTERM after saving; HTCondor runs the job again",
}


class ScriptExit(enum.IntEnum):
    """Exit codes of condorml's PRE scripts beyond ExitCode's, as the DAG's PRE_SKIP and
    ``SCRIPT DEFER`` lines name them (:mod:`condorml.sweep.steps`)."""

    SKIP = 3  # PRE_SKIP: the member stopped; the node's job and POST are skipped
    DEFER = 4  # SCRIPT DEFER: not decided yet; DAGMan runs the PRE script again later


def signal_exit_code(signum: int) -> int:
    """The exit code of a run stopped at a safe point by signal ``signum`` (the shell's 128 + N)."""
    return 128 + signum


class CondormlError(Exception):
    """A user-facing error whose message names the file or option and says what to do.

    Permanent unless the class says otherwise (``transient``): the same command fails again.
    """

    transient: bool = False


class TransientError(CondormlError):
    """The machine or the transfer failed, not the user: another attempt may succeed."""

    transient = True


class DataError(CondormlError):
    """Training or test images are missing, unreadable or unlabelled."""


class CheckpointError(CondormlError):
    """No usable checkpoint, or one that does not belong to this command line."""


class ConfigMismatchError(CheckpointError):
    """The checkpoint was written by a run with another configuration."""


class TransientDataError(DataError, TransientError):
    """Images that cannot be read for the machine's reasons: a zip cut off or damaged in
    transfer, an I/O error."""


class TransientCheckpointError(CheckpointError, TransientError):
    """A checkpoint that cannot be written or read for the machine's reasons: a full disk, a
    quota, an I/O error."""


# The machine's resources and devices: never the doing of whoever typed the command.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # disk full
        errno.EDQUOT,  # quota exhausted
        errno.EFBIG,  # over the file-size limit (RLIMIT_FSIZE, the file system's maximum)
        errno.EIO,  # the device failed
        errno.ENOMEM,
        errno.ENFILE,  # open files: the system's limit
        errno.EMFILE,  # open files: the process's limit
        errno.ESTALE,  # NFS
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.EBUSY,
    }
)
# Permissions and read-only mounts: the user's mistake on a path they chose, the machine's in a
# job's sandbox (HTCondor made that folder, and condorml's own ``ckpt`` in it).
SANDBOX_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def in_job_sandbox(path: Path) -> bool:
    """Whether ``path`` lies in the sandbox of the HTCondor job running now (``_CONDOR_SCRATCH_DIR``)."""
    scratch = os.environ.get("_CONDOR_SCRATCH_DIR")
    if not scratch:
        return False
    try:
        Path(path).resolve().relative_to(Path(scratch).resolve())
    except (ValueError, OSError):
        return False
    return True


def is_transient_os_error(err: OSError, path: Path | None = None) -> bool:
    """Whether ``err`` (on ``path``, if given) is the machine's fault, so worth another attempt.

    Example
    -------
    >>> is_transient_os_error(OSError(errno.ENOSPC, "No space left on device"))
    True
    >>> is_transient_os_error(OSError(errno.ENOTDIR, "Not a directory"))
    False
    """
    if err.errno in TRANSIENT_ERRNOS:
        return True
    return err.errno in SANDBOX_ERRNOS and path is not None and in_job_sandbox(path)


def os_error(
    message: str,
    err: OSError,
    path: Path | None = None,
    permanent: type[CondormlError] = CondormlError,
    transient: type[TransientError] = TransientError,
) -> CondormlError:
    """``message`` as ``transient`` when ``err`` (on ``path``) is the machine's, else as ``permanent``.

    Example
    -------
    >>> os_error("x: cannot write it", OSError(errno.EIO, "I/O error")).transient
    True
    """
    return transient(message) if is_transient_os_error(err, path) else permanent(message)


# What torch's allocators say, as a RuntimeError, when the host runs out of memory
NO_MEMORY = re.compile(r"out of memory|can't allocate memory|not enough memory|Cannot allocate")


def is_transient(err: BaseException) -> bool:
    """Whether a failure is worth another attempt: a :class:`TransientError`, no memory left (host
    or GPU: ``MemoryError``, torch's ``OutOfMemoryError``, its CPU allocator's RuntimeError), or
    an ``OSError`` of the machine's resources (:data:`TRANSIENT_ERRNOS`)."""
    if isinstance(err, CondormlError):
        return err.transient
    if isinstance(err, MemoryError):
        return True
    # torch.cuda.OutOfMemoryError (a RuntimeError), named so that this module needs no torch
    if type(err).__name__ == "OutOfMemoryError" and type(err).__module__.startswith("torch"):
        return True
    if isinstance(err, RuntimeError) and NO_MEMORY.search(str(err)):
        return True
    return isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS
