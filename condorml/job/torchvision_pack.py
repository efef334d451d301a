"""torchvision's dataset files, from whatever form a user has them in, as one zip condorml reads.

``condorml data torchvision NAME SOURCE --out FILE.zip`` finds the files torchvision reads for
dataset NAME (:data:`~condorml.job.torchvision_sets.TORCHVISION_SETS`) in SOURCE, which is one of

* torchvision's root, as ``torchvision.datasets.MNIST(root, download=True)`` leaves it
  (``root/MNIST/raw/...``, ``root/cifar-10-batches-py/...``), or the dataset's folder itself;
* a folder of the downloaded files: MNIST's four ``*-ubyte.gz`` (or unpacked ``*-ubyte``),
  CIFAR's ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``;
* such a CIFAR ``.tar.gz`` itself;

and writes them, unpacked, as torchvision's root in a zip (``MNIST/raw/train-images-idx3-ubyte``
...): the data path a job receives. Nothing is downloaded. The zip is checked before it is
published, by loading both splits with torchvision as training and testing will; the check
unpacks it into the cache folder, where training on this machine finds it again.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from condorml.errors import CondormlError, DataError
from condorml.fileio import TMP_PREFIX, atomic_write, check_output_file, fsync_dir
from condorml.job.torchvision_sets import (
    SPLITS,
    TORCHVISION_SETS,
    TorchvisionKind,
    TorchvisionSource,
    find_torchvision_set,
)

_MNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip


@dataclass(frozen=True)
class _Needs:
    """The files torchvision reads for one dataset (its ``resources``, ``train_list``,
    ``test_list`` and ``meta``), where they sit in the dataset's folder, and how they come."""

    files: tuple[str, ...]
    inner: str  # the folder below the dataset's folder that holds them: MNIST's raw/
    archive: str | None  # the published archive of the dataset's folder
    gzipped: bool  # each file may come as FILE.gz (MNIST's downloads)


# What each dataset needs, by condorml's name (the tests check it against torchvision's lists).
NEEDS = {
    "mnist": _Needs(_MNIST, "raw/", None, True),
    "fashionmnist": _Needs(_MNIST, "raw/", None, True),
    "cifar10": _Needs(
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        "",
        "cifar-10-python.tar.gz",
        False,
    ),
    "cifar100": _Needs(("train", "test", "meta"), "", "cifar-100-python.tar.gz", False),
}
# A damaged .gz or .tar.gz: what gzip, zlib and tarfile raise for it.
_DAMAGED = (gzip.BadGzipFile, zlib.error, EOFError, tarfile.TarError)


@dataclass(frozen=True)
class PackSummary:
    """What :func:`pack_torchvision` wrote.

    Attributes
    ----------
    out : Path
        The zip.
    name : str
        The dataset (condorml's name: ``mnist``, ``cifar10``, ...).
    counts : dict of str to int
        Images of each split (``train``, ``test``).
    classes : tuple of str
        The class names, in label order, as torchvision gives them.
    sources : tuple of str
        The files read, in the zip's order (``archive.tar.gz:member`` for a member of one).
    """

    out: Path
    name: str
    counts: dict[str, int]
    classes: tuple[str, ...]
    sources: tuple[str, ...]


def pack_torchvision(
    name: str, source: Path, out: Path, cache_dir: Path | None = None
) -> PackSummary:
    """Write dataset ``name``'s files from ``source`` into the zip ``out``, checked.

    Parameters
    ----------
    name : str
        ``mnist``, ``fashionmnist``, ``cifar10`` or ``cifar100``.
    source : Path
        torchvision's root or the dataset's folder, a folder of the downloaded files (MNIST's
        ``*-ubyte.gz`` or ``*-ubyte``, CIFAR's ``.tar.gz``), or a CIFAR ``.tar.gz``. Unpacked
        files are taken before archives.
    out : Path
        The zip to write (``.zip``), atomically: replaced only once complete and checked.
    cache_dir : Path, optional
        Where the check unpacks the zip (default: condorml's image cache).

    Returns
    -------
    PackSummary
        The zip, its images per split and its classes.

    Raises
    ------
    CondormlError
        One line naming the file: an unknown ``name`` (listing the choices), a ``source`` that
        is missing or holds none of the files, a missing file, a damaged ``.gz`` or
        ``.tar.gz``, files torchvision cannot load, or an ``out`` that cannot be written.

    Example
    -------
    >>> pack_torchvision("mnist", Path("~/data"), Path("mnist.zip"))  # doctest: +SKIP
    PackSummary(out=PosixPath('mnist.zip'), name='mnist', counts={'train': 60000, 'test': 10000}, ...)
    """
    kind = _kind(name)
    source, out = Path(source), Path(out)
    if out.suffix.lower() != ".zip":
        raise CondormlError(f"--out {out}: give a .zip file name (e.g. {kind.name}.zip)")
    check_output_file(out, "--out")
    if not source.exists():
        raise CondormlError(f"{source}: no such file or folder")
    if cache_dir is None:
        from condorml.job.imagecache import default_cache_dir

        cache_dir = default_cache_dir()
    # Written whole under a hidden name, checked there, then renamed: `out` is replaced only by
    # a zip that loads.
    staging = out.with_name(f"{TMP_PREFIX}{out.name}.{os.getpid()}.zip")
    try:
        with _found_files(kind, source) as found:
            with atomic_write(staging, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
                for entry, (shown, open_file) in found.items():
                    _add(archive, entry, shown, open_file)
            counts, classes = _check(kind, staging, source, Path(cache_dir))
        os.replace(staging, out)
        fsync_dir(out.parent)
    finally:
        staging.unlink(missing_ok=True)
    return PackSummary(out, kind.name, counts, classes, tuple(shown for shown, _ in found.values()))


def _kind(name: str) -> TorchvisionKind:
    kind = TORCHVISION_SETS.get(name.lower())
    if kind is None:
        raise CondormlError(
            f"{name}: not a dataset condorml reads from torchvision's files; choose one of {', '.join(TORCHVISION_SETS)}"
        )
    return kind


# --- finding the files -------------------------------------------------------------------------

Opener = Callable[[], IO[bytes]]  # opens one file as its unpacked bytes
Found = dict[str, tuple[str, Opener]]  # zip entry: (where it comes from, for messages; opener)


@contextmanager
def _found_files(kind: TorchvisionKind, source: Path) -> Iterator[Found]:
    """Each file the zip will hold (its entry, ``MNIST/raw/...``): (where it comes from, for
    messages; a function opening it as unpacked bytes).

    Raises
    ------
    CondormlError
        If ``source`` holds none of the files, or only some (naming the missing ones).
    """
    needs = NEEDS[kind.name]
    if source.is_dir():
        found = _in_folder(kind, needs, source)
        if found is not None:
            yield found
            return
        if needs.archive and (source / needs.archive).is_file():
            source = source / needs.archive
        else:
            raise CondormlError(_nothing_found(kind, needs, source))
    with _open_tar(source) as tar:
        yield _in_tar(kind, needs, source, tar)


def _entry(kind: TorchvisionKind, needs: _Needs, file: str) -> str:
    return f"{kind.folder}/{needs.inner}{file}"


def _bases(kind: TorchvisionKind, needs: _Needs) -> list[str]:
    """Where a source may hold the files: as torchvision's root, as the dataset's folder, as
    the folder of the files themselves (``MNIST/raw/``, ``raw/``, ``""`` for MNIST)."""
    return list(dict.fromkeys([f"{kind.folder}/{needs.inner}", needs.inner, ""]))


def _in_folder(kind: TorchvisionKind, needs: _Needs, folder: Path) -> Found | None:
    """The files in ``folder`` (unpacked before gzipped), from the first place that holds any;
    None if none does."""
    for base in _bases(kind, needs):
        found: Found = {}
        for file in needs.files:
            plain, packed = folder / base / file, folder / base / f"{file}.gz"
            if plain.is_file():
                found[_entry(kind, needs, file)] = (str(plain), _opener(plain, False))
            elif needs.gzipped and packed.is_file():
                found[_entry(kind, needs, file)] = (str(packed), _opener(packed, True))
        if found:
            _check_complete(kind, needs, found, str(folder / base))
            return found
    return None


def _in_tar(kind: TorchvisionKind, needs: _Needs, path: Path, tar: tarfile.TarFile) -> Found:
    """The files in a tar archive: below the dataset's folder, wherever that is in it, or at
    its top."""
    try:
        listed = tar.getmembers()  # reads the whole archive: a damaged one fails here
    except (OSError, *_DAMAGED) as err:
        raise CondormlError(
            f"{path}: damaged or cut off ({type(err).__name__}: {err}); download it again"
        ) from None
    members = {
        str(PurePosixPath(member.name.removeprefix("./"))): member
        for member in listed
        if member.isfile()
    }
    for base in _bases(kind, needs):
        found: Found = {}
        for file in needs.files:
            for name in (f"{base}{file}", f"{base}{file}.gz" if needs.gzipped else None):
                if name in members:
                    found[_entry(kind, needs, file)] = (
                        f"{path}:{name}",
                        _tar_opener(tar, members[name], name.endswith(".gz")),
                    )
                    break
        if found:
            _check_complete(kind, needs, found, f"{path}:{base}".rstrip(":/"))
            return found
    message = f"{path}: holds none of the {kind.class_name} files (looked for {kind.folder}/{needs.inner}{needs.files[0]}, ...)"
    others = [
        other.name
        for other in TORCHVISION_SETS.values()
        if other is not kind and any(name.startswith(f"{other.folder}/") for name in members)
    ]
    if others:
        message += f"; it holds {others[0]}'s: condorml data torchvision {others[0]} ..."
    raise CondormlError(message)


def _check_complete(kind: TorchvisionKind, needs: _Needs, found: Found, where: str) -> None:
    missing = [file for file in needs.files if _entry(kind, needs, file) not in found]
    if missing:
        also = " (or .gz)" if needs.gzipped else ""
        raise CondormlError(
            f"{where}: {', '.join(missing)}{also} missing; {kind.class_name} needs {', '.join(needs.files)}"
        )


def _nothing_found(kind: TorchvisionKind, needs: _Needs, folder: Path) -> str:
    """The message for a folder without the files, naming another dataset it holds."""
    where = f"{kind.folder}/{needs.inner}{needs.files[0]}"
    if needs.gzipped:
        looked = f"{where}, or the four files ({needs.files[0]}.gz, ...) themselves"
    else:
        looked = f"{where}, or {needs.archive}"
    message = f"{folder}: no {kind.class_name} files found (looked for {looked})"
    others = [
        other.name
        for other in TORCHVISION_SETS.values()
        if other is not kind
        and ((folder / other.folder).is_dir() or (NEEDS[other.name].archive or "\0") in _names(folder))
    ]  # fmt: skip
    if others:
        message += f"; it holds {others[0]}'s: condorml data torchvision {others[0]} ..."
    return message


def _names(folder: Path) -> set[str]:
    try:
        return {path.name for path in folder.iterdir()}
    except OSError:
        return set()


@contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """``path`` opened as a tar archive (compressed or not), or one line saying why not."""
    if zipfile.is_zipfile(path):
        raise CondormlError(
            f"{path}: a zip; condorml reads a zip of torchvision's root as it is (use it as the data path), else give the folder or .tar.gz it came from"
        )
    try:
        # closed below, once the files are copied
        tar = tarfile.open(path)  # noqa: SIM115
    except (OSError, *_DAMAGED) as err:
        # tarfile lists every compression it tried, a line each: say the first
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CondormlError(
            f"{path}: not a folder or a readable .tar.gz archive ({reason.rstrip(':')})"
        ) from None
    try:
        yield tar
    finally:
        tar.close()


def _opener(path: Path, gzipped: bool) -> Opener:
    """A function opening ``path`` as its unpacked bytes."""

    def open_file() -> IO[bytes]:
        return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]

    return open_file


def _tar_opener(tar: tarfile.TarFile, member: tarfile.TarInfo, gzipped: bool) -> Opener:
    """A function opening a member of ``tar`` as its unpacked bytes."""

    def open_member() -> IO[bytes]:
        handle = tar.extractfile(member)
        assert handle is not None  # a regular file's
        return gzip.GzipFile(fileobj=handle) if gzipped else handle  # type: ignore[return-value]

    return open_member


def _add(archive: zipfile.ZipFile, entry: str, shown: str, open_file: Opener) -> None:
    """Copy one file into the zip, unpacked, with a fixed date: the same files, the same zip."""
    info = zipfile.ZipInfo(entry, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    try:
        with open_file() as reader, archive.open(info, "w") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
    except _DAMAGED as err:
        raise CondormlError(
            f"{shown}: damaged or cut off ({type(err).__name__}: {err}); download it again"
        ) from None
    except OSError as err:
        raise CondormlError(f"{shown}: cannot read it ({err.strerror or err})") from None


# --- the check ---------------------------------------------------------------------------------


def _check(
    kind: TorchvisionKind, path: Path, source: Path, cache_dir: Path
) -> tuple[dict[str, int], tuple[str, ...]]:
    """Load both splits from the written zip as a job will: (images per split, classes)."""
    from condorml.job.data import ImageSource

    zipped = ImageSource(path)
    try:
        found = find_torchvision_set([f.name for f in zipped.files()])
        assert found is not None and found[0] == kind, found  # the zip holds what was packed
        counts: dict[str, int] = {}
        classes: tuple[str, ...] = ()
        for split in SPLITS:
            try:
                loaded = TorchvisionSource(zipped, kind, found[1], split, cache_dir)
            except DataError as err:
                # the message names the zip's temporary name: name the source instead
                detail = str(err).removeprefix(f"{path}: ")
                raise type(err)(f"{source}: {detail}") from None
            counts[split], classes = len(loaded.files()), loaded.classes
    finally:
        zipped.close()
    return counts, classes
