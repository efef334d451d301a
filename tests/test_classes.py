"""Any image classifier: N classes, torchvision models by name and the user's own model file,
trained with exit-85 checkpoints and exact resume, predicting one probability per class."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from condorml.config import InferConfig
from condorml.errors import CondormlError, ConfigMismatchError, DataError
from condorml.job.checkpoint import read_checkpoint
from condorml.job.infer import infer
from condorml.job.models import Architecture, build_model
from condorml.job.synth import make_synthetic_dataset
from condorml.job.train import TrainConfig, train
from tests.helpers import SMALL_NET, condorml_cli, run_until_finished

SIZE = 40
EVERY_BATCH = 1e-9  # --checkpoint-minutes so short that every batch boundary checkpoints

NET = (
    SMALL_NET
    + """

class NoCount(nn.Module):
    def __init__(self):
        super().__init__()


class Wrong(Net):
    def forward(self, x):
        return super().forward(x)[:, :1]
"""
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class set in class folders, its test set laid out the same way (labelled)."""
    out = tmp_path_factory.mktemp("shapes")
    make_synthetic_dataset(out, n_train=60, n_test=12, seed=5, size=(40, 30), classes=3,
                           layout="folders", test_layout="folders", make_zips=True)  # fmt: skip
    return out


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "net.py"
    path.parent.mkdir()
    path.write_text(NET)
    return path


def _config(data: Path, ckpt: Path, cache: Path, **kw) -> TrainConfig:
    options = {"epochs": 2, "checkpoint_every": 1, "image_size": SIZE, "batch_size": 16,
               "precision": "fp32", "cache_dir": cache, **kw}  # fmt: skip
    return TrainConfig(data_dir=data, checkpoint_dir=ckpt, **options)


def _same_weights(a: Path, b: Path) -> None:
    first, second = read_checkpoint(a / "model.pth"), read_checkpoint(b / "model.pth")
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key
    timing = ("seconds", "images_per_s")  # json: a nan (top-5 of 3 classes) equals a nan
    assert [
        json.dumps({k: v for k, v in row.items() if k not in timing}) for row in first["metrics"]
    ] == [
        json.dumps({k: v for k, v in row.items() if k not in timing}) for row in second["metrics"]
    ]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mobilenet_v3_small", "FILE"])
def test_exact_resume_for_a_torchvision_model_and_a_model_file(
    shapes: Path, tmp_path: Path, net_file: Path, model: str
) -> None:
    model = f"{net_file}:Net" if model == "FILE" else model
    base = _config(shapes / "train.zip", tmp_path / "straight", tmp_path / "cache", model=model)
    assert train(replace(base, exit_on_checkpoint=False)).status == "finished"
    per_epoch = replace(base, checkpoint_dir=tmp_path / "per-epoch")
    result, runs = run_until_finished(per_epoch)
    assert result.status == "finished" and runs == 2
    _same_weights(tmp_path / "straight", tmp_path / "per-epoch")
    every_batch = replace(base, checkpoint_dir=tmp_path / "every", checkpoint_minutes=EVERY_BATCH)
    result, runs = run_until_finished(every_batch)
    assert runs == 2 * 4  # 54 training images in batches of 16, mid-epoch exits
    _same_weights(tmp_path / "straight", tmp_path / "every")
    saved = read_checkpoint(tmp_path / "every" / "model.pth")
    assert len(saved["config"]["classes"]) == 3
    state = json.loads((tmp_path / "every" / "state.json").read_text())
    assert state["classes"] == saved["config"]["classes"]


def test_resuming_with_other_classes_is_refused(shapes: Path, tmp_path: Path) -> None:
    config = _config(shapes / "train", tmp_path / "ckpt", tmp_path / "cache", epochs=2)
    assert train(config).status == "checkpointed"
    two = tmp_path / "two"
    make_synthetic_dataset(two, n_train=20, n_test=0, seed=5, size=(40, 30), classes=2,
                           layout="folders")  # fmt: skip
    with pytest.raises(ConfigMismatchError, match="trained on other classes") as err:
        train(replace(config, data_dir=two))
    assert not err.value.transient


def test_a_changed_model_file_is_refused_on_resume(
    shapes: Path, tmp_path: Path, net_file: Path
) -> None:
    config = _config(shapes / "train", tmp_path / "ckpt", tmp_path / "cache",
                     model=f"{net_file}:Net")  # fmt: skip
    assert train(config).status == "checkpointed"
    net_file.write_text(NET.replace("nn.Conv2d(3, 8, 3", "nn.Conv2d(3, 8, 5"))
    with pytest.raises(ConfigMismatchError, match="model_sha256"):
        train(config)


def test_probs_csv_has_a_column_per_class_and_the_test_set_s_labels(
    shapes: Path, tmp_path: Path
) -> None:
    config = _config(shapes / "train", tmp_path / "ckpt", tmp_path / "cache", epochs=1)
    train(config)
    out = tmp_path / "out"
    result = infer(InferConfig((tmp_path / "ckpt" / "model.pth",), shapes / "test.zip", f"{out}/",
                               precision="fp32", with_stats=True))  # fmt: skip
    assert result.output == out / "probs.csv"
    frame = pd.read_csv(result.output, dtype={"fileid": str})
    classes = json.loads((tmp_path / "ckpt" / "state.json").read_text())["classes"]
    assert list(frame.columns) == ["fileid", "predicted", *classes, "prob_std", "n_models"]
    probs = frame[classes].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert list(frame["predicted"]) == [classes[i] for i in probs.argmax(axis=1)]
    assert len(frame) == 12 and frame["fileid"].is_unique
    sidecar = json.loads((out / "probs.csv.json").read_text())
    assert sidecar["classes"] == classes and sidecar["images"]["labelled"]


def test_a_test_set_with_classes_the_model_does_not_know_is_refused(
    shapes: Path, tmp_path: Path
) -> None:
    train(_config(shapes / "train", tmp_path / "ckpt", tmp_path / "cache", epochs=1))
    other = tmp_path / "other"
    make_synthetic_dataset(other, n_train=12, n_test=6, seed=1, size=(40, 30), classes=5,
                           layout="folders", test_layout="folders")  # fmt: skip
    with pytest.raises(DataError, match="classes the models were not trained on"):
        infer(InferConfig((tmp_path / "ckpt" / "model.pth",), other / "test", tmp_path / "p.csv"))
    assert not (tmp_path / "p.csv").exists()


def test_predicting_with_a_model_file_checkpoint_needs_that_file(
    shapes: Path, tmp_path: Path, net_file: Path
) -> None:
    train(_config(shapes / "train", tmp_path / "ckpt", tmp_path / "cache", epochs=1,
                  model=f"{net_file}:Net"))  # fmt: skip
    model = tmp_path / "ckpt" / "model.pth"
    with pytest.raises(
        CondormlError, match=r"trained with the model file net\.py:Net .*--model-file"
    ):
        infer(InferConfig((model,), shapes / "test", tmp_path / "p.csv"))
    changed = tmp_path / "changed.py"
    changed.write_text(NET + "\n# edited\n")
    with pytest.raises(CondormlError, match=r"none of .*changed\.py has that content"):
        infer(InferConfig((model,), shapes / "test", tmp_path / "p.csv", model_files=(changed,)))
    # found by its content, whatever its name
    renamed = tmp_path / "anything.py"
    renamed.write_text(NET)
    infer(InferConfig((model,), shapes / "test", tmp_path / "p.csv",
                      model_files=(changed, renamed)))  # fmt: skip
    assert len(pd.read_csv(tmp_path / "p.csv")) == 12


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{file}:Missing", r"no class Missing in net\.py; it defines Net, NoCount, Wrong"),
        ("{file}:NoCount", "does not accept num_classes"),
        ("{file}:Wrong", r"returns outputs of shape \(2, 1\) .*one logit per class"),
        ("{dir}/absent.py:Net", "no such model file"),
    ],
)
def test_a_model_file_that_breaks_the_contract_is_one_line(
    net_file: Path, reference: str, message: str
) -> None:
    value = reference.format(file=net_file, dir=net_file.parent)
    with pytest.raises(CondormlError, match=message) as err:
        build_model(value, SIZE, num_classes=3)
    assert "\n" not in str(err.value)


def test_a_model_file_with_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\nclass Net(:\n    pass\n")
    with pytest.raises(CondormlError, match=r"bad\.py:Net: line 3"):
        Architecture(f"{bad}:Net")


def test_a_torchvision_model_by_name_has_one_output_per_class() -> None:
    model = build_model("mobilenet_v3_small", SIZE, num_classes=7).eval()
    assert model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 7)
    arch = Architecture("mobilenet_v3_small")
    assert arch.head(7, SIZE) == {"classifier.3.weight", "classifier.3.bias"}
    assert arch.normalization() == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_pretrained_weights_of_another_class_count_get_a_new_classifier(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(2)
    weights = tmp_path / "imagenet.pth"
    torch.save(resnet18(num_classes=1000).state_dict(), weights)
    model = build_model("resnet18", SIZE, weights, freeze_backbone=True, num_classes=4)
    saved = torch.load(weights, weights_only=True)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])
    assert model.fc.out_features == 4
    assert {k for k, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    # the same class count: the classifier loads too
    same = build_model("resnet18", SIZE, weights, num_classes=1000)
    assert torch.equal(same.state_dict()["fc.weight"], saved["fc.weight"])


def test_the_cli_names_the_closest_models(tmp_path: Path, shapes: Path) -> None:
    proc = condorml_cli("train", "-d", str(shapes / "train"), "-c", str(tmp_path / "c"),
                        "--model", "mobilenet_v3_smal")  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "condorml: error: --model mobilenet_v3_smal: unknown model; closest: mobilenet_v3_small"
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one class", r"only one class \(a\)"),
        ("empty class folder", r"train/b: a class folder with no images"),
        ("other classes", "trained on other classes"),
        ("unknown test classes", "classes the models were not trained on"),
        ("model file without the class", r"no class Nope in net\.py"),
    ],
)
def test_bad_n_class_input_is_one_line_and_exit_2(
    shapes: Path, tmp_path: Path, net_file: Path, case: str, message: str
) -> None:
    """Exit 2: a permanent error, which DAGMan's RETRY ... UNLESS-EXIT 2 does not retry."""
    from PIL import Image

    data, ckpt = tmp_path / "data", tmp_path / "ckpt"
    for name in ("a", *(["b"] if case != "one class" else [])):
        (data / "train" / name).mkdir(parents=True)
        if case != "empty class folder" or name == "a":
            for k in range(3):
                Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(data / "train" / name / f"{k}.png")
    if case == "empty class folder":
        (data / "train" / "a" / "x").mkdir()  # (a nested folder is no class; 'b' has nothing)
    train_args = ["train", "-d", str(data), "-c", str(ckpt), "--image-size", "40", "--epochs", "1"]
    if case == "other classes":
        assert condorml_cli(*train_args[:2], str(shapes / "train"), *train_args[3:]).returncode == 0
    if case == "model file without the class":
        train_args += ["--model", f"{net_file}:Nope"]
    proc = condorml_cli(*train_args)
    if case == "unknown test classes":  # a test set of a class it knows (a) and one it does not
        assert proc.returncode == 0, proc.stderr
        test = tmp_path / "test"
        for name in ("a", "zebra"):
            (test / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(test / name / "1.png")
        proc = condorml_cli("infer", "-m", str(ckpt / "model.pth"), "-i", str(test),
                            "-o", str(tmp_path / "p.csv"))  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if "error" in line]
    assert re.search(message, line) and "Traceback" not in proc.stderr


def test_a_search_hands_a_model_file_to_the_job_by_its_sandbox_name(tmp_path: Path) -> None:
    from condorml.hyperparameters import read_hyperparameters, write_hyperparameters

    write_hyperparameters(tmp_path / "params.json", {"model": "dags/models/net.py:Net", "lr": 0.1})
    assert read_hyperparameters(tmp_path / "params.json") == {"model": "net.py:Net", "lr": 0.1}


def test_a_sweep_hands_its_jobs_the_labels_csv_and_the_model_files(tmp_path: Path) -> None:
    """[data] train_labels and every model file of the spec are inputs of the training jobs;
    the inference jobs get the model files too, and name their CSV by the classes."""
    from condorml.sweep.plan import plan_sweep

    for name in ("images.zip", "train.csv", "test.zip"):
        (tmp_path / name).touch()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text(SMALL_NET)
    (tmp_path / "spec.toml").write_text(
        '[data]\ntrain = "images.zip"\ntrain_labels = "train.csv"\ntest = "test.zip"\n'
        '[train]\nimage_size = 40\n[grid]\nmodel = ["cnn", "models/net.py:Net"]\n'
    )
    plan = plan_sweep(tmp_path / "spec.toml", tmp_path / "run")
    train, infer_job = plan.workflow.jobs["train"].submit, plan.workflow.jobs["infer"].submit
    assert train["transfer_input_files"] == (  # type: ignore[index]
        "../../../images.zip, ../../../train.csv, ../../../models/net.py, ckpt"
    )
    assert "--labels-csv train.csv" in train["arguments"]  # type: ignore[index]
    assert "--model $(model)" in train["arguments"]  # type: ignore[index]
    assert "../../../models/net.py" in infer_job["transfer_input_files"]  # type: ignore[index]
    assert "--model-file net.py" in infer_job["arguments"]  # type: ignore[index]
    assert "--output out/" in infer_job["arguments"]  # type: ignore[index]
    vars_ = [line for line in plan.workflow.dag_lines if line.startswith("VARS train_")]
    assert 'model="cnn"' in vars_[0] and 'model="net.py:Net"' in vars_[1]
    rows = plan.member_rows()
    assert [row["model"] for row in rows] == ["cnn", "models/net.py:Net"]
