"""Illumination (flat-field) correction from many fields of one plate and channel.

The illumination function is the pixel-wise median over fields (cells sit in different places,
so the median keeps the background and vignetting), smoothed with a wide Gaussian and scaled to
mean 1; images are divided by it.

Examples
--------
>>> import numpy as np
>>> yy, xx = np.mgrid[:64, :64]
>>> vignette = 1 - 0.3 * ((yy - 32) ** 2 + (xx - 32) ** 2) / 32**2
>>> rng = np.random.default_rng(0)
>>> fields = [100 * vignette * rng.uniform(0.9, 1.1, (64, 64)) for _ in range(10)]
>>> illum = estimate_illumination(fields, sigma=4, downsample=1)
>>> corrected = correct_illumination(fields[0], illum)
>>> bool(corrected[:8, :8].mean() / corrected[28:36, 28:36].mean() > 0.95)
True
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pydantic
from scipy import ndimage
from skimage.transform import downscale_local_mean, resize

from morphospace.config import Config

__all__ = ["IlluminationConfig", "estimate_illumination", "correct_illumination", "downsampled_field",
           "illumination_from_downsampled"]


class IlluminationConfig(Config):
    """Per plate and channel flat-field correction."""

    enabled: bool = True
    sigma: float = pydantic.Field(50.0, gt=0, description="smoothing, pixels")
    downsample: int = pydantic.Field(4, ge=1)
    max_fields: int = pydantic.Field(64, ge=1, description="fields sampled per plate")
    min_fields: int = pydantic.Field(3, ge=1, description="plates with fewer passing fields are not corrected")


def estimate_illumination(
    fields: Iterable[np.ndarray], sigma: float = 50.0, downsample: int = 4
) -> np.ndarray:
    """Smoothed robust-median illumination function of fields from one plate and channel.

    Parameters
    ----------
    fields
        2-D images (H, W) of the same shape.
    sigma
        Gaussian smoothing in full-resolution pixels.
    downsample
        Block-average factor applied before the median (memory and speed); the result is
        resized back to (H, W).

    Returns
    -------
    numpy.ndarray
        (H, W) float32 function with mean 1.
    """
    stack, shape = [], None
    for field in fields:
        if shape is None:
            shape = np.shape(field)
        elif np.shape(field) != shape:
            raise ValueError(f"fields differ in shape: {shape} vs {np.shape(field)}")
        stack.append(downsampled_field(field, downsample))
    if shape is None:
        raise ValueError("no fields to estimate the illumination from")
    return illumination_from_downsampled(stack, shape, sigma, downsample)


def downsampled_field(field: np.ndarray, downsample: int) -> np.ndarray:
    """A field (H, W) block-averaged by ``downsample`` (float32, sides rounded up): what
    :func:`illumination_from_downsampled` needs of it, kept instead of the field."""
    field = np.asarray(field, dtype=np.float32)
    return downscale_local_mean(field, (downsample, downsample)).astype(np.float32) if downsample > 1 else field


def illumination_from_downsampled(stack: Sequence[np.ndarray], shape: tuple[int, int], sigma: float = 50.0,
                                  downsample: int = 4) -> np.ndarray:
    """:func:`estimate_illumination` from fields already passed through :func:`downsampled_field`:
    the median over ``stack``, smoothed by ``sigma`` full-resolution pixels, resized to ``shape``,
    mean 1 (float32)."""
    if not len(stack):
        raise ValueError("no fields to estimate the illumination from")
    median = np.median(np.stack(stack), axis=0)
    smooth = ndimage.gaussian_filter(median, sigma / downsample, mode="nearest")
    if smooth.shape != tuple(shape):
        smooth = resize(smooth, shape, order=1, mode="edge", anti_aliasing=False)
    smooth = np.maximum(smooth, np.finfo(np.float32).tiny)
    return (smooth / smooth.mean()).astype(np.float32)


def correct_illumination(image: np.ndarray, illumination: np.ndarray) -> np.ndarray:
    """Divide ``image`` (H, W) by an illumination function of the same shape; float32 result."""
    if image.shape != illumination.shape:
        raise ValueError(f"image shape {image.shape} differs from illumination shape {illumination.shape}")
    return (np.asarray(image, dtype=np.float32) / illumination).astype(np.float32)
