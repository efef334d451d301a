"""Decode every training image once, in parallel, into a memory-mapped ``uint8`` array.

Decoding and resizing a JPEG costs more CPU than a forward and backward pass of the CHTC CNN, and
the example repeats it every epoch. condorml decodes each image once into ``<key>.npy`` (N, S, S, 3)
in a cache folder, with one thread per CPU, and trains every epoch from that file; the OS page cache keeps it in
memory when there is room, and the process's own memory stays small when there is not.

The cache survives the trainer's exit-85 restarts, which HTCondor runs in the same sandbox, so a
job that checkpoints every epoch decodes its data once, not once per epoch. The key covers the
file names, sizes and contents' versions (a zip entry's CRC, a file's modification time), the
image size and the preprocessing version; a cache is published by renaming a finished file, so
a killed build is never mistaken for a complete one. Outside a job the cache folder is kept
under 20 GiB (``CONDORML_CACHE_GB``), the least recently used entries removed first, and an
entry unused for 30 days goes (:func:`prune_cache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from condorml.errors import DataError, in_job_sandbox, os_error
from condorml.fileio import TMP_PREFIX, atomic_write_text
from condorml.job.data import ImageSource, LabelledImage
from condorml.job.images import (
    DECODE_ERRORS,
    PREPROCESS_VERSION,
    decode_resized,
    describe_decode_error,
)
from condorml.job.torchvision_sets import TorchvisionSource

log = logging.getLogger(__name__)

try:  # POSIX only; without it two builders of one cache just both build it.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_CHUNK = 64  # images per task: small enough for steady progress


@dataclass
class DecodedImages:
    """Decoded, resized training images and their labels.

    Attributes
    ----------
    pixels : numpy.ndarray
        (rows, S, S, 3) ``uint8``, usually a read-only memory map; only ``rows`` are valid.
    rows : numpy.ndarray
        Row of ``pixels`` for each usable image, in name order.
    labels : numpy.ndarray
        ``int64`` class index of each usable image, aligned with ``rows``.
    names : list of str
        Name of each usable image inside its source, aligned with ``rows``.
    skipped : list of (str, str)
        (name, reason) for every file that could not be decoded.
    """

    pixels: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    names: list[str]
    skipped: list[tuple[str, str]]
    _fd: int | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def gather(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Copy the given rows of ``pixels`` into ``out`` (sorted rows read fastest).

        Reading with ``pread`` copies straight from the page cache; indexing the memory map
        instead would page-fault every 4 KiB of it into this process on each epoch.
        """
        pixels = self.pixels
        path = getattr(pixels, "filename", None)
        if path is None or not hasattr(os, "preadv"):
            np.take(pixels, rows, axis=0, out=out)
            return
        if self._fd is None:
            self._fd = os.open(path, os.O_RDONLY)
        row_bytes = pixels[0].nbytes
        for slot, row in enumerate(rows):
            os.preadv(
                self._fd, [memoryview(out[slot]).cast("B")], pixels.offset + int(row) * row_bytes
            )

    def close(self) -> None:
        """Close the file the rows are read from."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def cache_key(images: list[LabelledImage], size: int) -> str:
    """Hash of what the cached pixels depend on: names, sizes and contents' versions (a zip
    entry's CRC, a file's modification time: a same-size replacement is new pixels), the pixels
    of a dataset file's images, edge length, preprocessing."""
    digest = hashlib.sha256(f"v{PREPROCESS_VERSION}:{size}\n".encode())
    for image in images:
        f = image.file
        digest.update(f"{f.name}\0{f.size}\0{f.digest}\0{f.version}\n".encode())
    return digest.hexdigest()[:24]


def default_cache_dir() -> Path:
    """The job's scratch directory under HTCondor, else ``$XDG_CACHE_HOME/condorml``."""
    scratch = os.environ.get("_CONDOR_SCRATCH_DIR")
    if scratch:
        return Path(scratch) / ".condorml-cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "condorml"


def load_decoded(
    source: ImageSource | TorchvisionSource,
    images: list[LabelledImage],
    size: int,
    cache_dir: Path,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> DecodedImages:
    """Return the decoded images, building the cache first if it does not exist.

    Parameters
    ----------
    source : ImageSource or TorchvisionSource
        Folder or zip the images are read from (or a torchvision dataset's pixels).
    images : list of LabelledImage
        The images, in the order rows are stored.
    size : int
        Edge length of the square images.
    cache_dir : Path
        Folder for ``<key>.npy`` and ``<key>.json``.
    workers : int
        Decoding threads.
    progress : callable, optional
        Called with (images done, images total) while decoding.

    Raises
    ------
    DataError
        If no image can be decoded, or every decodable image has the same label.
    CondormlError
        If the cache cannot be written: a :class:`~condorml.errors.TransientError` for a full
        disk or an I/O error (permissions too, in a job's sandbox), permanent otherwise.
    TransientDataError
        If the source is damaged or cannot be read (see :meth:`ImageSource.read`).
    """
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        message = f"--cache-dir {cache_dir}: cannot create it ({err.strerror or err})"
        raise os_error(message, err, cache_dir) from err
    key = cache_key(images, size)
    pixels_path, index_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    with _locked(cache_dir / f"{key}.lock"):
        skipped = _read_index(index_path) if pixels_path.exists() else None
        if skipped is None:
            try:
                skipped = _build(source, images, size, pixels_path, index_path, workers, progress)
            except OSError as err:
                message = f"{cache_dir}: cannot write the decoded-image cache ({err.strerror or err}); free space or pass --cache-dir"
                raise os_error(message, err, cache_dir) from err
        else:
            log.info("using decoded images from %s", pixels_path)
            _touch(index_path)  # its last use: the cache keeps what was used lately
    if not in_job_sandbox(cache_dir):  # a job's scratch folder goes with the job
        prune_cache(cache_dir, keep=key)
    pixels = np.load(pixels_path, mmap_mode="r")
    bad = {name for name, _ in skipped}
    for name, reason in skipped:
        log.warning("skipping %s: %s", source.display(name), reason)
    keep = [i for i, image in enumerate(images) if image.file.name not in bad]
    if not keep:
        raise DataError(
            f"{source.path}: none of the {len(images)} training files is a readable image"
        )
    labels = np.array([images[i].label for i in keep], dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise DataError(f"{source.path}: the readable training images are all of one class")
    return DecodedImages(
        pixels=pixels,
        rows=np.array(keep, dtype=np.int64),
        labels=labels,
        names=[images[i].file.name for i in keep],
        skipped=skipped,
    )


CACHE_LIMIT_BYTES = 20 * 1024**3  # the cache outside a job: at most this much, ...
CACHE_MAX_AGE_S = 30 * 24 * 3600  # ... and nothing unused for longer than this
_IN_USE_S = 3600  # an entry used this recently may be open in another process: kept


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def prune_cache(cache_dir: Path, keep: str | None = None, limit: int = CACHE_LIMIT_BYTES,
                max_age: float = CACHE_MAX_AGE_S, now: float | None = None) -> list[str]:  # fmt: skip
    """Remove decoded-image caches unused for ``max_age`` seconds, then the least recently
    used ones until the folder holds at most ``limit`` bytes (``CONDORML_CACHE_GB`` overrides
    it). Entries used within the last hour, and ``keep``, stay: another process may read them.

    Returns
    -------
    list of str
        The keys removed.
    """
    env = os.environ.get("CONDORML_CACHE_GB")
    with contextlib.suppress(ValueError):
        limit = int(float(env) * 1024**3) if env else limit
    now = time.time() if now is None else now
    entries = []
    for index in Path(cache_dir).glob("*.json"):
        key = index.stem
        try:
            used = index.stat().st_mtime
            size = sum(p.stat().st_size for p in (index, index.with_suffix(".npy")) if p.exists())
        except OSError:
            continue
        entries.append((used, key, size))
    total = sum(size for _, _, size in entries)
    removed = []
    for used, key, size in sorted(entries):  # least recently used first
        if key == keep or now - used < _IN_USE_S:
            continue
        if now - used < max_age and total <= limit:
            break
        for suffix in (".npy", ".json", ".lock"):
            with contextlib.suppress(OSError):
                (Path(cache_dir) / f"{key}{suffix}").unlink()
        total -= size
        removed.append(key)
    if removed:
        log.info(
            "removed %d decoded-image cache(s) from %s (unused longest)", len(removed), cache_dir
        )
    return removed


def _read_index(index_path: Path) -> list[tuple[str, str]] | None:
    try:
        return [tuple(item) for item in json.loads(index_path.read_text())["skipped"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build(
    source: ImageSource | TorchvisionSource,
    images: list[LabelledImage],
    size: int,
    pixels_path: Path,
    index_path: Path,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[tuple[str, str]]:
    tmp = pixels_path.with_name(f"{TMP_PREFIX}{pixels_path.name}.{os.getpid()}.npy")
    shape = (len(images), size, size, 3)
    pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    names = [image.file.name for image in images]
    chunks = [(start, names[start : start + _CHUNK]) for start in range(0, len(names), _CHUNK)]
    log.info("decoding %d images at %dx%d with %d thread(s)", len(names), size, size, workers)

    def decode_chunk(chunk: tuple[int, list[str]]) -> tuple[list[tuple[str, str]], int]:
        start, chunk_names = chunk
        failures = []
        for offset, name in enumerate(chunk_names):
            # A damaged archive or a failing disk raises TransientDataError from read(): the whole
            # build fails, rather than caching a sound image as undecodable for good.
            try:
                pixels[start + offset] = decode_resized(source.read(name), size)
            except DECODE_ERRORS as err:
                failures.append((name, describe_decode_error(err)))
        return failures, len(chunk_names)

    skipped: list[tuple[str, str]] = []
    done = 0
    try:
        # Threads, not processes: Pillow releases the GIL while it decodes and resizes, so
        # threads scale with the cores, and nothing has to be pickled or re-imported.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for failures, count in pool.map(decode_chunk, chunks):
                skipped.extend(failures)
                done += count
                if progress:
                    progress(done, len(names))
        pixels.flush()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        atomic_write_text(index_path, json.dumps({"shape": shape, "skipped": sorted(skipped)}))
        os.replace(tmp, pixels_path)
    finally:
        tmp.unlink(missing_ok=True)
    return sorted(skipped)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock so that jobs sharing a cache folder decode the data only once."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
