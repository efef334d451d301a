"""A job's Chirp proxy, as an HTCondor starter offers it to a job with ``want_io_proxy = true``.

The starter writes ``.chirp.config`` (one line, ``<host> <port> <cookie>``) into the sandbox and
points ``_CONDOR_CHIRP_CONFIG`` at it; the job (``condor_chirp``, or the ``htchirp`` client)
connects, presents the cookie, and then updates its own job ad and appends to its event log.
The answers and the events below are those of HTCondor 25.0's starter and shadow (checked on a
pool, and against the starter's ``io_proxy_handler.cpp``):

* ``cookie C``: ``0``; a wrong cookie ``-1`` after a one-second pause (the connection stays
  open); any other line before the cookie: ``-1``.
* ``set_job_attr NAME EXPR``: ``0`` and a 033 event in the job's own log ("Setting job attribute
  NAME to EXPR", later "Changing job attribute NAME from OLD to EXPR"), or ``-2`` for an
  attribute a job may not change (``Owner``, ``ClusterId``, ...). An expression that does not
  parse is answered ``0`` and logged, but the ad keeps no value (the pool shows it undefined).
* ``set_job_attr_delayed NAME EXPR``: ``0``, no event, if NAME begins with ``Chirp`` (the default
  ``CHIRP_DELAYED_UPDATE_PREFIX``, case-insensitive; 100 names at most), else ``1``: refused and
  nothing stored, an answer the client does not take as an error.
* ``get_job_attr NAME``: the value as ClassAd text, ``UNDEFINED`` if unset. HTCondor reads
  ``get_job_attr_delayed NAME`` as ``get_job_attr _delayed`` (a prefix match): ``UNDEFINED``.
* ``ulog TEXT``: ``0`` and a generic event (008) whose text, the event's ``Info``, is TEXT, in the
  job's log and DAGMan's nodes log.
* ``version``: ``2``. Anything else, remote file I/O included (this backend offers none): ``-8``,
  the protocol's invalid request, which is what a starter answers for what it does not serve.

Words are read as the starter reads them: a backslash escapes the next character (``\\n`` is
``n``), and only the first word of ``ulog`` counts (clients escape spaces). The attributes are
kept for the whole job (across restarts and evictions, as a schedd keeps them) and written, for
readers such as ``condorml watch``, to a JSON file (:func:`condorml.sweep.rundir.local_job_ad`).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from condorml.backends.local.eventlog import EventLog
from condorml.backends.local.sandbox import CHIRP_CONFIG
from condorml.fileio import atomic_write_text

# Answers (HTCondor's src/condor_chirp/chirp_protocol.h)
OK, NOT_AUTHENTICATED, NOT_AUTHORIZED, TOO_BIG, INVALID_REQUEST = 0, -1, -2, -5, -8
CHIRP_VERSION = 2
LINE_MAX = 5120
WRONG_COOKIE_PAUSE_S = 1.0  # the starter sleeps a second before answering a wrong cookie
# SYSTEM_IMMUTABLE_JOB_ATTRS of HTCondor 25.0 (condor_config_val): set_job_attr answers -2
_IMMUTABLE_NAMES = ("Owner", "ClusterId", "JobUniverse", "ProcId", "MyType", "TargetType", "User", "OsUser")  # fmt: skip
IMMUTABLE = frozenset(name.lower() for name in _IMMUTABLE_NAMES)
DELAYED_PREFIX, DELAYED_MAX = "chirp", 100  # CHIRP_DELAYED_UPDATE_PREFIX = Chirp*, ..._MAX_ATTRS
WRITE_EVERY_S = 1.0  # the ad file: written on a change, at most this often

_SPACE = " \t\n\r\v\f"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_PLAIN = (bool, int, float, str)


def chirp_words(line: str, command: str, count: int) -> list[str] | None:
    """The ``count`` words after ``command`` in a request, read as the starter reads them.

    Like HTCondor's ``sscanf_chirp``: ``command`` is matched as a prefix (so
    ``get_job_attr_delayed X`` reads as ``get_job_attr`` of ``_delayed``), white space separates
    words, and a backslash escapes the next character. None if fewer words follow.
    """
    if not line.startswith(command):
        return None
    rest, pos, words = line[len(command) :], 0, []
    for _ in range(count):
        while pos < len(rest) and rest[pos] in _SPACE:
            pos += 1
        if pos >= len(rest):
            return None
        word = []
        while pos < len(rest) and rest[pos] not in _SPACE:
            if rest[pos] == "\\":
                pos += 1
                if pos >= len(rest):
                    break
            word.append(rest[pos])
            pos += 1
        words.append("".join(word))
    return words


@dataclass
class _Attribute:
    name: str  # as the job first spelled it (ClassAd names are case-insensitive)
    text: str  # as the job sent it: what the 033 events show
    value: object  # for the JSON file
    classad: str  # get_job_attr's answer


def parse_value(text: str) -> tuple[object, str] | None:
    """A job's attribute value: (what the JSON file keeps, what ``get_job_attr`` answers).

    The file keeps a literal (number, boolean, string, list of those) as its JSON value and
    any other expression as its text; None if ``text`` is not a ClassAd expression.
    """
    import classad2

    try:
        tree = classad2.ExprTree(text)
    except Exception:  # classad2 raises its own ClassAdException, or ValueError
        return None
    try:
        result = tree.eval()
    except Exception:
        result = None
    plain = isinstance(result, _PLAIN) or (
        isinstance(result, list) and all(isinstance(v, _PLAIN) for v in result)
    )
    value = result if plain else text
    if isinstance(result, float) and _NUMBER.fullmatch(text.strip()):
        return value, repr(result)  # the schedd writes 0.5000 as 0.5, classad2 as 5.0E-01
    return value, " ".join(str(tree).split())


class JobAttributes:
    """What a job set in its ad through Chirp: answers for ``get_job_attr``, and a JSON file.

    Parameters
    ----------
    path : Path or None
        The JSON file (``{"CondormlEpoch": 3, ...}``), written atomically on a change, at most
        every :data:`WRITE_EVERY_S` seconds, and at :meth:`flush`; None: kept in memory only.
    builtin : dict
        Attributes the job may read but not set (``ClusterId``...), as ClassAd text.
    """

    def __init__(self, path: Path | None, builtin: dict[str, str]) -> None:
        self.path, self.builtin = path, {k.lower(): v for k, v in builtin.items()}
        self._values: dict[str, _Attribute] = {}
        self._delayed: set[str] = set()
        self._lock = threading.Lock()
        self._dirty, self._written = False, -WRITE_EVERY_S
        self._timer: threading.Timer | None = None

    def get(self, name: str) -> str:
        """The attribute's value as ClassAd text (``UNDEFINED`` if the ad has none)."""
        with self._lock:
            found = self._values.get(name.lower())
        return found.classad if found else self.builtin.get(name.lower(), "UNDEFINED")

    def values(self) -> dict[str, object]:
        """Every attribute the job set, as the JSON file has them."""
        with self._lock:
            return {a.name: a.value for a in self._values.values()}

    def set(self, name: str, text: str, events: EventLog) -> int:
        """``set_job_attr``: the answer; a 033 event in ``events`` unless refused."""
        key = name.lower()
        if key in IMMUTABLE:
            return NOT_AUTHORIZED
        with self._lock:
            old = self._values.get(key)
        events.attribute_update(name, text, old.text if old else None)
        self._store(name, text)
        return OK

    def set_delayed(self, name: str, text: str) -> int:
        """``set_job_attr_delayed``: 0 if stored, 1 if refused (HTCondor's answers; no event)."""
        key = name.lower()
        if not key.startswith(DELAYED_PREFIX) or key in IMMUTABLE:
            return 1
        with self._lock:
            if key not in self._delayed and len(self._delayed) >= DELAYED_MAX:
                return 1
            self._delayed.add(key)
        self._store(name, text)
        return OK

    def _store(self, name: str, text: str) -> None:
        parsed = parse_value(text)
        with self._lock:
            if parsed is None:  # the pool logs it, but the ad shows no value
                self._values.pop(name.lower(), None)
            else:
                kept = self._values.get(name.lower())
                spelled = kept.name if kept else name
                self._values[name.lower()] = _Attribute(spelled, text, *parsed)
            self._dirty = True
            wait = self._written + WRITE_EVERY_S - time.monotonic()
            if wait <= 0:
                self._write_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the file now if anything changed since it was last written."""
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._dirty or self.path is None:
            return
        data = {a.name: a.value for a in self._values.values()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        self._dirty, self._written = False, time.monotonic()


class _Handler(socketserver.StreamRequestHandler):
    """One client connection: the cookie first, then one request per line."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.request)

    def finish(self) -> None:
        self.server.connections.discard(self.request)
        super().finish()

    def handle(self) -> None:
        proxy, authenticated = self.server.proxy, False
        while True:
            try:
                raw = self.rfile.readline(LINE_MAX + 2)
            except OSError:  # closed by stop()
                return
            if not raw:
                return
            if not raw.endswith(b"\n") and len(raw) > LINE_MAX:
                self._answer(TOO_BIG)  # the starter answers and hangs up
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if authenticated:
                self._answer(*proxy.request(line))
                continue
            words = line.split()
            authenticated = len(words) >= 2 and words[0] == "cookie" and words[1] == proxy.cookie
            if not authenticated and len(words) >= 2 and words[0] == "cookie":
                time.sleep(WRONG_COOKIE_PAUSE_S)
            self._answer(OK if authenticated else NOT_AUTHENTICATED)

    def _answer(self, code: int, data: str | None = None) -> None:
        if data is None:
            self.wfile.write(f"{code}\n".encode())
        else:
            payload = data.encode()
            self.wfile.write(f"{len(payload)}\n".encode() + payload)
        self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a client left connected does not keep the backend alive
    allow_reuse_address = True
    proxy: ChirpProxy
    connections: set[socket.socket]


class ChirpProxy:
    """A Chirp server for one job, on 127.0.0.1 at a free port, in a daemon thread.

    Parameters
    ----------
    events : EventLog
        The job's event log: 008 for ``ulog``, 033 for ``set_job_attr``.
    attributes : JobAttributes
        The job's ad as the job sets it.

    Use as a context manager (or :meth:`start` / :meth:`stop`); :meth:`write_config` writes
    ``.chirp.config`` into a sandbox.
    """

    def __init__(self, events: EventLog, attributes: JobAttributes) -> None:
        self.events, self.attributes = events, attributes
        self.cookie = secrets.token_hex(16)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        if self._server is None:
            raise RuntimeError("the Chirp proxy is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> ChirpProxy:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy, self._server.connections = self, set()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name=f"chirp-{self.events.job}",
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the connections still open (a job's leftover process may hold
        one), and write the ad file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for connection in list(self._server.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._server = None
        self.attributes.flush()

    def __enter__(self) -> ChirpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_config(self, sandbox: Path) -> Path:
        """Write ``.chirp.config`` (``host port cookie``) into ``sandbox``; its path."""
        host, port = self.address
        path = sandbox / CHIRP_CONFIG
        path.write_text(f"{host} {port} {self.cookie}\n")
        path.chmod(0o600)  # the cookie is the job's only credential
        return path

    def request(self, line: str) -> tuple[int] | tuple[int, str]:
        """The answer to an authenticated request line: (code,) or (length, data) for data."""
        attrs = self.attributes
        if words := chirp_words(line, "set_job_attr_delayed", 2):
            return (attrs.set_delayed(*words),)
        if words := chirp_words(line, "set_job_attr", 2):
            return (attrs.set(*words, self.events),)
        if words := chirp_words(line, "get_job_attr", 1):
            return 0, attrs.get(words[0])
        if words := chirp_words(line, "ulog", 1):
            self.events.generic(words[0])
            return (OK,)
        if line.startswith("version"):
            return (CHIRP_VERSION,)
        return (INVALID_REQUEST,)
