"""The seed workloads as condorml examples (dags/mnist.toml, dags/cifar10.toml): each prepared
with its one documented command from the files a user downloaded, and the MNIST one run end to
end (train, evaluate, infer) on the local backend, on tiny files in MNIST's own format."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from condorml.backends import choose_backend
from condorml.job.torchvision_pack import pack_torchvision
from condorml.sweep.plan import plan_sweep, write_sweep
from tests.torchvision_files import write_downloads

DAGS = Path(__file__).parent.parent / "dags"


def _copy_example(tmp_path: Path, name: str) -> Path:
    """The example spec and the model files beside it, in a copy of the repository's layout."""
    (tmp_path / "dags").mkdir()
    shutil.copy(DAGS / name, tmp_path / "dags" / name)
    shutil.copytree(DAGS / "models", tmp_path / "dags" / "models")
    (tmp_path / "data").mkdir()
    return tmp_path / "dags" / name


def _prepare_command(spec: Path) -> list[str]:
    """The `condorml data torchvision ...` line the spec's comments give."""
    (line,) = [
        m.group(1) for m in re.finditer(r"#\s+(condorml data torchvision .*)", spec.read_text())
    ]
    return line.split()


@pytest.mark.parametrize(
    ("name", "dataset"), [("mnist.toml", "mnist"), ("cifar10.toml", "cifar10")]
)
def test_each_example_is_prepared_by_its_documented_command_and_plans(
    tmp_path: Path, name: str, dataset: str
) -> None:
    spec = _copy_example(tmp_path, name)
    command = _prepare_command(spec)
    assert command[:4] == ["condorml", "data", "torchvision", dataset]
    downloads = tmp_path / "downloads"
    write_downloads(downloads, dataset)
    source = downloads if dataset == "mnist" else downloads / Path(command[4]).name
    pack_torchvision(dataset, source, tmp_path / command[-1])
    plan = plan_sweep(spec, tmp_path / "run")
    train = plan.workflow.jobs["train"].submit
    inputs = train["transfer_input_files"]  # type: ignore[index]
    if dataset == "mnist":
        assert "mnist_net.py" in inputs and "--model mnist_net.py:Net" in train["arguments"]  # type: ignore[index]
    else:
        assert "--model resnet18" in train["arguments"] and train["request_gpus"] == "1"  # type: ignore[index]


@pytest.mark.slow
def test_the_mnist_example_trains_evaluates_and_infers_on_the_local_backend(
    tmp_path: Path,
) -> None:
    spec = _copy_example(tmp_path, "mnist.toml")
    text = (
        spec.read_text().replace("epochs = 10", "epochs = 2").replace("members = 3", "members = 2")
    )
    spec.write_text(text)
    write_downloads(tmp_path / "downloads", "mnist", n_train=120, n_test=30)
    pack_torchvision("mnist", tmp_path / "downloads", tmp_path / "data" / "mnist.zip")
    plan = plan_sweep(spec, tmp_path / "run")
    write_sweep(plan)
    status = choose_backend("local").submit_dag(plan.dag_file).wait(600)
    assert status.state == "done" and status.exit_code == 0, status
    run = tmp_path / "run"
    probs = pd.read_csv(run / "probs.csv", dtype={"fileid": str})
    classes = [f"{d} - {w}" for d, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))]  # fmt: skip
    assert list(probs.columns) == ["fileid", "predicted", *classes]
    assert list(probs["fileid"]) == [str(i) for i in range(30)]  # a test image's id: its index
    metrics = json.loads((run / "metrics.json").read_text())  # the evaluate service
    assert metrics["n"] == 30 and metrics["classes"] == classes
    assert set(metrics["per_class"]) == set(classes)
