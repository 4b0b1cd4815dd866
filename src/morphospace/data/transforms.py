"""Batch augmentation of crops on tensors: flips, 90-degree rotations, random resized crops, and
deterministic centre crop / pad to a size.

Examples
--------
>>> import torch
>>> x = torch.arange(16.).reshape(1, 1, 4, 4)
>>> center_crop_or_pad(x, 2)[0, 0]
tensor([[ 5.,  6.],
        [ 9., 10.]])
>>> g = torch.Generator().manual_seed(0)
>>> y = augment_batch(x.repeat(8, 1, 1, 1), AugmentConfig(), g)
>>> y.shape, bool((y.sum((1, 2, 3)) == x.sum()).all())          # flips/rotations keep the pixels
(torch.Size([8, 1, 4, 4]), True)
"""

from __future__ import annotations

import math

import pydantic
import torch
import torch.nn.functional as F

from morphospace.config import Config

__all__ = ["AugmentConfig", "augment_batch", "center_crop_or_pad"]


class AugmentConfig(Config):
    """Training-time augmentation."""

    flips: bool = True
    rot90: bool = True
    resized_crop_scale: tuple[float, float] | None = pydantic.Field(
        None, description="area fraction range of a random crop resized back to full size, e.g. [0.7, 1.0]"
    )
    resized_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @pydantic.field_validator("resized_crop_scale")
    @classmethod
    def _scale_range(cls, value):
        if value is not None and not 0 < value[0] <= value[1] <= 1:
            raise ValueError(f"must satisfy 0 < low <= high <= 1, got {value}")
        return value


def center_crop_or_pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop or zero-pad the last two axes of ``x`` (..., H, W) to (size, size)."""
    for axis in (-2, -1):
        length = x.shape[axis]
        if length > size:
            start = (length - size) // 2
            x = x.narrow(axis, start, size)
        elif length < size:
            before = (size - length) // 2
            pad = [0, 0, 0, 0]
            pad[0 if axis == -1 else 2] = before
            pad[1 if axis == -1 else 3] = size - length - before
            x = F.pad(x, pad)
    return x


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a batch (B, C, H, W) or of z-stacks (B, C, D, H, W) independently per sample, drawing
    from ``generator``; flips, rotations and crops act on the last two axes (H, W), every z-slice alike."""
    b = x.shape[0]
    if config.resized_crop_scale is not None:
        x = _random_resized_crop(x.flatten(1, -3), config, generator).view(x.shape)
    if config.flips:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip.view(b, *[1] * (x.ndim - 1)), x.flip(-1), x)
    if config.rot90:
        if x.shape[-1] == x.shape[-2]:
            quarter_turns = torch.randint(0, 4, (b,), generator=generator)
        else:  # only half turns keep a non-square shape
            quarter_turns = 2 * torch.randint(0, 2, (b,), generator=generator)
        rotated = x.clone()
        for k in (1, 2, 3):
            chosen = quarter_turns == k
            if chosen.any():
                rotated[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
        x = rotated
    return x


def _random_resized_crop(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    b = x.shape[0]
    low, high = config.resized_crop_scale
    area = low + (high - low) * torch.rand(b, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(config.resized_crop_ratio[0]), math.log(config.resized_crop_ratio[1]),
                                        generator=generator)
    ratio = log_ratio.exp()
    scale_x = (area * ratio).sqrt().clamp(max=1.0)
    scale_y = (area / ratio).sqrt().clamp(max=1.0)
    shift_x = (1 - scale_x) * (2 * torch.rand(b, generator=generator) - 1)
    shift_y = (1 - scale_y) * (2 * torch.rand(b, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, shift_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
