"""Nucleus-centred single-cell crops, optionally masked to the cell and aligned to its major axis.

Crop masks use :data:`morphospace.io.store.MASK_ENCODING`: 1 = the cell's own nucleus, 2 = the
rest of its own cell, 0 = background or other cells.

Examples
--------
>>> import numpy as np
>>> image = np.arange(2 * 32 * 32, dtype="float32").reshape(2, 32, 32)
>>> nuclei = np.zeros((32, 32), int); nuclei[14:18, 14:18] = 1
>>> cells = np.zeros((32, 32), int); cells[10:22, 10:22] = 1
>>> result = crop_cells(image, nuclei, cells, size=8)
>>> result.images.shape, result.masks.shape, int(result.masks[0, 4, 4]), int(result.masks[0, 0, 0])
((1, 2, 8, 8), (1, 8, 8), 1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pydantic
from scipy import ndimage

from morphospace.config import Config

__all__ = ["CropsConfig", "CropResult", "crop_cells", "principal_angle", "skew_flips"]

BorderMode = Literal["pad", "drop"]
PadMode = Literal["constant", "reflect"]


class CropsConfig(Config):
    """Nucleus-centred crops (see :func:`crop_cells`) and their stored pixel type."""

    size: int = pydantic.Field(64, ge=4)
    border: BorderMode = "pad"
    pad_mode: PadMode = "constant"
    mask_outside_cell: bool = False
    align: bool = False
    dtype: Literal["float32", "uint16"] = "float32"


@dataclass
class CropResult:
    """Crops of one field: ``images`` (n, C, S, S) float32, ``masks`` (n, S, S) uint8, ``table`` n rows."""

    images: np.ndarray
    masks: np.ndarray
    table: pd.DataFrame


def principal_angle(mask: np.ndarray) -> float:
    """Angle (radians, counter-clockwise from the +x/column axis, y pointing down the rows) of the
    major axis of a binary mask, from its second moments."""
    rows, cols = np.nonzero(mask)
    if len(rows) < 2:
        return 0.0
    x, y = cols - cols.mean(), rows - rows.mean()
    cov = np.cov(np.stack([x, y]))
    eigvals, eigvecs = np.linalg.eigh(cov)
    major = eigvecs[:, np.argmax(eigvals)]
    return float(np.arctan2(major[1], major[0]))


def skew_flips(mask: np.ndarray) -> tuple[bool, bool]:
    """Whether to flip columns and rows so that the mask's third moments along x and y are >= 0."""
    rows, cols = np.nonzero(mask)
    if len(rows) < 3:
        return False, False
    x, y = cols - cols.mean(), rows - rows.mean()
    return bool(np.mean(x**3) < 0), bool(np.mean(y**3) < 0)


def _object_table(nuclei: np.ndarray, cells: np.ndarray) -> pd.DataFrame:
    ids = np.unique(nuclei)
    ids = ids[ids > 0]
    centres = ndimage.center_of_mass(np.ones_like(nuclei), nuclei, ids) if len(ids) else []
    nucleus_area = np.bincount(nuclei.ravel(), minlength=int(ids.max(initial=0)) + 1)
    cell_area = np.bincount(cells.ravel(), minlength=int(ids.max(initial=0)) + 1)
    return pd.DataFrame(
        {
            "Metadata_ObjectNumber": ids.astype(np.int64),
            "Metadata_Nucleus_Center_Y": [c[0] for c in centres],
            "Metadata_Nucleus_Center_X": [c[1] for c in centres],
            "Metadata_Nucleus_Area": nucleus_area[ids] if len(ids) else [],
            "Metadata_Cell_Area": cell_area[ids] if len(ids) else [],
        }
    )


def _window_inside(cy: float, cx: float, size: int, angle: float, shape: tuple[int, int]) -> bool:
    half = size / 2
    corners = np.array([[-half, -half], [-half, half], [half, -half], [half, half]])
    cos, sin = np.cos(angle), np.sin(angle)
    xs = cx + corners[:, 1] * cos - corners[:, 0] * sin
    ys = cy + corners[:, 1] * sin + corners[:, 0] * cos
    return bool((xs >= -0.5).all() and (xs <= shape[1] - 0.5).all() and (ys >= -0.5).all() and (ys <= shape[0] - 0.5).all())


def _sample_grid(cy: float, cx: float, size: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.arange(size) - (size - 1) / 2
    v, u = np.meshgrid(offsets, offsets, indexing="ij")
    cos, sin = np.cos(angle), np.sin(angle)
    return cy + u * sin + v * cos, cx + u * cos - v * sin


def crop_cells(
    image: np.ndarray,
    nuclei: np.ndarray,
    cells: np.ndarray,
    size: int = 64,
    border: BorderMode = "pad",
    pad_mode: PadMode = "constant",
    mask_outside_cell: bool = False,
    align: bool = False,
) -> CropResult:
    """Cut a (C, size, size) crop centred on every nucleus.

    Parameters
    ----------
    image
        (C, H, W) field.
    nuclei, cells
        (H, W) labels; cell ``k`` belongs to nucleus ``k``.
    size
        Crop side in pixels.
    border
        ``"pad"`` keeps crops that reach past the field edge, filling with ``pad_mode``;
        ``"drop"`` skips them.
    pad_mode
        ``"constant"`` (zeros) or ``"reflect"``.
    mask_outside_cell
        Zero every pixel outside the cell's own mask (CytoGAN style).
    align
        Rotate so the cell's major axis is horizontal, then flip so the cell's shape skews
        towards +x and +y (Statistical Cell style). Images are sampled bilinearly, masks by
        nearest neighbour.

    Returns
    -------
    CropResult
        With table columns ``Metadata_ObjectNumber``, ``Metadata_Nucleus_Center_X/Y`` (pixels),
        ``Metadata_Nucleus_Area``, ``Metadata_Cell_Area`` (pixels), ``Metadata_Padded``,
        ``Metadata_Angle`` (radians), ``Metadata_FlipX``, ``Metadata_FlipY``.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[1:] != nuclei.shape or cells.shape != nuclei.shape:
        raise ValueError(f"expected image (C, H, W) and labels (H, W) of one size; got {image.shape}, "
                         f"{nuclei.shape}, {cells.shape}")
    table = _object_table(nuclei, cells)
    field_shape = nuclei.shape
    crops, masks, rows = [], [], []
    padded_image = np.pad(image, ((0, 0), (size, size), (size, size)), mode=pad_mode)
    padded_nuclei = np.pad(nuclei, size)
    padded_cells = np.pad(cells, size)
    cell_boxes = ndimage.find_objects(cells) if align else []
    for row in table.itertuples(index=False):
        object_id = row.Metadata_ObjectNumber
        cy, cx = row.Metadata_Nucleus_Center_Y, row.Metadata_Nucleus_Center_X
        angle = _cell_angle(cells, cell_boxes, object_id) if align else 0.0
        inside = _window_inside(cy, cx, size, angle, field_shape)
        if border == "drop" and not inside:
            continue
        if align:
            crop, mask = _rotated_crop(padded_image, padded_nuclei, padded_cells, object_id, cy + size, cx + size, size, angle)
            flip_x, flip_y = skew_flips(mask > 0)
        else:
            top, left = int(round(cy)) - size // 2 + size, int(round(cx)) - size // 2 + size
            window = (slice(top, top + size), slice(left, left + size))
            crop = padded_image[(slice(None), *window)].copy()
            mask = _own_mask(padded_nuclei[window], padded_cells[window], object_id)
            flip_x = flip_y = False
        if flip_x:
            crop, mask = crop[:, :, ::-1], mask[:, ::-1]
        if flip_y:
            crop, mask = crop[:, ::-1, :], mask[::-1, :]
        if mask_outside_cell:
            crop = crop * (mask > 0)
        crops.append(np.ascontiguousarray(crop))
        masks.append(np.ascontiguousarray(mask))
        rows.append({**row._asdict(), "Metadata_Padded": not inside, "Metadata_Angle": angle,
                     "Metadata_FlipX": flip_x, "Metadata_FlipY": flip_y})
    n_channels = image.shape[0]
    return CropResult(
        images=np.stack(crops) if crops else np.zeros((0, n_channels, size, size), np.float32),
        masks=np.stack(masks).astype(np.uint8) if masks else np.zeros((0, size, size), np.uint8),
        table=pd.DataFrame(rows, columns=[*table.columns, "Metadata_Padded", "Metadata_Angle",
                                          "Metadata_FlipX", "Metadata_FlipY"]),
    )


def _cell_angle(cells: np.ndarray, boxes: list, object_id: int) -> float:
    box = boxes[object_id - 1] if object_id <= len(boxes) else None
    return principal_angle(cells[box] == object_id) if box is not None else 0.0


def _own_mask(nuclei_window: np.ndarray, cells_window: np.ndarray, object_id: int) -> np.ndarray:
    mask = np.where(cells_window == object_id, 2, 0)
    mask[nuclei_window == object_id] = 1
    return mask.astype(np.uint8)


def _rotated_crop(
    image: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, object_id: int,
    cy: float, cx: float, size: int, angle: float,
) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = _sample_grid(cy, cx, size, angle)
    coords = np.stack([rows, cols])
    crop = np.stack([ndimage.map_coordinates(channel, coords, order=1, mode="nearest") for channel in image])
    nuclei_window = ndimage.map_coordinates(nuclei, coords, order=0, mode="constant")
    cells_window = ndimage.map_coordinates(cells, coords, order=0, mode="constant")
    return crop.astype(np.float32), _own_mask(nuclei_window, cells_window, object_id)
