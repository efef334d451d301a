"""Is a job's image in its registry? Asked before a submission, so that a missing image is a
warning at the access point rather than every job held on the execute points.

HTCondor pulls a ``docker://`` image on each execute point when a job starts there; an image that
was never pushed (or a typo in its name) holds every job with "Cannot pull image" (hold code 35,
seen on the pool). The registry's HTTP API answers the question first: ``HEAD
/v2/<repository>/manifests/<tag>`` is 200 for an image it has and 404 for one it has not.

Only an answer counts. A registry that cannot be asked from here (Docker Hub and others that
need a token, no network, a timeout, TLS the access point does not trust) says nothing, and
neither does this module: the check is a courtesy, never a reason to refuse a submission.
A registry named ``localhost`` or ``127.x`` is asked over plain HTTP, as Docker itself does.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TIMEOUT_S = 3.0
# What a registry may return for a tag: a manifest or a list of them, Docker's or OCI's.
_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))  # fmt: skip
_LOCAL_HOST = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?$")


@dataclass(frozen=True)
class ImageRef:
    """A Docker image reference split as a registry reads it."""

    registry: str | None  # host[:port]; None: Docker Hub's (no host in the reference)
    repository: str
    reference: str  # a tag, or a digest (sha256:...)

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        """``[docker://][host[:port]/]repository[:tag][@digest]``; the tag defaults to latest."""
        text = image.removeprefix("docker://")
        name, _, digest = text.partition("@")
        first, _, rest = name.partition("/")
        registry = (
            first if rest and ("." in first or ":" in first or first == "localhost") else None
        )
        path = rest if registry else name
        last = path.rsplit("/", 1)[-1]
        tag = "latest"
        if ":" in last:
            path, _, tag = path.rpartition(":")
        return cls(registry, path, digest or tag)

    def manifest_url(self) -> str | None:
        """The manifest's URL at its registry; None for Docker Hub (it needs a token)."""
        if self.registry is None:
            return None
        scheme = "http" if _LOCAL_HOST.match(self.registry) else "https"
        return f"{scheme}://{self.registry}/v2/{self.repository}/manifests/{self.reference}"


def missing_image(image: str, timeout: float = TIMEOUT_S) -> str | None:
    """A one-line warning if the image's registry answers that it does not have it, else None
    (it has it, or it could not be asked)."""
    ref = ImageRef.parse(image)
    url = ref.manifest_url()
    if url is None:
        return None
    request = urllib.request.Request(url, method="HEAD", headers={"Accept": _ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        if err.code != 404:
            return None  # 401/403: it would need credentials; anything else says nothing
    except (OSError, ValueError):  # no answer: unreachable, refused, timed out, TLS
        return None
    at = "@" if ref.reference.startswith("sha256:") else ":"
    return (
        f"image {image.removeprefix('docker://')} is not in its registry {ref.registry} "
        f"(it answered 404): every job would be held with 'Cannot pull image'; push it first "
        f"(docker push {ref.registry}/{ref.repository}{at}{ref.reference}) or fix the name"
    )


def job_images(descriptions: Iterable[Mapping[str, str]]) -> list[str]:
    """The Docker images the submit descriptions run in (``docker://`` container images and
    docker universe images), each once, in order."""
    found: list[str] = []
    for submit in descriptions:
        keys = {str(k).lower(): str(v) for k, v in submit.items()}
        image = keys.get("container_image", "")
        if not image.startswith("docker://"):
            image = keys.get("docker_image", "")
        if image and image not in found:
            found.append(image)
    return found
