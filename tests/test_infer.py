"""Batch inference: dog_probs.csv format and order, inputs, bad images, ensembles, shards, models."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from condorml.errors import CondormlError, DataError
from condorml.job.images import decode_resized
from condorml.job.infer import InferConfig, Shard, infer
from condorml.job.modelfile import load_member
from condorml.job.train import TrainConfig, train
from condorml.results.merge import merge_predictions
from condorml.results.predictions import sidecar_path, sort_ids
from tests.helpers import IMAGE_SIZE, condorml_cli


@pytest.fixture(scope="module")
def members(synth: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two trained ensemble members (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (0, 1):
        config = TrainConfig(
            data_dir=synth, checkpoint_dir=root / f"m{seed}", epochs=2, image_size=IMAGE_SIZE,
            batch_size=16, precision="fp32", seed=seed, cache_dir=cache_dir, exit_on_checkpoint=False,
        )  # fmt: skip
        train(config)
        paths.append(config.checkpoint_dir / "model.pth")
    return paths


def _config(members: list[Path], images: Path, output: Path, **kw) -> InferConfig:
    return InferConfig(models=tuple(members), images=images, output=output, precision="fp32", **kw)


def test_csv_has_the_examples_format_sorted_numerically(
    members, synth: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dog_probs.csv"
    result = infer(_config(members[:1], synth / "test", out, batch_size=5))
    lines = out.read_text().splitlines()
    assert lines[0] == "fileid,prob"
    ids = [line.split(",")[0] for line in lines[1:]]
    assert ids == [str(i) for i in range(1, 13)]  # 1, 2, ..., 10, 11, 12: not 1, 10, 11, 12, 2
    probs = [float(line.split(",")[1]) for line in lines[1:]]
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert result.predicted == 12 and not result.failed


def test_probabilities_are_the_softmax_of_the_model(members, synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    infer(_config(members[:1], synth / "test", out))
    model = load_member(members[0], torch.device("cpu")).model
    pixels = np.stack(
        [
            decode_resized((synth / "test" / f"{i}.jpg").read_bytes(), IMAGE_SIZE)
            for i in range(1, 13)
        ]
    )
    x = (
        torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5
    ) / 0.5  # the example's Normalize
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(pd.read_csv(out)["prob"].to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_zip_and_folder_give_the_same_csv(members, synth: Path, tmp_path: Path) -> None:
    infer(_config(members, synth / "test", tmp_path / "a.csv"))
    infer(_config(members, synth / "test.zip", tmp_path / "b.csv"))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_ensemble_prob_is_the_mean_of_the_members(members, synth: Path, tmp_path: Path) -> None:
    singles = []
    for i, member in enumerate(members):
        infer(_config([member], synth / "test", tmp_path / f"s{i}.csv"))
        singles.append(pd.read_csv(tmp_path / f"s{i}.csv")["prob"].to_numpy())
    infer(_config(members, synth / "test", tmp_path / "e.csv", with_stats=True))
    ensemble = pd.read_csv(tmp_path / "e.csv")
    assert list(ensemble.columns) == ["fileid", "prob", "prob_std", "n_models"]
    np.testing.assert_allclose(ensemble["prob"], (singles[0] + singles[1]) / 2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ensemble["prob_std"], np.std(np.stack(singles), axis=0), atol=1e-12)
    assert (ensemble["n_models"] == 2).all()
    assert not np.allclose(singles[0], singles[1])  # the members really differ


def test_sidecar_records_provenance(members, synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "dog_probs.csv"
    infer(_config(members, synth / "test.zip", out))
    record = json.loads(sidecar_path(out).read_text())
    assert [m["sha256"] for m in record["models"]] == [
        __import__("hashlib").sha256(p.read_bytes()).hexdigest() for p in members
    ]
    assert [m["member"] for m in record["models"]] == ["m0", "m1"]
    assert record["models"][0]["training_config"]["seed"] == 0
    assert record["images"]["source"] == str(synth / "test.zip") and record["images"]["is_zip"]
    assert record["images"]["predicted"] == 12 and record["images"]["failed"] == []
    assert record["condorml_version"]


@pytest.fixture
def test_set_with_bad_images(synth: Path, tmp_path: Path) -> Path:
    images = tmp_path / "images"
    shutil.copytree(synth / "test", images)
    (images / "13.jpg").write_bytes(b"this is not a jpeg")
    data = (synth / "test" / "1.jpg").read_bytes()
    (images / "14.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (images / "notes.txt").write_text("not an image, ignored")
    return images


def test_undecodable_images_are_left_out_listed_and_counted(
    members, test_set_with_bad_images: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "dog_probs.csv"
    with caplog.at_level(logging.WARNING):
        result = infer(_config(members[:1], test_set_with_bad_images, out))
    assert list(pd.read_csv(out, dtype={"fileid": str})["fileid"]) == [str(i) for i in range(1, 13)]
    failed = json.loads(sidecar_path(out).read_text())["images"]["failed"]
    assert [f["fileid"] for f in failed] == ["13", "14"]
    assert all(f["reason"] for f in failed)
    assert result.predicted == 12 and len(result.failed) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("2 image(s) could not be decoded")


def test_cli_exit_code_0_with_bad_images_and_2_with_strict(
    members, test_set_with_bad_images: Path, tmp_path: Path
) -> None:
    def run(out: str, *extra: str):
        args = [
            "-m",
            str(members[0]),
            "-i",
            str(test_set_with_bad_images),
            "-o",
            str(tmp_path / out),
        ]
        return condorml_cli("infer", *args, "--precision", "fp32", *extra)

    assert run("a.csv").returncode == 0
    strict = run("b.csv", "--strict")
    assert strict.returncode == 2
    assert "2 image(s) could not be decoded (--strict)" in strict.stderr
    assert (tmp_path / "b.csv").exists()  # still written


def test_no_readable_image_is_an_error_and_publishes_nothing(members, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.jpg").write_bytes(b"junk")
    (images / "2.png").write_bytes(b"junk")
    out = tmp_path / "dog_probs.csv"
    with pytest.raises(DataError, match="none of the 2 images could be decoded"):
        infer(_config(members[:1], images, out))
    assert not out.exists() and not sidecar_path(out).exists()
    proc = condorml_cli("infer", "-m", str(members[0]), "-i", str(images), "-o", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_failure_midway_leaves_the_previous_csv_untouched(
    members, synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "dog_probs.csv"
    out.write_text("fileid,prob\nold,0.5\n")
    import condorml.job.infer as infer_module

    calls = []
    real = infer_module._Predictor._forward

    def flaky(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed mid-run")
        return real(self, *args)

    monkeypatch.setattr(infer_module._Predictor, "_forward", flaky)
    with pytest.raises(RuntimeError):
        infer(_config(members[:1], synth / "test", out, batch_size=4))
    assert out.read_text() == "fileid,prob\nold,0.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["dog_probs.csv"]  # no temporary left


def test_shards_tile_the_images_and_merge_to_the_unsharded_csv(
    members, synth: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.csv"
    infer(_config(members, synth / "test", whole, with_stats=True))
    parts = []
    for index in (2, 0, 1):  # any order
        part = tmp_path / f"part{index}.csv"
        infer(_config(members, synth / "test.zip", part, with_stats=True, shard=Shard(index, 3)))
        parts.append(part)
    assert sum(len(pd.read_csv(p)) for p in parts) == 12
    merged = tmp_path / "merged.csv"
    result = merge_predictions(merged, parts)
    assert result.verified and result.rows == 12
    assert merged.read_bytes() == whole.read_bytes()
    assert json.loads(sidecar_path(merged).read_text())["images"]["predicted"] == 12


def test_merge_refuses_overlaps_missing_and_incomplete_shards(
    members, synth: Path, tmp_path: Path
) -> None:
    parts = []
    for index in range(3):
        part = tmp_path / f"part{index}.csv"
        infer(_config(members[:1], synth / "test", part, shard=Shard(index, 3)))
        parts.append(part)
    with pytest.raises(CondormlError, match="overlap"):
        merge_predictions(tmp_path / "m.csv", [parts[0], parts[1], parts[0]])
    with pytest.raises(CondormlError, match=r"shard\(s\) 2/3 missing"):
        merge_predictions(tmp_path / "m.csv", parts[:2])
    lines = parts[1].read_text().splitlines()
    parts[1].write_text("\n".join(lines[:-1]) + "\n")  # lose the last row
    with pytest.raises(CondormlError, match="incomplete"):
        merge_predictions(tmp_path / "m.csv", parts)
    assert not (tmp_path / "m.csv").exists()


def test_merge_refuses_parts_of_other_models(members, synth: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    infer(_config(members[:1], synth / "test", a, shard=Shard(0, 2)))
    infer(_config(members[1:], synth / "test", b, shard=Shard(1, 2)))
    with pytest.raises(CondormlError, match="other models"):
        merge_predictions(tmp_path / "m.csv", [a, b])


def test_a_bare_state_dict_and_the_examples_checkpoint_dict_load(
    members, synth: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "ref.csv"
    infer(_config(members[:1], synth / "test", reference))
    weights = torch.load(members[0], weights_only=True)["model"]
    bare, example = tmp_path / "bare.pth", tmp_path / "example.pth"
    torch.save(weights, bare)  # what the example's train.py saves
    torch.save(
        {"epoch": 1, "model_state_dict": weights, "losses": [0.5]}, example
    )  # train_with_checkpoint.py
    with pytest.raises(CondormlError, match="pass --image-size"):  # a 48-pixel cnn, not 224
        infer(_config([bare], synth / "test", tmp_path / "x.csv"))
    for path in (bare, example):
        out = tmp_path / f"{path.stem}.csv"
        infer(_config([path], synth / "test", out, image_size=IMAGE_SIZE))
        assert out.read_bytes() == reference.read_bytes()
    with pytest.raises(CondormlError, match="contradicts the checkpoint"):
        infer(_config(members[:1], synth / "test", tmp_path / "y.csv", model_arch="resnet18"))


def test_a_224_pixel_bare_cnn_needs_no_options(synth: Path, tmp_path: Path) -> None:
    from condorml.job.models import build_model

    path = tmp_path / "model.pth"
    torch.save(build_model("cnn", 224).state_dict(), path)
    member = load_member(path, torch.device("cpu"))
    assert (member.arch, member.image_size, member.config) == ("cnn", 224, None)


def test_a_model_file_that_would_run_code_is_refused(tmp_path: Path, synth: Path) -> None:
    from tests.test_checkpoint import _Exploit

    marker = tmp_path / "pwned"
    torch.save({"fc1.weight": _Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CondormlError, match=r"objects other than tensors.*refusing to unpickle"):
        load_member(tmp_path / "evil.pth", torch.device("cpu"))
    assert not marker.exists()


def test_cli_names_a_text_file_for_what_it_is_and_never_suggests_unsafe_loading(
    synth: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model.pth"
    model.write_text("this is a text file\n")
    proc = condorml_cli("infer", "-m", str(model), "-i", str(synth / "test"),
                        "-o", str(tmp_path / "p.csv"))  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"condorml: error: --model {model}: not a PyTorch file at all (it is text: 'this is a text file')"
    ]
    assert "weights_only" not in proc.stderr + proc.stdout


def test_a_checkpoint_taken_mid_training_warns_and_the_sidecar_says_so(
    members, train_config, synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert train(train_config).status == "checkpointed"  # 1 of 2 epochs
    partial = train_config.checkpoint_dir / "model.pth"
    out = tmp_path / "p.csv"
    with caplog.at_level(logging.WARNING):
        infer(_config([partial, members[0]], synth / "test", out))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{partial}: a checkpoint taken mid-training (1 of 2 epochs done); predicting with a "
        "partly trained model"
    ]
    models = json.loads(sidecar_path(out).read_text())["models"]
    assert [(m["epoch"], m["epochs"], m["finished"]) for m in models] == [
        (1, 2, False),
        (2, 2, True),
    ]


def test_duplicate_ids_are_an_error(members, synth: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(synth / "test" / "1.jpg", images / "1.jpg")
    Image.open(synth / "test" / "2.jpg").save(images / "1.png")
    with pytest.raises(DataError, match="both have the id 1"):
        infer(_config(members[:1], images, tmp_path / "x.csv"))


def test_subfolders_that_are_no_classes_are_predicted_with_path_ids(
    members, synth: Path, tmp_path: Path
) -> None:
    """Folders that name no class of the model are the user's own order, not labels."""
    images = tmp_path / "images"
    (images / "day1").mkdir(parents=True)
    (images / "day2").mkdir()
    shutil.copy(synth / "test" / "1.jpg", images / "day1" / "1.jpg")
    shutil.copy(synth / "test" / "2.jpg", images / "day2" / "1.jpg")
    infer(_config(members[:1], images, tmp_path / "x.csv"))
    assert list(pd.read_csv(tmp_path / "x.csv", dtype=str)["fileid"]) == ["day1/1", "day2/1"]


def test_id_order_and_shard_parsing() -> None:
    assert sort_ids(["10", "9", "100", "09"]) == ["09", "9", "10", "100"]
    assert sort_ids(["b", "10", "9"]) == ["10", "9", "b"]  # not all integers: text order
    assert Shard.parse("2/4") == Shard(2, 4)
    assert [Shard(i, 3).select(list(range(10))) for i in range(3)] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8, 9],
    ]
    for bad in ("4/4", "-1/3", "1", "a/b"):
        with pytest.raises(CondormlError, match="--shard"):
            Shard.parse(bad)


def test_an_empty_shard_writes_a_header_only_csv(members, synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    result = infer(_config(members[:1], synth / "test", out, shard=Shard(0, 20)))
    assert result.images == 0 and out.read_text() == "fileid,prob\n"


def test_bf16_probabilities_stay_close_to_fp32(members, synth: Path, tmp_path: Path) -> None:
    infer(_config(members[:1], synth / "test", tmp_path / "a.csv"))
    infer(replace(_config(members[:1], synth / "test", tmp_path / "b.csv"), precision="bf16"))
    a, b = pd.read_csv(tmp_path / "a.csv")["prob"], pd.read_csv(tmp_path / "b.csv")["prob"]
    assert (a - b).abs().max() < 0.05
