"""Image formation: PSF blur, illumination vignetting, batch gains and a Poisson-Gaussian camera."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from morphospace.simulate.config import OpticsConfig

__all__ = ["PlateOptics", "sample_plate_optics", "sample_batch_gains", "vignetting", "form_image", "camera", "UINT16_MAX"]

UINT16_MAX = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class PlateOptics:
    """Illumination of one plate: centre ``(y, x)`` as fractions of the field, fall-off at the
    farthest corner (fraction of the centre intensity)."""

    centre: tuple[float, float]
    falloff: float


def sample_plate_optics(optics: OpticsConfig, rng: np.random.Generator) -> PlateOptics:
    """Random off-centre illumination with a fall-off drawn from ``optics.vignetting``."""
    shift = rng.uniform(-optics.vignetting_shift, optics.vignetting_shift, 2)
    falloff = rng.uniform(*optics.vignetting)
    return PlateOptics((0.5 + float(shift[0]), 0.5 + float(shift[1])), float(falloff))


def sample_batch_gains(optics: OpticsConfig, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """Per-channel multiplicative gains (log-normal, sd ``optics.batch_gain_sd``), shape (channels,)."""
    return rng.lognormal(0.0, optics.batch_gain_sd, channels)


def vignetting(shape: tuple[int, int], plate: PlateOptics) -> np.ndarray:
    """Relative illumination (H, W): 1 at the plate's centre, quadratic fall-off to the farthest corner."""
    cy, cx = plate.centre[0] * (shape[0] - 1), plate.centre[1] * (shape[1] - 1)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    corners = [(y, x) for y in (0, shape[0] - 1) for x in (0, shape[1] - 1)]
    r2_max = max((y - cy) ** 2 + (x - cx) ** 2 for y, x in corners)
    return 1.0 - plate.falloff * r2 / r2_max


def form_image(
    photons: np.ndarray,
    optics: OpticsConfig,
    illumination: np.ndarray,
    gains: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Camera image (C, H, W) uint16 of fluorophore maps ``photons`` (C, H, W).

    Expected photons are the PSF-blurred maps plus autofluorescence, times ``brightness``,
    ``illumination`` (H, W) and the channel ``gains`` (C,). The camera draws Poisson photons, scales
    by ``camera_gain``, adds Gaussian read noise and ``camera_offset``, rounds and clips to uint16.
    """
    blurred = ndimage.gaussian_filter(photons, (0.0, optics.psf_sigma_px, optics.psf_sigma_px))
    expected = (np.maximum(blurred, 0.0) + optics.background) * optics.brightness
    expected = expected * illumination[None] * gains[:, None, None]
    return camera(expected, optics, rng)


def camera(expected: np.ndarray, optics: OpticsConfig, rng: np.random.Generator) -> np.ndarray:
    """uint16 camera image of ``expected`` photons per pixel: Poisson photons times ``camera_gain``,
    plus Gaussian read noise around ``camera_offset``, rounded and clipped."""
    electrons = rng.poisson(expected.astype(np.float64))
    signal = electrons * optics.camera_gain + rng.normal(optics.camera_offset, optics.read_noise, expected.shape)
    return np.clip(np.rint(signal), 0, UINT16_MAX).astype(np.uint16)
