"""The synthetic data set: Kaggle layout, deterministic, learnable labels."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from condorml.errors import CondormlError
from condorml.job.synth import make_synthetic_dataset, parse_size


def test_layout_counts_and_labels(synth: Path) -> None:
    names = sorted(p.name for p in (synth / "train").iterdir())
    assert len(names) == 96
    assert names.count("cat.0.jpg") == 1 and "dog.47.jpg" in names and "cat.48.jpg" not in names
    labels = pd.read_csv(synth / "test_labels.csv")
    assert list(labels.columns) == ["fileid", "is_dog"]
    assert list(labels.fileid) == list(range(1, 13))
    assert sorted(p.stem for p in (synth / "test").iterdir()) == sorted(map(str, labels.fileid))
    assert set(labels.is_dog) <= {0, 1}
    with Image.open(synth / "train" / "dog.3.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        make_synthetic_dataset(tmp_path / name, n_train=4, n_test=2, seed=seed, size=(40, 30))
    files = [p.relative_to(tmp_path / "a") for p in sorted((tmp_path / "a").rglob("*.jpg"))]
    assert all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files
    )
    assert any(
        (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files
    )


def test_zips_hold_the_kaggle_folders(synth: Path) -> None:
    with zipfile.ZipFile(synth / "train.zip") as z:
        assert len(z.namelist()) == 96 and all(n.startswith("train/") for n in z.namelist())
    with zipfile.ZipFile(synth / "test.zip") as z:
        assert sorted(z.namelist())[0] == "test/1.jpg"


def test_bad_sizes_and_counts_are_clear_errors(tmp_path: Path) -> None:
    assert parse_size("500x375") == (500, 375)
    for text in ("500", "axb", "4x4"):
        with pytest.raises(CondormlError, match="--size"):
            parse_size(text)
    with pytest.raises(CondormlError, match="--n-train"):
        make_synthetic_dataset(tmp_path, n_train=1)


def test_a_folder_holding_a_set_is_refused_unless_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "data"
    make_synthetic_dataset(out, n_train=40, n_test=2, seed=1, size=(16, 16), make_zips=True)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(CondormlError, match=r"already holds .*--replace"):
        make_synthetic_dataset(out, n_train=4, n_test=4, size=(16, 16), make_zips=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # untouched
    make_synthetic_dataset(out, n_train=4, n_test=4, size=(16, 16), make_zips=True, replace=True)
    with zipfile.ZipFile(out / "train.zip") as z:
        assert len(z.namelist()) == 4  # not 40 old images mixed with 4 new ones
    assert len(list((out / "train").iterdir())) == 4
    assert len(pd.read_csv(out / "test_labels.csv")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary left beside it


def test_replace_never_deletes_what_a_set_does_not_hold(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CondormlError, match=r"notes\.txt, which no data set"):
        make_synthetic_dataset(tmp_path, n_train=4, n_test=0, size=(16, 16), replace=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_interrupted_set_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import condorml.job.synth as synth_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth_module, "_zip_folder", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_dataset(
            tmp_path / "data", n_train=4, n_test=1, size=(16, 16), make_zips=True
        )
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_is_filled_in_place(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    make_synthetic_dataset(tmp_path / "data", n_train=4, n_test=1, size=(16, 16))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["test", "test_labels.csv", "train"]  # fmt: skip


@pytest.mark.parametrize(
    ("out", "message"),
    [("f", "f: is a file, not a folder"), ("f/x", "f is a file, not a folder")],
)
def test_a_path_that_is_or_is_under_a_file_is_one_line(
    tmp_path: Path, out: str, message: str
) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(CondormlError, match=message):
        make_synthetic_dataset(tmp_path / out, n_train=4, n_test=0, size=(16, 16))
