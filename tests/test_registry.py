"""Before a submission, a Docker image its registry does not have is a warning (issue 22)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from condorml.backends.registry import ImageRef, job_images, missing_image


@pytest.mark.parametrize(
    ("image", "registry", "repository", "reference"),
    [
        ("docker://localhost:5000/condorml:0.1.0", "localhost:5000", "condorml", "0.1.0"),
        ("127.0.0.1:5000/team/img", "127.0.0.1:5000", "team/img", "latest"),
        ("docker://ghcr.io/a/b/c@sha256:ab12", "ghcr.io", "a/b/c", "sha256:ab12"),
        ("condorml/condorml:0.1.0", None, "condorml/condorml", "0.1.0"),  # Docker Hub
    ],
)
def test_image_references_split_as_a_registry_reads_them(image, registry, repository, reference):
    assert ImageRef.parse(image) == ImageRef(registry, repository, reference)


class _Registry(http.server.BaseHTTPRequestHandler):
    """A registry that has have:1 and answers 401 for private/*."""

    def do_HEAD(self) -> None:
        if self.path.startswith("/v2/private/"):
            self.send_response(401)
        elif self.path == "/v2/have/manifests/1" and "manifest" in self.headers["Accept"]:
            self.send_response(200)
        else:
            self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_only_a_registry_that_answers_404_gives_a_warning(registry: str) -> None:
    assert missing_image(f"docker://{registry}/have:1") is None
    warning = missing_image(f"docker://{registry}/nosuch:1.0")
    assert warning is not None and f"docker push {registry}/nosuch:1.0" in warning
    assert "Cannot pull image" in warning
    assert missing_image(f"docker://{registry}/private/img:1") is None  # needs credentials
    assert missing_image("docker://127.0.0.1:9/nothing:1", timeout=1) is None  # no answer
    assert missing_image("condorml/condorml:0.1.0") is None  # Docker Hub: not asked


def test_the_images_of_submit_descriptions() -> None:
    jobs = [
        {"universe": "container", "container_image": "docker://localhost:5000/a:1"},
        {"universe": "container", "container_image": "images/a.sif"},
        {"universe": "docker", "docker_image": "localhost:5000/b:2"},
        {"universe": "container", "container_image": "docker://localhost:5000/a:1"},
        {"universe": "vanilla"},
    ]
    assert job_images(jobs) == ["docker://localhost:5000/a:1", "localhost:5000/b:2"]
