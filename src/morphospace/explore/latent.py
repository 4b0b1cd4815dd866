"""Walking the latent space of a trained model: interpolations, attribute vectors (vector
algebra), per-dimension traversals, and quick image measures to define attributes.

Functions take a :class:`~morphospace.models.base.GenerativeModel` and latent tensors; images come
back as (N, C, H, W) in [-1, 1].

Examples
--------
>>> import torch
>>> line = interpolate(torch.zeros(4), torch.ones(4), steps=3)
>>> line[:, 0].tolist()
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from skimage.filters import threshold_otsu

from morphospace.models.base import GenerativeModel

__all__ = [
    "interpolate",
    "attribute_vector",
    "apply_attribute",
    "traverse",
    "quick_measures",
    "image_rows_figure",
]


def interpolate(z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 8, spherical: bool = False) -> torch.Tensor:
    """``steps`` points from ``z_a`` to ``z_b`` (both (d,)): linear, or along the great circle
    (slerp, which keeps Gaussian-prior norms) when ``spherical``. Returns (steps, d)."""
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype)[:, None]
    if not spherical:
        return (1 - t) * z_a + t * z_b
    cos = torch.clamp(torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm() + 1e-12), -1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-6:
        return (1 - t) * z_a + t * z_b
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


def attribute_vector(latents: torch.Tensor, with_attribute: np.ndarray, without_attribute: np.ndarray) -> torch.Tensor:
    """Mean latent of the cells with an attribute minus the mean of those without (CytoGAN's vector
    algebra). ``latents`` is (N, d); the masks are boolean (N,)."""
    with_attribute, without_attribute = np.asarray(with_attribute, bool), np.asarray(without_attribute, bool)
    if not with_attribute.any() or not without_attribute.any():
        raise ValueError("both groups need at least one cell")
    return latents[np.flatnonzero(with_attribute)].mean(0) - latents[np.flatnonzero(without_attribute)].mean(0)


@torch.no_grad()
def apply_attribute(model: GenerativeModel, base: torch.Tensor, vector: torch.Tensor,
                    scales: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0)) -> torch.Tensor:
    """Decode ``base + s * vector`` for every base latent (B, d) and scale: (B, len(scales), C, H, W)."""
    latents = torch.stack([base + s * vector for s in scales], dim=1)
    images = model.decode(latents.flatten(0, 1))
    return images.reshape(base.shape[0], len(scales), *images.shape[1:])


@torch.no_grad()
def traverse(model: GenerativeModel, dims: Sequence[int], values: Sequence[float],
             base: torch.Tensor | None = None) -> torch.Tensor:
    """Vary one latent dimension at a time over ``values`` from ``base`` (default: the prior mean):
    (len(dims), len(values), C, H, W)."""
    base = torch.zeros(model.latent_dim) if base is None else base
    latents = base.repeat(len(dims), len(values), 1)
    for row, dim in enumerate(dims):
        latents[row, :, dim] = torch.as_tensor(values, dtype=latents.dtype)
    images = model.decode(latents.flatten(0, 1))
    return images.reshape(len(dims), len(values), *images.shape[1:])


def quick_measures(images: np.ndarray, channels: Sequence[str], masks: np.ndarray | None = None,
                   nucleus_channel: str = "auto") -> pd.DataFrame:
    """Fast per-crop attributes for vector algebra: ``Mean_<Channel>`` (mean intensity of each
    channel, in the images' units) and ``NucleusArea`` (pixels: mask label 1 when masks are given,
    else the Otsu foreground of the nucleus channel, ``auto``: see
    :func:`~morphospace.features.cellprofiler.resolve_nucleus_channel`; NaN without one)."""
    from morphospace.errors import InputError
    from morphospace.features.cellprofiler import resolve_nucleus_channel

    images = np.asarray(images, dtype=np.float32)
    table = pd.DataFrame({f"Mean_{c}": images[:, i].mean(axis=(1, 2)) for i, c in enumerate(channels)})
    if masks is not None:
        table["NucleusArea"] = (np.asarray(masks) == 1).sum(axis=(1, 2))
        return table
    try:
        nuclei = images[:, list(channels).index(resolve_nucleus_channel(channels, nucleus_channel))]
    except InputError:
        table["NucleusArea"] = np.nan
        return table
    table["NucleusArea"] = [int((d > threshold_otsu(d)).sum()) if d.max() > d.min() else 0 for d in nuclei]
    return table


def image_rows_figure(rows: np.ndarray, channels: Sequence[str], row_labels: Sequence[str] | None = None,
                      column_labels: Sequence[str] | None = None, title: str = "") -> Figure:
    """A grid figure of images ``rows`` (R, K, C, H, W) or z-stacks (R, K, C, D, H, W), one composite
    per cell (see :func:`~morphospace.explore.figures.crops_rgb`: display limits shared by the whole
    grid, z-stacks as maximum projections), with the channel legend under it."""
    from morphospace.explore.figures import add_channel_legend, crops_rgb

    n_rows, n_columns = rows.shape[:2]
    fig = Figure(figsize=(1.1 * n_columns + 1.2, 1.1 * n_rows + 0.5), layout="tight")
    axes = fig.subplots(n_rows, n_columns, squeeze=False)
    tiles = crops_rgb(rows.reshape(n_rows * n_columns, *rows.shape[2:]), channels)
    tiles = tiles.reshape(n_rows, n_columns, *tiles.shape[1:])
    for r in range(n_rows):
        for k in range(n_columns):
            ax = axes[r, k]
            ax.imshow(tiles[r, k])
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
            if r == 0 and column_labels is not None:
                ax.set_title(column_labels[k], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    add_channel_legend(fig, channels)
    return fig
