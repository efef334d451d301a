"""torchvision's own dataset files (MNIST, FashionMNIST, CIFAR-10, CIFAR-100) as an image set.

A folder holding a dataset's files as torchvision keeps them (its *root*: ``MNIST/raw/...``,
``FashionMNIST/raw/...``, ``cifar-10-batches-py/...``, ``cifar-100-python/...``), or a ``.zip``
of such a folder, is read with torchvision's own dataset classes, ``download=False``: nothing is
ever downloaded. Training reads the dataset's training split, inference and evaluation its test
split. A zip is unpacked once into the cache folder (torchvision reads files by path), keyed by
its entries' names, sizes and CRCs.

torchvision checks CIFAR's files against the MD5 sums of the published archives; condorml only
checks that they are there (a damaged file fails to load, and files made for tests have other
sums). CIFAR's files are Python pickles, read by torchvision's loader: use files you trust, as
with torchvision itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from condorml.errors import DataError, TransientDataError, os_error
from condorml.fileio import TMP_PREFIX
from condorml.job.data import ImageFile, ImageSource


@dataclass(frozen=True)
class TorchvisionKind:
    """One dataset torchvision reads: the folder of its files under the root, and the file
    whose presence marks it."""

    name: str  # condorml's name for it (--layout, condorml data torchvision)
    folder: str  # under the root
    marker: str  # a file in that folder
    class_name: str  # torchvision.datasets.<class_name>


TORCHVISION_SETS = {
    kind.name: kind
    for kind in (
        TorchvisionKind("mnist", "MNIST", "raw/train-images-idx3-ubyte", "MNIST"),
        TorchvisionKind(
            "fashionmnist", "FashionMNIST", "raw/train-images-idx3-ubyte", "FashionMNIST"
        ),
        TorchvisionKind("cifar10", "cifar-10-batches-py", "batches.meta", "CIFAR10"),
        TorchvisionKind("cifar100", "cifar-100-python", "meta", "CIFAR100"),
    )
}
SPLITS = ("train", "test")


def find_torchvision_set(names: list[str]) -> tuple[TorchvisionKind, str] | None:
    """The dataset whose files are among ``names`` (a source's file names), and its root
    (the folder above the dataset's folder: ``""`` for the top), or None."""
    markers = [
        (kind, PurePosixPath(kind.folder, kind.marker)) for kind in TORCHVISION_SETS.values()
    ]
    # A name can end in a marker only if it holds the marker's file name: a substring test
    # spares the paths of the other names (90 ms of every start for 2,000 images).
    words = {marker.name for _, marker in markers}
    for name in names:
        if not any(word in name for word in words):
            continue
        path = PurePosixPath(name)
        for kind, marker in markers:
            depth = len(marker.parts)
            if len(path.parts) >= depth and PurePosixPath(*path.parts[-depth:]) == marker:
                root = PurePosixPath(*path.parts[:-depth]) if len(path.parts) > depth else None
                return kind, "" if root is None else str(root)
    return None


class TorchvisionSource:
    """The images of one split of a torchvision dataset, read like a source of image files.

    ``files()`` lists one :class:`~condorml.job.data.ImageFile` per image (name: its index in the
    split; size: its bytes; digest: a CRC of its pixels), ``read(name)`` returns its pixels as a
    ``uint8`` array, (H, W) or (H, W, 3).

    Raises
    ------
    DataError
        If the dataset's files are incomplete or cannot be loaded by torchvision.
    """

    is_zip = False

    def __init__(self, source: ImageSource, kind: TorchvisionKind, root: str, split: str,
                 cache_dir: Path) -> None:  # fmt: skip
        self.path, self.kind, self.split = source.path, kind, split
        folder = (
            source.path / root if not source.is_zip else _unpacked(source, kind, root, cache_dir)
        )
        self.root = folder
        dataset = _load(kind, folder, split, source.path)
        data = dataset.data
        self.pixels = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        self.labels = [int(t) for t in dataset.targets]
        self.classes: tuple[str, ...] = tuple(str(c) for c in dataset.classes)
        _check_labels(self, kind, split)
        self._files = [
            ImageFile(str(i), int(self.pixels[i].nbytes), zlib.crc32(self.pixels[i].tobytes()))
            for i in range(len(self.pixels))
        ]

    def __repr__(self) -> str:
        return f"TorchvisionSource({str(self.path)!r}, {self.kind.name}, {self.split})"

    def files(self) -> list[ImageFile]:
        """One entry per image of the split, in index order."""
        return list(self._files)

    def read(self, name: str) -> np.ndarray:
        """The pixels of image ``name`` (its index)."""
        return self.pixels[int(name)]

    def display(self, name: str) -> str:
        """A name for messages: ``mnist.zip:MNIST test image 17``."""
        return f"{self.path}: {self.kind.folder} {self.split} image {name}"

    def content_crc(self, file: ImageFile) -> int:
        """The CRC-32 of an image's pixels (its ``digest``)."""
        return file.digest

    def close(self) -> None:
        """Nothing to close: the arrays are in memory."""


def _check_labels(found: TorchvisionSource, kind: TorchvisionKind, split: str) -> None:
    """One label per image, each naming a class: damaged files would fail later, unnamed."""
    if len(found.labels) != len(found.pixels):
        raise DataError(
            f"{found.path}: the {kind.folder} {split} files hold {len(found.pixels)} images but {len(found.labels)} labels"
        )
    wrong = next((label for label in found.labels if not 0 <= label < len(found.classes)), None)
    if wrong is not None:
        raise DataError(
            f"{found.path}: the {kind.folder} {split} files hold the label {wrong}, but there are {len(found.classes)} classes"
        )


def _load(kind: TorchvisionKind, root: Path, split: str, shown: Path):
    import torchvision.datasets as datasets

    base = getattr(datasets, kind.class_name)

    class Reader(base):  # type: ignore[misc, valid-type]
        """torchvision's class, checking that CIFAR's files exist rather than their MD5 sums."""

        if hasattr(base, "meta"):  # CIFAR's _load_meta checks the meta file's sum on its own
            meta = {**base.meta, "md5": None}

        def _check_integrity(self) -> bool:
            files = [*self.train_list, *self.test_list, (self.meta["filename"], None)]
            return all(
                os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f, _ in files
            )

    Reader.__name__ = base.__name__  # MNIST finds its folder by the class name
    try:
        return Reader(str(root), train=split == "train", download=False)
    except RuntimeError:  # torchvision's "Dataset not found" (its advice to download is not ours)
        missing = ", ".join(_missing_files(base, root, kind)[:4]) or "a file torchvision needs"
        raise DataError(
            f"{shown}: the {kind.folder} files are incomplete (missing {missing}); prepare them with: condorml data torchvision {kind.name} SOURCE --out FILE.zip"
        ) from None
    except OSError as err:  # an I/O error is the machine's: worth another attempt
        raise os_error(
            f"{shown}: cannot read the {kind.folder} files ({err.strerror or err})",
            err, shown, DataError, TransientDataError,
        ) from None  # fmt: skip
    except MemoryError:
        raise
    except Exception as err:
        # A damaged file makes torchvision's readers raise anything: an AssertionError (an IDX
        # header), a TypeError (an IDX of other numbers), whatever unpickling junk raises.
        raise DataError(
            f"{shown}: cannot load the {kind.folder} files ({type(err).__name__}: {err})"
        ) from None


def _missing_files(base: type, root: Path, kind: TorchvisionKind) -> list[str]:
    """The dataset's files torchvision looks for that are not under ``root``."""
    if hasattr(base, "resources"):  # MNIST and FashionMNIST: the unpacked downloads in raw/
        names = [f"raw/{os.path.splitext(os.path.basename(url))[0]}" for url, _ in base.resources]
    else:  # CIFAR: its batches and meta file
        names = [f for f, _ in (*base.train_list, *base.test_list)] + [base.meta["filename"]]
    return [f"{kind.folder}/{n}" for n in names if not (root / kind.folder / n).is_file()]


def _unpacked(source: ImageSource, kind: TorchvisionKind, root: str, cache_dir: Path) -> Path:
    """The dataset's folder unpacked from the zip into the cache (once), as torchvision's root."""
    prefix = f"{root}/{kind.folder}/" if root else f"{kind.folder}/"
    members = [i for i in source.zip_entries() if i.filename.startswith(prefix) and not i.is_dir()]
    digest = hashlib.sha256(kind.name.encode())
    for info in members:
        digest.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
    target = Path(cache_dir) / f"torchvision-{digest.hexdigest()[:24]}"
    if (target / kind.folder).is_dir():
        return target
    staging = Path(cache_dir) / f"{TMP_PREFIX}{target.name}.{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        for info in members:
            relative = PurePosixPath(info.filename).relative_to(PurePosixPath(prefix))
            if ".." in relative.parts:
                raise DataError(f"{source.path}: {info.filename}: a path leaving its folder")
            out = staging / kind.folder / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(source.read(info.filename))
        os.replace(staging, target)
    except FileExistsError:  # another job unpacked it first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError) and target.is_dir():
            return target
        raise os_error(
            f"{cache_dir}: cannot unpack {source.path} there ({err.strerror or err}); free space or pass --cache-dir",
            err, cache_dir, DataError, TransientDataError,
        ) from err  # fmt: skip
    return target
