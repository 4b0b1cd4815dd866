"""Whole-field tiles instead of single-cell crops, for embeddings of whole images.

A corrected field (C, H, W) is centre-cropped (optional), downscaled by an integer factor (mean
over factor x factor blocks) and cut into square tiles on a regular grid; no tile reaches past the
field. Tiles carry masks of zeros (no segmentation) and a table of their grid position and their
window in the field's original pixels.

Examples
--------
>>> import numpy as np
>>> field = np.arange(2 * 100 * 120, dtype="float32").reshape(2, 100, 120)
>>> tiles = tile_field(field, TilesConfig(size=20, downscale=2, stride=20))
>>> tiles.images.shape, tiles.table[["Metadata_TileRow", "Metadata_TileColumn"]].values[-1].tolist()
((6, 2, 20, 20), [1, 2])
>>> tiles.table[["Metadata_Tile_Y0", "Metadata_Tile_X0", "Metadata_Tile_Size"]].values[-1].tolist()
[40, 80, 40]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
from skimage.transform import downscale_local_mean

from morphospace.config import Config
from morphospace.errors import InputError
from morphospace.segment.crops import CropResult

__all__ = ["TilesConfig", "tile_field"]


class TilesConfig(Config):
    """Tiles of ``size`` px every ``stride`` px (None: ``size``, no overlap) of the field after a
    centre crop to ``centre_crop`` px (None: the whole field) and a downscale by ``downscale``."""

    size: int = pydantic.Field(256, ge=8, le=4096, description="tile side in px after downscaling")
    stride: int | None = pydantic.Field(None, ge=1, description="grid step in px after downscaling")
    downscale: int = pydantic.Field(1, ge=1, le=64, description="integer factor, mean over blocks")
    centre_crop: int | None = pydantic.Field(None, ge=8, description="side of the central square kept, original px")


def _centre_square(field: np.ndarray, side: int | None) -> tuple[np.ndarray, int, int]:
    """The central ``side`` x ``side`` window (the whole field when None) and its top-left offset."""
    if side is None:
        return field, 0, 0
    height, width = field.shape[-2:]
    if side > min(height, width):
        raise InputError(f"tiles.centre_crop {side} px exceeds the field ({height} x {width} px)")
    top, left = (height - side) // 2, (width - side) // 2
    return field[:, top:top + side, left:left + side], top, left


def tile_field(field: np.ndarray, config: TilesConfig) -> CropResult:
    """Tiles (n, C, size, size) float32 of ``field`` (C, H, W), row by row, with zero masks and a
    table: ``Metadata_TileRow`` / ``Metadata_TileColumn`` (grid position), ``Metadata_Tile_Y0`` /
    ``_X0`` (top-left in the field's original px) and ``Metadata_Tile_Size`` (side in original px).

    Raises InputError when the field, after cropping and downscaling, is smaller than one tile.
    """
    if field.ndim != 3:
        raise ValueError(f"expected a field (C, H, W), got shape {field.shape}")
    window, top, left = _centre_square(field, config.centre_crop)
    factor = config.downscale
    height, width = (window.shape[1] // factor) * factor, (window.shape[2] // factor) * factor
    small = downscale_local_mean(window[:, :height, :width], (1, factor, factor)).astype(np.float32)
    size, stride = config.size, config.stride or config.size
    if min(small.shape[1:]) < size:
        raise InputError(f"a field of {field.shape[1]} x {field.shape[2]} px gives {small.shape[1]} x "
                         f"{small.shape[2]} px after tiles.centre_crop and tiles.downscale {factor}: smaller than "
                         f"one tile of tiles.size {size} px")
    rows = range(0, small.shape[1] - size + 1, stride)
    columns = range(0, small.shape[2] - size + 1, stride)
    images = np.stack([small[:, y:y + size, x:x + size] for y in rows for x in columns])
    table = pd.DataFrame([{"Metadata_TileRow": i, "Metadata_TileColumn": j,
                           "Metadata_Tile_Y0": top + y * factor, "Metadata_Tile_X0": left + x * factor,
                           "Metadata_Tile_Size": size * factor}
                          for i, y in enumerate(rows) for j, x in enumerate(columns)])
    return CropResult(images, np.zeros((len(images), size, size), np.uint8), table)
