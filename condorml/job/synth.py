"""A synthetic, learnable image set of N shape classes, for tests, demos and benchmarks.

Each class is a shape family, optionally drawn in outline (:data:`SHAPES`): triangles,
ellipses, squares, crosses, stars and more, in random colours, sizes and places on a noisy
gradient with a few distractor rectangles, then blurred and JPEG-compressed at a random size
around the requested one. Colour carries no signal, so a model has to learn shape, and a small
CNN learns it in a few epochs at 32-64 pixels. Every image depends only on (seed, split, class,
index), so a set is reproducible and growing ``--n-train`` keeps the images already made (under
the same names, but in the csv layout, which numbers them across classes).

Two classes are cat (triangles) and dog (ellipses), by default in the Kaggle layout
(``train/cat.K.jpg``) with ``test_labels.csv`` as ``fileid,is_dog``: byte for byte the set
condorml always made. Other layouts (:data:`LAYOUTS`) are class folders (``train/<class>/K.jpg``)
and a CSV of labels (``train/K.jpg`` with ``train/labels.csv``), as
:mod:`condorml.job.layouts` reads them; a test set is flat (``test/K.jpg``) or in class folders
(``test/<class>/K.jpg``), its ids unique numbers either way, its labels in ``test_labels.csv``.

A set is built in a hidden folder beside its destination and renamed into place when complete:
an interrupted ``data synth`` leaves no half-written set, and it never mixes its images with
those of an earlier set (a folder that already holds files is refused unless ``replace``).
"""

from __future__ import annotations

import io
import math
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

# Seeds: [seed, code, ...]. Test classes (balanced sets) use their own code: a seed list that is
# another's with a 0 appended would give the same numbers (SeedSequence pads with zeros).
_SPLIT_CODES = {"train": 1, "test": 2, "test classes": 3}
LABELS_CSV = "test_labels.csv"
TRAIN_LABELS_CSV = "labels.csv"  # layout "csv": train/labels.csv (condorml.job.layouts.LABELS_CSV)
# Everything a set holds: a folder with only these (and our temporaries) may be replaced.
SET_ENTRIES = frozenset({"train", "test", LABELS_CSV, "train.zip", "test.zip"})

LAYOUTS = ("auto", "kaggle", "folders", "csv")
TEST_LAYOUTS = ("flat", "folders")
CAT_DOG = ("cat", "dog")  # the two-class set: triangle = cat, ellipse = dog
# Shape families, the most distinct first: a set of N classes draws the first N of SHAPES.
FAMILIES = (
    "triangle", "ellipse", "square", "cross", "star",
    "diamond", "arrow", "crescent", "heart", "hourglass",
)  # fmt: skip
SHAPES = FAMILIES + tuple(f"{family}_outline" for family in FAMILIES)
MAX_CLASSES = len(SHAPES)


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`make_synthetic_dataset` wrote.

    Attributes
    ----------
    out : Path
        The set's folder.
    classes : tuple of str
        The class names, in the order of :data:`SHAPES` (cat, dog for two classes).
    train_counts : tuple of int
        Training images of each class.
    n_test : int
        Test images.
    zips : tuple of Path
        ``train.zip`` and ``test.zip``, if made.
    layout, test_layout : str
        The training set's layout (``kaggle``, ``folders`` or ``csv``) and the test set's
        (``flat`` or ``folders``).
    """

    out: Path
    classes: tuple[str, ...]
    train_counts: tuple[int, ...]
    n_test: int
    zips: tuple[Path, ...]
    layout: str
    test_layout: str

    @property
    def n_train(self) -> int:
        """Training images in all."""
        return sum(self.train_counts)

    @property
    def n_cats(self) -> int:
        """Training images of the first class (cats, in a cat/dog set)."""
        return self.train_counts[0]

    @property
    def n_dogs(self) -> int:
        """Training images of the second class (dogs, in a cat/dog set)."""
        return self.train_counts[1]


def class_names(classes: int) -> tuple[str, ...]:
    """The names of a synthetic set of ``classes`` classes: cat, dog for two, else the shapes.

    Raises
    ------
    CondormlError
        If ``classes`` is below 2 or above :data:`MAX_CLASSES`.

    Example
    -------
    >>> class_names(2), class_names(3)
    (('cat', 'dog'), ('triangle', 'ellipse', 'square'))
    """
    if classes < 2 or classes > MAX_CLASSES:
        raise CondormlError(
            f"--classes {classes}: condorml data synth makes 2 to {MAX_CLASSES} classes"
        )
    return CAT_DOG if classes == 2 else SHAPES[:classes]


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


Polygon = tuple[tuple[float, float], ...]


def _around(radii: list[float]) -> Polygon:
    """Points at ``radii`` from the centre, evenly spaced in angle, the first straight up."""
    step = 2 * math.pi / len(radii)
    return tuple(
        (rad * math.cos(-math.pi / 2 + i * step), rad * math.sin(-math.pi / 2 + i * step))
        for i, rad in enumerate(radii)
    )


def _crescent() -> Polygon:
    """A disc of radius 1 less a disc of radius 0.8 moved 0.5 right: opening to the right."""
    inner, shift = 0.8, 0.5
    x = (1 - inner * inner + shift * shift) / (2 * shift)  # where the two circles cross
    y = math.sqrt(1 - x * x)
    outer_from, inner_from = math.atan2(y, x), math.atan2(y, x - shift)
    outer = np.linspace(outer_from, 2 * math.pi - outer_from, 24)
    back = np.linspace(2 * math.pi - inner_from, inner_from, 16)
    return tuple((math.cos(t), math.sin(t)) for t in outer) + tuple(
        (shift + inner * math.cos(t), inner * math.sin(t)) for t in back
    )


def _heart() -> Polygon:
    """The classic heart curve (x = 16 sin^3 t, ...), scaled to about 2 across."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return tuple(zip(x / 16, -(y + 2.5) / 16, strict=True))  # lobes up, centred, about 2 wide


_PLUS: Polygon = (
    (-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3),
    (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3),
)  # fmt: skip
# Each family as polygons around (0, 0), y down, about 2 across: drawn scaled by the radius.
_POLYGONS: dict[str, tuple[Polygon, ...]] = {
    "triangle": (((0, -1), (-1, 0.8), (1, 0.8)),),
    "square": (((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)),),
    "cross": (_PLUS,),
    "star": (_around([1, 0.42] * 5),),
    "diamond": (((0, -1), (0.62, 0), (0, 1), (-0.62, 0)),),
    "arrow": (
        ((-1, -0.22), (0.1, -0.22), (0.1, -0.65), (1, 0), (0.1, 0.65), (0.1, 0.22), (-1, 0.22)),
    ),
    "crescent": (_crescent(),),
    "heart": (_heart(),),
    "hourglass": (((-0.7, -1), (0.7, -1), (0, 0)), ((0, 0), (0.7, 1), (-0.7, 1))),
}


def _draw(rng: np.random.Generator, label: int, size: tuple[int, int], jitter: bool) -> Image.Image:
    """One image of class ``label`` (the shape ``SHAPES[label]``)."""
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
    for _ in range(int(rng.integers(0, 3))):  # distractors: small rectangles, any class
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.2) * short, rng.uniform(0.05, 0.2) * short
        draw.rectangle([x, y, x + w, y + h], fill=_colour(rng))
    r = rng.uniform(0.2, 0.35) * short
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    family, outline = SHAPES[label].removesuffix("_outline"), SHAPES[label].endswith("_outline")
    # outlines about a fifth of the radius wide: still seen after resizing to 32 pixels
    line = max(2, round(r * 0.22)) if outline else 0
    if family == "ellipse":  # its own draw call, as the cat/dog set has always drawn it
        ry = r * rng.uniform(0.6, 1.0)
        box = [cx - r, cy - ry, cx + r, cy + ry]
        if line:
            draw.ellipse(box, outline=_colour(rng), width=line)
        else:
            draw.ellipse(box, fill=_colour(rng))
    else:
        colour = _colour(rng)
        for unit in _POLYGONS[family]:
            polygon = [(cx + r * x, cy + r * y) for x, y in unit]
            if line:
                draw.polygon(polygon, outline=colour, width=line)
            else:
                draw.polygon(polygon, fill=colour)
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
    classes: int = 2,
    layout: str = "auto",
    test_layout: str = "flat",
) -> SynthSummary:
    """Write a training set in ``out/train``, a test set in ``out/test`` and its labels in
    ``out/test_labels.csv``; by default ``train/{cat,dog}.K.jpg`` and ``test/K.jpg``.

    Parameters
    ----------
    out : Path
        Output folder (created).
    n_train : int
        Training images, split over the classes as evenly as possible (the later classes get
        one more), numbered from 0 in each class: half cats (``cat.0`` ...) and half dogs
        (``dog.0`` ...) by default.
    n_test : int
        Test images ``1.jpg`` ... ``N.jpg`` (Kaggle numbers them from 1; unique across class
        folders too); their labels go to ``test_labels.csv``: ``fileid,is_dog`` for cat/dog,
        else ``fileid,label`` (class names). Two classes in a flat test set are drawn at random
        for each image (as always); otherwise each run of ``classes`` ids holds every class once,
        so that every class is tested.
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
    classes : int
        How many classes, 2 to :data:`MAX_CLASSES` (names: :func:`class_names`).
    layout : str
        The training set's layout (:data:`LAYOUTS`): ``kaggle`` (``train/cat.K.jpg``; two
        classes only), ``folders`` (``train/<class>/K.jpg``), ``csv`` (``train/K.jpg`` with
        ``train/labels.csv``: ``path,label``, numbered across classes), or ``auto``: kaggle for
        two classes, folders otherwise.
    test_layout : str
        ``flat`` (``test/K.jpg``) or ``folders`` (``test/<class>/K.jpg``: every class needs a
        test image).

    Returns
    -------
    SynthSummary
        What was written.

    Raises
    ------
    CondormlError
        If a count, the class count or a layout is out of range (one line naming the option),
        ``out`` is a file, under a file or not writable, or holds files (see ``replace``).

    Example
    -------
    >>> make_synthetic_dataset(Path("data/synth"), n_train=20, n_test=5)  # doctest: +SKIP
    >>> make_synthetic_dataset(Path("data/shapes"), classes=10, layout="csv")  # doctest: +SKIP
    """
    names = class_names(classes)
    layout = _check_layouts(classes, layout, test_layout)
    if n_train < classes:
        wanted = "one cat, one dog" if classes == 2 else f"one per class, --classes {classes}"
        raise CondormlError(f"--n-train {n_train}: need at least {classes} images ({wanted})")
    if n_test < 0:
        raise CondormlError(f"--n-test {n_test}: must be 0 or more")
    if test_layout == "folders" and 0 < n_test < classes:
        raise CondormlError(
            f"--n-test {n_test}: a test set in class folders needs an image of every class; "
            f"give at least {classes} (--classes {classes}), or --test-layout flat"
        )
    out = Path(out)
    existing = _existing_entries(out, replace)
    build = _new_build_folder(out)
    plan = _Plan(names, layout, test_layout, n_train, n_test, seed, size, jitter)
    try:
        counts = _write_set(build, plan)
        zips = (
            (_zip_folder(build / "train", build / "train.zip"),
             _zip_folder(build / "test", build / "test.zip"))
            if make_zips else ()
        )  # fmt: skip
        _publish(build, out, existing)
    except BaseException as err:
        shutil.rmtree(build, ignore_errors=True)
        if isinstance(err, OSError):  # a full disk, a folder that went away
            raise CondormlError(f"{out}: cannot write the data set ({err.strerror})") from None
        raise
    return SynthSummary(
        out, names, counts, n_test, tuple(out / path.name for path in zips), layout, test_layout
    )


def _check_layouts(classes: int, layout: str, test_layout: str) -> str:
    """The training layout ``layout`` stands for (``auto`` resolved), refusing what cannot be."""
    if layout not in LAYOUTS:
        raise CondormlError(f"--layout {layout}: choose one of {', '.join(LAYOUTS)}")
    if test_layout not in TEST_LAYOUTS:
        raise CondormlError(f"--test-layout {test_layout}: choose one of {', '.join(TEST_LAYOUTS)}")
    if layout == "auto":
        return "kaggle" if classes == 2 else "folders"
    if layout == "kaggle" and classes != 2:
        raise CondormlError(
            f"--layout kaggle: Kaggle names (cat.K.jpg, dog.K.jpg) have two classes, not "
            f"--classes {classes}; use --layout folders or csv"
        )
    return layout


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


@dataclass(frozen=True)
class _Plan:
    """What :func:`_write_set` writes."""

    names: tuple[str, ...]
    layout: str
    test_layout: str
    n_train: int
    n_test: int
    seed: int
    size: tuple[int, int]
    jitter: bool


def _write_set(root: Path, plan: _Plan) -> tuple[int, ...]:
    """Write the images and labels into ``root``; return the training images of each class."""
    n_classes = len(plan.names)
    counts = tuple(
        plan.n_train // n_classes + (label >= n_classes - plan.n_train % n_classes)
        for label in range(n_classes)
    )
    train_dir, test_dir = root / "train", root / "test"
    train_dir.mkdir()
    test_dir.mkdir()
    # (index in its class, class): the csv layout numbers them in this order, classes interleaved
    order = sorted((k, label) for label in range(n_classes) for k in range(counts[label]))
    rows = ["path,label"]
    for number, (k, label) in enumerate(order):
        rng = np.random.default_rng([plan.seed, _SPLIT_CODES["train"], label, k])
        data = _jpeg(_draw(rng, label, plan.size, plan.jitter), rng)
        name = plan.names[label]
        if plan.layout == "kaggle":
            path = train_dir / f"{name}.{k}.jpg"
        elif plan.layout == "folders":
            path = train_dir / name / f"{k}.jpg"
        else:
            path = train_dir / f"{number}.jpg"
            rows.append(f"{path.name},{name}")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    if plan.layout == "csv":
        atomic_write_text(train_dir / TRAIN_LABELS_CSV, "\n".join(rows) + "\n")
    cat_dog = plan.names == CAT_DOG
    rows = ["fileid,is_dog" if cat_dog else "fileid,label"]
    drawn = cat_dog and plan.test_layout == "flat"  # the classes of condorml's first sets
    for k in range(1, plan.n_test + 1):
        rng = np.random.default_rng([plan.seed, _SPLIT_CODES["test"], k])
        label = int(rng.integers(2)) if drawn else _balanced_class(plan.seed, k, n_classes)
        data = _jpeg(_draw(rng, label, plan.size, plan.jitter), rng)
        folder = test_dir / plan.names[label] if plan.test_layout == "folders" else test_dir
        folder.mkdir(exist_ok=True)
        (folder / f"{k}.jpg").write_bytes(data)
        rows.append(f"{k},{label if cat_dog else plan.names[label]}")
    atomic_write_text(root / LABELS_CSV, "\n".join(rows) + "\n")
    return counts


def _balanced_class(seed: int, k: int, n_classes: int) -> int:
    """The class of test image ``k`` (from 1): ids 1..N hold each class once, in an order of the
    seed's, and so do N+1..2N, and so on."""
    block, position = divmod(k - 1, n_classes)
    rng = np.random.default_rng([seed, _SPLIT_CODES["test classes"], block])
    return int(rng.permutation(n_classes)[position])


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
    """Zip ``folder`` as ``<folder name>/<path below it>`` entries, class folders included (JPEGs
    are stored, not recompressed)."""
    files = sorted(
        (path.relative_to(folder).as_posix(), path) for path in folder.rglob("*") if path.is_file()
    )
    with (
        atomic_write(target, "wb") as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive,
    ):
        for name, path in files:
            archive.write(path, f"{folder.name}/{name}")
    return target
