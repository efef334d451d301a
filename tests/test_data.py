"""Finding, labelling, decoding and splitting training images (the Kaggle cat/dog layout; the
other layouts: tests/test_layouts.py)."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import pytest

from condorml.errors import DataError
from condorml.job.data import ImageSource, split_indices
from condorml.job.imagecache import load_decoded
from condorml.job.layouts import _kaggle_label, training_set


def training_images(source: ImageSource):
    """The labelled images of a source, as the trainer lists them."""
    return training_set(source.path).labelled_images()


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("/home/concat/dog.1.jpg", 1),  # the CHTC example calls this a cat ('cat' in path)
        ("/data/dogs/cat.7.jpg", 0),
        ("train/cat.0.jpg", 0),
        ("train/Dog.12.JPG", 1),
        ("train/catalog.jpg", None),
        ("train/hotdog.3.jpg", None),
        ("train/1.jpg", None),
    ],
)
def test_label_comes_from_the_file_name_prefix_only(name: str, label: int | None) -> None:
    assert _kaggle_label(name) == label


def test_folder_and_zip_list_the_same_labelled_images(synth: Path) -> None:
    from_dir = training_images(ImageSource(synth))
    from_zip = training_images(ImageSource(synth / "train.zip"))
    assert [(Path(i.file.name).name, i.label) for i in from_dir] == [
        (Path(i.file.name).name, i.label) for i in from_zip
    ]
    assert len(from_dir) == 96
    assert sum(i.label for i in from_dir) == 48
    assert training_set(synth).fingerprint() == training_set(synth / "train.zip").fingerprint()
    assert training_set(synth).classes == ("cat", "dog")


def test_test_images_and_labels_file_are_not_training_data(synth: Path) -> None:
    names = [i.file.name for i in training_images(ImageSource(synth))]
    assert all(name.startswith("train/") for name in names)


def test_data_dir_may_be_the_train_folder_itself(synth: Path) -> None:
    assert len(training_images(ImageSource(synth / "train"))) == 96


def _tiny_set(root: Path, synth: Path, extra: dict[str, bytes]) -> Path:
    train = root / "train"
    train.mkdir(parents=True)
    for name in ("cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"):
        shutil.copy(synth / "train" / name, train / name)
    for name, data in extra.items():
        (train / name).parent.mkdir(parents=True, exist_ok=True)
        (train / name).write_bytes(data)
    return root


def test_unlabelled_file_is_an_error_naming_it(tmp_path: Path, synth: Path) -> None:
    root = _tiny_set(tmp_path, synth, {"kitten.jpg": b"x"})
    with pytest.raises(
        DataError, match=r"train/kitten\.jpg: cannot tell its class .*class folders"
    ):
        training_images(ImageSource(root))


def test_hidden_files_and_macos_metadata_are_ignored(tmp_path: Path, synth: Path) -> None:
    root = _tiny_set(tmp_path, synth, {".DS_Store": b"x", "__MACOSX/._cat.0.jpg": b"x"})
    assert len(training_images(ImageSource(root))) == 4


def test_one_class_only_is_an_error(tmp_path: Path, synth: Path) -> None:
    train = tmp_path / "train"
    train.mkdir()
    shutil.copy(synth / "train" / "cat.0.jpg", train / "cat.0.jpg")
    with pytest.raises(DataError, match=r"only one class \(cat\)"):
        training_images(ImageSource(tmp_path))


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no training images found"):
        training_images(ImageSource(tmp_path))


def test_missing_path_and_non_zip_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        ImageSource(tmp_path / "nope")
    (tmp_path / "data.tar").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a directory or a \.zip"):
        ImageSource(tmp_path / "data.tar")


def test_undecodable_image_is_skipped_with_one_warning_naming_it(
    tmp_path: Path, synth: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _tiny_set(tmp_path / "d", synth, {"cat.9.jpg": b"this is not a jpeg"})
    source = ImageSource(root)
    with caplog.at_level(logging.WARNING):
        decoded = load_decoded(source, training_images(source), 32, tmp_path / "cache", workers=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "train/cat.9.jpg" in warnings[0]
    assert "train/cat.9.jpg" not in decoded.names
    assert len(decoded) == 4
    assert decoded.pixels[decoded.rows].shape == (4, 32, 32, 3)


def test_decoding_in_parallel_from_a_zip_matches_a_folder(tmp_path: Path, synth: Path) -> None:
    src_dir, src_zip = ImageSource(synth), ImageSource(synth / "train.zip")
    a = load_decoded(src_dir, training_images(src_dir), 32, tmp_path / "a", workers=1)
    b = load_decoded(src_zip, training_images(src_zip), 32, tmp_path / "b", workers=2)
    assert (a.pixels[a.rows] == b.pixels[b.rows]).all()
    assert (a.labels == b.labels).all()


def test_no_readable_image_at_all_is_an_error(tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.mkdir()
    (train / "cat.0.jpg").write_bytes(b"junk")
    (train / "dog.0.jpg").write_bytes(b"junk")
    source = ImageSource(tmp_path)
    with pytest.raises(DataError, match="none of the 2 training files is a readable image"):
        load_decoded(source, training_images(source), 32, tmp_path / "cache", workers=1)


def test_a_killed_cache_build_is_not_mistaken_for_a_complete_one(
    tmp_path: Path, synth: Path
) -> None:
    source = ImageSource(synth / "train.zip")
    images = training_images(source)
    first = load_decoded(source, images, 32, tmp_path, workers=1)
    (npy,) = tmp_path.glob("*.npy")
    npy.unlink()  # as if the process died before publishing the array
    again = load_decoded(source, images, 32, tmp_path, workers=1)
    assert (again.pixels[again.rows] == first.pixels[first.rows]).all()


def test_split_is_deterministic_disjoint_and_seeded() -> None:
    train, val = split_indices(100, 0.1, seed=0)
    assert (train, val) == split_indices(100, 0.1, seed=0)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert split_indices(100, 0.1, seed=1)[1] != val
    assert split_indices(3, 0.9, seed=0)[0]  # at least one training image stays
    with pytest.raises(DataError, match="--val-fraction"):
        split_indices(10, 1.0, seed=0)


def test_zip_without_train_folder_uses_every_file(tmp_path: Path, synth: Path) -> None:
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("cat.0.jpg", "dog.0.jpg"):
            z.write(synth / "train" / name, name)
    assert [i.label for i in training_images(ImageSource(archive))] == [0, 1]


def test_a_same_size_replacement_is_decoded_again_not_taken_from_the_cache(
    tmp_path: Path, synth: Path
) -> None:
    """The cache keys on a file's content version (mtime; a zip entry's CRC), not only on its
    name and size: replacing an image by another of the same size must not train on the old
    pixels."""
    import os

    from PIL import Image

    root = tmp_path / "d"
    for name in ("cat.0.png", "dog.0.png"):
        (root / "train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (10, 10, 10)).save(root / "train" / name)
    first = load_decoded(
        ImageSource(root), training_images(ImageSource(root)), 16, tmp_path / "c", 1
    )
    size = (root / "train" / "cat.0.png").stat().st_size
    Image.new("RGB", (16, 16), (250, 250, 250)).save(root / "train" / "cat.0.png")
    assert (root / "train" / "cat.0.png").stat().st_size == size  # same name, same size
    os.utime(root / "train" / "cat.0.png", ns=(1, 10**18))
    again = load_decoded(
        ImageSource(root), training_images(ImageSource(root)), 16, tmp_path / "c", 1
    )
    assert first.pixels[first.rows[0]].max() == 10 and again.pixels[again.rows[0]].min() == 250
    zipped = tmp_path / "d.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(root / "train" / "cat.0.png", "train/cat.0.png")
        z.write(root / "train" / "dog.0.png", "train/dog.0.png")
    from condorml.job.imagecache import cache_key

    listed = training_images(ImageSource(zipped))
    assert listed[0].file.version == zipfile.ZipFile(zipped).getinfo("train/cat.0.png").CRC
    assert cache_key(listed, 16) != cache_key(
        [type(i)(type(i.file)(i.file.name, i.file.size), i.label) for i in listed], 16
    )


def test_the_cache_outside_a_job_is_bounded(tmp_path: Path) -> None:
    """Least recently used entries go first, over the size limit or after 30 days unused;
    what was used in the last hour (maybe open elsewhere) stays."""
    import os
    import time

    from condorml.job.imagecache import prune_cache

    now = time.time()
    for key, age_days, size in (("old", 40, 10), ("lru", 5, 600), ("recent", 2, 600),
                                ("busy", 0.01, 600)):  # fmt: skip
        (tmp_path / f"{key}.npy").write_bytes(b"x" * size)
        (tmp_path / f"{key}.json").write_text("{}")
        for path in (tmp_path / f"{key}.npy", tmp_path / f"{key}.json"):
            os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    removed = prune_cache(tmp_path, limit=1300, now=now)
    assert removed == ["old", "lru"]
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["busy", "recent"]
