"""Outlines, placement and rasterisation of cells and nuclei.

Coordinates are pixels, ``(y, x)`` with pixel ``(r, c)`` centred at ``(r, c)``; angles are radians
measured from the image x axis toward +y (downwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.measure import label as label_regions
from skimage.segmentation import expand_labels

__all__ = [
    "StarShape",
    "random_star",
    "place_centres",
    "rasterize",
    "separate_labels",
    "close_gaps",
    "largest_components",
    "edge_distance",
    "relabel",
]

_MAX_HARMONIC_SUM = 0.45


@dataclass(frozen=True)
class StarShape:
    """Star-shaped outline ``r(t) = ellipse(t) * (1 + sum_k a_k cos(k t + p_k))``, ``t = theta - angle``.

    The ellipse has mean radius ``radius`` (px) and axis ratio ``elongation`` (>= 1, major axis
    along ``angle``); harmonic orders start at 2 so the centre stays the centre.
    """

    y: float
    x: float
    radius: float
    elongation: float = 1.0
    angle: float = 0.0
    amplitudes: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()

    @property
    def semi_axes(self) -> tuple[float, float]:
        """Major and minor semi-axes of the underlying ellipse (px)."""
        root = np.sqrt(self.elongation)
        return self.radius * root, self.radius / root

    @property
    def extent(self) -> float:
        """An upper bound of ``r(theta)`` (px)."""
        return self.semi_axes[0] * (1.0 + float(np.sum(np.abs(self.amplitudes))))

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        """Outline radius (px) in directions ``theta`` (any shape)."""
        t = np.asarray(theta) - self.angle
        major, minor = self.semi_axes
        r = major * minor / np.hypot(minor * np.cos(t), major * np.sin(t))
        modulation = np.ones_like(r)
        for order, (amplitude, phase) in enumerate(zip(self.amplitudes, self.phases), start=2):
            modulation += amplitude * np.cos(order * t + phase)
        return r * modulation

    def normalized_distance(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Distance from the centre divided by the outline radius in that direction (< 1 inside)."""
        dy, dx = yy - self.y, xx - self.x
        return np.hypot(dy, dx) / self.radius_at(np.arctan2(dy, dx))

    def point(self, theta: np.ndarray, fraction: np.ndarray) -> np.ndarray:
        """Points at ``fraction`` of the outline radius in directions ``theta``; shape (..., 2) as (y, x)."""
        rho = np.asarray(fraction) * self.radius_at(theta)
        return np.stack([self.y + rho * np.sin(theta), self.x + rho * np.cos(theta)], axis=-1)

    def bbox(self, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """Pixel box ``(y0, y1, x0, x1)`` holding the shape, clipped to ``shape``; None if outside."""
        reach = self.extent + 1.0
        y0, y1 = max(int(np.floor(self.y - reach)), 0), min(int(np.ceil(self.y + reach)) + 1, shape[0])
        x0, x1 = max(int(np.floor(self.x - reach)), 0), min(int(np.ceil(self.x + reach)) + 1, shape[1])
        if y0 >= y1 or x0 >= x1:
            return None
        return y0, y1, x0, x1


def random_star(
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    elongation: float,
    angle: float,
    irregularity: float,
    orders: int = 4,
) -> StarShape:
    """A :class:`StarShape` with ``orders`` random harmonics (2..orders+1) of typical size ``irregularity``."""
    ks = np.arange(2, orders + 2)
    amplitudes = rng.normal(0.0, irregularity, orders) / np.sqrt(ks - 1)
    phases = rng.uniform(0.0, 2.0 * np.pi, orders)
    total = np.sum(np.abs(amplitudes))
    if total > _MAX_HARMONIC_SUM:
        amplitudes *= _MAX_HARMONIC_SUM / total
    return StarShape(
        float(centre[0]), float(centre[1]), float(radius), float(max(elongation, 1.0)), float(angle),
        tuple(float(a) for a in amplitudes), tuple(float(p) for p in phases),
    )


def place_centres(
    rng: np.random.Generator,
    radii: np.ndarray,
    size: int,
    packing: float,
    clustering: float,
    attempts: int = 64,
) -> list[tuple[float, float] | None]:
    """Random centres in a ``size`` x ``size`` field, one per radius (px), in order.

    A candidate is valid when its distance to every accepted centre is at least ``packing`` times
    the sum of the two radii. With probability ``clustering`` the valid candidate closest to an
    accepted cell is taken (cells grow in colonies), otherwise the first valid one; with no valid
    candidate among ``attempts`` the cell is left out (None).
    """
    placed: list[np.ndarray] = []
    placed_radii: list[float] = []
    result: list[tuple[float, float] | None] = []
    for radius in radii:
        candidates = rng.uniform(0.0, size - 1.0, (attempts, 2))
        cluster = rng.random() < clustering
        ok = np.ones(attempts, bool)
        slack = np.zeros(attempts)
        if placed:
            gaps = np.linalg.norm(candidates[:, None, :] - np.asarray(placed)[None], axis=2)
            ratio = gaps / (radius + np.asarray(placed_radii))[None]
            ok = np.all(ratio >= packing, axis=1)
            slack = ratio.min(axis=1)
        if not ok.any():
            result.append(None)
            continue
        pick = int(np.argmin(np.where(ok, slack, np.inf))) if cluster else int(np.argmax(ok))
        chosen = candidates[pick]
        placed.append(chosen)
        placed_radii.append(float(radius))
        result.append((float(chosen[0]), float(chosen[1])))
    return result


def rasterize(
    shapes: Sequence[StarShape],
    shape: tuple[int, int],
    allowed: np.ndarray | None = None,
    owners: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (ids 1..n in ``shapes`` order) and each pixel's normalised distance to its owner.

    A pixel inside several outlines goes to the one with the smallest normalised distance, so
    overlapping shapes meet along a shared boundary. With ``allowed`` (int image) and ``owners``,
    shape ``i`` may only claim pixels where ``allowed == owners[i]``. Returns int32 labels and
    float32 distances (``inf`` on background).
    """
    labels = np.zeros(shape, np.int32)
    distance = np.full(shape, np.inf, np.float32)
    for index, star in enumerate(shapes):
        box = star.bbox(shape)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = star.normalized_distance(yy.astype(np.float64), xx.astype(np.float64))
        sub_d, sub_l = distance[y0:y1, x0:x1], labels[y0:y1, x0:x1]
        claim = (d < 1.0) & (d < sub_d)
        if allowed is not None and owners is not None:
            claim &= allowed[y0:y1, x0:x1] == owners[index]
        sub_d[claim] = d[claim]
        sub_l[claim] = index + 1
    return labels, distance


def separate_labels(labels: np.ndarray, gap: int = 1) -> np.ndarray:
    """Remove every pixel within ``gap`` px (chessboard) of another label.

    Two labels that touched are then separated by at least ``2 * gap`` px of background.
    """
    size = 2 * gap + 1
    big = np.iinfo(labels.dtype).max
    highest = ndimage.maximum_filter(labels, size=size, mode="nearest")
    lowest = ndimage.minimum_filter(np.where(labels > 0, labels, big), size=size, mode="nearest")
    clash = (labels > 0) & ((highest != labels) | (lowest != labels))
    return np.where(clash, 0, labels)


def close_gaps(labels: np.ndarray, reach: int) -> np.ndarray:
    """Fill background lying within ``reach`` px (chessboard) of two different labels.

    Each filled pixel goes to its nearest label, so cells closer than ``2 * reach`` px come to
    share a border; free outlines stay where they are.
    """
    size = 2 * reach + 1
    big = np.iinfo(labels.dtype).max
    highest = ndimage.maximum_filter(labels, size=size, mode="constant")
    lowest = ndimage.minimum_filter(np.where(labels > 0, labels, big), size=size, mode="constant", cval=big)
    between = (labels == 0) & (highest > 0) & (lowest < big) & (highest != lowest)
    return np.where(between, expand_labels(labels, reach * np.sqrt(2.0)), labels)


def largest_components(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest 4-connected piece of every label."""
    pieces = label_regions(labels, background=0, connectivity=1)
    sizes = np.bincount(pieces.ravel())
    owner = np.zeros(sizes.size, labels.dtype)
    owner[pieces.ravel()] = labels.ravel()
    order = np.lexsort((-sizes[1:], owner[1:])) + 1
    first = np.ones(order.size, bool)
    first[1:] = owner[order[1:]] != owner[order[:-1]]
    keep = np.zeros(sizes.size, bool)
    keep[order[first]] = True
    return np.where(keep[pieces], labels, 0)


def edge_distance(labels: np.ndarray) -> np.ndarray:
    """Distance (px, float32) from each labelled pixel to its label's outline; 0 on outline and background.

    Outline pixels are those with a 4-neighbour of another label or of background; the image
    border is not an outline (cells continue beyond the field).
    """
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre)
    )
    interior = (labels > 0) & ~edge
    return ndimage.distance_transform_edt(interior).astype(np.float32)


def relabel(labels: np.ndarray, keep: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Map the ids in ``keep`` (ascending, each <= ``count``) to 1..len(keep), all others to 0.

    Returns the new label image and the lookup table (old id -> new id, length ``count + 1``).
    """
    table = np.zeros(count + 1, labels.dtype)
    table[keep] = np.arange(1, len(keep) + 1, dtype=labels.dtype)
    return table[labels], table
