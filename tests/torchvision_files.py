"""Tiny files in torchvision's dataset formats, and the forms a user downloads them in.

torchvision reads MNIST and FashionMNIST from IDX files (``MNIST/raw/train-images-idx3-ubyte``:
a big-endian header, magic 2051 for images and 2049 for labels, then the bytes) and CIFAR from
Python pickles (``cifar-10-batches-py/data_batch_1``: a dict of ``data``, rows of 3072 bytes,
the red, green and blue planes of a 32x32 image, and ``labels``; ``batches.meta`` names the
classes). The published CIFAR pickles come from Python 2, whose ``str`` keys torchvision reads
back as ``str`` (``encoding="latin1"``): these are written with ``str`` keys to match.

Each image shows its class: a bright block in the cell of a grid that the class picks (and, in
colour, a channel), on dim noise, so a model could learn the labels. Labels go round the classes
(test images shifted by one), so every class has images once a split has as many as classes.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MNIST_FILES = {  # split: (images, labels), in MNIST/raw (FashionMNIST/raw: the same names)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_NAMES = tuple(f"fine{i:02d}" for i in range(100))
CIFAR100_COARSE = tuple(f"coarse{i:02d}" for i in range(20))
FOLDERS = {  # condorml's name: the dataset's folder under torchvision's root
    "mnist": "MNIST",
    "fashionmnist": "FashionMNIST",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
N_CLASSES = {"mnist": 10, "fashionmnist": 10, "cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class Split:
    """The images and labels written for one split: what a reader should give back."""

    pixels: np.ndarray  # (N, 28, 28) greyscale, or (N, 32, 32, 3) colour: as torchvision's .data
    labels: list[int]


Files = tuple[dict[str, bytes], dict[str, Split]]  # file name: bytes; split: what it holds


def labels_for(n: int, n_classes: int, split: str) -> list[int]:
    """Labels round the classes: every class has an image once ``n >= n_classes``."""
    shift = 0 if split == "train" else 1
    return [(i + shift) % n_classes for i in range(n)]


def pattern_images(
    labels: list[int], n_classes: int, side: int, colour: bool, seed: int
) -> np.ndarray:
    """Images whose class shows: a bright block in the class's grid cell on dim noise."""
    rng = np.random.default_rng(seed)
    grid = math.ceil(math.sqrt(n_classes))
    cell = side // grid
    shape = (len(labels), side, side, 3) if colour else (len(labels), side, side)
    images = rng.integers(0, 60, shape, dtype=np.uint8)
    for i, label in enumerate(labels):
        row, column = divmod(label, grid)
        block = images[i, row * cell : (row + 1) * cell, column * cell : (column + 1) * cell]
        if colour:
            block[..., label % 3] = 255
        else:
            block[...] = 255
    return images


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) as an IDX file: magic 0x0000 08 <dims>, sizes big-endian, then bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def mnist_files(n_train: int = 20, n_test: int = 10, seed: int = 0) -> Files:
    """The four MNIST-format files (name: bytes) and the splits they hold."""
    files, splits = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = labels_for(n, 10, split)
        pixels = pattern_images(labels, 10, 28, colour=False, seed=seed + len(split))
        images_name, labels_name = MNIST_FILES[split]
        files[images_name] = idx_bytes(pixels)
        files[labels_name] = idx_bytes(np.array(labels, dtype=np.uint8))
        splits[split] = Split(pixels, labels)
    return files, splits


def _pickle(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _cifar_rows(pixels: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) images as CIFAR's rows: (N, 3072), the three colour planes one after another."""
    return pixels.transpose(0, 3, 1, 2).reshape(len(pixels), 3072)


def cifar10_files(n_train: int = 20, n_test: int = 10, seed: int = 0) -> Files:
    """The files of ``cifar-10-batches-py`` (name: bytes): the training images spread over
    ``data_batch_1`` to ``data_batch_5``, ``test_batch``, ``batches.meta``; and the splits."""
    files, splits = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = labels_for(n, 10, split)
        pixels = pattern_images(labels, 10, 32, colour=True, seed=seed + len(split))
        splits[split] = Split(pixels, labels)
        rows = _cifar_rows(pixels)
        parts = np.array_split(np.arange(n), 5) if split == "train" else [np.arange(n)]
        for number, part in enumerate(parts, 1):
            name = f"data_batch_{number}" if split == "train" else "test_batch"
            files[name] = _pickle({
                "batch_label": f"{split} batch {number}",
                "labels": [labels[i] for i in part],
                "data": rows[part],
                "filenames": [f"image_{i}.png" for i in part],
            })  # fmt: skip
    files["batches.meta"] = _pickle(
        {"num_cases_per_batch": n_train, "label_names": list(CIFAR10_NAMES), "num_vis": 3072}
    )
    return files, splits


def cifar100_files(n_train: int = 200, n_test: int = 100, seed: int = 0) -> Files:
    """The files of ``cifar-100-python``: ``train``, ``test`` (``fine_labels`` and
    ``coarse_labels``) and ``meta`` (``fine_label_names``, ``coarse_label_names``)."""
    files, splits = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = labels_for(n, 100, split)
        pixels = pattern_images(labels, 100, 32, colour=True, seed=seed + len(split))
        splits[split] = Split(pixels, labels)
        files[split] = _pickle({
            "filenames": [f"image_{i}.png" for i in range(n)],
            "batch_label": f"{split} batch 1 of 1",
            "fine_labels": labels,
            "coarse_labels": [label // 5 for label in labels],
            "data": _cifar_rows(pixels),
        })  # fmt: skip
    files["meta"] = _pickle(
        {"fine_label_names": list(CIFAR100_NAMES), "coarse_label_names": list(CIFAR100_COARSE)}
    )
    return files, splits


def dataset_files(name: str, n_train: int | None = None, n_test: int | None = None) -> Files:
    """The files of dataset ``name`` (condorml's name), by their names in the dataset's folder
    (``raw/...`` for MNIST's), and the splits they hold. Sizes default to two images a class
    for training and one for testing."""
    n_train = 2 * N_CLASSES[name] if n_train is None else n_train
    n_test = N_CLASSES[name] if n_test is None else n_test
    if name in ("mnist", "fashionmnist"):
        files, splits = mnist_files(n_train, n_test, seed=7 if name == "mnist" else 8)
        return {f"raw/{file}": data for file, data in files.items()}, splits
    if name == "cifar10":
        return cifar10_files(n_train, n_test)
    return cifar100_files(n_train, n_test)


def write_root(root: Path, name: str, **sizes: int) -> dict[str, Split]:
    """Write dataset ``name`` under torchvision's root ``root`` (``root/MNIST/raw/...``), as
    ``torchvision.datasets.MNIST(root, download=True)`` leaves it (MNIST: its .gz files too)."""
    files, splits = dataset_files(name, **sizes)
    folder = root / FOLDERS[name]
    for file, data in files.items():
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_bytes(data)
        if file.startswith("raw/"):
            (folder / f"{file}.gz").write_bytes(gzip.compress(data, mtime=0))
    return splits


def write_zip(path: Path, name: str, prefix: str = "", **sizes: int) -> dict[str, Split]:
    """A zip of torchvision's root holding dataset ``name`` (below ``prefix``, e.g. ``data/``)."""
    files, splits = dataset_files(name, **sizes)
    with zipfile.ZipFile(path, "w") as archive:
        for file, data in files.items():
            archive.writestr(f"{prefix}{FOLDERS[name]}/{file}", data)
    return splits


def write_downloads(folder: Path, name: str, **sizes: int) -> dict[str, Split]:
    """The files as downloaded into ``folder``: MNIST's four ``*-ubyte.gz``, or CIFAR's
    ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``."""
    files, splits = dataset_files(name, **sizes)
    folder.mkdir(parents=True, exist_ok=True)
    if name in ARCHIVES:
        write_tarball(folder / ARCHIVES[name], name, files)
    else:
        for file, data in files.items():
            (folder / f"{Path(file).name}.gz").write_bytes(gzip.compress(data, mtime=0))
    return splits


def write_tarball(path: Path, name: str, files: dict[str, bytes]) -> Path:
    """A CIFAR archive as published: ``<dataset folder>/<file>`` entries in a .tar.gz."""
    with tarfile.open(path, "w:gz") as archive:
        for file, data in files.items():
            info = tarfile.TarInfo(f"{FOLDERS[name]}/{file}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path
