"""One channel of a field through the correction steps: illumination, background, outliers and
denoising, plate scaling.

Examples
--------
>>> import numpy as np
>>> from morphospace.preprocess.background import BackgroundConfig
>>> from morphospace.preprocess.denoise import DenoiseConfig
>>> image = np.full((32, 32), 100.0)
>>> flat = correct_channel(image, BackgroundConfig(radius=5), DenoiseConfig(), scale=2.0)
>>> flat.dtype, float(abs(flat).max())
(dtype('float32'), 0.0)
"""

from __future__ import annotations

import numpy as np

from morphospace.preprocess.background import BackgroundConfig, subtract_background
from morphospace.preprocess.denoise import DenoiseConfig, denoise, remove_outliers
from morphospace.preprocess.illumination import correct_illumination

__all__ = ["correct_channel"]


def correct_channel(image: np.ndarray, background: BackgroundConfig, noise: DenoiseConfig,
                    illumination: np.ndarray | None = None, scale: float | None = None) -> np.ndarray:
    """A corrected copy (H, W) float32 of ``image`` (H, W): divided by the ``illumination``
    function when given, background-subtracted and denoised as configured, divided by ``scale``
    (plate normalisation) when given."""
    image = np.asarray(image, dtype=np.float32)
    if illumination is not None:
        image = correct_illumination(image, illumination)
    if background.enabled:
        shrink = background.shrink or max(1, int(background.radius // 10))
        image = subtract_background(image, background.radius, shrink)
    if noise.outlier_radius:
        image = remove_outliers(image, noise.outlier_radius, noise.outlier_threshold)
    image = denoise(image, noise.method, noise.median_radius, noise.tv_weight)
    if scale is not None:
        image = image / np.float32(scale)
    return image
