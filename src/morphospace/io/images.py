"""Reading and writing single images (TIFF, PNG, JPEG, ...) with checks that name the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from morphospace.atomic import atomic_file
from morphospace.errors import InputError

__all__ = ["read_image", "write_tiff", "write_png", "check_pixels", "IMAGE_SUFFIXES"]

_TIFF_SUFFIXES = {".tif", ".tiff"}
IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".jp2", ".pgm", ".ppm",
                            ".pnm", ".tga"})
"""File name endings :func:`read_image` takes as image files when scanning folders (any case)."""


def read_image(path: str | os.PathLike, ndim: tuple[int, ...] = (2, 3), allow_constant: bool = False) -> np.ndarray:
    """Read an image file (TIFF, PNG, JPEG, BMP, ...) and check it.

    Parameters
    ----------
    path
        File to read. TIFF is read with tifffile (multi-page files give a stack), anything else
        with imageio.
    ndim
        Accepted numbers of dimensions, e.g. ``(2,)`` for a plane, ``(2, 3)`` to accept z-stacks.
    allow_constant
        Accept an image whose pixels are all equal (a label image without objects).

    Returns
    -------
    numpy.ndarray
        The pixels in their stored dtype.

    Raises
    ------
    InputError
        If the file is missing, unreadable or truncated, has another number of dimensions, holds
        NaN or infinite values, or is empty (no pixels, or every pixel the same value unless
        ``allow_constant``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            image = tifffile.imread(path)
        else:
            image = iio.imread(path)
    except Exception as exc:  # readers raise many types for corrupt files
        raise InputError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc})") from None
    image = np.asarray(image)
    if image.size == 0:
        raise InputError(f"{path}: unreadable or truncated image (no pixels decoded, shape {image.shape})")
    if image.ndim not in ndim:
        raise InputError(
            f"{path}: expected an image with {' or '.join(map(str, ndim))} dimensions, "
            f"got shape {image.shape}"
        )
    check_pixels(image, path, allow_constant)
    return image


def check_pixels(image: np.ndarray, source: str | os.PathLike, allow_constant: bool = False) -> None:
    """Raise :class:`InputError` naming ``source`` if ``image`` is empty, not finite, or constant
    (unless ``allow_constant``)."""
    if image.size == 0:
        raise InputError(f"{source}: image has no pixels (shape {image.shape})")
    if image.dtype.kind not in "uif" and image.dtype != bool:
        raise InputError(f"{source}: unsupported pixel type {image.dtype}")
    if image.dtype.kind == "f":
        bad = ~np.isfinite(image)
        if bad.any():
            raise InputError(f"{source}: {int(bad.sum())} NaN or infinite pixel(s)")
    if not allow_constant and image.min() == image.max():
        raise InputError(f"{source}: image is empty (every pixel equals {image.flat[0]})")


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 image (H, W) or (H, W, 3) as PNG through a temporary name."""
    path = Path(path)
    with atomic_file(path) as tmp:
        iio.imwrite(tmp, np.asarray(image), extension=".png")
    return path


def write_tiff(path: str | os.PathLike, image: np.ndarray, compress: bool = True) -> Path:
    """Write ``image`` as TIFF (zlib-compressed by default) through a temporary name."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, image, compression="zlib" if compress else None, photometric="minisblack")
    return path
