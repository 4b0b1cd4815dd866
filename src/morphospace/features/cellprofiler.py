"""CellProfiler measurements of single-cell crops through cp_measure.

Each crop is measured for three objects — ``Nuclei`` (mask 1), ``Cells`` (mask > 0) and
``Cytoplasm`` (mask 2), see :data:`morphospace.io.store.MASK_ENCODING` — in every channel, plus
channel-pair correlations. Cells and cytoplasm are measured only where the data outline them (cell
masks, or a cytoplasm channel to segment cells in, see :func:`measurable_objects`): a crop set of
nuclei alone gives ``Nuclei`` features only. Feature names follow
``<Object>_<Measurement>_<Channel>``, e.g. ``Nuclei_Intensity_MeanIntensity_DNA``,
``Cells_AreaShape_Area``, ``Cytoplasm_Texture_Contrast_3_00_256_Actin``,
``Cells_Correlation_Pearson_DNA_Actin``.

Speed: crops are tiled into one mosaic per chunk (objects kept apart by a gap), so cp_measure
measures a whole chunk per call; granularity, which depends on the image around an object, is
measured crop by crop. Position-dependent measurements (object centres, bounding boxes, raw
spatial moments, intensity locations) are left out: crops are centred by construction.

Intensities are divided by a per-channel scale (pixels above it clip to 1), as CellProfiler
rescales images to [0, 1]; the scale is recorded with the output.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd
import pydantic

from morphospace.config import Config, CountOrAuto
from morphospace.segment.nuclei import NUCLEAR_STAINS, resolve_nucleus_channel

__all__ = [
    "FeaturesConfig",
    "MOSAIC_CELLS",
    "FEATURE_SETS",
    "NUCLEAR_STAINS",
    "measure_crops",
    "masks_by_segmentation",
    "measurable_objects",
    "resolve_nucleus_channel",
    "feature_columns",
    "angular_period",
]

logger = logging.getLogger(__name__)

OBJECTS = {"Nuclei": (1,), "Cells": (1, 2), "Cytoplasm": (2,)}
FEATURE_SETS = {
    "fast": {"shape": ("sizeshape", "feret"), "channel": ("intensity",), "pair": ("pearson",)},
    "full": {
        "shape": ("sizeshape", "feret", "zernike"),
        "channel": ("intensity", "texture", "granularity", "radial_distribution", "radial_zernikes"),
        "pair": ("pearson", "manders_fold", "rwc", "costes"),
    },
}
_POSITION_DEPENDENT = re.compile(r"^(Center_|BoundingBoxM|SpatialMoment_|Location_)")
_SHAPE_GROUPS = {"sizeshape": "AreaShape", "feret": "AreaShape", "zernike": "AreaShape"}
_UNPREFIXED_GROUPS = {"texture": "Texture"}  # cp_measure returns texture names without their group
_PER_CROP = {"granularity"}
_GAP = 4
MOSAIC_CELLS = 32
"""Crops measured together: :func:`measure_crops` tiles consecutive blocks of this many crops into
one image each (cp_measure's cost is per call), so a crop's features depend on its block only.
Callers that cut a store into pieces cut at multiples of it, so that the numbers do not depend on
how the work was cut (tasks, workers, machine load)."""
class FeaturesConfig(Config):
    """What ``features`` measures."""

    feature_set: Literal["fast", "full"] = "fast"
    objects: list[Literal["Nuclei", "Cells", "Cytoplasm"]] = ["Nuclei", "Cells", "Cytoplasm"]
    channels: list[str] | None = pydantic.Field(None, description="channels to measure; None: all")
    intensity_scale: list[float] | None = pydantic.Field(
        None, description="per-channel divisor to [0, 1]; None: dtype maximum, or the 99.9th percentile for floats"
    )
    nucleus_channel: str = pydantic.Field(
        "auto", description="channel to segment nuclei in (stores without masks); auto: the one channel named like a "
                            "nuclear stain (DNA, DAPI, Hoechst, H2B, ...), or the only channel")
    cytoplasm_channels: list[str] = pydantic.Field(
        default_factory=lambda: ["Actin", "Tubulin"],
        description="channels to segment cells in (stores without masks); without any, Cells and Cytoplasm are not "
                    "measured")
    chunk_cells: CountOrAuto = pydantic.Field(
        "auto", description="crops measured per task; auto: about task_seconds of work per task, from the "
                            "measured cost of the first crops, and at least 4 tasks per worker")
    task_seconds: float = pydantic.Field(5.0, gt=0, description="work per task that chunk_cells: auto aims at")


def measurable_objects(objects: Sequence[str], channels: Sequence[str], cytoplasm_channels: Sequence[str],
                       masks: Literal["cells", "nuclei"] | None = None) -> tuple[list[str], dict[str, str]]:
    """Which of ``objects`` the crops support, and why each of the others is not measured.

    Nuclei always. ``Cells`` and ``Cytoplasm`` with ``masks="cells"`` (masks that mark the rest of
    the cell); with no masks (``None``: crops are segmented) only when one of ``cytoplasm_channels``
    is among ``channels`` to segment cells in; never with ``masks="nuclei"``. A cell grown around
    its nucleus without a cytoplasm stain would be a guess, not a measurement.

    >>> objects, not_measured = measurable_objects(["Nuclei", "Cells", "Cytoplasm"], ["DNA"], ["Actin"])
    >>> objects, list(not_measured)
    (['Nuclei'], ['Cells', 'Cytoplasm'])
    """
    if masks == "cells" or (masks is None and any(c in channels for c in cytoplasm_channels)):
        return list(objects), {}
    reason = ("the store's masks mark nuclei only" if masks == "nuclei" else
              f"no cell masks, and none of the cytoplasm channels {list(cytoplasm_channels)} among the channels "
              f"{list(channels)} to segment cells in (set cytoplasm_channels)")
    return [o for o in objects if o == "Nuclei"], {o: reason for o in objects if o != "Nuclei"}


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Numeric, non-``Metadata_`` columns: the features of a feature, profile or embedding table."""
    return [c for c in table.columns if not str(c).startswith("Metadata_") and pd.api.types.is_numeric_dtype(table[c])]


ANGULAR_FEATURES = (("_AreaShape_Orientation", 180.0), ("_ZernikePhase_", 2 * np.pi))
"""(name fragment, period) of the features that are angles: an object's orientation in degrees
(axial, -90 to 90) and the phase of a Zernike moment in radians (-pi to pi)."""


def angular_period(feature: str) -> float | None:
    """The period of ``feature`` when it is an angle (see :data:`ANGULAR_FEATURES`), else None.

    >>> angular_period("Nuclei_AreaShape_Orientation"), angular_period("Nuclei_AreaShape_Area")
    (180.0, None)
    """
    return next((period for fragment, period in ANGULAR_FEATURES if fragment in str(feature)), None)


@dataclass(frozen=True)
class _Measurement:
    name: str
    kind: Literal["shape", "channel", "pair"]
    function: Callable


def _measurements(feature_set: str) -> list[_Measurement]:
    from cp_measure.bulk import get_core_measurements, get_correlation_measurements

    core, correlation = get_core_measurements(), get_correlation_measurements()
    chosen = FEATURE_SETS[feature_set]
    result = [_Measurement(n, "shape", core[n]) for n in chosen["shape"]]
    result += [_Measurement(n, "channel", core[n]) for n in chosen["channel"]]
    for name in chosen["pair"]:
        function = correlation[name]
        if name == "costes":
            function = _with_scale_max(function)
        result.append(_Measurement(name, "pair", function))
    return result


def _with_scale_max(function: Callable) -> Callable:
    def costes(pixels_1, pixels_2, masks):
        return function(pixels_1, pixels_2, masks, scale_max=255)

    return costes


def _mosaic(stack: np.ndarray) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """Tile (n, ..., H, W) crops on a grid with ``_GAP`` px of zeros around every tile (the mosaic's
    border included, so that an object touching its crop's edge has the same edge pixels in every
    tile); return mosaic and slices."""
    n, h, w = stack.shape[0], stack.shape[-2], stack.shape[-1]
    columns = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    height, width = _GAP + rows * (h + _GAP), _GAP + columns * (w + _GAP)
    mosaic = np.zeros((*stack.shape[1:-2], height, width), dtype=stack.dtype)
    slots = []
    for index in range(n):
        r, c = divmod(index, columns)
        top, left = _GAP + r * (h + _GAP), _GAP + c * (w + _GAP)
        slot = (slice(top, top + h), slice(left, left + w))
        mosaic[(..., *slot)] = stack[index]
        slots.append(slot)
    return mosaic, slots


def _object_labels(masks: np.ndarray, values: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Label crop i's object ``i + 1`` (0 where absent); also return which crops have the object."""
    inside = np.isin(masks, values)
    present = inside.reshape(len(masks), -1).any(axis=1)
    labels = inside * (np.arange(1, len(masks) + 1)[:, None, None])
    return labels.astype(np.int32), present


def _call(function: Callable, *arrays) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return function(*arrays)


def _rows_from(result: dict[str, np.ndarray], present: np.ndarray, prefix: str, suffix: str) -> dict[str, np.ndarray]:
    """Spread results over present objects back to all crops (NaN where the object is absent)."""
    out = {}
    for key, values in result.items():
        if _POSITION_DEPENDENT.match(key):
            continue
        column = np.full(len(present), np.nan)
        column[present] = np.asarray(values, dtype=float)
        out[f"{prefix}_{key}{suffix}"] = column
    return out


def _measure_object(
    images: np.ndarray, labels: np.ndarray, present: np.ndarray, object_name: str,
    channels: Sequence[str], measurements: list[_Measurement],
) -> dict[str, np.ndarray]:
    """Features of one object type for a chunk: ``images`` (n, C, H, W) in [0, 1], ``labels`` (n, H, W)."""
    if not present.any():
        return {}
    kept = np.flatnonzero(present)
    sub_images, sub_labels = images[kept], labels[kept]
    relabelled = (sub_labels > 0) * (np.arange(1, len(kept) + 1)[:, None, None])
    mosaic_labels, _ = _mosaic(relabelled)
    mosaic_images, _ = _mosaic(sub_images)
    features: dict[str, np.ndarray] = {}
    for measurement in measurements:
        if measurement.kind == "shape":
            group = _SHAPE_GROUPS[measurement.name]
            result = _call(measurement.function, mosaic_labels, None)
            features |= _rows_from(result, present, f"{object_name}_{group}", "")
        elif measurement.kind == "channel":
            for c, channel in enumerate(channels):
                if measurement.name in _PER_CROP:
                    result = _per_crop(measurement.function, sub_images[:, c], relabelled)
                else:
                    result = _call(measurement.function, mosaic_labels, mosaic_images[c])
                group = _UNPREFIXED_GROUPS.get(measurement.name)
                prefix = f"{object_name}_{group}" if group else object_name
                features |= _rows_from(result, present, prefix, f"_{channel}")
        else:
            for a in range(len(channels)):
                for b in range(a + 1, len(channels)):
                    result = _call(measurement.function, mosaic_images[a], mosaic_images[b], mosaic_labels)
                    features |= _rows_from(result, present, object_name, f"_{channels[a]}_{channels[b]}")
    return features


def _per_crop(function: Callable, pixels: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    rows = [_call(function, (labels[i] > 0).astype(np.int32), pixels[i]) for i in range(len(labels))]
    return {key: np.array([float(np.asarray(r[key]).ravel()[0]) for r in rows]) for key in rows[0]}


def measure_crops(
    images: np.ndarray,
    masks: np.ndarray,
    channels: Sequence[str],
    feature_set: Literal["fast", "full"] = "fast",
    objects: Sequence[str] = ("Nuclei", "Cells", "Cytoplasm"),
) -> pd.DataFrame:
    """CellProfiler features of crops.

    Parameters
    ----------
    images
        (n, C, H, W) intensities already scaled to [0, 1].
    masks
        (n, H, W) crop masks (1 nucleus, 2 rest of the cell, 0 outside).
    channels
        Name of each image channel.
    feature_set
        ``fast`` (size/shape with moments, intensity, Pearson correlation) or ``full`` (adds
        Zernike shape, texture, granularity, radial distribution and Zernikes, Manders, RWC, Costes).
    objects
        Which of ``Nuclei``, ``Cells``, ``Cytoplasm`` to measure.

    Returns
    -------
    pandas.DataFrame
        n rows; NaN where an object is absent from a crop (e.g. no cytoplasm) or undefined.

    Crops are measured in consecutive blocks of :data:`MOSAIC_CELLS`, so the same crops in the same
    blocks give the same numbers however many are passed at once.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((2, 24, 24), np.uint8); masks[:, 6:18, 6:18] = 2; masks[:, 9:15, 9:15] = 1
    >>> images = np.random.default_rng(0).random((2, 1, 24, 24)).astype("float32")
    >>> table = measure_crops(images, masks, ["DNA"])
    >>> table.loc[0, ["Nuclei_AreaShape_Area", "Cells_AreaShape_Area", "Cytoplasm_AreaShape_Area"]].tolist()
    [36.0, 144.0, 108.0]
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]) or images.shape[1] != len(channels):
        raise ValueError(f"expected images (n, C, H, W) with {len(channels)} channels and masks (n, H, W); "
                         f"got {images.shape} and {masks.shape}")
    measurements = _measurements(feature_set)
    blocks = [_measure_block(images[start:start + MOSAIC_CELLS], masks[start:start + MOSAIC_CELLS], channels,
                             objects, measurements) for start in range(0, len(images), MOSAIC_CELLS)]
    return pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(index=pd.RangeIndex(0))


def _measure_block(images: np.ndarray, masks: np.ndarray, channels: Sequence[str], objects: Sequence[str],
                   measurements: list[_Measurement]) -> pd.DataFrame:
    """Features of one block of crops, each object type measured on one mosaic."""
    columns: dict[str, np.ndarray] = {}
    for object_name in objects:
        labels, present = _object_labels(masks, OBJECTS[object_name])
        columns |= _measure_object(images, labels, present, object_name, channels, measurements)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(images)))


def masks_by_segmentation(
    images: np.ndarray, channels: Sequence[str], nucleus_channel: str, cytoplasm_channels: Sequence[str]
) -> np.ndarray:
    """Crop masks for crops without stored masks: segment each crop and keep the nucleus nearest
    its centre and that nucleus's cell (see :mod:`morphospace.segment`); without any of
    ``cytoplasm_channels`` among ``channels``, the nucleus only (no cell is guessed).

    ``images`` is (n, C, H, W); returns (n, H, W) uint8 masks (all zero where no nucleus is found).
    """
    from morphospace.segment.cells import segment_cells
    from morphospace.segment.nuclei import segment_nuclei

    n, _, h, w = images.shape
    nucleus_index = list(channels).index(nucleus_channel)
    cytoplasm_index = [list(channels).index(c) for c in cytoplasm_channels if c in channels]
    masks = np.zeros((n, h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        # a crop is centred on a cell by construction: threshold it even when its contrast is low
        nuclei = segment_nuclei(images[i, nucleus_index], sigma=1.0, min_area=20, max_area=None, min_contrast=None)
        if nuclei.max() == 0:
            continue
        distance = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
        own = nuclei[np.unravel_index(np.argmin(np.where(nuclei > 0, distance, np.inf)), nuclei.shape)]
        if cytoplasm_index:
            cells = segment_cells(nuclei, images[i, cytoplasm_index].sum(0), sigma=1.0, max_distance=h / 2)
            masks[i][cells == own] = 2
        masks[i][nuclei == own] = 1
    return masks
