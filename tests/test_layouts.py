"""The data layouts users already have: class folders, a CSV of labels, Kaggle names, and flat or
labelled test sets; what each is refused for, in one line naming the file."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from condorml.errors import DataError
from condorml.job.images import decode_resized
from condorml.job.layouts import prediction_set, training_set


def _image(path: Path, value: int, size: tuple[int, int] = (12, 9), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, colour).save(path)


def _folders(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for k in range(n):
            _image(root / name / f"{k}.png", 10 * k + len(name))
    return root


def _zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def test_class_folders_are_classes_in_torchvision_s_order(tmp_path: Path) -> None:
    from torchvision.datasets.folder import find_classes

    root = _folders(tmp_path / "train", {"zebra": 2, "Ant": 3, "bee": 1})
    images = training_set(tmp_path)
    assert images.layout == "folders"
    assert list(images.classes or ()) == find_classes(str(root))[0] == ["Ant", "bee", "zebra"]
    assert images.counts() == {"Ant": 3, "bee": 1, "zebra": 2}
    assert len(images.files) == 6


def test_a_zip_of_class_folders_is_the_same_set(tmp_path: Path) -> None:
    _folders(tmp_path / "d" / "train", {"a": 2, "b": 2})
    folder = training_set(tmp_path / "d")
    zipped = training_set(_zip(tmp_path / "d", tmp_path / "d.zip"))
    # zipped from inside the class folders' parent, under one top folder of another name
    wrapped = training_set(_zip(tmp_path / "d" / "train", tmp_path / "w.zip", "mydata/"))
    assert folder.fingerprint() == zipped.fingerprint() == wrapped.fingerprint()
    assert folder.labels == zipped.labels == wrapped.labels


def test_relabelled_data_is_new_data(tmp_path: Path) -> None:
    _folders(tmp_path / "one" / "train", {"a": 2, "b": 2})
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    (tmp_path / "two" / "train" / "a" / "0.png").rename(tmp_path / "two" / "train" / "b" / "9.png")
    (tmp_path / "two" / "train" / "b" / "9.png").rename(tmp_path / "two" / "train" / "b" / "0.png")
    assert (
        training_set(tmp_path / "one").fingerprint() != training_set(tmp_path / "two").fingerprint()
    )


def test_a_labels_csv_inside_the_data(tmp_path: Path) -> None:
    for k in range(4):
        _image(tmp_path / "train" / "img" / f"{k}.jpg", k * 30)
    (tmp_path / "train" / "labels.csv").write_text(
        "path,label\nimg/0.jpg,lynx\nimg/1.jpg,otter\nimg/2.jpg,lynx\nimg/3.jpg,otter\n"
    )
    for source in (tmp_path, _zip(tmp_path, tmp_path.parent / f"{tmp_path.name}.zip")):
        images = training_set(source)
        assert images.layout == "csv" and images.classes == ("lynx", "otter")
        assert images.counts() == {"lynx": 2, "otter": 2}


def test_a_labels_csv_beside_a_zip_counts_its_entries_as_unpacked_there(tmp_path: Path) -> None:
    for k in range(4):
        _image(tmp_path / "data" / "train" / f"{k}.jpg", k * 30)
    rows = "".join(f"train/{k}.jpg,{k % 2}\n" for k in range(4))
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "train.csv").write_text("path,label\n" + rows)
    # entries train/0.jpg ...: as unpacked beside the zip
    _zip(tmp_path / "data", tmp_path / "a" / "images.zip")
    # entries 0.jpg ...: the zip of the folder train/, named after it
    _zip(tmp_path / "data" / "train", tmp_path / "b" / "train.zip")
    a = training_set(tmp_path / "a" / "images.zip", labels_csv=tmp_path / "a" / "train.csv")
    b = training_set(tmp_path / "b" / "train.zip", labels_csv=tmp_path / "b" / "train.csv")
    assert a.classes == b.classes == ("0", "1") and a.indexed  # whole numbers: class indices
    assert a.labels == b.labels == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("path,label\nimg/0.jpg,a\nimg/7.jpg,b\n", r"labels\.csv: line 3: img/7\.jpg is not in"),
        ("path,label\nimg/0.jpg,a\nimg/1.jpg,\n", r"labels\.csv: line 3: img/1\.jpg has no label"),
        ("file,class\nimg/0.jpg,a\n", r"labels\.csv: expected the columns path,label"),
        ("path,label\nimg/0.jpg,a\nimg/0.jpg,b\n", r"listed twice \(also on line 2\)"),
        ("path,label\nimg/0.jpg,a\nimg/1.jpg,a\n", r"only one class \(a\)"),
        ("path,label\nimg/0.jpg,0\nimg/1.jpg,2\n", r"class 1 has no images .*indices"),
        ("path,label\n../x.jpg,a\n", "leaves the data's folder"),
        ("path,label\nimg/0.jpg,fileid\nimg/1.jpg,a\n", "'fileid' cannot name a class"),
    ],
)
def test_a_broken_labels_csv_is_one_line_naming_its_line(
    tmp_path: Path, csv: str, message: str
) -> None:
    for k in range(2):
        _image(tmp_path / "img" / f"{k}.jpg", k * 90)
    (tmp_path / "labels.csv").write_text(csv)
    with pytest.raises(DataError, match=message) as err:
        training_set(tmp_path)
    assert "\n" not in str(err.value)


def test_a_class_folder_without_images_is_an_error_naming_it(tmp_path: Path) -> None:
    _folders(tmp_path / "train", {"cat": 2, "dog": 2})
    (tmp_path / "train" / "bird").mkdir()
    (tmp_path / "train" / "bird" / "notes.txt").write_text("no images yet")
    with pytest.raises(DataError, match=r"train/bird: a class folder with no images"):
        training_set(tmp_path)


def test_one_class_folder_is_an_error(tmp_path: Path) -> None:
    _folders(tmp_path / "train", {"cat": 2})
    with pytest.raises(DataError, match=r"only one class \(cat\)"):
        training_set(tmp_path)


def test_images_beside_class_folders_are_an_error(tmp_path: Path) -> None:
    _folders(tmp_path / "train", {"cat": 2, "dog": 2})
    _image(tmp_path / "train" / "stray.png", 3)
    with pytest.raises(DataError, match="both directly in train and in class folders"):
        training_set(tmp_path)


def test_flat_images_without_kaggle_names_are_not_training_data(tmp_path: Path) -> None:
    _image(tmp_path / "train" / "0001.png", 3)
    with pytest.raises(DataError, match=r"0001\.png: cannot tell its class"):
        training_set(tmp_path)


def test_a_flat_test_set_is_unlabelled_with_file_name_ids_in_id_order(tmp_path: Path) -> None:
    for k in (10, 9, 100):
        _image(tmp_path / "test" / f"{k}.jpg", k)
    (tmp_path / "test" / "README.txt").write_text("not an image")
    images = prediction_set(tmp_path)
    assert images.layout == "flat" and images.labels is None
    assert images.ids == ["9", "10", "100"] and images.ignored == 1


def test_a_test_set_laid_out_like_training_data_carries_its_labels(tmp_path: Path) -> None:
    _folders(tmp_path / "test", {"cat": 2, "dog": 1})
    images = prediction_set(tmp_path)
    assert images.layout == "folders" and images.classes == ("cat", "dog")
    # names repeat across classes (0.png in both): the ids are paths below the root
    assert images.ids == ["cat/0", "cat/1", "dog/0"]
    assert images.labels == [0, 0, 1]


def test_greyscale_and_non_square_images_become_square_rgb(tmp_path: Path) -> None:
    _image(tmp_path / "grey.png", 200, size=(40, 10), mode="L")
    pixels = decode_resized((tmp_path / "grey.png").read_bytes(), 16)
    assert pixels.shape == (16, 16, 3) and (pixels == 200).all()
    array = np.full((28, 20), 7, dtype=np.uint8)  # a torchvision dataset's grey pixels
    assert (decode_resized(array, 16) == 7).all() and decode_resized(array, 16).shape == (16, 16, 3)


def test_a_labels_csv_at_the_top_labels_each_split_with_its_own_rows(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("test", 2)):
        for k in range(n):
            _image(tmp_path / split / f"{k}.png", 40 * k + n)
    rows = [f"train/{k}.png,{'ab'[k % 2]}" for k in range(4)] + ["test/0.png,b", "test/1.png,a"]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    assert len(training_set(tmp_path).files) == 4
    test = prediction_set(tmp_path)
    assert [f.name for f in test.files] == ["test/0.png", "test/1.png"]
    assert [test.classes[y] for y in test.labels] == ["b", "a"]


def test_an_image_replaced_by_another_of_the_same_size_is_other_data(tmp_path: Path) -> None:
    """The fingerprint covers contents (a zip's CRCs, a folder's files read), not only names
    and sizes; a folder and its zip still agree."""
    _folders(tmp_path / "d" / "train", {"a": 2, "b": 2})
    before = training_set(tmp_path / "d").fingerprint()
    zipped = training_set(_zip(tmp_path / "d", tmp_path / "d.zip")).fingerprint()
    path = tmp_path / "d" / "train" / "a" / "0.png"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF  # other bytes, the same size
    path.write_bytes(bytes(content))
    assert before == zipped != training_set(tmp_path / "d").fingerprint()
