"""Cell segmentation seeded by nuclei: watershed on a cytoplasm image, or Voronoi expansion.

Every cell keeps the label of its nucleus, so ``cells == k`` contains ``nuclei == k``.

Examples
--------
>>> import numpy as np
>>> nuclei = np.zeros((40, 40), int)
>>> nuclei[18:22, 8:12], nuclei[18:22, 28:32] = 1, 2
>>> cells = segment_cells(nuclei, None, method="voronoi", max_distance=12)
>>> int(cells[20, 19]), int(cells[20, 21])         # split half-way between the nuclei
(1, 2)
"""

from __future__ import annotations

from typing import Literal

from typing import Mapping, Sequence

import numpy as np
import pydantic
from scipy import ndimage
from skimage.filters import sobel
from skimage.segmentation import expand_labels, watershed

from morphospace.config import Config
from morphospace.segment.nuclei import foreground_mask

__all__ = ["CellsConfig", "segment_cells", "cytoplasm_image"]


class CellsConfig(Config):
    """Cell segmentation settings (see :func:`segment_cells`) and the cytoplasm channels it uses."""

    method: Literal["watershed", "voronoi"] = "watershed"
    elevation: Literal["gradient", "intensity"] = "gradient"
    channels: list[str] | Literal["auto"] = pydantic.Field(
        "auto", description="cytoplasm channels to grow cells in; auto: every channel but the nuclei channel. "
                            "Without any, the watershed keeps each cell to its nucleus (no cell is invented)")
    sigma: float = pydantic.Field(1.5, ge=0)
    threshold_factor: float = pydantic.Field(1.0, gt=0)
    max_distance: float | None = pydantic.Field(40.0, gt=0)
    compactness: float = pydantic.Field(0.0, ge=0)


def cytoplasm_image(planes: Mapping[str, np.ndarray], channels: Sequence[str]) -> np.ndarray | None:
    """Sum of the ``channels`` planes (H, W), each divided by its 99th percentile so that they
    weigh alike; None when no channel is named."""
    if not channels:
        return None
    total = np.zeros_like(next(iter(planes.values())), dtype=np.float32)
    for name in channels:
        image = planes[name]
        total += image / max(float(np.percentile(image, 99)), 1e-6)
    return total


def segment_cells(
    nuclei: np.ndarray,
    cytoplasm: np.ndarray | None,
    method: Literal["watershed", "voronoi"] = "watershed",
    elevation: Literal["gradient", "intensity"] = "gradient",
    sigma: float = 1.5,
    threshold_factor: float = 1.0,
    max_distance: float | None = 40.0,
    compactness: float = 0.0,
) -> np.ndarray:
    """Grow cells from nuclei.

    Parameters
    ----------
    nuclei
        (H, W) nucleus labels, 0 = background.
    cytoplasm
        (H, W) cytoplasm-stain image (e.g. actin + tubulin), or None.
    method
        ``"watershed"``: flood from the nuclei inside the Otsu foreground of the cytoplasm image.
        ``"voronoi"``: expand each nucleus up to ``max_distance`` pixels, splitting halfway
        between neighbours. The watershed falls back to Voronoi when no cytoplasm image is given
        or its foreground is empty.
    elevation
        What the watershed floods: ``"gradient"``, the Sobel magnitude of the smoothed cytoplasm
        image (cells meet on edges, robust to bright filaments inside cells), or ``"intensity"``,
        the smoothed image itself (cells meet on bright shared cortices).
    sigma, threshold_factor
        Smoothing (pixels) and Otsu multiplier for the cytoplasm foreground.
    max_distance
        Cells extend at most this many pixels from their nucleus (None: unlimited).
    compactness
        Compact-watershed weight; 0 is the classical watershed.

    Returns
    -------
    numpy.ndarray
        (H, W) int32 cell labels sharing ids with ``nuclei``.
    """
    nuclei = np.asarray(nuclei)
    reach = np.inf if max_distance is None else max_distance
    if method == "voronoi" or cytoplasm is None:
        return _voronoi(nuclei, reach)
    if method != "watershed":
        raise ValueError(f"unknown cell segmentation method {method!r}; choose watershed or voronoi")
    cytoplasm = np.asarray(cytoplasm, dtype=np.float32)
    if cytoplasm.shape != nuclei.shape:
        raise ValueError(f"cytoplasm shape {cytoplasm.shape} differs from nuclei shape {nuclei.shape}")
    foreground = foreground_mask(cytoplasm, sigma, threshold_factor)
    if not foreground.any():
        return _voronoi(nuclei, reach)
    within_reach = ndimage.distance_transform_edt(nuclei == 0) <= reach
    mask = (foreground & within_reach) | (nuclei > 0)
    smooth = ndimage.gaussian_filter(cytoplasm, sigma) if sigma > 0 else cytoplasm
    if elevation == "gradient":
        surface = sobel(smooth)
    elif elevation == "intensity":
        surface = smooth
    else:
        raise ValueError(f"unknown watershed elevation {elevation!r}; choose gradient or intensity")
    cells = watershed(surface, markers=nuclei, mask=mask, compactness=compactness)
    return _fill_holes_per_label(cells).astype(np.int32)


def _voronoi(nuclei: np.ndarray, reach: float) -> np.ndarray:
    distance = int(np.ceil(min(reach, max(nuclei.shape))))
    return expand_labels(nuclei, distance=distance).astype(np.int32)


def _fill_holes_per_label(labels: np.ndarray) -> np.ndarray:
    """Fill background holes enclosed by a single cell."""
    holes = ndimage.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    filled = labels.copy()
    hole_labels, n = ndimage.label(holes)
    grown = expand_labels(labels, distance=1)
    for index in range(1, n + 1):
        region = hole_labels == index
        ring = ndimage.binary_dilation(region) & ~region
        owners = np.unique(grown[ring])
        owners = owners[owners > 0]
        if len(owners) == 1:
            filled[region] = owners[0]
    return filled
