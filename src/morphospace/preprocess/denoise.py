"""Denoising: outlier removal (selective median), median filter, total-variation denoising.

Examples
--------
>>> import numpy as np
>>> image = np.full((32, 32), 10.0)
>>> image[5, 5] = 1000.0                          # a hot pixel
>>> float(remove_outliers(image, radius=2, threshold=50)[5, 5])
10.0
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pydantic
from scipy import ndimage
from skimage.morphology import disk
from skimage.restoration import denoise_tv_chambolle

from morphospace.config import Config

__all__ = ["DenoiseConfig", "remove_outliers", "median_denoise", "tv_denoise", "denoise"]


class DenoiseConfig(Config):
    """Optional outlier removal and denoising."""

    method: Literal["none", "median", "tv"] = "none"
    median_radius: int = pydantic.Field(1, ge=1)
    tv_weight: float = pydantic.Field(0.05, gt=0)
    outlier_radius: int | None = pydantic.Field(None, ge=1, description="selective median; None: off")
    outlier_threshold: float = pydantic.Field(50.0, gt=0)


def remove_outliers(image: np.ndarray, radius: int = 2, threshold: float = 50.0) -> np.ndarray:
    """Replace pixels brighter than their local median by more than ``threshold`` with that median.

    ``radius`` is the disk radius of the local median in pixels; ``threshold`` is in intensity units.
    """
    image = np.asarray(image, dtype=np.float32)
    local = ndimage.median_filter(image, footprint=disk(radius))
    return np.where(image - local > threshold, local, image).astype(np.float32)


def median_denoise(image: np.ndarray, radius: int = 1) -> np.ndarray:
    """Median filter over a disk of ``radius`` pixels; float32 result."""
    return ndimage.median_filter(np.asarray(image, dtype=np.float32), footprint=disk(radius))


def tv_denoise(image: np.ndarray, weight: float = 0.05) -> np.ndarray:
    """Chambolle total-variation denoising; ``weight`` is relative to the image's 99.9th percentile."""
    image = np.asarray(image, dtype=np.float32)
    scale = float(np.percentile(image, 99.9)) or 1.0
    return (denoise_tv_chambolle(image / scale, weight=weight) * scale).astype(np.float32)


def denoise(
    image: np.ndarray,
    method: Literal["none", "median", "tv"] = "none",
    median_radius: int = 1,
    tv_weight: float = 0.05,
) -> np.ndarray:
    """Apply the chosen denoising ``method`` to a 2-D image; ``"none"`` returns a float32 copy."""
    if method == "median":
        return median_denoise(image, median_radius)
    if method == "tv":
        return tv_denoise(image, tv_weight)
    if method == "none":
        return np.asarray(image, dtype=np.float32).copy()
    raise ValueError(f"unknown denoising method {method!r}; choose none, median or tv")
