"""Test images for a report's grids, found by the ids ``condorml infer`` gives them.

Ids are file names without extension, paths below the test set's root where names repeat, or a
torchvision image's index: :func:`condorml.job.layouts.prediction_set` lists them, and the
images, in the same order.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

SAMPLE_IMAGES = 16


def sample_images(
    source: Path, ids: Collection[str] | None = None, limit: int = SAMPLE_IMAGES, size: int = 128
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Up to ``limit`` test images as (id, RGB PIL image), the first ids in id order.

    Ids are those ``condorml infer`` gives the images (file names without extension, paths
    below the test set's root where names repeat, a torchvision image's index), from
    :func:`condorml.job.layouts.prediction_set`.

    Parameters
    ----------
    source : Path
        A zip or folder of test images.
    ids : collection of str, optional
        Show only these image ids (those with a prediction).

    Returns the images and notes on files that could not be read.

    Raises
    ------
    CondormlError
        If ``source`` cannot be read as a test set.
    """
    return _test_images(source, lambda found: [i for i in found if ids is None or i in ids][:limit], size)  # fmt: skip


def images_by_id(
    source: Path, ids: Sequence[str], size: int = 128
) -> tuple[list[tuple[str, Any]], list[str]]:
    """The test images of ``ids`` as (id, RGB PIL image), in the order of ``ids`` (those not in
    the test set left out); see :func:`sample_images`."""

    def choose(found: list[str]) -> list[str]:
        present = set(found)
        return [i for i in ids if i in present]

    return _test_images(source, choose, size)


def _test_images(
    source: Path, choose: Callable[[list[str]], list[str]], size: int
) -> tuple[list[tuple[str, Any]], list[str]]:
    """The images ``choose`` picks from the test set's ids (in id order), as thumbnails."""
    from condorml.job.layouts import prediction_set

    images = prediction_set(Path(source))  # DataError (a CondormlError) if unusable
    try:
        by_id = dict(zip(images.ids, images.files, strict=True))
        result, notes = [], []
        for fileid in choose(images.ids):
            name = by_id[fileid].name
            try:
                image = _rgb(images.source.read(name))
                image.thumbnail((size, size))
                result.append((fileid, image))
            except (OSError, ValueError, SyntaxError) as err:
                notes.append(f"test image {images.source.display(name)}: unreadable ({err})")
        return result, notes
    finally:
        images.source.close()


def _rgb(content: Any) -> Any:
    """A file's bytes, or a torchvision image's pixels, as an RGB PIL image."""
    from PIL import Image

    if isinstance(content, bytes):
        with Image.open(io.BytesIO(content)) as opened:
            return opened.convert("RGB")
    import numpy as np

    return Image.fromarray(np.asarray(content)).convert("RGB")
