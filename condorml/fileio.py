"""Atomic file writes, and the checks that turn a bad path into one line instead of a traceback.

Checkpoints, CSVs, submit files and DAGs are read by other processes (HTCondor's file transfer,
DAGMan, downstream programs) and can be interrupted by an eviction at any moment, so every file
condorml publishes goes through :func:`atomic_write`. A command checks its output path with
:func:`check_output_file` *before* its work (not after minutes of inference), and reads the CSVs
a user names through :func:`read_csv`, which says what is wrong with the file in one line.

A published file gets the permissions a plain ``open(path, "w")`` would give it, ``0666`` less
the user's umask (:func:`current_umask`): under ``umask 077`` on a shared access point a
checkpoint is the user's alone.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from condorml.errors import CondormlError

if TYPE_CHECKING:
    import pandas as pd

TMP_PREFIX = ".tmp-"


def _umask_from_proc() -> int | None:
    """The umask as Linux reports it (``Umask:`` in ``/proc/self/status``, since Linux 4.7), or
    None where it does not: reading it there changes nothing, unlike :func:`os.umask`."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    """The umask when condorml was imported. Without ``/proc`` it can only be read by setting it
    and back (:func:`os.umask`), which another thread could observe: done once, at import, before
    condorml starts any thread."""
    found = _umask_from_proc()
    if found is not None:
        return found
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc``); elsewhere the one at import.

    Example
    -------
    >>> oct(current_umask())  # doctest: +SKIP
    '0o22'
    """
    found = _umask_from_proc()
    return _IMPORT_UMASK if found is None else found


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
def atomic_write(
    path: Path | str, mode: str = "w", encoding: str | None = "utf-8", executable: bool = False
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched. The published
    file's permissions are those of a new file made by ``open(path, "w")``: ``0666`` less the
    umask (``0777`` less it when ``executable``), set before the rename, so that no reader ever
    sees it otherwise (the temporary file is made ``0600`` by :func:`tempfile.mkstemp`).

    Parameters
    ----------
    path : Path or str
        The file to publish.
    mode : str
        ``"w"`` for text or ``"wb"`` for bytes.
    encoding : str or None
        Text encoding; ignored in binary mode.
    executable : bool
        Publish a script that can be run (a job's wrapper).

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
            os.fchmod(handle.fileno(), (0o777 if executable else 0o666) & ~current_umask())
            os.fsync(handle.fileno())
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


def _reason(err: OSError) -> str:
    return (err.strerror or str(err)).lower()


def check_output_file(path: Path | str, what: str) -> None:
    """Refuse, in one line, an output path that :func:`atomic_write` could not publish.

    Checked without creating anything that stays: ``path`` must not be a folder, its nearest
    existing ancestor must be a folder (``x.zip/out.csv`` with ``x.zip`` a file is refused), and
    a file must be creatable there (a probe, removed at once: permission bits say nothing for
    root, ``/proc`` or a read-only mount).

    Parameters
    ----------
    path : Path or str
        The file a command is about to write.
    what : str
        The option or role that named it, for the message (``--output``).

    Raises
    ------
    CondormlError
        Naming ``what``, ``path`` and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise CondormlError(f"{what} {path}: is a folder; give a file name")
    ancestor = existing_folder_above(path, what)
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=ancestor)
    except OSError as err:
        raise CondormlError(f"{what} {path}: cannot write in {ancestor} ({_reason(err)})") from None
    os.close(fd)
    os.unlink(probe)


def existing_folder_above(path: Path, what: str = "") -> Path:
    """The nearest existing folder above ``path`` (where it would be created).

    Raises
    ------
    CondormlError
        If that nearest existing entry is a file: ``path`` could never be created.
    """
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CondormlError(
            f"{f'{what} ' if what else ''}{path}: {ancestor} is a file, not a folder"
        )
    return ancestor


def check_input_file(path: Path | str, what: str) -> None:
    """Refuse, in one line, an input CSV that is missing, a folder, unreadable or a zip archive.

    A zip is named as such because it is the usual mix-up (``test.zip`` of images where a CSV
    belongs) and pandas would otherwise report it as "Multiple files found in ZIP file".

    Raises
    ------
    CondormlError
        Naming ``what`` and ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise CondormlError(f"{what} {path}: is a folder, not a CSV file")
    if not path.exists():
        raise CondormlError(f"{what} {path}: no such file")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise CondormlError(f"{what} {path}: cannot read it ({_reason(err)})") from None
    if is_zip:
        raise CondormlError(f"{what} {path}: a zip archive (of images?), not a CSV file")


def read_csv(path: Path | str, what: str, **options: Any) -> pd.DataFrame:
    """``pandas.read_csv(path, **options)`` with every way the file can be wrong as one line.

    Raises
    ------
    CondormlError
        For a missing, unreadable or non-CSV file (see :func:`check_input_file`), text pandas
        cannot parse, or bytes that are not text; the message starts with ``what`` and the path.
    """
    import pandas as pd

    check_input_file(path, what)
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise CondormlError(f"{what} {path}: empty file, expected a CSV with a header") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, EOFError) as err:
        # ValueError and EOFError: a damaged compressed file (pandas decompresses .gz, .bz2...)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CondormlError(f"{what} {path}: not a CSV file ({first})") from None
    except OSError as err:
        raise CondormlError(f"{what} {path}: cannot read it ({_reason(err)})") from None
