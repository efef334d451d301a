"""Decoding and resizing: the one preprocessing step shared by training and inference.

The CHTC example resizes every image with ``transforms.Resize((S, S))`` on a PIL image: an
antialiased bilinear resize that ignores the aspect ratio. condorml keeps those semantics with a
faster path for JPEGs: ``torchvision.io.decode_jpeg`` (libjpeg-turbo) and PyTorch's ``uint8``
antialiased bilinear kernel, which agrees with Pillow's resize to within 1 grey level and is about
twice as fast as the Pillow path. Large JPEGs, other formats, and JPEGs libjpeg-turbo rejects go
through Pillow. The result is a ``uint8`` array (S, S, 3); normalisation happens later, on whole batches.

Both paths release the GIL, so callers decode with one thread per CPU.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# Errors that mean "this file is not a usable image" rather than a bug in condorml. Decoding
# works on bytes in memory, so an OSError here is Pillow's "truncated image", never the disk:
# failures to read the bytes are ImageSource.read's (TransientError when the machine is at fault).
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)

# Bumped whenever decode_resized() changes its output, so caches built by an older version are
# not reused.
PREPROCESS_VERSION = 3

# Pillow warns about odd metadata (EXIF, ICC) of files it still decodes; the caller reports files
# it cannot decode in one line each. (A module-level filter: catch_warnings is not thread-safe.)
warnings.filterwarnings("ignore", module=r"PIL\.")


def decode_resized(data: bytes | np.ndarray, size: int) -> np.ndarray:
    """Decode image bytes to RGB and resize to ``size`` x ``size`` (aspect ratio not kept).

    ``data`` may also be decoded pixels already (an image of a torchvision dataset file), which
    are only resized (:func:`resize_pixels`).

    JPEGs smaller than twice the target go through libjpeg-turbo and PyTorch's resize; larger
    ones through Pillow's ``draft``, which lets libjpeg decode at 1/2, 1/4 or 1/8 scale (a 12 MP
    photo decodes many times faster that way); everything else through Pillow.

    Parameters
    ----------
    data : bytes or numpy.ndarray
        The encoded image (any format Pillow reads), or ``uint8`` pixels (H, W) or (H, W, 3).
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
    if isinstance(data, np.ndarray):
        return resize_pixels(data, size)
    dims = jpeg_size(data)
    if dims is not None and min(dims) < 2 * size:
        try:
            return _decode_jpeg(data, size)
        except RuntimeError:
            pass  # corrupt, truncated or exotic: Pillow decides, and names the problem
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


# Start-of-frame markers: baseline, progressive, lossless and arithmetic variants (not C4, C8, CC).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, or None if ``data`` is not a readable JPEG.

    A few microseconds: it walks the segment headers, where parsing the file with Pillow takes
    over 100 and holds the GIL, which serialises the decoding threads.

    Example
    -------
    >>> jpeg_size(b"not a jpeg") is None
    True
    """
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return (width, height) if width and height else None
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


@functools.cache
def _jpeg_decoder() -> Callable | None:
    """torchvision's libjpeg-turbo decoder, or None where torchvision no longer ships it.

    torchvision 0.29 deprecated its image decoders in favour of TorchCodec, which needs
    torch >= 2.11; condorml supports older torch, so it uses torchvision's while they exist and
    falls back to Pillow (about half as fast, same results within 1 grey level) after that.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def warm_up_decoder() -> None:
    """Import the JPEG decoder now (about a second) rather than at the first image."""
    _jpeg_decoder()


def _decode_jpeg(data: bytes, size: int) -> np.ndarray:
    import torch

    decode = _jpeg_decoder()
    if decode is None:
        raise RuntimeError("no libjpeg-turbo decoder")
    # bytearray: torch.frombuffer wants a writable buffer (the decoder only reads it)
    chw = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))  # HWC memory, CHW view
    if chw.shape[1:] != (size, size):
        chw = _resize_chw(chw, size)
    return chw.permute(1, 2, 0).numpy()


def _resize_chw(chw: Any, size: int) -> Any:
    """A (3, H, W) view of HWC ``uint8`` memory resized to ``size`` x ``size``, bilinear and
    antialiased, in the same layout.

    With a batch stride of numel, PyTorch sees an unambiguous channels-last input and keeps the
    output channels-last (pytorch#68430), so the HWC result needs no repacking: the trick
    torchvision's own resize uses.
    """
    import torch.nn.functional as F

    return F.interpolate(
        chw.as_strided((1, *chw.shape), (chw.numel(), *chw.stride())),
        size=(size, size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0]


def resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """``uint8`` pixels, grey (H, W) or RGB (H, W, 3), as RGB ``size`` x ``size``: PyTorch's
    antialiased bilinear resize, as for JPEGs.

    Raises
    ------
    ValueError
        If the array is not (H, W) or (H, W, 3) of ``uint8``.
    """
    import torch

    if (
        pixels.dtype != np.uint8
        or pixels.ndim not in (2, 3)
        or (pixels.ndim == 3 and pixels.shape[2] != 3)
    ):
        raise ValueError(
            f"pixels of shape {pixels.shape} and type {pixels.dtype}, not uint8 (H, W[, 3])"
        )
    rgb = np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels
    if rgb.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb)
    chw = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)  # HWC memory, CHW view
    return _resize_chw(chw, size).permute(1, 2, 0).numpy()


def describe_decode_error(err: BaseException) -> str:
    """A short, stable reason for a file that is not a usable image."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format Pillow can read"
    if isinstance(err, Image.DecompressionBombError):
        return "image too large (Pillow's decompression-bomb limit)"
    return f"cannot decode the image ({err})"
