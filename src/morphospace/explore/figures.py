"""Figures of crops and fields: colour composites, montages, segmentation overlays.

Every figure that shows crops colours them with :func:`crops_rgb`: one channel in grey, several in
their channel colours (:func:`channel_colors`), each channel stretched on its own between display
limits taken over the whole panel (:func:`display_limits`), and names the channels in a legend
under the figure (:func:`add_channel_legend`).

Examples
--------
>>> import numpy as np
>>> rgb = composite(np.random.default_rng(0).random((3, 16, 16)), ["DNA", "Actin", "Tubulin"])
>>> rgb.shape, float(rgb.min()) >= 0, float(rgb.max()) <= 1
((16, 16, 3), True, True)
>>> channel_colors(["ch0"])
[(1.0, 1.0, 1.0)]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from morphospace.atomic import atomic_file

__all__ = ["DISPLAY_PERCENTILES", "channel_colors", "display_limits", "stretch", "composite", "crops_rgb",
           "add_channel_legend", "rgb_figure", "montage", "crop_montage_figure", "segmentation_overlay_figure",
           "prediction_figure", "save_figure"]

DISPLAY_PERCENTILES = (1.0, 99.8)
"""Percentiles of a channel's values over a panel that display as black and as full colour."""

Color = tuple[float, float, float]
_GREY: Color = (1.0, 1.0, 1.0)
_BLUE: Color = (0.2, 0.45, 1.0)
_RED: Color = (1.0, 0.2, 0.2)
_GREEN: Color = (0.2, 1.0, 0.2)
_NAMED_COLORS: dict[str, Color] = {
    "dna": _BLUE, "dapi": _BLUE, "hoechst": _BLUE, "h2b": _BLUE, "nuclei": _BLUE, "nucleus": _BLUE,
    "actin": _RED, "phalloidin": _RED,
    "tubulin": _GREEN,
}
_PALETTE: list[Color] = [(1.0, 0.2, 1.0), _GREEN, (0.0, 0.9, 1.0), (1.0, 0.85, 0.0), (1.0, 0.55, 0.0), _RED, _BLUE]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure as PNG through a temporary name (no half-written file on failure)."""
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def channel_colors(names: Sequence[str]) -> list[Color]:
    """RGB colour (values in [0, 1]) of each channel. One channel: grey. Several: nuclear stains
    (DNA, DAPI, Hoechst, H2B, nuclei) blue, actin red, tubulin green, any other the next colour of a
    fixed palette (magenta, green, cyan, yellow, orange, ...) that no named channel took."""
    if len(names) == 1:
        return [_GREY]
    named = [_NAMED_COLORS.get(name.lower()) for name in names]
    free = [color for color in _PALETTE if color not in named]
    spare = iter(free * (len(names) // len(free) + 1))
    return [color or next(spare) for color in named]


def display_limits(images: np.ndarray, low: float = DISPLAY_PERCENTILES[0],
                   high: float = DISPLAY_PERCENTILES[1]) -> list[tuple[float, float]]:
    """Per-channel display range of a panel of crops (N, C, ...) : the ``low`` and ``high``
    percentiles of each channel over every pixel of every crop."""
    images = np.asarray(images, dtype=np.float32)
    flat = np.moveaxis(images, 1, 0).reshape(images.shape[1], -1)
    return [(float(lo), float(hi)) for lo, hi in np.percentile(flat, [low, high], axis=1).T]


def stretch(channel: np.ndarray, low: float, high: float) -> np.ndarray:
    """``channel`` mapped linearly so that ``low`` -> 0 and ``high`` -> 1, clipped to [0, 1]."""
    return np.clip((np.asarray(channel, dtype=np.float32) - low) / max(high - low, 1e-6), 0, 1)


def composite(
    image: np.ndarray, names: Sequence[str], low: float = DISPLAY_PERCENTILES[0], high: float = DISPLAY_PERCENTILES[1],
    limits: Sequence[tuple[float, float]] | None = None,
) -> np.ndarray:
    """Additive RGB composite (H, W, 3) in [0, 1] of a (C, H, W) image in :func:`channel_colors`,
    each channel stretched between its ``low``-``high`` percentiles (or given ``limits``)."""
    image = np.asarray(image, dtype=np.float32)
    limits = limits if limits is not None else display_limits(image[None], low, high)
    rgb = np.zeros((*image.shape[1:], 3), dtype=np.float32)
    for channel, (lo, hi), color in zip(image, limits, channel_colors(names)):
        rgb += stretch(channel, lo, hi)[..., None] * np.asarray(color, dtype=np.float32)
    return np.clip(rgb, 0, 1)


def crops_rgb(crops: np.ndarray, names: Sequence[str],
              limits: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """RGB composites (N, H, W, 3) of a panel of crops (N, C, H, W), every crop with the same
    display limits per channel (default :func:`display_limits` of the panel), so brightness
    differences between crops stay visible; z-stacks (N, C, D, H, W) show their maximum projection."""
    crops = np.asarray(crops, dtype=np.float32)
    crops = crops.max(axis=2) if crops.ndim == 5 else crops
    limits = limits if limits is not None else display_limits(crops)
    return np.stack([composite(crop, names, limits=limits) for crop in crops])


def add_channel_legend(fig: Figure, names: Sequence[str]) -> None:
    """A line under ``fig`` naming each channel beside a patch of its display colour."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=color, edgecolor="0.4", label=name) for name, color in zip(names, channel_colors(names))]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=len(handles), frameon=False,
               fontsize=7, handlelength=1.0, handleheight=1.0, columnspacing=1.2)


def rgb_figure(rgb: np.ndarray, names: Sequence[str], dpi: int = 110, min_width: int = 480) -> Figure:
    """An RGB image (H, W, 3) with the channel legend under it; saved at ``dpi``, each image pixel
    is a square of whole pixels, enlarged so that the image is about ``min_width`` pixels wide or wider."""
    height, width = rgb.shape[:2]
    scale = max(1, round(min_width / width))
    fig = Figure(figsize=(scale * width / dpi, scale * height / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    add_channel_legend(fig, names)
    return fig


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

    Display limits are shared across all groups (:func:`display_limits` over every crop shown),
    so brightness differences between groups stay visible.
    """
    limits = display_limits(np.concatenate([g for g in groups.values() if len(g)]))
    fig = Figure(figsize=(columns * 0.9, 1.1 * len(groups) + 0.4), layout="tight")
    axes = fig.subplots(len(groups), 1, squeeze=False)
    for ax, (label, crops) in zip(axes[:, 0], groups.items()):
        tiles = crops_rgb(crops, names, limits) if len(crops) else np.ones((1, 8, 8, 3))
        ax.imshow(montage(tiles, columns))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    add_channel_legend(fig, names)
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
    add_channel_legend(fig, names)
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
