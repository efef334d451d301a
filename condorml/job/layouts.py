"""Which image is which class: the layouts of an image set, for training and for test sets.

A data path (a folder or a ``.zip`` of one, read in place) is recognised as one of:

* **torchvision's dataset files** (MNIST, FashionMNIST, CIFAR-10, CIFAR-100), read by
  torchvision from a local root (:mod:`condorml.job.torchvision_sets`); training reads the
  training split, a test set the test split.
* **a CSV of labels**, ``path,label`` (a class name, or an index when every label is a whole
  number): a ``labels.csv`` inside the data, or one given beside it (``--labels-csv``). Paths
  are relative to the CSV's folder; for a CSV beside a zip, the zip's entries count as unpacked
  beside it, or as the folder the zip is named after (``train.zip`` as ``train/``).
* **class folders** (torchvision's ``ImageFolder``): ``<root>/<class>/<image>``, classes in the
  order ``ImageFolder.find_classes`` gives them (sorted names), hidden folders skipped.
* **Kaggle cat/dog names**: ``<root>/cat.N.jpg`` and ``<root>/dog.N.jpg``, classes cat, dog; the
  label comes from the file name only, never from the folders above it.
* (test sets only) **flat**: images in one folder, without labels; a labels file scores them.

The root is the folder named ``train`` (for training; ``test`` for a test set) wherever it is,
else the top of the data, descending through a single folder that holds everything.

Image ids (a test set's ``fileid``): the file name without its extension, or, where two files
share a name, the path below the root without extension (``cat/1``); a torchvision image's id is
its index in the split. The class list and the labels are part of a training set's identity
(:meth:`ImageSet.fingerprint`): relabelled data is new data.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from condorml.errors import DataError
from condorml.job.data import ImageFile, ImageSource, LabelledImage
from condorml.job.torchvision_sets import TORCHVISION_SETS, TorchvisionSource, find_torchvision_set

KAGGLE_CLASSES = ("cat", "dog")
LABELS_CSV = "labels.csv"  # the name of a labels CSV inside the data
SPLIT_FOLDERS = {"train": "train", "test": "test"}
# A class name becomes a column of probs.csv and a word in messages: no control characters.
_RESERVED_CLASS_NAMES = frozenset({"fileid", "predicted", "prob_std", "n_models"})


@dataclass
class ImageSet:
    """The images of a training or test set, in order, with their labels where the layout gives
    them.

    Attributes
    ----------
    source : ImageSource or TorchvisionSource
        Where the images are read from (close it when done).
    files : list of ImageFile
        The images: name order (training), or id order (a test set, :func:`prediction_set`).
    names : list of str
        Each image's name below the layout's root (what the identity hashes).
    labels : list of int or None
        Each image's class: an index into ``classes`` (or, with ``indexed``, into the model's
        classes); None for a flat test set.
    classes : tuple of str or None
        The class list the layout gives (None: unlabelled, or labels given as indices only).
    layout : str
        ``kaggle``, ``folders``, ``csv``, ``flat`` or a torchvision dataset's name.
    ids : list of str
        Each image's id.
    indexed : bool
        The labels are class indices without names (a CSV of whole-number labels).
    """

    source: ImageSource | TorchvisionSource
    files: list[ImageFile]
    names: list[str]
    labels: list[int] | None
    classes: tuple[str, ...] | None
    layout: str
    ids: list[str] = field(default_factory=list)
    indexed: bool = False
    ignored: int = 0  # files below the root that are not images

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def labelled_images(self) -> list[LabelledImage]:
        """(file, label) of every image (a training set's)."""
        assert self.labels is not None
        return [LabelledImage(f, y) for f, y in zip(self.files, self.labels, strict=True)]

    def fingerprint(self) -> str:
        """A short hash of the images, their contents and their classes: whether a checkpoint
        belongs to this data.

        Each image counts by its name (below the root; a Kaggle image by its file name alone),
        size, content (its CRC-32: a zip's own, computed for a folder's files; a dataset file's
        pixels) and class, so a folder and a zip of the same set agree, the set moved to
        another folder too, while an image replaced by another of the same size, or relabelled,
        is other data.
        """
        digest = hashlib.sha256()
        classes = self.classes or ()
        digest.update(f"{self.layout}\n{json.dumps(list(classes))}\n".encode())
        labels = self.labels or [-1] * len(self.files)
        entries = [
            (PurePosixPath(name).name if self.layout == "kaggle" else name, f, label)
            for name, f, label in zip(self.names, self.files, labels, strict=True)
        ]
        for name, f, label in sorted(entries, key=lambda entry: entry[0]):
            shown = classes[label] if 0 <= label < len(classes) else str(label)
            content = f.digest or self.source.content_crc(f)
            digest.update(f"{name}\0{f.size}\0{content}\0{shown}\n".encode())
        return digest.hexdigest()[:16]

    def legacy_fingerprint(self) -> str | None:
        """The hash condorml gave Kaggle cat/dog data before it covered contents (file names
        and sizes): a checkpoint that recorded it still resumes; None for other layouts."""
        if self.layout != "kaggle":
            return None
        digest = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: PurePosixPath(f.name).name):
            digest.update(f"{PurePosixPath(f.name).name}\0{f.size}\n".encode())
        return digest.hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        assert self.labels is not None and self.classes is not None
        found = dict.fromkeys(self.classes, 0)
        for label in self.labels:
            found[self.classes[label]] += 1
        return found


def open_images(
    path: Path, split: str, cache_dir: Path | None = None
) -> ImageSource | TorchvisionSource:
    """The images at ``path``: its files, or the ``split`` of the torchvision dataset in it."""
    source = ImageSource(Path(path))
    found = find_torchvision_set([f.name for f in source.files()])
    if found is None:
        return source
    from condorml.job.imagecache import default_cache_dir

    try:
        return TorchvisionSource(source, *found, split, Path(cache_dir or default_cache_dir()))
    finally:
        source.close()


def training_set(
    path: Path, labels_csv: Path | None = None, cache_dir: Path | None = None
) -> ImageSet:
    """The labelled training images at ``path`` (see the module's layouts).

    Raises
    ------
    DataError
        If the layout cannot be told, a label or path is missing, a class folder holds no image,
        fewer than two classes have images, or there is no image at all; one line naming the
        file (and the line of a CSV).
    """
    source = open_images(path, "train", cache_dir)
    try:
        images = _read(source, "train", labels_csv)
        _check_training_set(images)
    except BaseException:
        source.close()
        raise
    return images


def prediction_set(
    path: Path, labels_csv: Path | None = None, cache_dir: Path | None = None
) -> ImageSet:
    """The test images at ``path``, in id order, labelled where the layout gives labels.

    Raises
    ------
    DataError
        If there is no image, two images share an id, or a labelled layout is broken.
    """
    from condorml.results.predictions import sort_ids

    source = open_images(path, "test", cache_dir)
    try:
        images = _read(source, "test", labels_csv)
        if not images.files:
            from condorml.job.data import IMAGE_SUFFIXES

            raise DataError(
                f"{path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        order = _id_order(images.ids, sort_ids)
        images.files = [images.files[i] for i in order]
        images.names = [images.names[i] for i in order]
        images.ids = [images.ids[i] for i in order]
        if images.labels is not None:
            images.labels = [images.labels[i] for i in order]
    except BaseException:
        source.close()
        raise
    return images


def _id_order(ids: list[str], sort_ids) -> list[int]:
    position = {fileid: i for i, fileid in enumerate(ids)}
    return [position[fileid] for fileid in sort_ids(ids)]


def _read(source: ImageSource | TorchvisionSource, split: str, labels_csv: Path | None) -> ImageSet:
    if isinstance(source, TorchvisionSource):
        files = source.files()
        names = [f.name for f in files]
        return ImageSet(
            source, files, names, source.labels, source.classes, source.kind.name, names
        )
    files = source.files()
    if labels_csv is not None:
        return _csv_beside(source, files, Path(labels_csv))
    inner = _inner_labels_csv(files, split)
    if inner is not None:
        return _csv_inside(source, files, inner, split)
    root, below = _layout_root(files, split)
    images = [(f, rel) for f, rel in below if f.is_image]
    found = _by_layout(source, split, root, images)
    found.ignored = len(below) - len(images)
    return found


def _by_layout(source: ImageSource, split: str, root: PurePosixPath,
               images: list[tuple[ImageFile, PurePosixPath]]) -> ImageSet:  # fmt: skip
    """Class folders, Kaggle names, or (a test set) flat, from the images below the root."""
    flat = [(f, rel) for f, rel in images if len(rel.parts) == 1]
    nested = [(f, rel) for f, rel in images if len(rel.parts) > 1]
    if flat and nested:
        raise DataError(
            f"{source.display(flat[0][0].name)}: images both directly in {_shown(root)} and in class folders "
            f"(e.g. {source.display(nested[0][0].name)}); keep every image in a class folder"
        )
    if nested:
        return _class_folders(source, root, nested)
    kaggle = [_kaggle_label(f.name) for f, _ in flat]
    if flat and all(label is not None for label in kaggle):
        names = [str(rel) for _, rel in flat]
        return ImageSet(source, [f for f, _ in flat], names, kaggle, KAGGLE_CLASSES, "kaggle",  # type: ignore[arg-type]
                        _unique_ids(source, flat, flat=split == "test"))  # fmt: skip
    if split == "test":
        return ImageSet(source, [f for f, _ in flat], [str(rel) for _, rel in flat], None, None,
                        "flat", _unique_ids(source, flat, flat=True))  # fmt: skip
    if not flat:
        raise DataError(
            f"{source.path}: no training images found; expected class folders ({_shown(root, 'train')}/<class>/<image>), "
            f"a {LABELS_CSV}, or Kaggle names cat.N.jpg / dog.N.jpg (see data/README.md)"
        )
    unknown = [f for (f, _), label in zip(flat, kaggle, strict=True) if label is None]
    raise DataError(
        f"{source.display(unknown[0].name)}: cannot tell its class ({len(unknown)} such image(s)); "
        f"put images in class folders ({_shown(root, 'train')}/<class>/<image>), list them in a {LABELS_CSV} (path,label), "
        "or name them cat.N.jpg / dog.N.jpg"
    )


def _shown(root: PurePosixPath, default: str = "the top folder") -> str:
    return str(root) if str(root) not in ("", ".") else default


def _layout_root(
    files: list[ImageFile], split: str
) -> tuple[PurePosixPath, list[tuple[ImageFile, PurePosixPath]]]:
    """The layout's root folder, and each file below it with its path from there.

    The root is the first folder named like the split (``train``/``test``) in a file's path;
    without one, the top, descending through a single folder that holds every image in
    subfolders of its own (``mydata/cat/1.jpg`` -> root ``mydata``).
    """
    folder = SPLIT_FOLDERS[split]
    under = []
    for f in files:
        parts = PurePosixPath(f.name).parts
        if folder in parts[:-1]:
            at = parts.index(folder)
            under.append((f, PurePosixPath(*parts[: at + 1]), PurePosixPath(*parts[at + 1 :])))
    if under:
        roots = {root for _, root, _ in under}
        root = min(roots, key=lambda r: (len(r.parts), str(r)))
        return root, [(f, rel) for f, r, rel in under if r == root]
    root = PurePosixPath()
    paths = [(f, PurePosixPath(f.name)) for f in files]
    while True:
        tops = {rel.parts[0] for _, rel in paths if rel.parts}
        images = [rel for f, rel in paths if f.is_image]
        if len(tops) != 1 or not images or any(len(rel.parts) < 3 for rel in images):
            return root, paths
        top = next(iter(tops))
        root = root / top
        paths = [(f, PurePosixPath(*rel.parts[1:])) for f, rel in paths if len(rel.parts) > 1]


def _class_folders(source: ImageSource, root: PurePosixPath,
                   nested: list[tuple[ImageFile, PurePosixPath]]) -> ImageSet:  # fmt: skip
    classes = tuple(sorted({rel.parts[0] for _, rel in nested}))
    prefix = "" if str(root) in ("", ".") else f"{root}/"
    for folder in sorted(source.folders()):
        if folder.startswith(prefix) and len(PurePosixPath(folder[len(prefix) :]).parts) == 1:
            name = folder[len(prefix) :]
            if name not in classes:
                raise DataError(
                    f"{source.display(folder)}: a class folder with no images; add images or remove the folder"
                )
    _check_class_names(classes, str(source.path))
    index = {name: i for i, name in enumerate(classes)}
    files = [f for f, _ in nested]
    names = [str(rel) for _, rel in nested]
    labels = [index[rel.parts[0]] for _, rel in nested]
    return ImageSet(source, files, names, labels, classes, "folders", _unique_ids(source, nested))


def _unique_ids(source: ImageSource, entries: list[tuple[ImageFile, PurePosixPath]],
                flat: bool = False) -> list[str]:  # fmt: skip
    """File names without extension, or, where two share one, paths below the root without it;
    in a flat set, two files of one id are an error (their predictions could not be told apart)."""
    stems = [rel.stem for _, rel in entries]
    if len(set(stems)) == len(stems):
        return stems
    if flat:
        seen: dict[str, ImageFile] = {}
        for (f, _), stem in zip(entries, stems, strict=True):
            if stem in seen:
                raise DataError(
                    f"{source.path}: {seen[stem].name} and {f.name} both have the id {stem}"
                )
            seen[stem] = f
    return [str(rel.with_suffix("")) for _, rel in entries]


def _kaggle_label(name: str) -> int | None:
    """The label a Kaggle file name carries: 0 for ``cat.*``, 1 for ``dog.*``, else None.

    Only the file name counts, never the folders above it.

    Example
    -------
    >>> _kaggle_label("/home/concat/dog.1.jpg")
    1
    """
    prefix, dot, _ = PurePosixPath(name).name.partition(".")
    return {"cat": 0, "dog": 1}.get(prefix.lower()) if dot else None


# --- CSV labels --------------------------------------------------------------------------------


def _inner_labels_csv(files: list[ImageFile], split: str) -> ImageFile | None:
    """A ``labels.csv`` at the top of the data or in its split folder (the shallowest)."""
    found = [
        f for f in files
        if PurePosixPath(f.name).name == LABELS_CSV
        and (len(PurePosixPath(f.name).parts) == 1 or PurePosixPath(f.name).parent.name == SPLIT_FOLDERS[split])
    ]  # fmt: skip
    return min(found, key=lambda f: (len(PurePosixPath(f.name).parts), f.name)) if found else None


def _csv_inside(source: ImageSource, files: list[ImageFile], labels: ImageFile,
                split: str) -> ImageSet:  # fmt: skip
    """A ``labels.csv`` inside the data. One at the top that lists images of both a ``train``
    and a ``test`` folder labels each split with its own rows."""
    where = source.display(labels.name)
    folder = PurePosixPath(labels.name).parent
    rows = _csv_rows(source.read(labels.name), where)
    by_name = {f.name: f for f in files}
    if str(folder) == ".":

        def in_split(path: str, name: str) -> bool:
            return name in PurePosixPath(os.path.normpath(path)).parts[:-1]

        splits = {
            name for name in SPLIT_FOLDERS.values() if any(in_split(p, name) for p, _, _ in rows)
        }
        if len(splits) > 1:
            rows = [row for row in rows if in_split(row[0], SPLIT_FOLDERS[split])]

    def resolve(path: str, line: int) -> str:
        name = (
            os.path.normpath((folder / path).as_posix())
            if str(folder) != "."
            else os.path.normpath(path)
        )
        if name.startswith("../") or name == ".." or os.path.isabs(path):
            raise DataError(f"{where}: line {line}: path {path!r} leaves the data's folder")
        if name not in by_name:
            raise DataError(f"{where}: line {line}: {path} is not in {source.path}")
        return name

    return _csv_set(source, by_name, [(resolve(p, n), label, n) for p, label, n in rows], where)


def _csv_beside(source: ImageSource, files: list[ImageFile], labels: Path) -> ImageSet:
    where = str(labels)
    try:
        data = labels.read_bytes()
    except FileNotFoundError:
        raise DataError(f"--labels-csv {labels}: no such file") from None
    except OSError as err:
        raise DataError(f"--labels-csv {labels}: cannot read it ({err.strerror or err})") from None
    rows = _csv_rows(data, where)
    by_name = {f.name: f for f in files}
    csv_folder = labels.resolve().parent
    data_path = source.path.resolve()
    # where the data's names start: the folder itself; a zip's entries as unpacked beside it, or
    # as the folder it is named after (train.zip as train/)
    bases = [data_path.parent, data_path.with_suffix("")] if source.is_zip else [data_path]
    chosen: Path | None = None
    resolved = []
    for path, label, line in rows:
        candidates = [chosen] if chosen is not None else bases
        for base in candidates:
            name = os.path.relpath(os.path.normpath(csv_folder / path), base).replace(os.sep, "/")
            if name in by_name:
                chosen = base
                resolved.append((name, label, line))
                break
        else:
            raise DataError(f"{where}: line {line}: {path} is not in {source.path}")
    return _csv_set(source, by_name, resolved, where)


def _csv_rows(data: bytes, where: str) -> list[tuple[str, str, int]]:
    """(path, label, line number) of every row of a ``path,label`` CSV."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{where}: not a UTF-8 text file") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
        raise DataError(
            f"{where}: expected the columns path,label (got {','.join(reader.fieldnames or [])})"
        )
    rows = []
    for row in reader:
        line = reader.line_num
        path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not path:
            raise DataError(f"{where}: line {line}: no path")
        if not label:
            raise DataError(f"{where}: line {line}: {path} has no label")
        rows.append((path, label, line))
    if not rows:
        raise DataError(f"{where}: no rows: list every image as path,label")
    return rows


def _csv_set(source: ImageSource, by_name: dict[str, ImageFile],
             rows: list[tuple[str, str, int]], where: str) -> ImageSet:  # fmt: skip
    seen: dict[str, int] = {}
    for name, _, line in rows:
        if name in seen:
            raise DataError(
                f"{where}: line {line}: {name} is listed twice (also on line {seen[name]})"
            )
        seen[name] = line
    rows = sorted(rows)
    labels_text = [label for _, label, _ in rows]
    indexed = all(label.isascii() and label.isdigit() for label in labels_text)
    if indexed:
        labels = [int(label) for label in labels_text]
        classes = tuple(str(i) for i in range(max(labels) + 1))
    else:
        classes = tuple(sorted(set(labels_text)))
        _check_class_names(classes, where)
        index = {name: i for i, name in enumerate(classes)}
        labels = [index[label] for label in labels_text]
    files = [by_name[name] for name, _, _ in rows]
    entries = [(by_name[name], PurePosixPath(name)) for name, _, _ in rows]
    ids = _unique_ids(source, entries)
    return ImageSet(
        source, files, [name for name, _, _ in rows], labels, classes, "csv", ids, indexed
    )


def _check_class_names(classes: tuple[str, ...], where: str) -> None:
    for name in classes:
        if name in _RESERVED_CLASS_NAMES or not name.isprintable() or not name.strip():
            raise DataError(
                f"{where}: {name!r} cannot name a class (a column of the predictions: not {', '.join(sorted(_RESERVED_CLASS_NAMES))}, "
                "nor blank or with control characters); rename it"
            )


def _check_training_set(images: ImageSet) -> None:
    """At least two classes, each with an image."""
    where = images.source.path
    if not images.files or images.labels is None or images.classes is None:
        raise DataError(f"{where}: no training images found (see data/README.md)")
    counts = images.counts()
    empty = [name for name, n in counts.items() if n == 0]
    if empty and images.layout == "kaggle":
        only = next(name for name, n in counts.items() if n)
        raise DataError(
            f"{where}: only one class ({only}): every training image is a {only}; a cat/dog classifier needs both 'cat.*' and 'dog.*' files"
        )
    if empty:
        hint = "; labels given as indices must number the classes from 0" if images.indexed else ""
        raise DataError(
            f"{where}: class {empty[0]} has no images ({len(empty)} class(es) without images{hint})"
        )
    if len(counts) < 2:
        raise DataError(
            f"{where}: only one class ({images.classes[0]}); a classifier needs images of at least two classes"
        )


def is_torchvision_layout(layout: str) -> bool:
    """Whether ``layout`` is one of torchvision's dataset files."""
    return layout in TORCHVISION_SETS
