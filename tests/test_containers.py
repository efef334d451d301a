"""The local backend runs container jobs in their image, as HTCondor's starter does with Docker.

What the starter does was read from HTCondor 25.0.13's StarterLog on the test pool (``docker
pull``, ``docker create`` with the sandbox as working directory, the owner's uid, the request's
memory, ``docker start -a``), and its holds from recorded logs
(tests/fixtures/htcondor/container/). The jobs here run in the registry's Debian base image,
which has no Python: a job that sees none ran in the image, not on this machine.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import htcondor2
import pytest

from condorml.backends.local import container
from condorml.backends.local.dagman import DagResult, DagRunner, RunOptions
from condorml.backends.local.starter import Evictions
from condorml.htcondor.events import short_reason
from tests.containers import leftover_containers

HELD, EVICTED = 12, 4

# $1: checkpoint exits before the end; $2: a time (epoch seconds) before which a start sleeps
# a minute (to be evicted in)
PROBE_JOB = """\
    #!/bin/sh
    mkdir -p ckpt
    n=$(( $(cat ckpt/n 2>/dev/null || echo 0) + 1 )); echo "$n" > ckpt/n
    echo "start $n in $(pwd)" >> ckpt/starts
    {
      echo "uid=$(id -u)"
      echo "pwd=$(pwd)"
      echo "path=$PATH"
      echo "python=$(command -v python3 || echo none)"
      echo "memory=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
      echo "scratch=$_CONDOR_SCRATCH_DIR"
      echo "tmpdir=$TMPDIR"
      echo "threads=$OMP_NUM_THREADS"
    } > facts.txt
    [ "$(date +%s)" -lt "$2" ] && sleep 60
    [ "$n" -le "$1" ] && exit 85
    cp ckpt/starts starts.txt
"""


def _job(folder: Path, image: str, *, checkpoints: int = 2, sleep_until: int = 0,
         **commands: str) -> Path:  # fmt: skip
    """A DAG of one container job running PROBE_JOB in ``image``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "probe.sh"
    script.write_text(textwrap.dedent(PROBE_JOB))
    script.chmod(0o755)
    values = {
        "universe": "container",
        "container_image": f"docker://{image}",
        "executable": "probe.sh",
        "arguments": f"{checkpoints} {sleep_until}",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "checkpoint_exit_code": "85",
        "transfer_checkpoint_files": "ckpt",
        "transfer_output_files": "facts.txt, starts.txt",
        "request_cpus": "1",
        "request_memory": "300",
        "output": "probe.out",
        "error": "probe.err",
        "log": "probe.log",
        **commands,
    }
    text = "".join(f"{key} = {value}\n" for key, value in values.items()) + "queue\n"
    (folder / "probe.sub").write_text(text)
    dag = folder / "probe.dag"
    dag.write_text("JOB probe probe.sub\n")
    return dag


def _run(dag: Path, **options) -> DagResult:
    return DagRunner(dag, RunOptions(**options)).run()


def _facts(folder: Path) -> dict[str, str]:
    lines = (folder / "facts.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def _event_types(log: Path) -> list[int]:
    return [int(event.type) for event in htcondor2.JobEventLog(str(log)).events(0)]


def test_a_container_job_runs_in_its_image_as_the_owner_with_the_sandbox_and_its_memory(
    tmp_path: Path, docker_base: str
) -> None:
    dag = _job(tmp_path, docker_base, checkpoints=2)

    result = _run(dag)

    assert (result.exit_code, result.done) == (0, ["probe"]), result
    facts = _facts(tmp_path)
    assert facts["python"] == "none"  # the image's software, not this machine's
    assert facts["uid"] == str(os.getuid())
    assert facts["pwd"] == facts["scratch"] == facts["tmpdir"]  # the sandbox, mounted
    assert ".condorml-local/execute/" in facts["pwd"]
    assert "/usr/bin" in facts["path"] and ".venv" not in facts["path"]  # the image's PATH
    assert facts["memory"] == str(300 * 1024 * 1024)  # request_memory
    assert facts["threads"] == "1"
    # three starts (two checkpoint exits) in the same sandbox, each in a new container
    starts = (tmp_path / "starts.txt").read_text().splitlines()
    assert [line.split(" in ")[0] for line in starts] == ["start 1", "start 2", "start 3"]
    assert len({line.split(" in ")[1] for line in starts}) == 1
    assert _event_types(tmp_path / "probe.log") == [0, 40, 40, 1, 40, 40, 40, 40, 40, 40, 5]
    assert leftover_containers() == []


def test_an_evicted_container_job_is_stopped_and_resumes_in_a_new_sandbox(
    tmp_path: Path, docker_base: str
) -> None:
    # every start is evicted 10 s after it begins; only a start in the first 8 s lasts that long
    dag = _job(tmp_path, docker_base, checkpoints=1, sleep_until=int(time.time()) + 8)
    evictions = Evictions(probability=1.0, window=(10.0, 10.0), grace=1.0, seed=1)

    result = _run(dag, evictions=evictions)

    assert result.exit_code == 0, result
    types = _event_types(tmp_path / "probe.log")
    assert types.count(EVICTED) == 1 and types.count(1) == 2
    # the evicted start left no checkpoint, so the next one started again from nothing
    starts = [line.split(" in ") for line in (tmp_path / "starts.txt").read_text().splitlines()]
    assert [s for s, _ in starts] == ["start 1", "start 2"]
    assert leftover_containers() == []


def test_an_image_that_cannot_be_pulled_holds_the_job_as_htcondor_does(
    tmp_path: Path, docker_base: str
) -> None:
    missing = docker_base.rsplit("/", 1)[0] + "/nosuch:1.0"
    dag = _job(tmp_path, missing)

    result = _run(dag)

    assert result.exit_code != 0 and "probe" in result.failed
    assert _event_types(tmp_path / "probe.log")[-1] == HELD
    reason = result.failed["probe"]
    assert short_reason(reason).startswith(f"cannot pull image {missing}: push it")


def test_a_container_over_its_memory_is_held_as_htcondor_holds_it(
    tmp_path: Path, docker_base: str
) -> None:
    hog = tmp_path / "hog.sh"
    hog.write_text("#!/bin/sh\ntail /dev/zero\n")  # a line that never ends, kept in memory
    hog.chmod(0o755)
    dag = _job(tmp_path, docker_base, executable="hog.sh", request_memory="64")

    result = _run(dag)

    assert "probe" in result.failed
    assert "Docker job has gone over memory limit of 64 Mb" in result.failed["probe"]
    assert leftover_containers() == []


def test_without_docker_a_container_job_runs_here_and_the_run_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(container, "docker_available", lambda: False)
    dag = _job(tmp_path, "127.0.0.1:5000/none:1", checkpoints=0)
    dag.write_text("JOB a probe.sub\nJOB b probe.sub\nPARENT a CHILD b\n")

    result = _run(dag)

    assert result.exit_code == 0, result
    assert _facts(tmp_path)["python"] != "none"  # this machine's environment
    out = (tmp_path / "probe.dag.dagman.out").read_text()
    assert out.count("Docker is not available here") == 1, out


@pytest.mark.parametrize("image", ["--privileged", "-v/:/host", "a b", "name\nrm"])
def test_an_image_name_that_is_not_one_never_reaches_docker(
    image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image in a submit file reaches docker's command line: a leading "-" would be an option."""
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(container, "_docker", lambda *args: calls.append(args))

    with pytest.raises(container.Held, match=r"Cannot pull image .*not an image name"):
        container.DockerRun(image, "probe").pull()
    assert calls == []
