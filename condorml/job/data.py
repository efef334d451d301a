"""Where images come from: the files of a folder or a ``.zip``, read in place.

HTCondor jobs receive zips, so a ``.zip`` is read in place rather than unpacked. This module
lists and reads files; which file is which class is :mod:`condorml.job.layouts`' job, decoding
:mod:`condorml.job.images`'. No torch here.
"""

from __future__ import annotations

import os
import random
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from condorml.errors import DataError, TransientDataError, is_transient_os_error, os_error

# The image types condorml reads (by suffix, case-insensitive), as torchvision's ImageFolder does.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_IGNORED_FOLDERS = {"__MACOSX"}
_ZIP_MAGIC = b"PK\x03\x04"  # a zip's first local file header
# What zipfile raises for an archive damaged or cut off after its first bytes.
_DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, EOFError)


@dataclass(frozen=True)
class ImageFile:
    """One image of a source: its name inside the source and its size in bytes.

    ``digest`` is a checksum of the pixels where the image is no file of its own (an image of
    a torchvision dataset file), 0 otherwise: with the name and size it identifies the image.
    ``version`` changes when the file's content does (a zip entry's CRC-32, a file's
    modification time in nanoseconds): the decoded-image cache keys on it too, so that a file
    replaced by another of the same name and size is decoded again.
    """

    name: str
    size: int
    digest: int = 0
    version: int = 0

    @property
    def is_image(self) -> bool:
        """Whether the name has an image suffix (:data:`IMAGE_SUFFIXES`)."""
        return PurePosixPath(self.name).suffix.lower() in IMAGE_SUFFIXES

    @property
    def stem(self) -> str:
        """The file name without folders and extension: the image id (``test/123.jpg`` -> 123)."""
        return PurePosixPath(self.name).stem


@dataclass(frozen=True)
class LabelledImage:
    """A training image and its label: the index of its class in the set's class list."""

    file: ImageFile
    label: int


class ImageSource:
    """Read-only access to the files of a folder or a zip archive, by POSIX-style name.

    Parameters
    ----------
    path : Path
        A directory or a ``.zip`` file.

    Raises
    ------
    DataError
        If ``path`` does not exist or is neither a directory nor a zip.
    TransientDataError
        If it is a zip cut off or damaged (a half-transferred file), or reading it fails for the
        machine's reasons (an I/O error): another attempt may find it whole.

    Example
    -------
    >>> src = ImageSource(Path("train.zip"))  # doctest: +SKIP
    >>> [f.name for f in src.files()][:1]  # doctest: +SKIP
    ['train/cat.0.jpg']
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._files: list[ImageFile] | None = None  # files(), listed once
        if self.path.is_dir():
            self.is_zip = False
        elif self.path.is_file():
            self._check_zip()
            self.is_zip = True
        else:
            raise DataError(f"{self.path}: no such file or directory")

    def __repr__(self) -> str:
        return f"ImageSource({str(self.path)!r})"

    def files(self) -> list[ImageFile]:
        """Every regular file, sorted by name, skipping hidden files and macOS metadata.

        Listed at the first call; later calls return the same listing (a start asks twice:
        which kind of data, then which layout).
        """
        if self._files is None:
            self._files = self._list_files()
        return list(self._files)

    def _list_files(self) -> list[ImageFile]:
        if self.is_zip:
            found = [
                ImageFile(info.filename, info.file_size, version=info.CRC)
                for info in self._archive().infolist()
                if not info.is_dir()
            ]
        else:
            found = []
            for root, dirs, names in os.walk(self.path):
                dirs[:] = sorted(d for d in dirs if not _hidden(d))
                rel_root = Path(root).relative_to(self.path)
                for name in names:
                    full = Path(root) / name
                    if full.is_file():
                        info = full.stat()
                        found.append(ImageFile((rel_root / name).as_posix(), info.st_size,
                                               version=info.st_mtime_ns))  # fmt: skip
        return sorted((f for f in found if not _ignored(f.name)), key=lambda f: f.name)

    def folders(self) -> set[str]:
        """Every folder (``a/b``), empty ones included, skipping hidden ones and macOS metadata."""
        found: set[str] = set()
        if self.is_zip:
            for info in self._archive().infolist():
                path = PurePosixPath(info.filename.rstrip("/"))
                folders = [path, *path.parents] if info.is_dir() else list(path.parents)
                found.update(str(p) for p in folders if str(p) != ".")
        else:
            for root, dirs, _ in os.walk(self.path):
                dirs[:] = sorted(d for d in dirs if not _hidden(d))
                rel_root = Path(root).relative_to(self.path)
                found.update((rel_root / d).as_posix() for d in dirs)
        return {f for f in found if not _ignored(f)}

    def content_crc(self, file: ImageFile) -> int:
        """The CRC-32 of a file's bytes: a zip entry's own (free), a folder's file read.

        Raises
        ------
        TransientDataError
            If reading fails for the machine's reasons (see :meth:`read`).
        """
        if self.is_zip:
            return file.version
        try:
            return zlib.crc32(self.read(file.name))
        except OSError as err:  # unreadable for the user's reasons: decoding will say so
            return -abs(err.errno or 1)

    def zip_entries(self) -> list[zipfile.ZipInfo]:
        """The archive's entries, with their sizes and CRCs (an empty list for a folder)."""
        return self._archive().infolist() if self.is_zip else []

    def read(self, name: str) -> bytes:
        """The bytes of one file; safe to call from several threads once :meth:`files` ran.

        Raises
        ------
        TransientDataError
            If the archive is damaged there (a bad CRC, data cut off) or the disk fails.
        OSError
            If a file of a folder cannot be read for the user's reasons (permissions): the
            caller treats it as an unusable image.
        """
        try:
            if self.is_zip:
                return self._archive().read(name)
            return (self.path / name).read_bytes()
        except _DAMAGED_ZIP as err:
            raise TransientDataError(
                f"{self.display(name)}: cannot read it ({err}); the archive is damaged or was cut "
                "off in transfer"
            ) from err
        except OSError as err:
            if is_transient_os_error(err, self.path):
                raise TransientDataError(f"{self.display(name)}: cannot read it ({err})") from err
            raise

    def display(self, name: str) -> str:
        """A name for messages: ``archive.zip:train/cat.1.jpg`` or the file's path."""
        return f"{self.path}:{name}" if self.is_zip else str(self.path / name)

    def close(self) -> None:
        """Close the archive, if one is open."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _check_zip(self) -> None:
        """Tell a zip cut off in transfer (transient) from a file that is no zip at all."""
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(len(_ZIP_MAGIC))
        except OSError as err:
            message = f"{self.path}: cannot read it ({err.strerror or err})"
            raise os_error(message, err, self.path, DataError, TransientDataError) from err
        if zipfile.is_zipfile(self.path):
            return
        if head == _ZIP_MAGIC:  # a zip's start without its end (the central directory)
            raise TransientDataError(
                f"{self.path}: a truncated zip archive (its end is missing): cut off in transfer "
                "or still being copied; run again once the file is complete"
            )
        raise DataError(f"{self.path}: not a directory or a .zip archive of images")

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except OSError as err:
                message = f"{self.path}: cannot read the zip archive ({err.strerror or err})"
                raise os_error(message, err, self.path, DataError, TransientDataError) from err
            except _DAMAGED_ZIP as err:
                raise TransientDataError(
                    f"{self.path}: a damaged zip archive ({err}): cut off or corrupted in transfer"
                ) from err
        return self._zip


def _hidden(part: str) -> bool:
    return part.startswith(".") or part in _IGNORED_FOLDERS


def _ignored(name: str) -> bool:
    return any(_hidden(part) for part in PurePosixPath(name).parts)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (train, validation) index lists, deterministically for a seed.

    Parameters
    ----------
    n : int
        Number of images.
    val_fraction : float
        Fraction held out for validation, in [0, 1). At least one image stays for training.
    seed : int
        The split seed; members of an ensemble share it so their validation scores compare.

    Raises
    ------
    DataError
        If ``val_fraction`` is outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: must be at least 0 and below 1")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = min(round(n * val_fraction), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])
