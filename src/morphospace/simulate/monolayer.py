"""One field of an endothelial-like monolayer (``mode: donors``): confluent cells with junctions,
stress fibres and nuclei, whose cytoskeleton is disrupted in proportion to a ``disruption`` in [0, 1].

A healthy monolayer (``disruption`` 0) has straight, continuous junctions and long stress fibres
aligned with the field's flow direction. Disruption makes junctions wavy and broken, shortens,
thins and misaligns the fibres, and moves actin to the cell cortex and to puncta (the stress-fibre
and junction phenotype of endothelial cells under a patient's plasma). Lengths are in px, angles in
radians, channel maps in relative fluorophore units before :func:`render_monolayer` scales them to
photons and forms the camera image.

Examples
--------
>>> import numpy as np
>>> from morphospace.simulate.config import OpticsConfig
>>> look = MonolayerLook(disruption=0.0, cell_diameter_px=40.0, fibre_period_px=6.0, alignment=0.8)
>>> field = render_monolayer((128, 128), look, OpticsConfig(), np.ones((128, 128)), np.ones(3),
...                          np.random.default_rng(0))
>>> field.channels.shape, field.channels.dtype, field.n_cells > 4
((3, 128, 128), dtype('uint16'), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.stats import norm

from morphospace.simulate.config import DONOR_CHANNELS, OpticsConfig
from morphospace.simulate.optics import form_image

__all__ = ["DONOR_CHANNELS", "MonolayerLook", "MonolayerField", "monolayer_maps", "render_monolayer"]

_PHOTONS = (300.0, 250.0, 200.0)
"""Photons per pixel at relative intensity 1, per channel of DONOR_CHANNELS."""


@dataclass(frozen=True)
class MonolayerLook:
    """The appearance of one donor's cells.

    ``disruption`` in [0, 1] is the cytoskeletal phenotype (0 healthy); ``alignment`` in [0, 1] the
    healthy concentration of fibre angles around the flow direction (1: all parallel);
    ``fibre_period_px`` the spacing of parallel stress fibres.
    """

    disruption: float
    cell_diameter_px: float
    fibre_period_px: float
    alignment: float


@dataclass(frozen=True)
class MonolayerField:
    """A rendered field: camera image (3, H, W) uint16 in DONOR_CHANNELS order, cell labels (H, W)."""

    channels: np.ndarray
    cell_labels: np.ndarray

    @property
    def n_cells(self) -> int:
        return int(len(np.unique(self.cell_labels)))


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise (H, W) rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def _cell_seeds(shape: tuple[int, int], diameter: float, rng: np.random.Generator) -> np.ndarray:
    """Cell centres (N, 2) as (y, x): a jittered hexagonal lattice of spacing ``diameter`` covering
    the field and a one-cell margin around it (so that border cells are cut, not missing)."""
    rows = np.arange(-diameter, shape[0] + diameter, diameter * np.sqrt(3) / 2)
    seeds = [(y, x + (i % 2) * diameter / 2) for i, y in enumerate(rows)
             for x in np.arange(-diameter, shape[1] + diameter, diameter)]
    points = np.asarray(seeds, dtype=np.float64)
    return points + rng.uniform(-0.25, 0.25, points.shape) * diameter


def _labels(shape: tuple[int, int], seeds: np.ndarray, look: MonolayerLook,
            rng: np.random.Generator) -> np.ndarray:
    """Seed index of every pixel (H, W): Voronoi cells whose borders are warped by a smooth
    displacement that grows with the disruption (wavy junctions)."""
    amplitude = look.cell_diameter_px * (0.03 + 0.15 * look.disruption)
    sigma = look.cell_diameter_px / 4
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    yy += amplitude * _smooth_noise(shape, sigma, rng)
    xx += amplitude * _smooth_noise(shape, sigma, rng)
    _, index = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    return index.reshape(shape)


def _borders(labels: np.ndarray) -> np.ndarray:
    """Pixels (H, W) bool whose right or lower neighbour belongs to another cell."""
    border = np.zeros(labels.shape, bool)
    border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    border[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return border


def _junctions(border: np.ndarray, look: MonolayerLook, rng: np.random.Generator) -> np.ndarray:
    """Junction stain (H, W): 2 px lines along the borders, broken into gaps over a share of
    their length that grows with the disruption (5% healthy, 50% at full disruption)."""
    gap_share = 0.05 + 0.45 * look.disruption
    continuity = _smooth_noise(border.shape, look.cell_diameter_px / 6, rng) > norm.ppf(gap_share)
    lines = ndimage.binary_dilation(border, iterations=1)
    texture = 0.75 + 0.25 * _smooth_noise(border.shape, 2.0, rng).clip(-1, 1)
    return lines * continuity * texture


def _fibres(labels: np.ndarray, n_cells: int, look: MonolayerLook, rng: np.random.Generator) -> np.ndarray:
    """Stress fibres (H, W): in each cell parallel ridges at the cell's angle; the angles spread
    around the flow direction as alignment falls with the disruption; fibres are cut into
    segments and dimmed as the disruption grows."""
    flow = rng.uniform(0, np.pi)
    alignment = look.alignment * (1 - look.disruption)
    angles = flow + rng.normal(0, (1 - alignment) * np.pi / 2 + 0.05, n_cells)
    phases = rng.uniform(0, 2 * np.pi, n_cells)
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]].astype(np.float64)
    theta = angles[labels]
    across = xx * np.cos(theta) + yy * np.sin(theta)
    ridges = ((1 + np.cos(2 * np.pi * across / look.fibre_period_px + phases[labels])) / 2) ** 6
    cut_share = 0.1 + 0.6 * look.disruption
    segments = _smooth_noise(labels.shape, look.fibre_period_px, rng) > norm.ppf(cut_share)
    return (1 - 0.7 * look.disruption) * ridges * segments


def _cortex_and_puncta(border: np.ndarray, look: MonolayerLook, rng: np.random.Generator) -> np.ndarray:
    """Actin at the cell cortex (a band along the borders) and in puncta, both growing with the
    disruption (H, W)."""
    distance = ndimage.distance_transform_edt(~border)
    cortex = (0.25 + 0.5 * look.disruption) * np.exp(-distance / 2.5)
    spots = rng.random(border.shape) < 0.002 * look.disruption
    puncta = 0.8 * ndimage.gaussian_filter(spots.astype(np.float64), 1.2) * (2 * np.pi * 1.2 ** 2)
    return cortex + puncta


def _nuclei(labels: np.ndarray, seeds: np.ndarray, look: MonolayerLook, rng: np.random.Generator) -> np.ndarray:
    """DNA stain (H, W): one textured ellipse per cell at its seed, long axis at a random angle,
    semi-axes about a quarter and a sixth of the cell diameter."""
    n = len(seeds)
    major = look.cell_diameter_px * rng.uniform(0.2, 0.26, n)
    minor = major * rng.uniform(0.6, 0.85, n)
    angle = rng.uniform(0, np.pi, n)
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]].astype(np.float64)
    dy, dx = yy - seeds[labels, 0], xx - seeds[labels, 1]
    along = dx * np.cos(angle[labels]) + dy * np.sin(angle[labels])
    across = -dx * np.sin(angle[labels]) + dy * np.cos(angle[labels])
    inside = (along / major[labels]) ** 2 + (across / minor[labels]) ** 2 <= 1
    return inside * (1 + 0.15 * _smooth_noise(labels.shape, 1.5, rng))


def monolayer_maps(shape: tuple[int, int], look: MonolayerLook,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free fluorophore maps (3, H, W) in DONOR_CHANNELS order (relative units, about 0 to
    1.5) and the cell labels (H, W) uint16 (1..n, numbered in seed order)."""
    seeds = _cell_seeds(shape, look.cell_diameter_px, rng)
    index = _labels(shape, seeds, look, rng)
    border = _borders(index)
    dna = _nuclei(index, seeds, look, rng)
    actin = _fibres(index, len(seeds), look, rng) + _cortex_and_puncta(border, look, rng)
    junctions = _junctions(border, look, rng)
    _, labels = np.unique(index, return_inverse=True)
    return np.stack([dna, actin, junctions]), (labels.reshape(shape) + 1).astype(np.uint16)


def render_monolayer(shape: tuple[int, int], look: MonolayerLook, optics: OpticsConfig, illumination: np.ndarray,
                     gains: np.ndarray, rng: np.random.Generator) -> MonolayerField:
    """A camera image of one monolayer field of ``shape`` (H, W) px.

    ``illumination`` (H, W) is the plate's vignetting, ``gains`` (3,) multiplies the channels'
    photons (donor, well and plate nuisance); blur, background and camera noise follow ``optics``.
    """
    maps, labels = monolayer_maps(shape, look, rng)
    photons = maps * np.asarray(_PHOTONS)[:, None, None]
    return MonolayerField(form_image(photons, optics, illumination, np.asarray(gains, float), rng), labels)
