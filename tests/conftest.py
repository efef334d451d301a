"""Shared fixtures: one small synthetic data set per session, and helpers to run the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from condorml.job.synth import make_synthetic_dataset
from tests.helpers import IMAGE_SIZE
from tests.pool import REQUIRED, Pool, python_install_paths


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 training and 12 test images (56x44 nominal) with train.zip and test.zip beside them."""
    out = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(out, n_train=96, n_test=12, seed=3, size=(56, 44), make_zips=True)
    return out


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoded-image cache shared by the session's training runs."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def train_config(synth: Path, cache_dir: Path, tmp_path: Path):
    """A tiny, fast TrainConfig; tests ``replace()`` what they vary."""
    from condorml.job.train import TrainConfig

    return TrainConfig(
        data_dir=synth,
        checkpoint_dir=tmp_path / "ckpt",
        epochs=2,
        checkpoint_every=1,
        image_size=IMAGE_SIZE,
        batch_size=16,
        precision="fp32",
        cache_dir=cache_dir,
    )


@pytest.fixture(scope="module")
def pool() -> Pool:
    """The real HTCondor pool (../shared/htcondor/pool), able to run this checkout's Python;
    the test is skipped without one, and fails if CONDORML_REQUIRE_POOL is set (CI)."""
    found, reason = Pool.find()
    if found is None:
        if REQUIRED:
            pytest.fail(f"CONDORML_REQUIRE_POOL is set but {reason}")
        pytest.skip(reason)
    found.allow(*python_install_paths())
    return found


@pytest.fixture(scope="session")
def docker_base() -> str:
    """The registry's Debian base image, for container jobs (``pool docker`` and
    ``pool docker-base``); skipped without Docker, failed if CONDORML_REQUIRE_DOCKER is set."""
    from tests.containers import BASE_IMAGE, REQUIRED, docker_missing

    reason = docker_missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"CONDORML_REQUIRE_DOCKER is set but {reason}")
        pytest.skip(reason)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def job_image(docker_base: str) -> str:
    """condorml's job image (docker/Dockerfile on the base image), built and pushed once per
    session; a test that fails here fails on the build or the push."""
    from tests.containers import build_job_image

    image, seconds = build_job_image()
    print(f"\njob image {image}: built and pushed in {seconds:.0f} s")
    return image
