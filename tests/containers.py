"""Docker and the registry on this machine (``pool docker``, see ../shared/htcondor/README.md).

The container tests run jobs in two images of the registry on 127.0.0.1:5000: the pool's
minimal Debian base (``pool docker-base``: no Python, so a job that runs in it is visibly not on
this machine), and condorml's job image, built from ``docker/Dockerfile`` on that base once per
test session (Docker's layer cache makes a rebuild of unchanged sources take seconds) and pushed.
Without Docker they are skipped; with ``CONDORML_REQUIRE_DOCKER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
BASE_IMAGE = f"{REGISTRY}/debian:bookworm"
BASE_PYTHON = "python3.11"  # Debian 12's
JOB_IMAGE = f"{REGISTRY}/condorml:test"
REQUIRED = os.environ.get("CONDORML_REQUIRE_DOCKER", "") not in ("", "0")  # CI: fail, never skip
BUILD_TIMEOUT_S = 1800  # wheels downloaded, 6.5 GB written and pushed: minutes on 2 cores
# What decides a model's weights bit for bit, held at this machine's versions in the image, so
# that a job in the image and a vanilla job (this interpreter) train the same model
HELD_VERSIONS = ("torch", "torchvision", "numpy", "pillow")


def held_versions() -> str:
    """PIP_CONSTRAINTS for the image build: this interpreter's versions of HELD_VERSIONS."""
    from importlib.metadata import version

    return " ".join(f"{name}=={version(name).split('+')[0]}" for name in HELD_VERSIONS)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the docker client; capture its output."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


def docker_missing() -> str:
    """Why the container tests cannot run here ("" when they can)."""
    if shutil.which("docker") is None:
        return "no docker client here; set it up with: ../shared/htcondor/pool docker"
    if docker("info", "--format", "{{.ServerVersion}}", timeout=30).returncode != 0:
        return "no Docker daemon answers; start one with: ../shared/htcondor/pool docker"
    if docker("pull", "-q", BASE_IMAGE, timeout=300).returncode != 0:
        return f"{BASE_IMAGE} cannot be pulled; push it with: ../shared/htcondor/pool docker-base"
    return ""


def build_job_image() -> tuple[str, float]:
    """Build docker/Dockerfile on the base image, push it; the reference and seconds taken.

    Raises
    ------
    AssertionError
        With Docker's last lines when the build or the push fails.
    """
    start = time.monotonic()
    build = docker("build", "-q", "-f", str(ROOT / "docker" / "Dockerfile"),
                   "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"PYTHON={BASE_PYTHON}",
                   "--build-arg", f"PIP_CONSTRAINTS={held_versions()}",
                   "-t", JOB_IMAGE, str(ROOT), timeout=BUILD_TIMEOUT_S)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    push = docker("push", "-q", JOB_IMAGE, timeout=BUILD_TIMEOUT_S)
    assert push.returncode == 0, push.stderr[-3000:]
    return JOB_IMAGE, time.monotonic() - start


def leftover_containers() -> list[str]:
    """Containers the local backend started and did not remove (label org.condorml.local)."""
    listed = docker("ps", "-a", "-q", "--filter", "label=org.condorml.local=True")
    return listed.stdout.split()
