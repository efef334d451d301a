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


# --- N classes and layouts ---------------------------------------------------------------------

# The files of make_synthetic_dataset(n_train=7, n_test=5, seed=11, size=(40, 30)) as condorml
# wrote them before it made N classes (JPEGs from libjpeg-turbo 3.2.0, Pillow 13): the default
# set must stay byte for byte the same, for the golden files and checkpoints that rest on it.
DEFAULT_SET_DIGEST = "74f5e41244f802d708006b6953089f390d1f063a277f21e637bf71cfa287db35"
DEFAULT_SET_ENCODER = "3.2.0"


def _digest(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix != ".zip":  # a zip holds its files' times
            file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
            digest.update(f"{path.relative_to(folder).as_posix()}\0{file_hash}\n".encode())
    return digest.hexdigest()


def test_the_default_set_is_byte_for_byte_what_condorml_always_made(tmp_path: Path) -> None:
    from PIL import features

    if features.version("libjpeg_turbo") != DEFAULT_SET_ENCODER:
        pytest.skip(f"the digest was taken with libjpeg-turbo {DEFAULT_SET_ENCODER}")
    summary = make_synthetic_dataset(tmp_path / "d", n_train=7, n_test=5, seed=11, size=(40, 30))
    assert _digest(tmp_path / "d") == DEFAULT_SET_DIGEST, "the default cat/dog set changed"
    assert summary.classes == ("cat", "dog") and summary.layout == "kaggle"
    assert (summary.n_cats, summary.n_dogs, summary.n_train) == (3, 4, 7)


def test_an_image_depends_only_on_seed_split_class_and_index(tmp_path: Path) -> None:
    args = {"n_train": 6, "n_test": 0, "seed": 4, "size": (32, 32)}
    make_synthetic_dataset(tmp_path / "kaggle", **args)
    make_synthetic_dataset(tmp_path / "folders", layout="folders", **args)
    make_synthetic_dataset(
        tmp_path / "shapes", classes=4, n_train=12, n_test=0, seed=4, size=(32, 32)
    )
    for k in range(3):
        cat = (tmp_path / "kaggle" / "train" / f"cat.{k}.jpg").read_bytes()
        assert (tmp_path / "folders" / "train" / "cat" / f"{k}.jpg").read_bytes() == cat
        assert (tmp_path / "shapes" / "train" / "triangle" / f"{k}.jpg").read_bytes() == cat
        dog = (tmp_path / "kaggle" / "train" / f"dog.{k}.jpg").read_bytes()
        assert (tmp_path / "shapes" / "train" / "ellipse" / f"{k}.jpg").read_bytes() == dog


@pytest.mark.parametrize(
    ("classes", "layout", "test_layout", "layout_read"),
    [
        (2, "auto", "folders", "kaggle"),
        (2, "folders", "flat", "folders"),
        (2, "csv", "folders", "csv"),
        (3, "auto", "flat", "folders"),
        (5, "csv", "flat", "csv"),
        (7, "folders", "folders", "folders"),
    ],
)
def test_each_layout_reads_back_with_its_classes_and_counts(
    tmp_path: Path, classes: int, layout: str, test_layout: str, layout_read: str
) -> None:
    from condorml.job.layouts import prediction_set, training_set

    out = tmp_path / "d"
    summary = make_synthetic_dataset(
        out, n_train=3 * classes + 1, n_test=2 * classes, seed=2, size=(24, 24), make_zips=True,
        classes=classes, layout=layout, test_layout=test_layout,
    )  # fmt: skip
    names = summary.classes
    assert len(names) == classes and names[:2] == (
        ("cat", "dog") if classes == 2 else ("triangle", "ellipse")
    )
    # the later classes get the spare image; layouts sorts classes by name (ImageFolder's order)
    expected = dict(zip(names, [3] * (classes - 1) + [4], strict=True))
    fingerprints = set()
    for data in (out, out / "train.zip"):
        train = training_set(data, cache_dir=tmp_path / "cache")
        train.source.close()
        assert train.layout == layout_read and train.classes == tuple(sorted(names))
        assert train.counts() == {name: expected[name] for name in sorted(names)}
        fingerprints.add(train.fingerprint())
    assert len(fingerprints) == 1  # the zip is the folder's set
    labels = pd.read_csv(out / "test_labels.csv", dtype=str)
    column = "is_dog" if classes == 2 else "label"
    assert list(labels.columns) == ["fileid", column]
    assert list(labels.fileid) == [str(k) for k in range(1, 2 * classes + 1)]
    truth = dict(zip(labels.fileid, labels[column], strict=True))
    if classes == 2:
        truth = {k: names[int(v)] for k, v in truth.items()}
    if classes == 2 and test_layout == "flat":
        assert set(truth.values()) <= set(names)  # drawn at random, as condorml always did
    else:
        assert sorted(truth.values()) == sorted(names * 2)  # every class tested, twice
    for data in (out / "test", out / "test.zip"):
        test = prediction_set(data)
        test.source.close()
        assert test.ids == [str(k) for k in range(1, 2 * classes + 1)]  # plain, unique numbers
        if test_layout == "folders":
            assert test.classes == train.classes and test.labels is not None
            assert {i: test.classes[y] for i, y in zip(test.ids, test.labels, strict=True)} == truth
        else:
            assert test.layout == "flat" and test.labels is None


def test_a_csv_set_lists_every_image_once_with_its_class_name(tmp_path: Path) -> None:
    make_synthetic_dataset(
        tmp_path / "d", n_train=9, n_test=0, size=(16, 16), classes=3, layout="csv"
    )
    train = tmp_path / "d" / "train"
    rows = pd.read_csv(train / "labels.csv")
    assert list(rows.columns) == ["path", "label"]
    assert sorted(rows.path) == sorted(p.name for p in train.glob("*.jpg"))
    assert list(rows.label[:3]) == ["triangle", "ellipse", "square"]  # classes interleaved


def test_class_names_and_the_most_classes() -> None:
    from condorml.job.synth import MAX_CLASSES, class_names

    assert MAX_CLASSES == 20
    assert class_names(2) == ("cat", "dog")
    names = class_names(MAX_CLASSES)
    assert names[:5] == ("triangle", "ellipse", "square", "cross", "star")
    assert "triangle_outline" in names and len(set(names)) == MAX_CLASSES
    assert all(name.isidentifier() and name.islower() for name in names)  # CSV columns, words


def test_twenty_classes_each_get_their_images(tmp_path: Path) -> None:
    from condorml.job.layouts import training_set

    summary = make_synthetic_dataset(
        tmp_path / "d", n_train=40, n_test=20, size=(16, 16), classes=20
    )
    assert summary.layout == "folders" and summary.train_counts == (2,) * 20
    train = training_set(tmp_path / "d")
    train.source.close()
    assert set(train.counts().values()) == {2} and len(train.classes or ()) == 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"classes": 21}, r"^--classes 21: condorml data synth makes 2 to 20 classes$"),
        ({"classes": 1}, r"^--classes 1: .* 2 to 20"),
        (
            {"classes": 3, "layout": "kaggle"},
            r"^--layout kaggle: .*--classes 3; use --layout folders or csv$",
        ),
        (
            {"layout": "imagefolder"},
            r"^--layout imagefolder: choose one of auto, kaggle, folders, csv$",
        ),
        ({"test_layout": "csv"}, r"^--test-layout csv: choose one of flat, folders$"),
        ({"classes": 5, "n_train": 4}, r"^--n-train 4: need at least 5 images"),
        ({"classes": 5, "n_test": 3, "test_layout": "folders"}, r"^--n-test 3: .*class folders"),
    ],
)
def test_what_cannot_be_made_is_one_line_naming_the_option(
    tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(CondormlError, match=message) as caught:
        make_synthetic_dataset(tmp_path / "d", **{"n_train": 10, "n_test": 5, **options})
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "d").exists()


def test_a_set_of_other_classes_replaces_the_old_one_whole(tmp_path: Path) -> None:
    out = tmp_path / "d"
    make_synthetic_dataset(out, n_train=6, n_test=2, size=(16, 16), make_zips=True)
    make_synthetic_dataset(
        out,
        n_train=6,
        n_test=3,
        size=(16, 16),
        classes=3,
        layout="csv",
        make_zips=True,
        replace=True,
    )
    assert not list((out / "train").glob("cat.*"))
    with zipfile.ZipFile(out / "train.zip") as z:
        assert sorted(z.namelist()) == sorted(
            ["train/labels.csv", *(f"train/{k}.jpg" for k in range(6))]
        )


def test_the_cli_makes_n_classes_and_says_which(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from condorml.cli import app

    args = [
        "data",
        "synth",
        str(tmp_path / "d"),
        "--n-train",
        "7",
        "--n-test",
        "3",
        "--size",
        "16x16",
        "--classes",
        "3",
        "--layout",
        "csv",
        "--test-layout",
        "folders",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "7 training images of 3 classes (triangle, ellipse, square; 2-3 each)" in result.output
    assert (tmp_path / "d" / "train" / "labels.csv").exists()
    assert len(list((tmp_path / "d" / "test").glob("*/*.jpg"))) == 3
    for option, value in (("--classes", "40"), ("--layout", "zip"), ("--test-layout", "csv")):
        bad = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "e"), option, value])
        assert bad.exit_code == 2 and option in bad.output and len(bad.output.splitlines()) == 1


def test_the_cli_layout_choices_are_the_library_s() -> None:
    from typing import get_args

    from condorml.cli.data import SynthLayout, SynthTestLayout
    from condorml.job.synth import LAYOUTS, TEST_LAYOUTS

    assert get_args(SynthLayout) == LAYOUTS and get_args(SynthTestLayout) == TEST_LAYOUTS
