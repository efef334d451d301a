"""Checkpoint files: written atomically, kept in two generations, loaded without running code.

``C/model.pth`` is the newest checkpoint and ``C/model.prev.pth`` the one before it. A save writes
a temporary file, fsyncs it, turns the current ``model.pth`` into ``model.prev.pth`` (a hard link
renamed into place, so some valid ``model.pth`` exists at every instant) and renames the new file
over ``model.pth``. SIGKILL at any moment leaves at most a stray temporary file, removed on the
next start.

A checkpoint is one dict of tensors and plain Python values, loaded with
``torch.load(..., weights_only=True)``: no object in it can run code when loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condorml.errors import CheckpointError
from condorml.fileio import TMP_PREFIX, atomic_write, fsync_dir, remove_stale_temporaries

log = logging.getLogger(__name__)

CHECKPOINT_EXIT_CODE = 85  # HTCondor's checkpoint_exit_code: "checkpointed, run me again"
CHECKPOINT_FILE = "model.pth"
PREVIOUS_FILE = "model.prev.pth"
DISCARDED_SUFFIX = ".discarded"
FORMAT = "condorml.checkpoint"
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


def save_checkpoint(state: dict[str, Any], directory: Path) -> Path:
    """Write ``state`` as ``directory/model.pth``, keeping the previous one as ``model.prev.pth``.

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
        If the file cannot be written (the previous checkpoint is then untouched).
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
    except OSError as err:  # disk full, quota, permissions: the previous checkpoint is intact
        raise CheckpointError(
            f"{target}: cannot write the checkpoint ({err.strerror or err}); free space or use another --checkpoint-dir"
        ) from err
    return target


def _keep_previous(directory: Path) -> None:
    current = directory / CHECKPOINT_FILE
    if not current.exists():
        return
    staged = directory / f"{TMP_PREFIX}{PREVIOUS_FILE}.link"
    staged.unlink(missing_ok=True)
    try:
        os.link(current, staged)
    except OSError:  # file systems without hard links
        shutil.copy2(current, staged)
    os.replace(staged, directory / PREVIOUS_FILE)
    fsync_dir(directory)


def checkpoint_files(directory: Path) -> list[Path]:
    """The checkpoint files present, newest first."""
    return [p for p in (directory / CHECKPOINT_FILE, directory / PREVIOUS_FILE) if p.exists()]


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """Load the newest valid checkpoint of ``directory``, falling back to the previous one.

    Stale temporary files of a killed save are removed first. Tensors are loaded to the CPU.

    Returns
    -------
    dict or None
        The checkpoint, or None if the directory holds no checkpoint file.

    Raises
    ------
    CheckpointError
        If checkpoint files exist but none of them is valid.
    """
    for name in (CHECKPOINT_FILE, PREVIOUS_FILE):
        remove_stale_temporaries(directory, name)
    files = checkpoint_files(directory)
    if not files:
        return None
    problems = []
    for path in files:
        try:
            state = read_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            log.warning("%s; resuming from %s instead", problems[0], path)
        return state
    raise CheckpointError(
        f"{'; '.join(problems)}; no valid checkpoint in {directory}: delete these files or pass "
        "--force-restart to start over"
    )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and check one checkpoint file with ``weights_only=True``.

    Raises
    ------
    CheckpointError
        If the file is truncated, corrupt, holds non-weights objects or is not a condorml checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it holds Python objects other than tensors and plain values; refusing to unpickle them"
        raise CheckpointError(f"{path}: not a loadable checkpoint ({reason[:200]})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a condorml checkpoint (a bare state_dict or another program's file)"
        )
    if state.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer condorml (format {state['version']}); upgrade condorml"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    return state


def discard_checkpoints(directory: Path) -> list[Path]:
    """Rename existing checkpoint files to ``*.discarded`` (kept, but never resumed from)."""
    moved = []
    for path in checkpoint_files(directory):
        target = path.with_name(path.name + DISCARDED_SUFFIX)
        os.replace(path, target)
        moved.append(target)
    return moved


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
