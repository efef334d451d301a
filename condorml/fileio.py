"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Checkpoints, CSVs, submit files and DAGs are read by other processes (HTCondor's file transfer,
DAGMan, downstream programs) and can be interrupted by an eviction at any moment, so every file
condorml publishes goes through :func:`atomic_write`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_PREFIX = ".tmp-"


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : Path or str
        The file to publish.
    mode : str
        ``"w"`` for text or ``"wb"`` for bytes.
    encoding : str or None
        Text encoding; ignored in binary mode.

    Example
    -------
    >>> with atomic_write(tmp / "dog_probs.csv") as f:  # doctest: +SKIP
    ...     f.write("fileid,prob\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def remove_stale_temporaries(directory: Path, name: str) -> None:
    """Delete temporary files left by a writer of ``directory/name`` that was killed."""
    for stale in directory.glob(f"{TMP_PREFIX}{name}.*"):
        with contextlib.suppress(OSError):
            stale.unlink()
