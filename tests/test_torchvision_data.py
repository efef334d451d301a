"""torchvision's dataset files as condorml's data: read in place, and packed into one zip."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from condorml.errors import CondormlError, DataError
from condorml.job.data import ImageSource
from condorml.job.layouts import ImageSet, prediction_set, training_set
from condorml.job.torchvision_pack import PackSummary, pack_torchvision
from condorml.job.torchvision_sets import TORCHVISION_SETS, TorchvisionSource
from tests.torchvision_files import (
    CIFAR10_NAMES,
    CIFAR100_NAMES,
    FOLDERS,
    N_CLASSES,
    dataset_files,
    idx_bytes,
    write_downloads,
    write_root,
    write_zip,
)

DATASETS = ["mnist", "fashionmnist", "cifar10", "cifar100"]
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MNIST_CLASSES = tuple(f"{i} - {word}" for i, word in enumerate(DIGITS))  # torchvision's names
CLASSES = {
    "mnist": MNIST_CLASSES,
    "fashionmnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
    "cifar10": CIFAR10_NAMES,
    "cifar100": CIFAR100_NAMES,
}  # fmt: skip


def _closed(images: ImageSet) -> ImageSet:
    """``images``, its source closed (what the tests look at is in memory)."""
    images.source.close()
    return images


@pytest.mark.parametrize("name", DATASETS)
def test_both_splits_read_as_written(name: str, tmp_path: Path) -> None:
    splits = write_root(tmp_path / "root", name)
    for split, written in splits.items():
        source = TorchvisionSource(
            ImageSource(tmp_path / "root"), TORCHVISION_SETS[name], "", split, tmp_path / "cache"
        )
        per_class = 2 if split == "train" else 1  # two training images a class, one test image
        assert len(source.files()) == len(written.labels) == per_class * N_CLASSES[name]
        assert source.labels == written.labels and source.classes == CLASSES[name]
        shape = (28, 28) if name.endswith("mnist") else (32, 32, 3)
        assert source.read("3").shape == shape and source.read("3").dtype == np.uint8
        assert np.array_equal(source.read("3"), written.pixels[3])


def test_the_mnist_files_are_what_torchvision_itself_reads(tmp_path: Path) -> None:
    from torchvision.datasets import MNIST

    splits = write_root(tmp_path, "mnist")
    test = MNIST(str(tmp_path), train=False, download=False)
    assert test.targets.tolist() == splits["test"].labels
    assert np.array_equal(test.data.numpy(), splits["test"].pixels)


@pytest.mark.parametrize("name", DATASETS)
def test_a_zip_and_a_folder_of_the_same_files_are_the_same_set(name: str, tmp_path: Path) -> None:
    write_root(tmp_path / "root", name)
    write_zip(tmp_path / "data.zip", name, prefix="data/")  # a root below a folder in the zip
    cache = tmp_path / "cache"
    folder = _closed(training_set(tmp_path / "root", cache_dir=cache))
    zipped = _closed(training_set(tmp_path / "data.zip", cache_dir=cache))
    assert folder.layout == zipped.layout == name
    assert folder.classes == zipped.classes == CLASSES[name]
    assert folder.fingerprint() == zipped.fingerprint()
    assert set(folder.counts().values()) == {2}  # two images of every class
    tests = [
        _closed(prediction_set(p, cache_dir=cache))
        for p in (tmp_path / "root", tmp_path / "data.zip")
    ]
    assert tests[0].labels == tests[1].labels and len(tests[0].ids) == N_CLASSES[name]
    assert tests[0].ids[:3] == ["0", "1", "2"]


def test_relabelled_files_are_other_data(tmp_path: Path) -> None:
    write_root(tmp_path / "a", "mnist")
    write_root(tmp_path / "b", "mnist")
    labels = tmp_path / "b" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.array([(i + 3) % 10 for i in range(20)], dtype=np.uint8)))
    a, b = (_closed(training_set(tmp_path / x, cache_dir=tmp_path / "c")) for x in "ab")
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.parametrize(
    ("file", "data", "message"),
    [
        ("MNIST/raw/train-images-idx3-ubyte", b"\0\0\x09\x09" + bytes(40), "cannot load the MNIST files"),
        ("MNIST/raw/train-labels-idx1-ubyte", idx_bytes(np.zeros(19, np.uint8)), "20 images but 19 labels"),
        ("MNIST/raw/train-labels-idx1-ubyte", idx_bytes(np.full(20, 12, np.uint8)), "the label 12, but there are 10 classes"),
        ("MNIST/raw/t10k-labels-idx1-ubyte", None, "the MNIST files are incomplete"),
    ],
)  # fmt: skip
def test_damaged_files_are_one_line_naming_the_data(
    tmp_path: Path, file: str, data: bytes | None, message: str
) -> None:
    write_root(tmp_path, "mnist")
    if data is None:
        (tmp_path / file).unlink()
    else:
        (tmp_path / file).write_bytes(data)
    with pytest.raises(DataError, match=message) as caught:
        training_set(tmp_path, cache_dir=tmp_path / "c")
    assert str(caught.value).startswith(str(tmp_path)) and "\n" not in str(caught.value)


def test_a_damaged_cifar_pickle_is_one_line(tmp_path: Path) -> None:
    write_root(tmp_path, "cifar10")
    (tmp_path / FOLDERS["cifar10"] / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"cannot load the cifar-10-batches-py files \(Unpickling"):
        training_set(tmp_path, cache_dir=tmp_path / "c")


# --- condorml data torchvision -----------------------------------------------------------------


def _pack(name: str, source: Path, out: Path) -> PackSummary:
    return pack_torchvision(name, source, out, cache_dir=out.parent / "cache")


def _entries(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return sorted(archive.namelist())


def test_pack_mnist_from_the_downloaded_gz_files(tmp_path: Path) -> None:
    splits = write_downloads(tmp_path / "downloads", "mnist")
    summary = _pack("mnist", tmp_path / "downloads", tmp_path / "mnist.zip")
    assert summary.counts == {"train": 20, "test": 10} and summary.classes == MNIST_CLASSES
    assert _entries(tmp_path / "mnist.zip") == sorted(
        f"MNIST/{f}" for f in dataset_files("mnist")[0]
    )
    train = _closed(training_set(tmp_path / "mnist.zip", cache_dir=tmp_path / "c"))
    assert train.layout == "mnist" and train.labels == splits["train"].labels
    # the same files make the same zip, byte for byte
    _pack("mnist", tmp_path / "downloads", tmp_path / "again.zip")
    assert (tmp_path / "again.zip").read_bytes() == (tmp_path / "mnist.zip").read_bytes()


@pytest.mark.parametrize("where", ["archive", "folder of the archive"])
def test_pack_cifar_from_its_tar_gz(tmp_path: Path, where: str) -> None:
    splits = write_downloads(tmp_path / "downloads", "cifar10")
    source = tmp_path / "downloads"
    if where == "archive":
        source = source / "cifar-10-python.tar.gz"
    summary = _pack("cifar10", source, tmp_path / "cifar.zip")
    assert summary.counts == {"train": 20, "test": 10} and summary.classes == CIFAR10_NAMES
    assert (
        summary.sources[0]
        == f"{tmp_path / 'downloads' / 'cifar-10-python.tar.gz'}:cifar-10-batches-py/data_batch_1"
    )
    test = _closed(prediction_set(tmp_path / "cifar.zip", cache_dir=tmp_path / "c"))
    assert test.layout == "cifar10" and test.labels == splits["test"].labels


@pytest.mark.parametrize("name", DATASETS)
def test_pack_from_a_torchvision_root(name: str, tmp_path: Path) -> None:
    write_root(tmp_path / "root", name)  # MNIST's with its .gz files beside the unpacked ones
    summary = _pack(name, tmp_path / "root", tmp_path / "out.zip")
    assert summary.classes == CLASSES[name]
    assert summary.counts == {"train": 2 * N_CLASSES[name], "test": N_CLASSES[name]}
    assert not any(source.endswith(".gz") for source in summary.sources)  # unpacked ones first
    packed = _closed(training_set(tmp_path / "out.zip", cache_dir=tmp_path / "c"))
    root = _closed(training_set(tmp_path / "root", cache_dir=tmp_path / "c"))
    assert packed.fingerprint() == root.fingerprint()


def test_pack_from_the_dataset_folder_itself(tmp_path: Path) -> None:
    write_root(tmp_path, "cifar100")
    summary = _pack("cifar100", tmp_path / "cifar-100-python", tmp_path / "c100.zip")
    assert summary.counts == {"train": 200, "test": 100}
    assert _entries(tmp_path / "c100.zip") == [
        "cifar-100-python/meta",
        "cifar-100-python/test",
        "cifar-100-python/train",
    ]


@pytest.mark.parametrize(
    ("name", "prepare", "message"),
    [
        ("svhn", None, r"^svhn: not a dataset .*; choose one of mnist, fashionmnist, cifar10, cifar100$"),
        ("mnist", "missing", r"downloads: t10k-labels-idx1-ubyte \(or \.gz\) missing; MNIST needs"),
        ("mnist", "cut", r"train-images-idx3-ubyte\.gz: damaged or cut off .*download it again$"),
        ("mnist", "empty", r"empty: no MNIST files found \(looked for MNIST/raw/train-images-idx3-ubyte"),
        ("fashionmnist", "root", r"root: no FashionMNIST files found .*; it holds mnist's: condorml data torchvision mnist"),
        ("cifar10", "cifar100 archive", r"cifar-100-python\.tar\.gz: holds none of the CIFAR10 files .*it holds cifar100's"),
        ("cifar10", "cut archive", r"cifar-10-python\.tar\.gz: damaged or cut off .*download it again$"),
        ("cifar10", "not a tar", r"notes\.txt: not a folder or a readable \.tar\.gz archive"),
        ("mnist", "zip", r"data\.zip: a zip; condorml reads a zip of torchvision's root as it is"),
        ("mnist", "bad labels", r"downloads: the MNIST train files hold 20 images but 5 labels$"),
        ("mnist", "out", r"^--out .*mnist\.tar: give a \.zip file name"),
    ],
)  # fmt: skip
def test_what_cannot_be_packed_is_one_line_naming_the_file(
    tmp_path: Path, name: str, prepare: str | None, message: str
) -> None:
    source, out = tmp_path / "downloads", tmp_path / "out.zip"
    write_downloads(source, "mnist")
    raw = source / "train-images-idx3-ubyte.gz"
    if prepare == "missing":
        (source / "t10k-labels-idx1-ubyte.gz").unlink()
    elif prepare == "cut":
        raw.write_bytes(raw.read_bytes()[:-30])
    elif prepare == "empty":
        source = tmp_path / "empty"
        source.mkdir()
    elif prepare == "root":
        write_root(tmp_path / "root", "mnist")
        source = tmp_path / "root"
    elif prepare == "cifar100 archive":
        write_downloads(tmp_path / "c", "cifar100", n_train=100, n_test=100)
        source = tmp_path / "c" / "cifar-100-python.tar.gz"
    elif prepare == "cut archive":
        write_downloads(tmp_path / "c", "cifar10")
        source = tmp_path / "c" / "cifar-10-python.tar.gz"
        source.write_bytes(source.read_bytes()[:-2000])
    elif prepare == "not a tar":
        source = tmp_path / "notes.txt"
        source.write_text("hello")
    elif prepare == "zip":
        source = tmp_path / "data.zip"
        write_zip(source, "mnist")
    elif prepare == "bad labels":
        labels = source / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    elif prepare == "out":
        out = tmp_path / "mnist.tar"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CondormlError, match=message) as caught:
        _pack(name, source, out)
    assert "\n" not in str(caught.value)
    assert (
        sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == before
    )  # no zip, no temporary


def test_a_failed_pack_leaves_the_zip_already_there(tmp_path: Path) -> None:
    write_downloads(tmp_path / "downloads", "mnist")
    _pack("mnist", tmp_path / "downloads", tmp_path / "mnist.zip")
    before = (tmp_path / "mnist.zip").read_bytes()
    (tmp_path / "downloads" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"junk"))
    with pytest.raises(CondormlError, match="cannot load the MNIST files"):
        _pack("mnist", tmp_path / "downloads", tmp_path / "mnist.zip")
    assert (tmp_path / "mnist.zip").read_bytes() == before


def test_the_cli_packs_and_says_what_it_wrote(tmp_path: Path) -> None:
    from condorml.cli import app

    write_downloads(tmp_path / "downloads", "mnist")
    args = [
        "data",
        "torchvision",
        "mnist",
        str(tmp_path / "downloads"),
        "--out",
        str(tmp_path / "mnist.zip"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"wrote {tmp_path / 'mnist.zip'} (mnist): 20 training and 10 test images, 10 classes "
        f"({', '.join(MNIST_CLASSES)})"
    )
    bad = CliRunner().invoke(
        app, ["data", "torchvision", "imagenet", str(tmp_path), "--out", "x.zip"]
    )
    assert (
        bad.exit_code == 2 and "choose one of mnist, fashionmnist, cifar10, cifar100" in bad.output
    )
    assert len(bad.output.strip().splitlines()) == 1


def test_the_files_packed_are_the_files_torchvision_reads() -> None:
    import torchvision.datasets as datasets

    from condorml.job.torchvision_pack import NEEDS

    for name, kind in TORCHVISION_SETS.items():
        base = getattr(datasets, kind.class_name)
        if name.endswith("mnist"):
            expected = [Path(url).name.removesuffix(".gz") for url, _ in base.resources]
        else:
            expected = [f for f, _ in [*base.train_list, *base.test_list]] + [base.meta["filename"]]
        assert sorted(NEEDS[name].files) == sorted(expected), name
