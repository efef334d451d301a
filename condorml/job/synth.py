"""A synthetic, learnable cat/dog image set in the Kaggle layout, for tests, demos and benchmarks.

Cats are upward triangles and dogs are ellipses, drawn in random colours, sizes and places on a
noisy gradient with a few distractor rectangles, then blurred and JPEG-compressed at a random
size around the requested one. Colour carries no signal, so a model has to learn shape, and a
small CNN learns it in a few epochs. Every image depends only on (seed, split, index), so a set
is reproducible and growing ``--n-train`` keeps the images already made.

A set is built in a hidden folder beside its destination and renamed into place when complete:
an interrupted ``data synth`` leaves no half-written set, and it never mixes its images with
those of an earlier set (a folder that already holds files is refused unless ``replace``).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from condorml.errors import CondormlError
from condorml.fileio import TMP_PREFIX, atomic_write, atomic_write_text, existing_folder_above

_SPLIT_CODES = {"train": 1, "test": 2}
LABELS_CSV = "test_labels.csv"
# Everything a set holds: a folder with only these (and our temporaries) may be replaced.
SET_ENTRIES = frozenset({"train", "test", LABELS_CSV, "train.zip", "test.zip"})


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`make_synthetic_dataset` wrote."""

    out: Path
    n_cats: int
    n_dogs: int
    n_test: int
    zips: tuple[Path, ...]


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT`` (e.g. ``500x375``).

    Raises
    ------
    CondormlError
        If the text is not two positive integers joined by ``x``.
    """
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise CondormlError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 128x96") from None
    if width < 8 or height < 8:
        raise CondormlError(f"--size {text!r}: width and height must be at least 8 pixels")
    return width, height


def _draw(rng: np.random.Generator, label: int, size: tuple[int, int], jitter: bool) -> Image.Image:
    width, height = size
    if jitter:
        width = max(8, int(width * rng.uniform(0.8, 1.2)))
        height = max(8, int(height * rng.uniform(0.8, 1.2)))
    # Background: a random two-colour gradient plus noise.
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    background = a * (1 - ramp) + b * ramp
    background = np.broadcast_to(background, (height, width, 3)) + rng.normal(
        0, 18, (height, width, 3)
    )
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(int(rng.integers(0, 3))):  # distractors: small rectangles, either class
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.2) * short, rng.uniform(0.05, 0.2) * short
        draw.rectangle([x, y, x + w, y + h], fill=_colour(rng))
    r = rng.uniform(0.2, 0.35) * short
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    if label == 1:  # dog: an ellipse
        ry = r * rng.uniform(0.6, 1.0)
        draw.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=_colour(rng))
    else:  # cat: an upward triangle
        draw.polygon(
            [(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=_colour(rng)
        )
    return image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.2)))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(80, 96)))
    return buffer.getvalue()


def make_synthetic_dataset(
    out: Path,
    n_train: int = 200,
    n_test: int = 50,
    seed: int = 0,
    size: tuple[int, int] = (128, 96),
    jitter: bool = True,
    make_zips: bool = False,
    replace: bool = False,
) -> SynthSummary:
    """Write ``out/train/{cat,dog}.K.jpg``, ``out/test/K.jpg`` and ``out/test_labels.csv``.

    Parameters
    ----------
    out : Path
        Output folder (created).
    n_train : int
        Training images, half cats (``cat.0`` ...) and half dogs (``dog.0`` ...).
    n_test : int
        Unlabelled test images ``1.jpg`` ... ``N.jpg`` (Kaggle numbers them from 1); their labels
        go to ``test_labels.csv`` (``fileid,is_dog``).
    seed : int
        Same seed, same bytes.
    size : (int, int)
        Nominal width and height of the images.
    jitter : bool
        Vary each image's size by up to 20%.
    make_zips : bool
        Also write ``out/train.zip`` and ``out/test.zip`` (what HTCondor jobs receive).
    replace : bool
        Replace the set already in ``out``, whole. Without it a folder holding anything is
        refused; with it too, a folder holding files a set does not have (``out`` is not a set).

    Raises
    ------
    CondormlError
        If there are fewer than 2 training images or a negative count, ``out`` is a file, under
        a file or not writable, or holds files (see ``replace``).

    Example
    -------
    >>> make_synthetic_dataset(Path("data/synth"), n_train=20, n_test=5)  # doctest: +SKIP
    """
    if n_train < 2:
        raise CondormlError(f"--n-train {n_train}: need at least 2 images (one cat, one dog)")
    if n_test < 0:
        raise CondormlError(f"--n-test {n_test}: must be 0 or more")
    out = Path(out)
    existing = _existing_entries(out, replace)
    build = _new_build_folder(out)
    try:
        summary = _write_set(build, n_train, n_test, seed, size, jitter, make_zips)
        _publish(build, out, existing)
    except BaseException as err:
        shutil.rmtree(build, ignore_errors=True)
        if isinstance(err, OSError):  # a full disk, a folder that went away
            raise CondormlError(f"{out}: cannot write the data set ({err.strerror})") from None
        raise
    return SynthSummary(out, *summary[:3], tuple(out / path.name for path in summary[3]))


def _existing_entries(out: Path, replace: bool) -> list[str]:
    """What ``out`` holds now (nothing if it does not exist), refusing what may not be replaced."""
    if out.exists() and not out.is_dir():
        raise CondormlError(f"{out}: is a file, not a folder; give a new or empty folder")
    existing_folder_above(out)
    if not out.is_dir():
        return []
    try:
        entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(TMP_PREFIX))
    except OSError as err:
        raise CondormlError(f"{out}: cannot list it ({err.strerror})") from None
    foreign = [name for name in entries if name not in SET_ENTRIES]
    if entries and not replace:
        raise CondormlError(
            f"{out}: already holds {', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''}; "
            "choose a new or empty folder, or --replace to replace that data set whole"
        )
    if foreign:
        raise CondormlError(
            f"{out}: holds {', '.join(foreign[:4])}, which no data set from condorml data synth "
            "has; not replacing it: choose a new or empty folder"
        )
    return entries


def _new_build_folder(out: Path) -> Path:
    """A hidden folder beside ``out`` (same file system: publishing it is a rename)."""
    parent = out.absolute().parent
    build = parent / f"{TMP_PREFIX}{out.absolute().name}.{secrets.token_hex(4)}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        build.mkdir()
    except OSError as err:
        raise CondormlError(f"{out}: cannot create it in {parent} ({err.strerror})") from None
    return build


def _write_set(
    root: Path,
    n_train: int,
    n_test: int,
    seed: int,
    size: tuple[int, int],
    jitter: bool,
    make_zips: bool,
) -> tuple[int, int, int, tuple[Path, ...]]:
    train_dir, test_dir = root / "train", root / "test"
    train_dir.mkdir()
    test_dir.mkdir()
    n_cats = n_train // 2
    for label, name, count in ((0, "cat", n_cats), (1, "dog", n_train - n_cats)):
        for k in range(count):
            rng = np.random.default_rng([seed, _SPLIT_CODES["train"], label, k])
            data = _jpeg(_draw(rng, label, size, jitter), rng)
            (train_dir / f"{name}.{k}.jpg").write_bytes(data)
    rows = ["fileid,is_dog"]
    for k in range(1, n_test + 1):
        rng = np.random.default_rng([seed, _SPLIT_CODES["test"], k])
        label = int(rng.integers(2))
        (test_dir / f"{k}.jpg").write_bytes(_jpeg(_draw(rng, label, size, jitter), rng))
        rows.append(f"{k},{label}")
    atomic_write_text(root / LABELS_CSV, "\n".join(rows) + "\n")
    zips = (
        (_zip_folder(train_dir, root / "train.zip"), _zip_folder(test_dir, root / "test.zip"))
        if make_zips
        else ()
    )
    return n_cats, n_train - n_cats, n_test, zips


def _publish(build: Path, out: Path, existing: list[str]) -> None:
    """Put the finished set at ``out``: one rename, or two when a set is replaced.

    An empty folder is filled entry by entry instead, so that it stays the same folder (its
    permissions, a shell's working directory); it held nothing that could be mixed in.
    """
    if not out.exists():
        os.rename(build, out)
    elif not existing:
        for entry in sorted(build.iterdir(), key=lambda p: p.name == LABELS_CSV):  # labels last
            os.rename(entry, out / entry.name)
        build.rmdir()
    else:
        # Between the renames `out` is briefly absent, never half old and half new; if killed
        # there, the old set is in the hidden .tmp- folder beside it.
        old = (
            out.absolute().parent / f"{TMP_PREFIX}{out.absolute().name}.old.{secrets.token_hex(4)}"
        )
        os.rename(out, old)
        os.rename(build, out)
        shutil.rmtree(old, ignore_errors=True)


def _zip_folder(folder: Path, target: Path) -> Path:
    """Zip ``folder`` as ``<folder name>/<file>`` entries (JPEGs are stored, not recompressed)."""
    with (
        atomic_write(target, "wb") as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive,
    ):
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            archive.write(path, f"{folder.name}/{path.name}")
    return target
