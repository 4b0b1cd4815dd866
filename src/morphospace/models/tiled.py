"""Whole-field inference of image-to-image networks by overlapping tiles (MONAI's sliding window,
Gaussian blending), for fields of any size.

The field is reflect-padded by half a tile on every side (so that its border pixels lie at the
centre of a tile, not only at the edges of tiles, where a network sees least context and which
would leave a seam along the field's border), then to at least one tile and to a multiple of the
network's size factor; it is predicted tile by tile with overlap, blended with Gaussian weights
(tile centres count most, so tile borders barely contribute), and cropped back.

Examples
--------
>>> import torch
>>> identity = torch.nn.Identity()
>>> field = torch.rand(2, 45, 70)
>>> bool(torch.allclose(predict_field(identity, field, tile=32, overlap=0.25), field, atol=1e-5))
True
"""

from __future__ import annotations

from typing import Callable, Literal

import pydantic
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from morphospace.config import Config

__all__ = ["TiledInferenceConfig", "predict_field", "pad_to_multiple", "reflect_pad"]


class TiledInferenceConfig(Config):
    """How whole fields are predicted: tile side, overlap, tiles per pass, precision."""

    tile: int = pydantic.Field(256, ge=16, description="inference tile side, px")
    overlap: float = pydantic.Field(0.5, ge=0, lt=1)
    batch_size: int = pydantic.Field(4, ge=1)
    precision: Literal["32-true", "bf16-mixed", "auto"] = pydantic.Field(
        "32-true", description="bf16-mixed: bf16 autocast; auto: bf16 where the hardware has bf16 units")


def reflect_pad(image: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Mirror ``image`` (C, H, W) outwards by the given px on each side, reflecting again where a pad
    exceeds the image (a side of 1 px is repeated).

    >>> reflect_pad(torch.arange(3.0).reshape(1, 1, 3), 4, 0, 1, 0)[0, 0].tolist()
    [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0]
    """
    for before, after, dim in ((left, right, -1), (top, bottom, -2)):
        while before or after:
            size = image.shape[dim]
            if size == 1:
                pads = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
                image = F.pad(image, pads, mode="replicate")
                break
            step = (min(before, size - 1), min(after, size - 1))
            image = F.pad(image, (*step, 0, 0) if dim == -1 else (0, 0, *step), mode="reflect")
            before, after = before - step[0], after - step[1]
    return image


def pad_to_multiple(image: torch.Tensor, multiple: int, minimum: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two dims of ``image`` (C, H, W) at the bottom and right to a multiple
    of ``multiple`` and at least ``minimum``; returns the padded image and the original (H, W)."""
    height, width = image.shape[-2:]
    target_h = max(-(-height // multiple) * multiple, -(-minimum // multiple) * multiple)
    target_w = max(-(-width // multiple) * multiple, -(-minimum // multiple) * multiple)
    return reflect_pad(image, 0, target_w - width, 0, target_h - height), (height, width)


@torch.no_grad()
def predict_field(predictor: Callable[[torch.Tensor], torch.Tensor], field: torch.Tensor, tile: int = 256,
                  overlap: float = 0.5, batch_size: int = 4, multiple: int = 16,
                  autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Predict a whole field (C, H, W) with a network on (N, C, tile, tile) batches.

    Parameters
    ----------
    predictor
        The network (or any callable) mapping (N, Ci, t, t) to (N, Co, t, t).
    field
        Input (Ci, H, W), any H and W.
    tile
        Tile side in px; must be a multiple of ``multiple`` (the network's down-sampling factor).
    overlap
        Fraction of a tile shared with its neighbours, in [0, 1). With 0.5 every pixel away from the
        field's edge is near the centre of some tile; smaller overlaps leave seams where a deep
        network lacks context.
    batch_size
        Tiles per forward pass.
    autocast_dtype
        Run the network under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``); None = as is.

    Returns
    -------
    torch.Tensor
        (Co, H, W) prediction on the field's device, float32.
    """
    if field.dim() != 3:
        raise ValueError(f"expected a field (C, H, W), got shape {tuple(field.shape)}")
    if tile % multiple:
        raise ValueError(f"tile {tile} is not a multiple of the network's factor {multiple}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    margin = tile // 2
    height, width = field.shape[-2:]
    padded, _ = pad_to_multiple(reflect_pad(field.float(), margin, margin, margin, margin), multiple, minimum=tile)
    def float_predictor(tiles: torch.Tensor) -> torch.Tensor:  # blend in float32 whatever autocast computes in
        return predictor(tiles).float()

    with torch.autocast(field.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        output = sliding_window_inference(padded[None], roi_size=(tile, tile), sw_batch_size=batch_size,
                                          predictor=float_predictor, overlap=overlap, mode="gaussian")
    return output[0, :, margin:margin + height, margin:margin + width].float()
