"""Grids of model samples, and the training callback that draws a generative model's figures: a
grid from fixed noise every few epochs, and the final figures when training ends.

Examples
--------
>>> import torch
>>> grid = sample_grid(torch.rand(6, 2, 8, 8) * 2 - 1, ["DNA", "Actin"], columns=3)
>>> grid.shape
(18, 28, 3)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from matplotlib.figure import Figure

from morphospace.explore.figures import crops_rgb, montage, rgb_figure, save_figure
from morphospace.explore.latent import image_rows_figure, interpolate
from morphospace.models.base import GenerativeModel, to_unit_range

__all__ = ["sample_grid", "write_sample_grid", "TrainingFigures"]


@contextlib.contextmanager
def _evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Inside the block ``module`` is in eval mode without gradients; its mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def sample_grid(images: torch.Tensor | np.ndarray, channels: list[str], columns: int = 8) -> np.ndarray:
    """RGB montage (H, W, 3) in [0, 1] of model images (N, C, H, W) in [-1, 1], coloured by
    :func:`~morphospace.explore.figures.crops_rgb` (display limits shared by the whole grid, so
    brightness differences between tiles stay)."""
    return montage(crops_rgb(to_unit_range(images), channels), columns)


def write_sample_grid(path: str | os.PathLike, images: torch.Tensor | np.ndarray, channels: list[str],
                      columns: int = 8) -> Path:
    """Write :func:`sample_grid` of model images (N, C, H, W) in [-1, 1] as a PNG with the channel
    legend under it (small grids enlarged by whole pixels, see
    :func:`~morphospace.explore.figures.rgb_figure`)."""
    return save_figure(rgb_figure(sample_grid(images, channels, columns), channels), path)


class TrainingFigures(pl.Callback):
    """Figures of a generative model's training, written by the process of global rank 0 only:

    - ``figures/samples_epoch_NNN.png``: ``n`` samples from fixed noise (``seed``) every ``every``
      epochs and after the last epoch of the budget;
    - when training ends for any reason (epoch, step or time budget, early stop): ``final_samples.png``
      (the same noise), ``final_interpolation.png`` (four pairs of noise vectors, eight spherical
      steps) and, for models with an encoder (VAEs), ``final_reconstructions.png`` (eight random
      training crops above their reconstructions).
    """

    def __init__(self, directory: Path, channels: list[str], n: int, every: int, seed: int) -> None:
        self.directory, self.channels, self.n, self.every, self.seed = directory, channels, n, every, seed

    def on_train_epoch_end(self, trainer: pl.Trainer, module: GenerativeModel) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or ((epoch + 1) % self.every and epoch + 1 != trainer.max_epochs):
            return
        write_sample_grid(self.directory / f"samples_epoch_{epoch + 1:03d}.png", self._samples(module), self.channels)

    def on_train_end(self, trainer: pl.Trainer, module: GenerativeModel) -> None:
        if not trainer.is_global_zero:
            return
        write_sample_grid(self.directory / "final_samples.png", self._samples(module), self.channels)
        save_figure(self._interpolation_figure(module), self.directory / "final_interpolation.png")
        if module.encodes:
            save_figure(self._reconstruction_figure(module, trainer.datamodule),
                        self.directory / "final_reconstructions.png")

    def _samples(self, module: GenerativeModel) -> torch.Tensor:
        return module.sample(self.n, torch.Generator().manual_seed(self.seed))

    def _interpolation_figure(self, module: GenerativeModel) -> Figure:
        ends = module.prior(8, torch.Generator().manual_seed(self.seed)).cpu()
        with _evaluating(module):
            rows = [to_unit_range(module.decode(interpolate(a, b, 8, spherical=True)))
                    for a, b in zip(ends[0::2], ends[1::2])]
        return image_rows_figure(np.stack(rows), self.channels,
                                 title="Interpolation between noise vectors (left to right)")

    def _reconstruction_figure(self, module: GenerativeModel, data) -> Figure:
        training = data.indices("train")
        picks = np.sort(np.random.default_rng(self.seed).choice(training, min(8, len(training)), replace=False))
        images = data.dataset_for(data.store, picks, conditions=()).load(np.arange(len(picks)))
        with _evaluating(module):
            reconstructions = module.decode(module.encode_latent(images))
        rows = np.stack([to_unit_range(images), to_unit_range(reconstructions)])
        return image_rows_figure(rows, self.channels, row_labels=["training crop", "reconstruction"],
                                 title="Random training crops and their reconstructions")
