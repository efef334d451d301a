"""Decoding and resizing: the one preprocessing step shared by training and inference.

The CHTC example resizes every image with ``transforms.Resize((S, S))`` on a PIL image, which is
an antialiased bilinear resize that ignores the aspect ratio. condorml keeps those semantics but
lets libjpeg decode large JPEGs at a reduced scale first (``Image.draft``), which is several times
faster and keeps at least the target resolution, so the final bilinear resize still has work to
do. The result is a ``uint8`` array (S, S, 3); normalisation happens later, on whole batches, on
the device.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

# Errors that mean "this file is not a usable image" rather than a bug in condorml.
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)

# Bumped whenever decode_resized() changes its output, so caches built by an older version are
# not reused.
PREPROCESS_VERSION = 1


def decode_resized(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes to RGB and resize to ``size`` x ``size``.

    Parameters
    ----------
    data : bytes
        The encoded image (any format Pillow reads).
    size : int
        Edge length of the square output.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape (size, size, 3).

    Raises
    ------
    OSError, ValueError, PIL.UnidentifiedImageError
        If the bytes are not a decodable image (see :data:`DECODE_ERRORS`).
    """
    with warnings.catch_warnings():
        # A truncated or odd file is reported by the caller as one line, not by PIL's warnings.
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))
            rgb = image.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)


def describe_decode_error(err: BaseException) -> str:
    """A short, stable reason for a file that is not a usable image."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format Pillow can read"
    if isinstance(err, Image.DecompressionBombError):
        return "image too large (Pillow's decompression-bomb limit)"
    return f"cannot decode the image ({err})"
