"""Figures of crops and fields: colour composites, montages, segmentation overlays.

Examples
--------
>>> import numpy as np
>>> rgb = composite(np.random.default_rng(0).random((3, 16, 16)), ["DNA", "Actin", "Tubulin"])
>>> rgb.shape, float(rgb.min()) >= 0, float(rgb.max()) <= 1
((16, 16, 3), True, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from morphospace.atomic import atomic_file

__all__ = ["channel_colors", "composite", "montage", "crop_montage_figure", "segmentation_overlay_figure",
           "prediction_figure", "save_figure"]

_NAMED_COLORS = {
    "dna": (0.2, 0.4, 1.0), "dapi": (0.2, 0.4, 1.0), "hoechst": (0.2, 0.4, 1.0), "nuclei": (0.2, 0.4, 1.0),
    "actin": (1.0, 0.2, 0.2), "phalloidin": (1.0, 0.2, 0.2),
    "tubulin": (0.2, 1.0, 0.2),
}
_CYCLE = [(1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.4, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0), (0.0, 1.0, 1.0)]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure as PNG through a temporary name (no half-written file on failure)."""
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def channel_colors(names: Sequence[str]) -> list[tuple[float, float, float]]:
    """RGB colour of each channel: DNA blue, actin red, tubulin green, others from a cycle."""
    colors, cycle = [], iter(_CYCLE * (len(names) // len(_CYCLE) + 1))
    for name in names:
        colors.append(_NAMED_COLORS.get(name.lower()) or next(cycle))
    return colors


def composite(
    image: np.ndarray, names: Sequence[str], low: float = 1.0, high: float = 99.5,
    limits: Sequence[tuple[float, float]] | None = None,
) -> np.ndarray:
    """Additive RGB composite (H, W, 3) in [0, 1] of a (C, H, W) image, each channel scaled to its
    ``low``-``high`` percentiles (or to given ``limits``)."""
    image = np.asarray(image, dtype=np.float32)
    rgb = np.zeros((*image.shape[1:], 3), dtype=np.float32)
    for index, (channel, color) in enumerate(zip(image, channel_colors(names))):
        lo, hi = limits[index] if limits is not None else np.percentile(channel, [low, high])
        scaled = np.clip((channel - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb += scaled[..., None] * np.asarray(color, dtype=np.float32)
    return np.clip(rgb, 0, 1)


def montage(tiles: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """Arrange RGB tiles (n, H, W, 3) in a grid with ``columns`` columns and white gaps."""
    n, h, w, _ = tiles.shape
    rows = max(1, int(np.ceil(n / columns)))
    canvas = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), dtype=np.float32)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return canvas


def crop_montage_figure(
    groups: dict[str, np.ndarray], names: Sequence[str], columns: int = 8, title: str = ""
) -> Figure:
    """One montage row block per group (e.g. MoA): ``groups`` maps a label to crops (n, C, H, W).

    Intensity limits are shared across all groups (percentiles over every crop shown), so
    brightness differences between groups stay visible.
    """
    everything = np.concatenate([g for g in groups.values() if len(g)])
    flat = np.moveaxis(everything, 1, 0).reshape(everything.shape[1], -1)
    limits = [tuple(np.percentile(channel, [1.0, 99.5])) for channel in flat]
    fig = Figure(figsize=(columns * 0.9, 1.1 * len(groups) + 0.4), layout="tight")
    axes = fig.subplots(len(groups), 1, squeeze=False)
    for ax, (label, crops) in zip(axes[:, 0], groups.items()):
        tiles = np.stack([composite(c, names, limits=limits) for c in crops]) if len(crops) else np.ones((1, 8, 8, 3))
        ax.imshow(montage(tiles, columns))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def segmentation_overlay_figure(
    image: np.ndarray, names: Sequence[str], nuclei: np.ndarray, cells: np.ndarray, title: str = ""
) -> Figure:
    """A field's composite with cell outlines (white) and nucleus outlines (yellow)."""
    rgb = composite(image, names)
    rgb[find_boundaries(cells, mode="inner")] = (1.0, 1.0, 1.0)
    rgb[find_boundaries(nuclei, mode="inner")] = (1.0, 0.9, 0.0)
    fig = Figure(figsize=(5, 5), layout="tight")
    ax = fig.subplots()
    ax.imshow(rgb)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return fig


def prediction_figure(source: np.ndarray, truth: np.ndarray, prediction: np.ndarray, source_name: str,
                      target_name: str) -> Figure:
    """Input, truth and prediction planes (H, W) side by side; truth and prediction share the
    truth's 1st-99.7th percentile display range, so brightness compares."""
    fig = Figure(figsize=(9, 3.2))
    low, high = np.percentile(truth, [1, 99.7])
    panels = ((source_name, source, {}), (f"{target_name} (truth)", truth, {"vmin": low, "vmax": high}),
              (f"{target_name} (predicted)", prediction, {"vmin": low, "vmax": high}))
    for ax, (title, image, limits) in zip(fig.subplots(1, 3), panels):
        ax.imshow(image, cmap="gray", **limits)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
