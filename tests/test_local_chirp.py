"""The local backend's Chirp proxy (want_io_proxy): a job sets attributes of its own ad and
appends lines to its event log through ``htchirp``, as it would on a pool (issue 15)."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
from pathlib import Path

import htchirp
import htcondor2
import pytest

from condorml.backends.local import chirp
from condorml.backends.local.backend import LocalBackend
from condorml.backends.local.chirp import ChirpProxy, JobAttributes, chirp_words, parse_value
from condorml.backends.local.eventlog import EventLog, JobId
from condorml.sweep.rundir import local_job_ad
from tests.pool import Pool, wait_for

GENERIC, ATTRIBUTE_UPDATE = 8, 33

# The job: what a trainer does through the proxy; it records what it read back. With a folder
# argument it waits there for "go" (written once the test has seen the ad file while it runs).
JOB = """\
#!{python}
import os, pathlib, sys, time
import htchirp

seen = {{"config": os.environ.get("_CONDOR_CHIRP_CONFIG"), "files": sorted(os.listdir("."))}}
if seen["config"] is None:
    pathlib.Path("seen.txt").write_text(repr(seen))
    sys.exit(0)
with htchirp.HTChirp() as proxy:
    proxy.set_job_attr("CondormlEpoch", "1")
    proxy.set_job_attr("CondormlEpoch", "2")
    proxy.set_job_attr("CondormlPhase", '"train"')
    proxy.set_job_attr_delayed("ChirpCondormlLoss", "0.25")
    proxy.set_job_attr_delayed("CondormlRefused", "1")  # not Chirp*: refused, no error
    proxy.ulog("epoch 2/2: val_acc=0.5")
    seen["epoch"] = proxy.get_job_attr("CondormlEpoch")
    seen["phase"] = proxy.get_job_attr("CondormlPhase")
    seen["missing"] = proxy.get_job_attr("CondormlNothing")
    seen["cluster"] = proxy.get_job_attr("ClusterId")
    try:
        proxy.set_job_attr("Owner", '"someone"')
    except htchirp.HTChirp.NotAuthorized:
        seen["owner"] = "refused"
    proxy.ulog("checkpoint 1")
if len(sys.argv) > 1:
    folder = pathlib.Path(sys.argv[1])
    (folder / "running").write_text("")
    while not (folder / "go").exists():
        time.sleep(0.05)
pathlib.Path("seen.txt").write_text(repr(seen))
"""

EXPECTED_LINES = [
    (ATTRIBUTE_UPDATE, "Setting job attribute CondormlEpoch to 1"),
    (ATTRIBUTE_UPDATE, "Changing job attribute CondormlEpoch from 1 to 2"),
    (ATTRIBUTE_UPDATE, 'Setting job attribute CondormlPhase to "train"'),
    (GENERIC, "epoch 2/2: val_acc=0.5"),
    (GENERIC, "checkpoint 1"),
]
HEADER = re.compile(r"^(\d{3}) \(\d+\.\d+\.\d+\) \S+ \S+ (.*)$")


def _job(folder: Path, want_io_proxy: bool, arguments: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "job.py"
    script.write_text(JOB.format(python=sys.executable))
    script.chmod(0o755)
    lines = ["executable = job.py", f"arguments = {arguments}", "log = job.log",
             "should_transfer_files = YES", "when_to_transfer_output = ON_EXIT"]  # fmt: skip
    if want_io_proxy:
        lines.append("want_io_proxy = true")
    submit = folder / "job.sub"
    submit.write_text("\n".join([*lines, "queue", ""]))
    return submit


def _chirp_lines(log: Path) -> list[tuple[int, str]]:
    """(event code, header text) of the 008 and 033 events, in order."""
    found = [HEADER.match(line) for line in log.read_text().splitlines()]
    codes = (GENERIC, ATTRIBUTE_UPDATE)
    return [(int(m[1]), m[2]) for m in found if m and int(m[1]) in codes]


def _seen(folder: Path) -> dict:
    import ast

    return ast.literal_eval((folder / "seen.txt").read_text())


def test_a_job_sets_its_ad_and_logs_lines_through_the_proxy(tmp_path: Path) -> None:
    """The ad file has the attributes while the job runs and after; the job's log has the 033
    and 008 events a pool writes (the nodes log the 008 only), htcondor2 reads the text."""
    folder, handshake = tmp_path / "job", tmp_path / "handshake"
    handshake.mkdir()
    handle = LocalBackend().submit_job(_job(folder, True, str(handshake)))
    ad_file = local_job_ad(folder, "1.0")
    expected = {"CondormlEpoch": 2, "CondormlPhase": "train", "ChirpCondormlLoss": 0.25}
    wait_for(lambda: (handshake / "running").exists(), 60, "the job to use its proxy", 0.05)
    # written at the first change, then at most every second: the rest within a second
    wait_for(lambda: json.loads(ad_file.read_text()) == expected, 3, "the ad file", 0.05)
    (handshake / "go").write_text("")
    assert handle.wait(60).state == "done"
    assert json.loads(ad_file.read_text()) == expected
    seen = _seen(folder)
    assert seen["config"].endswith("/.chirp.config") and ".chirp.config" in seen["files"]
    assert (seen["epoch"], seen["phase"], seen["missing"]) == ("2", '"train"', "UNDEFINED")
    assert (seen["cluster"], seen["owner"]) == ("1", "refused")
    assert not (folder / ".chirp.config").exists()  # the starter's file does not come back
    assert _chirp_lines(folder / "job.log") == EXPECTED_LINES
    infos = [e.get("Info") for e in htcondor2.JobEventLog(str(folder / "job.log")).events(0)
             if int(e.type) == GENERIC]  # fmt: skip
    assert infos == ["epoch 2/2: val_acc=0.5", "checkpoint 1"]
    nodes_log = folder / "job.sub.dag.nodes.log"
    assert _chirp_lines(nodes_log) == [line for line in EXPECTED_LINES if line[0] == GENERIC]


def test_without_want_io_proxy_the_job_gets_no_chirp_config(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    assert LocalBackend().submit_job(_job(folder, False)).wait(60).state == "done"
    seen = _seen(folder)
    assert seen["config"] is None and ".chirp.config" not in seen["files"]
    assert not local_job_ad(folder, "1.0").exists()


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(chirp, "WRONG_COOKIE_PAUSE_S", 0.0)
    events = EventLog([tmp_path / "job.log"], JobId(7, 0))
    attributes = JobAttributes(tmp_path / "ad.json", {"ClusterId": "7"})
    with ChirpProxy(events, attributes) as started:
        yield started


def _raw(proxy: ChirpProxy, *lines: str) -> list[str]:
    """Send request lines on one connection; the first line of each answer (and its data)."""
    answers = []
    with socket.create_connection(proxy.address, timeout=5) as sock:
        reader = sock.makefile("rb")
        for line in lines:
            sock.sendall(line.encode() + b"\n")
            answer = reader.readline().decode().rstrip("\n")
            if line.startswith("get_job_attr") and int(answer) >= 0:
                answer += " " + reader.read(int(answer)).decode()
            answers.append(answer)
    return answers


def test_a_wrong_cookie_is_refused(proxy: ChirpProxy) -> None:
    host, port = proxy.address
    with pytest.raises(htchirp.HTChirp.NotAuthenticated):
        htchirp.HTChirp(host, port, cookie="not-the-cookie")
    # nothing before the cookie; a wrong one leaves the connection open for the right one
    answers = _raw(proxy, "set_job_attr X 1", "cookie wrong", f"cookie {proxy.cookie}", "version")
    assert answers == ["-1", "-1", "0", "2"]
    assert proxy.attributes.values() == {}


def test_the_answers_match_a_starters(proxy: ChirpProxy) -> None:
    """What HTCondor 25.0's starter answered the same lines on a pool."""
    answers = _raw(
        proxy, f"cookie {proxy.cookie}", "set_job_attr CondormlX 0.5000",
        "get_job_attr CondormlX", "set_job_attr_delayed chirpLower 6",
        "get_job_attr_delayed chirpLower", "get_job_attr ClusterId", "set_job_attr ClusterId 5",
        "set_job_attr CondormlBad 1\\ +", "getfile /etc/passwd", "frobnicate", "ulog",
        f"cookie {proxy.cookie}",
    )  # fmt: skip
    assert answers == ["0", "0", "3 0.5", "0", "9 UNDEFINED", "1 7", "-2", "0", "-8", "-8", "-8",
                       "-8"]  # fmt: skip
    proxy.stop()
    assert json.loads(proxy.attributes.path.read_text()) == {"CondormlX": 0.5, "chirpLower": 6}


def test_the_ad_file_is_written_at_once_then_at_most_every_second(tmp_path: Path) -> None:
    events = EventLog([tmp_path / "job.log"], JobId(1, 0))
    attributes = JobAttributes(tmp_path / "ad.json", {})
    attributes.set("CondormlEpoch", "1", events)
    assert json.loads((tmp_path / "ad.json").read_text()) == {"CondormlEpoch": 1}
    for epoch in range(2, 40):
        attributes.set("CondormlEpoch", str(epoch), events)
    assert json.loads((tmp_path / "ad.json").read_text()) == {"CondormlEpoch": 1}  # not yet
    wait_for(lambda: "39" in (tmp_path / "ad.json").read_text(), 3, "the deferred write", 0.05)


def test_words_and_values_are_read_as_the_starter_reads_them() -> None:
    assert chirp_words("ulog a\\ b\\ttab\\n", "ulog", 1) == ["a bttabn"]
    assert chirp_words("set_job_attr X", "set_job_attr", 2) is None
    assert chirp_words("get_job_attr_delayed X", "get_job_attr", 1) == ["_delayed"]
    assert parse_value('"a b"') == ("a b", '"a b"')
    assert parse_value("1+2") == (3, "1 + 2")
    assert parse_value("true") == (True, "true")
    assert parse_value("{1, 2}") == ([1, 2], "{ 1, 2 }")
    assert parse_value("1 +") is None


@pytest.mark.pool
@pytest.mark.slow
def test_the_pool_writes_the_same_chirp_events(pool: Pool, tmp_path: Path) -> None:
    """The same job on the real pool: the same 008 and 033 lines, the same values in its ad."""
    work = pool.workdir("chirp")
    _job(work, True)
    pool.own(work)
    out = pool.check("condor_submit job.sub", work)
    cluster = pool.submitted_cluster(out)
    pool.check(f"condor_wait -wait 120 job.log {cluster}", work, timeout=150)
    local = tmp_path / "local"
    assert LocalBackend().submit_job(_job(local, True)).wait(60).state == "done"
    assert _chirp_lines(work / "job.log") == _chirp_lines(local / "job.log") == EXPECTED_LINES
    attrs = ["CondormlEpoch", "CondormlPhase", "ChirpCondormlLoss", "CondormlRefused"]
    assert pool.history(f"ClusterId == {cluster}", attrs) == [["2", "train", "0.25", "undefined"]]
    assert _seen(work) == {**_seen(local), "config": _seen(work)["config"],
                           "files": _seen(work)["files"], "cluster": str(cluster)}  # fmt: skip
    assert json.loads(local_job_ad(local, "1.0").read_text()) == {
        "CondormlEpoch": 2, "CondormlPhase": "train", "ChirpCondormlLoss": 0.25}  # fmt: skip


def test_a_client_left_connected_does_not_keep_the_proxy_running(tmp_path: Path) -> None:
    """A job's leftover process may keep a connection: stopping closes it."""
    events = EventLog([tmp_path / "job.log"], JobId(1, 0))
    proxy = ChirpProxy(events, JobAttributes(None, {})).start()
    with socket.create_connection(proxy.address, timeout=5) as sock:
        sock.sendall(f"cookie {proxy.cookie}\n".encode())
        assert sock.recv(16) == b"0\n"
        stopping = threading.Thread(target=proxy.stop)
        stopping.start()
        stopping.join(5)
        assert not stopping.is_alive()
        assert sock.recv(16) == b""  # closed by the proxy
