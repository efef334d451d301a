"""Container jobs on the local backend: run in their image through Docker, as a starter does.

An execute point with Docker (HTCondor 25.0.13, seen in its StarterLog on the test pool) runs a
``container`` or ``docker`` universe job as::

    docker pull -q IMAGE
    docker create --cpu-shares=<100 x cpus> --memory=<slot MB>m --cap-drop=all ... --init
        --name NAME -e VAR=value ... --volume SANDBOX:SANDBOX --volume SANDBOX/tmp/:/tmp
        --volume SANDBOX/var/tmp/:/var/tmp --workdir SANDBOX --user UID:GID [--network=host]
        IMAGE ./executable ARGS
    docker start -a NAME

with the job's own environment (the image's PATH, not the execute point's) and the owner's uid.
A pull that fails holds the job ("Cannot pull image", code 35); a container killed for its
memory holds it too ("Docker job has gone over memory limit", code 34, subcode 102). This module
builds those command lines; :mod:`.starter` runs them. Without Docker (or for a ``.sif`` image,
which needs Apptainer) the local backend runs the job in this machine's environment and says so.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from condorml.backends.local.jobspec import JobSpec
from condorml.backends.local.sandbox import Held

CONTAINER_UNIVERSES = ("container", "docker")
_DOCKER_TIMEOUT_S = 600  # a pull of a multi-GB image from a registry on the machine takes minutes
# A Docker image reference's characters (name, :tag, @digest): anything else, a leading "-" above
# all, would reach docker's command line as something other than an image
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_LABEL = (
    "org.condorml.local=True"  # finds containers a killed backend left: docker ps --filter label=
)


@functools.cache
def docker_available() -> bool:
    """Whether a Docker daemon answers here (asked once per process)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        probe = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                               capture_output=True, timeout=20, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def docker_reference(job: JobSpec) -> str | None:
    """The Docker image reference a container job runs in; None for a vanilla job or an image
    Docker cannot run (a ``.sif`` file or a URL, which need Apptainer)."""
    if job.universe not in CONTAINER_UNIVERSES or not job.image:
        return None
    if job.universe == "docker":
        return job.image.removeprefix("docker://")
    if job.image.startswith("docker://"):
        return job.image.removeprefix("docker://")
    return None


def without_image_note(job: JobSpec) -> str | None:
    """What to tell the user when a container job will run without its image (None: it won't)."""
    if job.universe not in CONTAINER_UNIVERSES:
        return None
    reference = docker_reference(job)
    if reference is None:
        why = f"its image {job.image} needs Apptainer, which the local backend does not run"
    elif not docker_available():
        why = "Docker is not available here"
    else:
        return None
    return f"{job.universe} universe: {why}, so the job runs in this machine's environment, without the image"


@dataclass(frozen=True)
class DockerRun:
    """One execution of a container job: the container's name and the commands around it."""

    image: str
    name: str

    def pull(self) -> None:
        """``docker pull``, as the starter does before every execution.

        Raises
        ------
        Held
            With HTCondor's hold reason when the image cannot be pulled.
        """
        if not _REFERENCE.fullmatch(self.image):
            raise Held(
                f"Error from slot1@local: Cannot pull image {self.image!r}: not an image name",
                35,
                0,
            )
        result = _docker("pull", "-q", self.image)
        if result.returncode != 0:
            raise Held(f"Error from slot1@local: Cannot pull image {self.image}", 35, 0)

    def create(self, job: JobSpec, sandbox: Path, env: dict[str, str], cores: list[int]) -> None:
        """``docker create`` the job's container with the sandbox as its working directory.

        Raises
        ------
        Held
            When Docker refuses to create it (an option this Docker lacks, a bad image).
        """
        for folder in (sandbox / "tmp", sandbox / "var" / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        result = _docker("create", *self.create_options(job, sandbox, env, cores), self.image,
                         _command(job, sandbox), *job.arguments)  # fmt: skip
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise Held(f"Error from slot1@local: Cannot create container: {detail}", 34, 0)

    def create_options(self, job: JobSpec, sandbox: Path, env: dict[str, str],
                       cores: list[int]) -> list[str]:  # fmt: skip
        """The options of ``docker create``, the starter's own (limits, user, mounts, env)."""
        options = [f"--cpu-shares={100 * max(job.cpus, 1)}"]
        if job.memory_mb:
            options.append(f"--memory={job.memory_mb}m")
        if cores:  # as the vanilla path's CPU affinity: the cores this job was given
            options.append(f"--cpuset-cpus={','.join(map(str, cores))}")
        options += ["--cap-drop=all", "--security-opt", "no-new-privileges", "--init",
                    "--name", self.name, f"--label={_LABEL}", "--log-driver", "none"]  # fmt: skip
        for key, value in sorted(env.items()):
            options += ["-e", f"{key}={value}"]
        options += ["--volume", f"{sandbox}:{sandbox}", "--volume", f"{sandbox}/tmp/:/tmp",
                    "--volume", f"{sandbox}/var/tmp/:/var/tmp", "--workdir", str(sandbox),
                    "--user", f"{os.getuid()}:{os.getgid()}", "--group-add", str(os.getgid())]  # fmt: skip
        if job.network_type:  # HTCondor passes docker_network_type through as --network
            options.append(f"--network={job.network_type}")
        return options

    def start_argv(self) -> list[str]:
        """``docker start -a``: runs the container, its output on this process's streams, its
        exit code this process's."""
        return [_docker_path(), "start", "-a", self.name]

    def stop(self, grace_s: float) -> None:
        """SIGTERM to the job, SIGKILL after ``grace_s`` (an eviction or a removal)."""
        _docker("stop", f"--time={max(int(grace_s), 0)}", self.name)

    def over_memory(self) -> bool:
        """Whether the kernel killed the container for going over its ``--memory``."""
        result = _docker("inspect", "--format", "{{.State.OOMKilled}}", self.name)
        return result.returncode == 0 and result.stdout.strip() == "true"

    def remove(self) -> None:
        """``docker rm -f``: the container is gone whatever state it was in."""
        _docker("rm", "-f", self.name)


def memory_hold(job: JobSpec) -> Held:
    """The hold of a container killed for its memory, in HTCondor's words (seen on the pool)."""
    return Held(
        f"Error from slot1@local: Docker job has gone over memory limit of {job.memory_mb} Mb",
        34,
        102,
    )


def container_environment(env: dict[str, str], sandbox: Path) -> dict[str, str]:
    """The job's environment inside its container: the image's PATH, not this machine's, and
    the temporary folders in the sandbox (HTCondor sets TMPDIR, TMP and TEMP so)."""
    inside = {key: value for key, value in env.items() if key != "PATH"}
    for name in ("TMPDIR", "TMP", "TEMP"):
        inside.setdefault(name, str(sandbox))
    return inside


def _command(job: JobSpec, sandbox: Path) -> str:
    """The executable as the container sees it: ``./name`` in the sandbox when transferred."""
    return f"./{job.executable.name}" if job.transfer_executable else str(job.executable)


def _docker_path() -> str:
    return shutil.which("docker") or "docker"


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([_docker_path(), *args], capture_output=True, text=True,
                              timeout=_DOCKER_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            args, 1, "", f"docker {args[0]}: no answer in {_DOCKER_TIMEOUT_S} s"
        )
