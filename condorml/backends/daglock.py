"""DAGMan's lock on a DAG, ``<dag>.lock``: one run of a DAG at a time, on either backend.

What HTCondor 25.0 does (read in its source and checked on the pool): ``condor_dagman`` opens
``<dag>.lock`` beside the DAG (``O_CREAT | O_RDWR``, mode 0600) and takes a non-blocking POSIX
write lock (``fcntl(F_SETLK)``) on the whole file for as long as it runs; the file stays empty.
A second DAGMan of the same DAG (``condor_submit_dag -f``, or a resubmission that finds a rescue
DAG) fails to take it, logs "Aborting because it looks like another instance of DAGMan is
currently running on this DAG" and exits 1, while ``condor_submit_dag`` itself said "submitted".
The kernel drops the lock when its process dies (``kill -9``), so a lock file left behind holds
nobody: the next DAGMan takes it and, because the file exists, starts in recovery mode (it
replays ``<dag>.nodes.log``). A DAGMan that ends (done, failed, ``condor_rm``) deletes the file.

The local backend holds the same lock on the same file, so DAGMan and the local backend each
refuse a DAG the other runs. Unlike DAGMan it also writes who holds it into the file (a line
that cannot be taken for a job id: newer DAGMans write their cluster id there), so a refusal
can name the process and how to stop it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shlex
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from condorml.errors import CondormlError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"  # condor_submit_dag: -Lockfile <primary dag>.lock, in the DAG's folder
LOCAL_TAG = "condorml local backend"
_LOCAL_LINE = re.compile(
    rf"^{LOCAL_TAG}, pid (?P<pid>\d+) on (?P<host>\S+) since (?P<since>[^;]+); (?P<command>.*)$"
)
_SCHEDULER_JOB = re.compile(r"condor_scheduniv_exec\.(\d+)\.\d+")  # how the schedd starts DAGMan
_BUSY = (errno.EACCES, errno.EAGAIN)  # fcntl(F_SETLK): another process holds it
# struct flock, for F_GETLK (which process holds the lock) where its layout is known
_FLOCK = {"linux": "@hhqqi4x", "darwin": "@qqihh"}.get(sys.platform)

# Locks are per process (POSIX): this process closing any descriptor of a lock file it holds
# would drop its lock, so the files it holds are never opened again, only looked up here.
_HELD: dict[str, DagLock] = {}
_HELD_GUARD = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """A process that runs a DAG (holds its lock).

    Attributes
    ----------
    what : str
        Who it is, e.g. ``DAGMan job 208 (pid 17685)``.
    stop : str
        How to stop it, e.g. ``condor_rm 208``.
    """

    what: str
    stop: str


def lock_path(dag_file: Path) -> Path:
    """``<dag>.lock`` beside the DAG, the name ``condor_submit_dag`` gives DAGMan."""
    return dag_file.with_name(dag_file.name + LOCK_SUFFIX)


def holder(dag_file: Path) -> Holder | None:
    """Who runs the DAG now (holds its lock), or None.

    Raises
    ------
    CondormlError
        If the lock file exists but cannot be read.
    """
    path = lock_path(dag_file)
    with _HELD_GUARD:
        mine = _HELD.get(_key(path))
        if mine is not None:
            return mine.holder
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise _unreadable(path, err) from None
        try:
            return _live_holder(fd, path)
        finally:
            os.close(fd)


def refuse_if_running(dag_file: Path, doing: str) -> None:
    """Raise if a process runs the DAG; ``doing`` says what would happen under it.

    Raises
    ------
    CondormlError
        Naming the process and how to stop it.
    """
    found = holder(dag_file)
    if found is not None:
        raise CondormlError(running_message(dag_file, found, doing))


def running_message(dag_file: Path, found: Holder, doing: str) -> str:
    """One line: the DAG runs, who runs it, what ``doing`` would do, how to stop it."""
    return f"{dag_file}: already running ({found.what}); {doing}; stop it first: {found.stop}"


def clear_left_by_local(dag_file: Path) -> str | None:
    """Delete a lock that a local run left behind when it was killed, before DAGMan runs the DAG;
    what was removed, or None.

    DAGMan takes an existing lock file for its own crash and replays the nodes log in recovery
    mode: with the local run's job ids it then aborts ("DAGMan lost track of node ...", seen on
    the pool). A lock DAGMan left (empty) is kept: its recovery is HTCondor's to do.
    """
    path = lock_path(dag_file)
    with _HELD_GUARD:
        if _key(path) in _HELD:
            return None
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return None  # none, or not ours: condor_submit_dag says what it makes of it
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while it goes: no run starts
            left = _LOCAL_LINE.match(_read_line(fd))
            if left is None or not _same_file(fd, path):
                return None
            path.unlink()
        except OSError:
            return None  # held: a live run, which submit_dag refuses
        finally:
            os.close(fd)
    return f"removed {path.name}, left by a local run that is no longer running ({left.group(0)})"


class DagLock:
    """DAGMan's lock on a DAG, held by this process (the local backend) until :meth:`release`.

    Use :meth:`acquire`; it is held until :meth:`release` (which deletes the file, as DAGMan
    does when it ends) or until this process dies (the kernel drops it; the file stays).

    Attributes
    ----------
    path : Path
        ``<dag>.lock``.
    holder : Holder
        This process, as others see it.
    note : str
        What was taken over (a lock left by a process that died), else "".
    """

    def __init__(self, path: Path, fd: int, holder: Holder, note: str) -> None:
        self.path, self.holder, self.note = path, holder, note
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, dag_file: Path) -> DagLock:
        """Take the DAG's lock, as DAGMan does at its start; a lock whose process died is taken
        over (logged, and in :attr:`note`).

        Raises
        ------
        CondormlError
            If another process (or an earlier run in this one) runs the DAG, naming it and how
            to stop it; or if the lock file cannot be written.
        """
        path = lock_path(dag_file)
        doing = "a second run would start the same nodes' jobs again, into the same folders"
        with _HELD_GUARD:
            mine = _HELD.get(_key(path))
            if mine is not None:
                raise CondormlError(running_message(dag_file, mine.holder, doing))
            fd, left = _lock_file(path, dag_file, doing)
            pid = os.getpid()
            since = time.strftime("%Y-%m-%d %H:%M:%S")
            command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "?"
            line = f"{LOCAL_TAG}, pid {pid} on {socket.gethostname()} since {since}; {command}"
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (line + "\n").encode(), 0)
            except OSError as err:
                os.close(fd)
                raise CondormlError(
                    f"{path}: cannot write the DAG's lock ({err.strerror})"
                ) from None
            note = ""
            if left is not None:
                note = f"{path.name}: taken over from {left}, which is no longer running"
            lock = cls(path, fd, _local_holder(pid, since, command), note)
            _HELD[_key(path)] = lock
        if note:
            log.warning("%s", note)
        return lock

    def release(self) -> None:
        """Delete the lock file and let go of the lock, as DAGMan does when it ends (idempotent)."""
        with _HELD_GUARD:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            _HELD.pop(_key(self.path), None)
            try:
                if _same_file(fd, self.path):  # deleted while still held: no one takes it between
                    self.path.unlink()
            except OSError:
                pass  # gone or not ours to delete: the lock itself goes with the descriptor
            finally:
                os.close(fd)


def _lock_file(path: Path, dag_file: Path, doing: str) -> tuple[int, str | None]:
    """Open and lock ``path`` (the caller holds ``_HELD_GUARD``); the descriptor, and who left
    the file if it was there already (a process that died), else None."""
    for _ in range(5):  # the holder deleted the file as we took it: take the new one
        existed = path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise _unreadable(path, err) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            try:
                found = _live_holder(fd, path) if err.errno in _BUSY else None
            finally:
                os.close(fd)
            if found is None:
                raise CondormlError(f"{path}: cannot lock the DAG ({err.strerror})") from None
            raise CondormlError(running_message(dag_file, found, doing)) from None
        if _same_file(fd, path):
            return fd, (_left_by(_read_line(fd)) if existed else None)
        os.close(fd)
    raise CondormlError(f"{path}: the DAG's lock keeps changing; is another run starting?")


def _left_by(line: str) -> str:
    """Who left a lock file (its first line), as a note says it."""
    local = _LOCAL_LINE.match(line)
    if local:
        return f"a local run (pid {local['pid']} on {local['host']}, since {local['since']})"
    if line.isdigit():  # newer DAGMans write their cluster id
        return f"DAGMan job {line}"
    return "a DAGMan (if its job is still queued, the schedd restarts it: see condor_q -dag)"


def _live_holder(fd: int, path: Path) -> Holder | None:
    """Who holds the lock on the open file ``fd`` (``path``), or None if nobody does."""
    pid = _lock_owner(fd, path)
    if pid is None:
        return None
    return _describe(pid or None, _read_line(fd))


def _lock_owner(fd: int, path: Path) -> int | None:
    """The pid holding a lock on ``fd``'s file (0: held, pid unknown), None if none does.

    F_GETLK asks without taking the lock (a DAGMan starting meanwhile must not fail because of
    us); where the layout of ``struct flock`` is unknown, the lock is tried and let go.
    """
    if _FLOCK == "@hhqqi4x":  # Linux: type, whence, start, len, pid
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, 0, 0, 0, 0))
        kind, _, _, _, pid = struct.unpack(_FLOCK, answer)
        return None if kind == fcntl.F_UNLCK else pid
    if _FLOCK == "@qqihh":  # macOS: start, len, pid, type, whence
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, 0, 0, 0, fcntl.F_WRLCK, 0))
        _, _, pid, kind, _ = struct.unpack(_FLOCK, answer)
        return None if kind == fcntl.F_UNLCK else pid
    try:  # pragma: no cover - other systems
        probe = os.open(path, os.O_RDWR)
    except OSError:  # pragma: no cover
        return 0
    try:  # pragma: no cover
        fcntl.lockf(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # pragma: no cover
        return 0
    finally:  # pragma: no cover
        os.close(probe)  # lets go of the lock if it was taken
    return None  # pragma: no cover


def _describe(pid: int | None, line: str) -> Holder:
    """Who holds a lock: what its file says (a local run), else what its process is (DAGMan)."""
    local = _LOCAL_LINE.match(line)
    if local:
        host = local["host"]
        if host != socket.gethostname():  # a shared folder: the pid is the other machine's
            return Holder(
                f"a local run on {host}, pid {local['pid']}: {local['command']}, "
                f"since {local['since']}",
                f"Ctrl-C where it runs, on {host}",
            )
        return _local_holder(pid or int(local["pid"]), local["since"], local["command"])
    command = _command_line(pid)
    job = _SCHEDULER_JOB.search(command) or (re.fullmatch(r"(\d+)", line) if line else None)
    if job:
        cluster = job.group(1)
        return Holder(
            f"DAGMan job {cluster}" + (f", pid {pid}" if pid else ""), f"condor_rm {cluster}"
        )
    if "condor_dagman" in command or not command:
        return Holder(
            "a DAGMan" + (f", pid {pid}" if pid else ""),
            "condor_rm its DAGMan job (condor_q -dag lists them)",
        )
    return Holder(f"pid {pid}: {command[:120]}", f"stop that process (kill -INT {pid})")


def _local_holder(pid: int, since: str, command: str) -> Holder:
    return Holder(
        f"a local run, pid {pid}: {command}, since {since}",
        f"Ctrl-C where it runs, or kill -INT {pid}",
    )


def _command_line(pid: int | None) -> str:
    """A process's command line, where /proc tells it, else ""."""
    if not pid:
        return ""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _read_line(fd: int) -> str:
    """The first line of an open lock file (without moving its offset)."""
    try:
        return os.pread(fd, 4096, 0).decode(errors="replace").split("\n", 1)[0].strip()
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        named, opened = path.stat(), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _unreadable(path: Path, err: OSError) -> CondormlError:
    return CondormlError(f"{path}: cannot open the DAG's lock ({err.strerror or err})")
