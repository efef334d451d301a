"""Container jobs for real: condorml's job image (docker/Dockerfile, built by the ``job_image``
fixture and pushed to the pool's registry) run by HTCondor 25.0.13's execute point with Docker
(``pool docker``), and by the local backend, which runs them in the same image.

Each test is evidence about HTCondor: the local backend is checked against the pool, never the
reverse. The image holds this machine's torch, torchvision, numpy and Pillow (tests/containers.py),
so a job in it and a vanilla job compute the same weights bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from condorml import __version__
from condorml.htcondor.events import EventFollower
from condorml.job.live import attribute
from tests.containers import docker
from tests.helpers import condorml_cli
from tests.pool import CONDORML, Pool, wait_for
from tests.test_pool import (
    SPEC,
    _checkpointed,
    _dag_exit,
    _make_data,
    _model_weights,
    _scratch_dirs,
    _wait_dag,
    _write_spec,
)

pytestmark = [pytest.mark.slow]

# what the job wrapper says when it runs the image's condorml (docker/Dockerfile's /opt/condorml-code)
IN_IMAGE = "condorml wrapper: running /opt/condorml-code/bin/condorml"
TRAIN_OPTIONS = ["--epochs", "3", "--checkpoint-every", "1", "--image-size", "48", "--batch-size",
                 "16", "--precision", "fp32"]  # fmt: skip


@pytest.fixture(scope="module")
def docker_pool(pool: Pool, docker_base: str) -> Pool:
    """The pool, its execute point able to run Docker jobs (``pool docker``)."""
    has = pool.run("condor_status -af HasDocker", Path("/"), timeout=30).stdout.split()
    if "true" not in has:
        pytest.fail("the pool's execute point has no Docker (HasDocker); run: pool docker")
    return pool


def _finished(log: Path, cluster: int):
    follower = EventFollower([log])
    follower.poll()
    job = follower.jobs.get((cluster, 0))
    return job if job is not None and job.state in ("done", "failed", "held") else None


def _submit_train(pool: Pool, name: str, image_option: str) -> tuple[Path, int]:
    """A pool work folder with the data, and the training job submitted there in a container."""
    work = pool.workdir(name)
    _make_data(work)
    (work / "job").mkdir()
    pool.own(work)
    submitted = pool.check(
        f"{CONDORML} submit train --data-dir data/train.zip -o job/train.sub {' '.join(TRAIN_OPTIONS)} "
        f"--cpus 1 --memory 2GB --disk 1GB {image_option} --submit", work
    )  # fmt: skip
    return work, pool.submitted_cluster(submitted)


def _starts_in_image(work: Path) -> int:
    """How many of the job's starts ran the image's condorml (the wrapper names the one it runs)."""
    return "".join(p.read_text() for p in (work / "job").glob("train.*.err")).count(IN_IMAGE)


def _same_weights(ours: Path, theirs: Path) -> None:
    import torch

    mine, reference = _model_weights(ours), _model_weights(theirs)
    assert mine.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(mine[name], tensor), name


def _vanilla_reference(work: Path, folder: Path) -> Path:
    """The same training as a vanilla job runs it (this interpreter, one thread, uninterrupted;
    tests/test_pool.py shows a vanilla pool job computes exactly this)."""
    reference = condorml_cli(
        "train", "--data-dir", str(work / "data" / "train.zip"), "--checkpoint-dir",
        str(folder), "--no-exit-on-checkpoint", *TRAIN_OPTIONS,
        env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr
    return folder / "model.pth"


def test_the_job_image_runs_condorml_as_its_non_root_user(job_image: str) -> None:
    version = docker("run", "--rm", job_image, "condorml", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"condorml {__version__}"
    user = docker("run", "--rm", job_image, "id", "-u")
    assert user.stdout.strip() == "10001"
    # no compilers and no pip cache in what every execute point downloads
    tools = docker("run", "--rm", job_image, "sh", "-c",
                   "command -v gcc cc; ls ~/.cache/pip 2>/dev/null; true")  # fmt: skip
    assert tools.stdout.strip() == ""


def test_the_job_image_trains_and_predicts_by_hand(job_image: str, tmp_path: Path) -> None:
    """``docker run IMAGE condorml ...`` as docker/README.md shows, as this machine's user."""
    _make_data(tmp_path)
    tmp_path.chmod(0o777)
    mount = ["--volume", f"{tmp_path}:/work", "--workdir", "/work", "--user", "10001", job_image]
    trained = docker("run", "--rm", *mount, "condorml", "train", "--data-dir", "data/train.zip",
                     "--checkpoint-dir", "ckpt", "--epochs", "1", "--image-size", "48",
                     "--no-exit-on-checkpoint", timeout=300)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    predicted = docker("run", "--rm", *mount, "condorml", "infer", "--model", "ckpt/model.pth",
                       "--images", "data/test.zip", "--output", "dog_probs.csv", timeout=300)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    lines = (tmp_path / "dog_probs.csv").read_text().splitlines()
    assert lines[0] == "fileid,prob" and len(lines) == 1 + 12


@pytest.mark.pool
def test_a_container_training_job_is_vacated_and_resumes_in_a_new_container_to_vanilla_weights(
    docker_pool: Pool, job_image: str, tmp_path: Path
) -> None:
    pool = docker_pool
    work, cluster = _submit_train(
        pool, "container-train", f"--container-image docker://{job_image}"
    )
    submit = (work / "job" / "train.sub").read_text()
    assert "universe = container" in submit and "docker_network_type = host" in submit
    log = work / "job" / "train.log"
    wait_for(lambda: _checkpointed(log, cluster), 300, "the first checkpoint")
    pool.check(f"condor_vacate_job {cluster}", work)

    job = wait_for(lambda: _finished(log, cluster), 400, "the job to finish")
    assert (job.state, job.runs, job.checkpoints, job.evictions) == ("done", 2, 2, 1), job
    first, second = _scratch_dirs(log)
    assert first != second  # a new sandbox, a new container, with the checkpoint
    # every start ran the image's condorml, not this machine's: two in the first sandbox
    # (before and after its checkpoint exit), one after the eviction
    assert _starts_in_image(work) == 3
    # live progress reached the job ad from inside the container (Chirp on the host network)
    (row,) = pool.history(f"ClusterId == {cluster}", ["ExitCode", attribute("epoch")])
    assert row == ["0", "3"], row

    _same_weights(work / "job" / "ckpt" / "model.pth",
                  _vanilla_reference(work, tmp_path / "vanilla"))  # fmt: skip


@pytest.mark.pool
def test_the_docker_universe_form_runs_a_training_job_to_the_same_weights(
    docker_pool: Pool, job_image: str, tmp_path: Path
) -> None:
    pool = docker_pool
    work, cluster = _submit_train(pool, "docker-universe", f"--docker-image {job_image}")
    assert "universe = docker" in (work / "job" / "train.sub").read_text()

    job = wait_for(lambda: _finished(work / "job" / "train.log", cluster), 400, "the job")
    assert (job.state, job.checkpoints) == ("done", 2), job
    # HTCondor 25 turns the docker universe into a vanilla job that wants Docker (JobUniverse 5)
    (row,) = pool.history(f"ClusterId == {cluster}", ["ExitCode", "WantDocker", "DockerImage"])
    assert row == ["0", "true", job_image], row
    assert _starts_in_image(work) == 3  # every start, in the image
    _same_weights(work / "job" / "ckpt" / "model.pth",
                  _vanilla_reference(work, tmp_path / "vanilla"))  # fmt: skip


CONTAINER_SPEC = (
    SPEC.replace('python = "{python}"', 'container_image = "docker://{image}"')
    .replace('memory = "1GB"', 'memory = "2GB"')
    .replace("lr = [0.001, 0.0003]", "lr = [0.001]")
    .replace("epochs = 3", "epochs = 2")
)


@pytest.mark.pool
def test_a_sweep_in_containers_gives_the_local_backends_dog_probs_byte_for_byte(
    docker_pool: Pool, job_image: str
) -> None:
    """Every training and inference job in the image, on the pool and on the local backend
    (which runs them in the same image); the collect step on the access point, outside."""
    pool = docker_pool
    work = pool.workdir("container-sweep")
    _make_data(work)
    spec = _write_spec(work, CONTAINER_SPEC.replace("{image}", job_image))
    local = condorml_cli("sweep", str(spec), "--out", str(work / "local-run"), "--submit",
                         "--backend", "local", cwd=work, timeout=900)  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    dagman_out = (work / "local-run" / "sweep.dag.dagman.out").read_text()
    assert "without the image" not in dagman_out  # Docker ran them

    pool.own(work)
    submitted = pool.check(
        f"{CONDORML} sweep spec.toml --out pool-run --submit --backend condor", work
    )
    assert "not in" not in submitted  # no warning about a missing image: it is in the registry
    run = work / "pool-run"
    assert _wait_dag(run) == 0, (run / "sweep.dag.dagman.out").read_text()[-3000:]
    assert _dag_exit(run) == 0
    assert (run / "dog_probs.csv").read_bytes() == (
        work / "local-run" / "dog_probs.csv"
    ).read_bytes()
    # the member jobs ran in containers; the collect step, on the access point, did not
    for folder in (run, work / "local-run"):
        for member in sorted((folder / "members").iterdir()):
            streams = sorted(member.glob("*.err"))
            assert [p.name.split(".")[0] for p in streams] == ["infer", "train"], streams
            for stream in streams:
                assert IN_IMAGE in stream.read_text(), stream
    assert "joined the ensemble" in (run / "collect.out").read_text()
