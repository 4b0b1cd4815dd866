"""Transmitted light and a membrane stain for in-silico-labeling data: a phase-contrast-like image
rendered from the cells' thickness, paired with DNA and membrane fluorescence of the same cells.

Phase contrast shows optical path differences: a cell (thicker than the medium around it) is darker
than the background and surrounded by a bright halo, with low contrast overall and an uneven
background. The model here: thickness ``t`` (H, W) in relative units; intensity
``B * (1 - contrast * (t - G_halo * t))`` where ``G_halo`` is a Gaussian blur of width
``halo_sigma_px``, so that thick objects darken and their surroundings brighten; ``B`` is the
illumination (vignetting times a smooth random gradient). A Poisson-Gaussian camera adds noise.
Nuclei are thicker than the cytoplasm, so the DNA channel is predictable from the transmitted
image, as in real in-silico-labeling data.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from morphospace.simulate.config import OpticsConfig, TransmittedConfig
from morphospace.simulate.layout import FieldLayout
from morphospace.simulate.optics import camera

__all__ = ["thickness_map", "render_membrane", "phase_contrast", "uneven_background"]

MEMBRANE_PHOTONS = 1500.0  # at the cell outline
MEMBRANE_DIFFUSE = 90.0  # inside cells
MEMBRANE_WIDTH = 1.2  # px, decay length of the stain inward from the outline


def _per_cell_maximum(values: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Maximum of ``values`` over each label 1..count, as a lookup table of length count + 1."""
    if count == 0:
        return np.ones(1)
    maxima = ndimage.maximum(values, labels, index=np.arange(1, count + 1))
    return np.concatenate([[1.0], np.maximum(np.asarray(maxima, float), 1.0)])


def thickness_map(layout: FieldLayout, settings: TransmittedConfig, rng: np.random.Generator) -> np.ndarray:
    """Relative thickness (H, W) float32 of the cells of ``layout``; 0 outside cells.

    Each cell is a dome over its footprint (height ``cell_thickness``, ``mitotic_thickness`` for
    rounded mitotic cells) rising from its outline; each nucleus adds a dome of height
    ``nucleus_thickness``; organelles add smooth texture of relative amplitude ``texture``.
    """
    count = len(layout.plans)
    heights = np.array([0.0] + [settings.mitotic_thickness if plan.mitotic else settings.cell_thickness
                                for plan in layout.plans])
    reach = _per_cell_maximum(layout.edge, layout.cells, count)
    relative = np.clip(layout.edge / reach[layout.cells], 0.0, 1.0)
    thickness = heights[layout.cells] * np.sqrt(1.0 - (1.0 - relative) ** 2)
    nucleus = np.where(layout.nuclei > 0, np.sqrt(np.clip(1.0 - layout.nucleus_distance**2, 0.0, 1.0)), 0.0)
    thickness = thickness + settings.nucleus_thickness * nucleus
    texture = ndimage.gaussian_filter(rng.standard_normal(layout.shape), 1.5)
    texture /= max(float(texture.std()), 1e-12)
    thickness = thickness * np.clip(1.0 + settings.texture * texture, 0.0, None)
    return np.where(layout.cells > 0, thickness, 0.0).astype(np.float32)


def render_membrane(layout: FieldLayout) -> np.ndarray:
    """Membrane stain (H, W) float32 in expected photons: bright at each cell's outline, dim inside."""
    inside = layout.cells > 0
    outline = MEMBRANE_PHOTONS * np.exp(-layout.edge / MEMBRANE_WIDTH)
    return np.where(inside, outline + MEMBRANE_DIFFUSE, 0.0).astype(np.float32)


def uneven_background(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random relative illumination (H, W) around 1: a tilted plane plus a broad bump,
    peak-to-peak about ``2 * amplitude``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
    tilt = rng.uniform(-1.0, 1.0, 2)
    centre = rng.uniform(0.0, 1.0, 2)
    bump = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 0.18)
    field = tilt[0] * (yy - 0.5) + tilt[1] * (xx - 0.5) + (bump - bump.mean())
    scale = max(float(np.abs(field).max()), 1e-12)
    return 1.0 + amplitude * field / scale


def phase_contrast(
    thickness: np.ndarray,
    settings: TransmittedConfig,
    optics: OpticsConfig,
    illumination: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Phase-contrast-like camera image (H, W) uint16 of a ``thickness`` map (H, W).

    ``illumination`` (H, W) is the relative light reaching each pixel. Expected photons are
    ``settings.photons * illumination * (1 - contrast * (t - blur(t, halo_sigma_px)))``, blurred by
    the PSF; the camera of ``optics`` (gain, offset, read noise) forms the image.
    """
    halo = thickness - ndimage.gaussian_filter(thickness, settings.halo_sigma_px)
    relative = np.clip(1.0 - settings.contrast * halo, 0.05, None)
    expected = settings.photons * illumination * ndimage.gaussian_filter(relative, optics.psf_sigma_px)
    return camera(expected, optics, rng)
