"""Grids of model samples: a montage of generated crops, and the training callback that saves one
from fixed noise every few epochs.

Examples
--------
>>> import torch
>>> grid = sample_grid(torch.rand(6, 2, 8, 8) * 2 - 1, ["DNA", "Actin"], columns=3)
>>> grid.shape
(18, 28, 3)
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from morphospace.explore.figures import composite, montage
from morphospace.io.images import write_png
from morphospace.models.base import to_unit_range

__all__ = ["sample_grid", "write_sample_grid", "SampleGrid"]


def sample_grid(images: torch.Tensor | np.ndarray, channels: list[str], columns: int = 8) -> np.ndarray:
    """RGB montage (H, W, 3) in [0, 1] of model images (N, C, H, W) in [-1, 1]; each channel's
    display range is its 1st-99.5th percentile over the whole grid, so brightness differences
    between tiles stay."""
    unit = to_unit_range(images)
    flat = np.moveaxis(unit, 1, 0).reshape(unit.shape[1], -1)
    limits = [tuple(np.percentile(channel, [1.0, 99.5])) for channel in flat]
    return montage(np.stack([composite(image, channels, limits=limits) for image in unit]), columns)


def write_sample_grid(path: str | os.PathLike, images: torch.Tensor | np.ndarray, channels: list[str],
                      columns: int = 8) -> Path:
    """Write :func:`sample_grid` of model images (N, C, H, W) in [-1, 1] as an 8-bit PNG."""
    return write_png(path, (sample_grid(images, channels, columns) * 255).astype(np.uint8))


class SampleGrid(pl.Callback):
    """Save ``figures/samples_epoch_NNN.png``, a grid of ``n`` samples from fixed noise, every
    ``every`` epochs and after the last one (the process of global rank 0 only)."""

    def __init__(self, directory: Path, channels: list[str], n: int, every: int, seed: int) -> None:
        self.directory, self.channels, self.n, self.every, self.seed = directory, channels, n, every, seed

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or ((epoch + 1) % self.every and epoch + 1 != trainer.max_epochs):
            return
        images = module.sample(self.n, torch.Generator().manual_seed(self.seed))
        write_sample_grid(self.directory / f"samples_epoch_{epoch + 1:03d}.png", images, self.channels)
