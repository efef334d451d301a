"""Checkpoint files: written atomically, kept in two generations, loaded without running code.

``C/model.pth`` is the newest checkpoint; the one before it is the previous generation,
``C/model.prev.pth`` (see :func:`previous_path` for where it lives in an HTCondor job). A save
writes a temporary file, fsyncs it, turns the current ``model.pth`` into the previous generation
(a hard link renamed into place, so some valid ``model.pth`` exists at every instant) and renames
the new file over ``model.pth``. SIGKILL at any moment leaves at most a stray temporary file,
removed on the next start.

Nothing good is destroyed: a ``model.pth`` that is damaged (unreadable *as a checkpoint*) is set
aside as ``model.pth.corrupt`` when the previous generation is resumed (so that the next save does
not turn the damaged file into the only backup), ``--force-restart`` sets files aside as
``*.discarded``, and a name already taken gets a number (``model.pth.discarded.2``). A load that
fails for the machine's reasons (no memory, an I/O error) says nothing about the file: it is a
transient error and every file stays as it was. A missing ``model.pth`` beside a previous
generation resumes from that generation, with a warning.

A checkpoint is one dict of tensors and plain Python values, loaded with
``torch.load(..., weights_only=True)``: no object in it can run code when loaded. Why a file
cannot be loaded is said in condorml's words (:func:`describe_load_error`), never with torch's
advice to load it unsafely.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condorml.errors import (
    CheckpointError,
    CondormlError,
    ExitCode,
    TransientCheckpointError,
    TransientError,
    in_job_sandbox,
    is_transient,
    is_transient_os_error,
    os_error,
)
from condorml.fileio import TMP_PREFIX, atomic_write, fsync_dir, remove_stale_temporaries
from condorml.job.files import CHECKPOINT_FILE

log = logging.getLogger(__name__)

CHECKPOINT_EXIT_CODE = int(ExitCode.CHECKPOINTED)  # HTCondor's checkpoint_exit_code
PREVIOUS_FILE = "model.prev.pth"
# In a job's sandbox, beside the checkpoint folder that HTCondor transfers, not in it.
PREVIOUS_FOLDER = ".condorml-previous"
DISCARDED_SUFFIX = ".discarded"
CORRUPT_SUFFIX = ".corrupt"
# What to do about a checkpoint folder that cannot be written, by errno; the rest: another folder.
# Whether it is worth a retry is errors.is_transient_os_error's to say: a full disk or an I/O
# error always; permissions or a read-only mount only in a job's sandbox, where the folder is
# condorml's own ``ckpt`` and the machine is at fault (elsewhere it is the user's --checkpoint-dir).
_WRITE_HINTS = {
    errno.ENOSPC: "free space or use another --checkpoint-dir",
    errno.EDQUOT: "the disk quota is exhausted: free space or use another --checkpoint-dir",
    errno.EFBIG: "over the file-size limit here (ulimit -f, or the file system's)",
    errno.EIO: "the disk failed",
    errno.EACCES: "no permission to write there: use another --checkpoint-dir",
    errno.EPERM: "no permission to write there: use another --checkpoint-dir",
    errno.EROFS: "a read-only file system: use another --checkpoint-dir",
    errno.ENOTDIR: "a part of that path is a file, not a folder: use another --checkpoint-dir",
    errno.EEXIST: "a file of that name is in the way: use another --checkpoint-dir",
}
FORMAT = "condorml.job.checkpoint"
LOADED_FROM = "_loaded_from"  # set by load_checkpoint: the file it read (never saved)
FORMAT_VERSION = 1
_REQUIRED = (
    "config",
    "epoch",
    "batch",
    "order",
    "epoch_sums",
    "metrics",
    "counters",
    "model",
    "optimizer",
    "scheduler",
    "rng",
)


class DamagedCheckpointError(CheckpointError):
    """A file that cannot be loaded as a checkpoint (text, empty, truncated, pickled objects, not
    condorml's): the only failure that :func:`load_checkpoint` falls back from and sets aside."""


def previous_path(directory: Path) -> Path:
    """Where the previous generation of ``directory``'s checkpoint is kept.

    Usually ``directory/model.prev.pth``. In an HTCondor job (``_CONDOR_SCRATCH_DIR`` is set)
    whose checkpoint folder lies in its sandbox, it is kept in the sandbox beside that folder
    (``.condorml-previous/<folder>/model.prev.pth``): the job transfers the folder at every exit
    85 (``transfer_checkpoint_files``) and HTCondor commits each transfer atomically on the access
    point, so a second generation in it would double the bytes moved for nothing, while the copy
    in the sandbox still covers a damaged local file between two starts in the same sandbox.
    """
    if in_job_sandbox(directory):
        scratch = Path(os.environ["_CONDOR_SCRATCH_DIR"])
        with contextlib.suppress(ValueError, OSError):
            relative = directory.resolve().relative_to(scratch.resolve())
            return scratch / PREVIOUS_FOLDER / relative / PREVIOUS_FILE
    return directory / PREVIOUS_FILE


def _write_error(path: Path, action: str, err: OSError) -> CheckpointError:
    """A one-line error whose advice matches what went wrong (full disk, permissions, ...),
    transient (:class:`~condorml.errors.TransientCheckpointError`) when the machine is at fault."""
    hint = _WRITE_HINTS.get(err.errno or 0, "use another --checkpoint-dir")
    message = f"{path}: cannot {action} ({err.strerror or err}); {hint}"
    transient = is_transient_os_error(err, path)
    return (TransientCheckpointError if transient else CheckpointError)(message)


def check_checkpoint_dir(directory: Path) -> None:
    """Create ``directory`` (and the previous generation's folder) and prove a file can be written.

    Called before training, so that a checkpoint folder under a file, on a read-only mount or
    without permission fails at once instead of after a whole interval of training.

    Raises
    ------
    CheckpointError
        Naming the folder and why it cannot be written.
        Transient (:class:`~condorml.errors.TransientCheckpointError`) when the machine is
        at fault (see :func:`_write_error`).
    """
    for folder in dict.fromkeys((directory, previous_path(directory).parent)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}probe.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise _write_error(folder, "write checkpoints in this folder", err) from None


def save_checkpoint(state: dict[str, Any], directory: Path) -> Path:
    """Write ``state`` as ``directory/model.pth``, keeping the previous one (see :func:`previous_path`).

    Parameters
    ----------
    state : dict
        Tensors and plain Python values only (see module docstring).
    directory : Path
        The checkpoint directory; created if missing.

    Returns
    -------
    Path
        The path of the new checkpoint.

    Raises
    ------
    CheckpointError
        If the file cannot be written (the previous checkpoint is then untouched); the advice
        follows the error (free space for a full disk, another folder for permissions), and a
        full disk, a quota, an I/O error (or, in a job's sandbox, permissions) are transient.
    """
    target = directory / CHECKPOINT_FILE
    payload = {"format": FORMAT, "version": FORMAT_VERSION, **state}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
            _keep_previous(directory)
    except (OSError, RuntimeError) as err:  # disk full, quota...: the previous one is intact
        cause = _os_error_in(err)
        if cause is None:
            raise
        raise _write_error(target, "write the checkpoint", cause) from err
    return target


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind ``err``: torch.save, when a write fails, raises a RuntimeError
    ("unexpected pos") from its writer's cleanup, with the OSError only in the chain."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _keep_previous(directory: Path) -> None:
    current = directory / CHECKPOINT_FILE
    if not current.exists():  # none yet, or a damaged one was set aside: keep the previous one
        return
    previous = previous_path(directory)
    previous.parent.mkdir(parents=True, exist_ok=True)
    staged = previous.parent / f"{TMP_PREFIX}{PREVIOUS_FILE}.link"
    staged.unlink(missing_ok=True)
    try:
        os.link(current, staged)
    except OSError:  # file systems without hard links
        shutil.copy2(current, staged)
    os.replace(staged, previous)
    fsync_dir(previous.parent)
    stale = directory / PREVIOUS_FILE
    if previous != stale and stale.exists():  # an older generation from a folder made outside
        stale.unlink()  # a job: superseded by the one just kept, and transferred for nothing


def checkpoint_files(directory: Path) -> list[Path]:
    """The checkpoint files present, newest first.

    The previous generation where this process keeps it, then ``model.prev.pth`` in the folder
    if that is another place (a folder written outside a job, then transferred into one).
    """
    candidates = (directory / CHECKPOINT_FILE, previous_path(directory), directory / PREVIOUS_FILE)
    return [p for p in dict.fromkeys(candidates) if p.exists()]


def set_aside(path: Path, suffix: str) -> Path:
    """Rename ``path`` to ``path + suffix``, numbered (``.2``, ``.3``) if that name is taken.

    Never overwrites: a hard link claims the new name (failing if it exists), then the old name
    goes; where hard links are not supported, the first free name is taken by a rename.
    """
    base = path.with_name(path.name + suffix)
    for number in range(1, 10_000):
        target = base if number == 1 else base.with_name(f"{base.name}.{number}")
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError:  # no hard links here
            if target.exists():
                continue
            os.rename(path, target)
            return target
        path.unlink()
        return target
    raise CheckpointError(f"{path}: too many set-aside copies beside it; delete old ones")


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """Load the newest valid checkpoint of ``directory``, falling back to the previous one.

    Stale temporary files of a killed save are removed first. Tensors are loaded to the CPU.
    When the previous generation is resumed from a damaged ``model.pth``, that file is set aside
    as ``model.pth.corrupt``, so that the next save keeps the good previous generation as the
    backup instead of the damaged file; from a missing ``model.pth``, with a warning too.

    Returns
    -------
    dict or None
        The checkpoint, or None if the directory holds no checkpoint file.

    Raises
    ------
    CheckpointError
        If checkpoint files exist but none of them is valid (nothing is then moved), or one
        cannot be read for a reason other than damage (permissions, a newer format: nothing is
        moved either). Transient (:class:`~condorml.errors.TransientCheckpointError`) when the
        machine is at fault (no memory, an I/O error): every file is left as it was, and another
        attempt resumes from the same checkpoint.
    """
    remove_stale_temporaries(directory, CHECKPOINT_FILE)
    for previous in dict.fromkeys((previous_path(directory), directory / PREVIOUS_FILE)):
        remove_stale_temporaries(previous.parent, PREVIOUS_FILE)
    files = checkpoint_files(directory)
    if not files:
        return None
    current = directory / CHECKPOINT_FILE
    problems: list[tuple[Path, str]] = []
    for path in files:
        try:
            state = read_checkpoint(path)
        except DamagedCheckpointError as err:  # anything else (memory, disk) propagates, no move
            problems.append((path, str(err)))
            continue
        if files[0] != current:  # model.pth missing, the previous generation present
            log.warning("%s: missing; resuming from the previous generation %s instead%s",
                        current, path, _set_aside_note(current))  # fmt: skip
        for damaged, problem in problems:
            try:
                kept = set_aside(damaged, CORRUPT_SUFFIX)
            except OSError as err:
                raise _write_error(damaged, "set the damaged checkpoint aside", err) from None
            log.warning("%s; resuming from %s instead (the damaged file is kept as %s)",
                        problem, path, kept.name)  # fmt: skip
        state[LOADED_FROM] = str(path)  # what the resume says it resumes from
        return state
    missing = [f"{current}: missing"] if files[0] != current else []
    raise CheckpointError(
        f"{'; '.join([*missing, *(problem for _, problem in problems)])}; no valid checkpoint in "
        f"{directory}: delete these files or pass --force-restart to start over"
    )


def _set_aside_note(current: Path) -> str:
    """Where a missing ``model.pth`` may have gone: a damaged one set aside earlier."""
    corrupt = current.with_name(current.name + CORRUPT_SUFFIX)
    return f" (a damaged one set aside earlier is {corrupt.name})" if corrupt.exists() else ""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check one checkpoint file with ``weights_only=True``.

    Raises
    ------
    DamagedCheckpointError
        If the file is truncated, corrupt, holds non-weights objects or is not a condorml
        checkpoint: the cases :func:`load_checkpoint` falls back from.
    CheckpointError
        If it is missing, cannot be opened (permissions) or was written by a newer condorml.
        Transient (:class:`~condorml.errors.TransientCheckpointError`) if reading it fails
        for the machine's reasons (no memory, an I/O error): :func:`load_checkpoint` then sets
        nothing aside.
    """
    state = load_weights_only(path, str(path), damaged=DamagedCheckpointError,
                              permanent=CheckpointError, transient=TransientCheckpointError)  # fmt: skip
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DamagedCheckpointError(
            f"{path}: not a condorml checkpoint (a bare state_dict or another program's file)"
        )
    if state.get("version", 0) > FORMAT_VERSION:  # a good file this version cannot read: kept
        raise CheckpointError(
            f"{path}: written by a newer condorml (format {state['version']}); upgrade condorml"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise DamagedCheckpointError(
            f"{path}: incomplete checkpoint (missing {', '.join(missing)})"
        )
    return state


# The CPU allocator's failure is a RuntimeError, which errors.is_transient does not recognise.
_REQUESTED = re.compile(r"tried to allocate (\d+) bytes")


def load_weights_only(
    path: Path,
    where: str,
    damaged: type[CondormlError] = CondormlError,
    permanent: type[CondormlError] = CondormlError,
    transient: type[TransientError] = TransientError,
) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, each failure as one line.

    The one place condorml calls ``torch.load``: the checkpoint, ``--model`` and
    ``--pretrained-weights`` all tell a damaged file from a machine that fails to load a good
    one, since only the former may be set aside or refused for good.

    Parameters
    ----------
    path : Path
        The file.
    where : str
        What the messages start with: the path, or the option and the path.
    damaged, permanent, transient : type
        The error for a file that is not a loadable checkpoint (see :func:`describe_load_error`),
        for one that cannot be opened for the user's reasons (missing, permissions), and for a
        failure of the machine (no memory, an I/O error, a full file table).

    Raises
    ------
    CondormlError
        One of the three, naming ``where`` and what to do.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise permanent(f"{where}: no such file") from None
    except Exception as err:  # torch raises many types for a damaged file, MemoryError too
        if _out_of_memory(path, err):
            raise transient(
                f"{where}: not enough memory to load it ({summary(err)}); the file is left as it was: "
                "run again, with more memory (request_memory) if it recurs"
            ) from None
        # The disk's error, whatever torch wrapped it in; an OSError alone proves nothing (its
        # reader raises EINVAL for a truncated file), so a file that reads through is damaged.
        cause = _os_error_in(err)
        if cause is None or not is_transient_os_error(cause, path):
            cause = _read_failure(path)
        if cause is not None:
            raise os_error(f"{where}: cannot read it ({cause.strerror or cause})", cause, path,
                           permanent, transient) from None  # fmt: skip
        raise damaged(f"{where}: {describe_load_error(path, err)}") from None


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is the host or a GPU running out of memory: worth another attempt.

    Example
    -------
    >>> out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    True
    """
    if isinstance(err, OSError):  # ENOMEM and the rest: errors.is_transient_os_error's to say
        return False
    return is_transient(err)  # MemoryError, torch's OutOfMemoryError and allocator errors


def summary(err: BaseException, width: int = 120) -> str:
    """``err``'s type and the start of its message's first line, for a one-line error.

    Example
    -------
    >>> summary(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\\nmore"))
    'RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB'
    """
    lines = str(err).strip().splitlines()
    first = lines[0][:width].rstrip(" .") if lines else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _out_of_memory(path: Path, err: BaseException) -> bool:
    """Whether loading ``path`` failed for want of memory, not because of the file.

    The CPU allocator names the bytes it was asked for; more than the whole file is a damaged
    size field (torch.save stores tensors uncompressed), which no amount of memory would load.
    """
    if not out_of_memory(err):
        return False
    requested = _REQUESTED.search(str(err))
    try:
        return requested is None or int(requested.group(1)) <= path.stat().st_size
    except OSError:
        return True


def _read_failure(path: Path) -> OSError | None:
    """The OSError reading ``path`` through gives, if any: an I/O error under torch's reader
    surfaces as a RuntimeError ("file read failed") that looks like a damaged file."""
    try:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    except OSError as err:
        return err
    return None


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"  # the older format
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def describe_load_error(path: Path, err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in one line of condorml's words.

    Tells a text file, an empty or truncated file, a plain pickle and a file holding arbitrary
    Python objects apart. torch's own message is never relayed whole: it advises loading with
    ``weights_only`` turned off, which would let the file run code, and condorml never suggests
    that.

    Example
    -------
    >>> describe_load_error(Path("notes.txt"), KeyError("101"))  # doctest: +SKIP
    'not a PyTorch file at all (it is text: "hello, ..."); give a .pth written by torch.save'
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as read_error:
        return f"cannot read it ({read_error.strerror or read_error})"
    text = str(err)
    if not head:
        return "an empty file (0 bytes): a checkpoint that was never written, or cut off"
    if not head.startswith(_ZIP_MAGIC) and not head.startswith(b"\x80"):
        try:
            sample = head.decode("utf-8").splitlines()[0][:40]
        except (UnicodeDecodeError, IndexError):
            return "not a PyTorch file at all (neither a zip archive nor a pickle)"
        return f"not a PyTorch file at all (it is text: {sample!r})"
    unsafe = _UNSAFE_GLOBAL.search(text)
    if unsafe:
        return (
            f"it holds Python objects other than tensors and plain values ({unsafe.group(1)}); "
            "refusing to unpickle them, as they could run code"
        )
    if head.startswith(b"\x80") and not head.startswith(_LEGACY_MAGIC):
        return "a plain Python pickle, not a file written by torch.save; refusing to unpickle it"
    if isinstance(err, (EOFError, OSError)) or "central directory" in text or "zip archive" in text:
        return "truncated or damaged (the file ends early): not a loadable checkpoint"
    first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
    if "weights_only" in first or "Weights only" in first:
        return "damaged, or holds data that cannot be loaded safely: not a loadable checkpoint"
    return f"damaged: not a loadable checkpoint ({first})"


def discard_checkpoints(directory: Path) -> list[Path]:
    """Set existing checkpoint files aside as ``*.discarded`` (kept, never resumed from).

    A name already taken by an earlier ``--force-restart`` gets a number: nothing is overwritten.
    """
    return [set_aside(path, DISCARDED_SUFFIX) for path in checkpoint_files(directory)]


def capture_rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain values (safe for ``weights_only``)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA states only where CUDA exists)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # fewer GPUs than when saved
            torch.cuda.set_rng_state_all(state["cuda"])
