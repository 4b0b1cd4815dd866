"""Batch augmentation of crops on tensors: flips, 90-degree rotations, random resized crops, per-channel
intensity scaling and gamma, Gaussian blur and noise, and deterministic centre crop / pad to a size.
Every random draw comes from the ``generator`` given, one independent draw per sample (and channel).

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
from typing import Callable

import pydantic
import torch
import torch.nn.functional as F

from morphospace.config import Config

__all__ = ["AugmentConfig", "augment_batch", "center_crop_or_pad", "random_resized_crops", "flip_and_rotate",
           "View", "flip_rotate_views", "apply_view", "undo_view", "view_average", "intensity_jitter", "random_blur",
           "add_noise"]


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
    if config.resized_crop_scale is not None:
        flat = x.flatten(1, -3)
        x = random_resized_crops(flat, flat.shape[-1], config.resized_crop_scale, config.resized_crop_ratio,
                                 generator).view(x.shape)
    return flip_and_rotate(x, config.flips, config.rot90, generator)


def flip_and_rotate(x: torch.Tensor, flips: bool = True, rot90: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Each sample of ``x`` (B, ..., H, W) mirrored left-right with probability 1/2, then turned by
    0-3 quarter turns (half turns only when H != W): a random :func:`apply_view` per sample."""
    if not (flips or rot90):
        return x
    b, square = x.shape[0], x.shape[-1] == x.shape[-2]
    mirror = torch.rand(b, generator=generator) < 0.5 if flips else torch.zeros(b, dtype=torch.bool)
    if not rot90:
        turns = torch.zeros(b, dtype=torch.long)
    elif square:
        turns = torch.randint(0, 4, (b,), generator=generator)
    else:  # only half turns keep a non-square shape
        turns = 2 * torch.randint(0, 2, (b,), generator=generator)
    viewed = x.clone()
    for view in flip_rotate_views(flips, rot90, square)[1:]:
        chosen = (mirror == view[0]) & (turns == view[1])
        if chosen.any():
            viewed[chosen] = apply_view(x[chosen], view)
    return viewed


View = tuple[bool, int]
"""A flip and turn of the last two axes: (mirrored left-right, quarter turns), mirror first."""


def flip_rotate_views(flips: bool, rot90: bool, square: bool = True) -> list[View]:
    """Every view :func:`flip_and_rotate` can draw with these settings, the identity first: up to
    8 (mirrored or not x 0-3 quarter turns), half turns only for non-square crops.

    >>> flip_rotate_views(True, False)
    [(False, 0), (True, 0)]
    """
    turns = (0, 1, 2, 3) if square else (0, 2)
    return [(mirror, k) for mirror in ((False, True) if flips else (False,)) for k in (turns if rot90 else (0,))]


def apply_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """``x`` (..., H, W) mirrored left-right (when ``view[0]``), then turned ``view[1]`` quarter turns."""
    mirror, turns = view
    return torch.rot90(x.flip(-1) if mirror else x, turns, dims=(-2, -1))


def undo_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """The inverse of :func:`apply_view`: ``undo_view(apply_view(x, v), v)`` is ``x``.

    >>> x = torch.arange(6.).reshape(1, 2, 3)
    >>> all(torch.equal(undo_view(apply_view(x, v), v), x) for v in flip_rotate_views(True, True, False))
    True
    """
    mirror, turns = view
    x = torch.rot90(x, -turns, dims=(-2, -1))
    return x.flip(-1) if mirror else x


def view_average(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, views: list[View]) -> torch.Tensor:
    """Mean over ``views`` of ``predict`` on the viewed ``x`` (N, ..., H, W), each output
    (N, ..., H, W) viewed back: a prediction made equivariant to those flips and turns."""
    return torch.stack([undo_view(predict(apply_view(x, v)), v) for v in views]).mean(0)


def random_resized_crops(x: torch.Tensor, size: int, scale: tuple[float, float],
                         ratio: tuple[float, float] = (3 / 4, 4 / 3),
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """A random crop of each image of ``x`` (B, C, H, W) covering a ``scale`` fraction of its area
    with aspect ratio in ``ratio`` (log-uniform), resized bilinearly to (B, C, size, size)."""
    b = x.shape[0]
    low, high = scale
    area = low + (high - low) * torch.rand(b, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    scale_x = (area * aspect).sqrt().clamp(max=1.0)
    scale_y = (area / aspect).sqrt().clamp(max=1.0)
    shift_x = (1 - scale_x) * (2 * torch.rand(b, generator=generator) - 1)
    shift_y = (1 - scale_y) * (2 * torch.rand(b, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, shift_y
    grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _per_channel(b: int, c: int, low: float, high: float, generator: torch.Generator | None,
                 log: bool = False) -> torch.Tensor:
    values = torch.empty(b, c, 1, 1)
    if log:
        return values.uniform_(math.log(low), math.log(high), generator=generator).exp()
    return values.uniform_(low, high, generator=generator)


def intensity_jitter(x: torch.Tensor, scale: tuple[float, float] = (0.7, 1.3), gamma: tuple[float, float] = (0.8, 1.25),
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Each channel of each image (B, C, H, W) on its own: its values mapped to [0, 1] between the
    image's channel minimum and maximum, raised to a gamma drawn log-uniformly from ``gamma``,
    multiplied by a factor from ``scale``, and mapped back; channels are never mixed.

    >>> x = torch.linspace(0, 1, 16).reshape(1, 1, 4, 4)
    >>> bool(torch.allclose(intensity_jitter(x, (1, 1), (1, 1)), x))
    True
    """
    b, c = x.shape[:2]
    low = x.amin(dim=(-2, -1), keepdim=True)
    span = (x.amax(dim=(-2, -1), keepdim=True) - low).clamp_min(1e-6)
    unit = (x - low) / span
    unit = unit.pow(_per_channel(b, c, *gamma, generator, log=True).to(x)) * _per_channel(b, c, *scale, generator).to(x)
    return low + unit * span


def random_blur(x: torch.Tensor, sigma: tuple[float, float] = (0.1, 1.5), probability: float = 0.3,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image (B, C, H, W) blurred with probability ``probability`` by a Gaussian of standard
    deviation drawn from ``sigma`` (pixels), every channel alike."""
    chosen = torch.rand(x.shape[0], generator=generator) < probability
    sigmas = torch.empty(x.shape[0]).uniform_(*sigma, generator=generator)
    out = x.clone()
    for index in torch.nonzero(chosen).flatten().tolist():
        radius = max(1, min(int(math.ceil(3 * float(sigmas[index]))), x.shape[-1] - 1, x.shape[-2] - 1))
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (offsets / sigmas[index]) ** 2)
        kernel = kernel / kernel.sum()
        image = x[index : index + 1].transpose(0, 1)  # (C, 1, H, W): one kernel for every channel
        image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
        out[index] = image.transpose(0, 1)[0]
    return out


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` plus Gaussian noise of standard deviation ``std`` times each image's channel standard deviation."""
    if std <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator).to(x)
    return x + std * x.std(dim=(-2, -1), keepdim=True) * noise
