"""Fluorophore maps of one field: DNA, F-actin and beta-tubulin, in expected photons per pixel.

The maps are noise-free and unblurred except for the intrinsic width of filaments and the DNA
light spread out of focus around nuclei (:data:`DNA_HALO`);
:mod:`morphospace.simulate.optics` adds the PSF, illumination and camera. Points are ``(y, x)``
in pixels. Brightness constants are photons at ``brightness=1`` for a DMSO cell.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from morphospace.simulate.geometry import StarShape
from morphospace.simulate.layout import FieldLayout
from morphospace.simulate.phenotypes import Phenotype
from morphospace.simulate.population import CellPlan

__all__ = ["render_channels", "render_dna", "render_actin", "render_tubulin", "splat", "sample_segments"]

DNA_PHOTONS = 2400.0
ACTIN_DIFFUSE = 450.0
ACTIN_CORTEX = 500.0
FIBRE_PHOTONS = 140.0  # per 0.5 px of stress fibre
PUNCTUM_PHOTONS = 1200.0  # peak of an actin punctum
TUBULIN_DIFFUSE = 350.0
MICROTUBULE_PHOTONS = 90.0  # per 0.8 px of microtubule
SPINDLE_PHOTONS = 150.0  # per 0.5 px of spindle fibre
CENTROSOME_PHOTONS = 300.0  # peak
AGGRESOME_PHOTONS = 1500.0  # peak at aggresome = 1
MITOTIC_CORTEX = 1.8  # cortical actin of mitotic cells relative to interphase
CORTEX_WIDTH = 3.0  # px, decay length of cortical actin inward from the cell outline
NUCLEUS_TUBULIN_DIMMING = 0.3  # fraction of diffuse tubulin missing over the nucleus
MT_STEP = 0.8  # px between microtubule samples
MT_PER_CELL = 40.0  # microtubules of a DMSO cell of radius _REFERENCE_RADIUS
_REFERENCE_RADIUS = 23.5
CYTOPLASM_TEXTURE = 0.25  # relative amplitude of the patchy variation of diffuse actin and tubulin
CYTOPLASM_TEXTURE_SIGMA = 1.5  # px, grain of that variation
NUCLEUS_ACTIN_DIMMING = 0.35  # fraction of diffuse actin missing over the nucleus
DNA_HALO = 0.08  # share of DNA light spread out of focus around the nucleus
DNA_HALO_SIGMA = 5.0  # px
PERINUCLEAR_PX = 10.0  # decay length of the cytoplasm's thickness away from the nucleus
TUBULIN_BLEED_THROUGH = 0.05  # share of tubulin light seen in the DNA channel
SHARED_TEXTURE = 0.5  # share of the patchy variance actin and tubulin have in common
DNA_AUTOFLUORESCENCE = 200.0  # photons per unit cytoplasm thickness in the DNA channel


def splat(points: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sum ``weights`` at sub-pixel ``points`` (N, 2) into an image by bilinear interpolation."""
    image = np.zeros(shape[0] * shape[1])
    if len(points) == 0:
        return image.reshape(shape)
    base = np.floor(points).astype(np.int64)
    frac = points - base
    for dy in (0, 1):
        for dx in (0, 1):
            y, x = base[:, 0] + dy, base[:, 1] + dx
            w = weights * np.abs(1 - dy - frac[:, 0]) * np.abs(1 - dx - frac[:, 1])
            ok = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
            image += np.bincount(y[ok] * shape[1] + x[ok], w[ok], minlength=image.size)
    return image.reshape(shape)


def blob_layer(points: np.ndarray, peaks: np.ndarray, sigma: float, shape: tuple[int, int]) -> np.ndarray:
    """Gaussian spots of width ``sigma`` px whose peaks are about ``peaks`` at ``points``."""
    return ndimage.gaussian_filter(splat(points, peaks * 2.0 * np.pi * sigma**2, shape), sigma)


def sample_segments(
    starts: np.ndarray, ends: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``spacing`` px along straight segments (N, 2) -> points (M, 2), segment index (M,)."""
    if len(starts) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    lengths = np.linalg.norm(ends - starts, axis=1)
    counts = np.maximum(np.ceil(lengths / spacing).astype(np.int64), 1) + 1
    index = np.repeat(np.arange(len(starts)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    t = offsets / (counts[index] - 1)
    points = starts[index] + t[:, None] * (ends - starts)[index]
    return points, index


def _value_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Value of ``image`` at the pixel nearest each point (..., 2); 0 outside the image."""
    iy, ix = np.rint(points[..., 0]).astype(np.int64), np.rint(points[..., 1]).astype(np.int64)
    inside = (iy >= 0) & (iy < image.shape[0]) & (ix >= 0) & (ix < image.shape[1])
    result = np.zeros(iy.shape, image.dtype)
    result[inside] = image[iy[inside], ix[inside]]
    return result


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / field.std()


def _patches(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Patchy multiplicative variation of diffuse cytoplasm (mean about 1, never below 0.2)."""
    return np.clip(1.0 + CYTOPLASM_TEXTURE * _unit_noise(rng, shape, CYTOPLASM_TEXTURE_SIGMA), 0.2, None)


def _thickness(layout: FieldLayout, dimming: float) -> np.ndarray:
    """Relative cytoplasm in the light path: :func:`_diffuse_profile`, less ``dimming`` over nuclei."""
    return _diffuse_profile(layout) * (1.0 - dimming * (layout.nuclei > 0))


def _per_cell(values: list[float]) -> np.ndarray:
    """Array indexed by cell id (0 -> 0)."""
    return np.concatenate([[0.0], np.asarray(values, float)])


def _direction(angle: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 2) as (y, x) for ``angle`` (rad)."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _points_in_shapes(
    rng: np.random.Generator,
    shapes: Sequence[StarShape],
    labels: np.ndarray,
    counts: np.ndarray,
    reach: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[i]`` random points inside ``shapes[i]`` (within ``reach`` of its outline radius,
    area-uniform), kept where ``labels`` holds ``i + 1``; returns points (M, 2) and ids (M,)."""
    ids = np.repeat(np.arange(1, len(shapes) + 1), counts)
    theta = rng.uniform(0.0, 2.0 * np.pi, ids.size)
    fraction = reach * np.sqrt(rng.random(ids.size))
    points = np.zeros((ids.size, 2))
    for object_id in np.unique(ids):
        pick = ids == object_id
        points[pick] = shapes[object_id - 1].point(theta[pick], fraction[pick])
    keep = _value_at(labels, points) == ids
    return points[keep], ids[keep]


def render_dna(layout: FieldLayout, phenotype: Phenotype, rng: np.random.Generator) -> np.ndarray:
    """DNA: dome-shaped nuclei with chromatin texture, darker nucleoli and (DNA damage) bright foci."""
    shape = layout.shape
    owner = layout.nucleus_owner
    plans = layout.plans
    mitotic = np.array([False] + [plans[c - 1].mitotic for c in owner[1:]])
    level = np.array([0.0] + [plans[c - 1].dna_level for c in owner[1:]]) * DNA_PHOTONS * phenotype.dna_level
    ring = np.array([0.0] + [plans[c - 1].ring for c in owner[1:]])
    texture_amplitude = np.where(mitotic, 0.06, phenotype.chromatin_texture)
    coarse = phenotype.chromatin_coarseness
    texture = (1 - coarse) * _unit_noise(rng, shape, 1.0) + coarse * _unit_noise(rng, shape, 2.5)
    texture /= np.hypot(1 - coarse, coarse)
    labels, d = layout.nuclei, layout.nucleus_distance
    profile = 1.0 - 0.25 * d**2
    profile = np.where(d < ring[labels], 0.35 * profile, profile)
    dna = level[labels] * profile * np.clip(1.0 + texture_amplitude[labels] * texture, 0.2, None)
    interphase = ~mitotic[1:]
    counts = rng.poisson(phenotype.nucleoli * interphase)
    nucleoli, _ = _points_in_shapes(rng, layout.nucleus_shapes, labels, counts, 0.55)
    darkening = blob_layer(nucleoli, np.ones(len(nucleoli)), 1.6, shape)
    dna *= 1.0 - phenotype.nucleolus_contrast * np.clip(darkening, 0.0, 1.0)
    counts = rng.poisson(phenotype.dna_foci * interphase)
    foci, foci_owner = _points_in_shapes(rng, layout.nucleus_shapes, labels, counts, 0.8)
    dna += blob_layer(foci, 0.8 * level[foci_owner], 0.8, shape) * (labels > 0)
    return (1.0 - DNA_HALO) * dna + DNA_HALO * ndimage.gaussian_filter(dna, DNA_HALO_SIGMA)


def _diffuse_profile(layout: FieldLayout) -> np.ndarray:
    """Relative cytoplasm thickness: thinner within a few px of the cell outline, thickest around the
    nucleus (falling over about :data:`PERINUCLEAR_PX`)."""
    rim = 0.55 + 0.45 * (1.0 - np.exp(-layout.edge / 6.0))
    return np.where(layout.cells > 0, rim * (0.5 + 0.5 * np.exp(-layout.to_nucleus / PERINUCLEAR_PX)), 0.0)


def render_actin(layout: FieldLayout, phenotype: Phenotype, rng: np.random.Generator,
                 patches: np.ndarray | None = None) -> np.ndarray:
    """F-actin: diffuse patchy actin (``patches``: its relative variation, drawn when None), a soft
    cortical band, stress fibres and (disruptors) puncta."""
    plans = layout.plans
    expression = _per_cell([p.expression for p in plans])
    cortex = _per_cell([MITOTIC_CORTEX if p.mitotic else 1.0 for p in plans])
    labels = layout.cells
    actin = expression[labels] * (labels > 0) * (
        ACTIN_DIFFUSE * phenotype.actin_level * (_patches(rng, layout.shape) if patches is None else patches)
        * _thickness(layout, NUCLEUS_ACTIN_DIMMING)
        + ACTIN_CORTEX * phenotype.cortical_actin * cortex[labels] * np.exp(-layout.edge / CORTEX_WIDTH)
    )
    fibres = _stress_fibres(rng, layout, phenotype)
    actin += ndimage.gaussian_filter(fibres, 0.6)
    interphase = np.array([0.0 if p.mitotic else 1.0 for p in plans])
    counts = rng.poisson(phenotype.actin_puncta * interphase)
    puncta, owners = _points_in_shapes(rng, [p.shape for p in plans], labels, counts, 0.9)
    actin += blob_layer(puncta, PUNCTUM_PHOTONS * expression[owners], 0.9, layout.shape)
    return actin


def _stress_fibres(rng: np.random.Generator, layout: FieldLayout, phenotype: Phenotype) -> np.ndarray:
    """Straight fibres roughly along each interphase cell's long axis, inside its outline."""
    starts, ends, owners, weights = [], [], [], []
    for cell_id, plan in enumerate(layout.plans, start=1):
        if plan.mitotic:
            continue
        star = plan.shape
        count = rng.poisson(phenotype.stress_fibres * star.radius / _REFERENCE_RADIUS)
        major, minor = star.semi_axes
        across = rng.uniform(-0.75, 0.75, count) * minor
        along = rng.normal(0.0, 0.15 * major, count)
        axis = star.angle + rng.normal(0.0, phenotype.fibre_spread, count)
        centre = np.array([star.y, star.x])
        tangent = _direction(star.angle)
        normal = _direction(star.angle + np.pi / 2)
        mid = centre + across[:, None] * normal + along[:, None] * tangent
        half = 1.6 * star.extent * _direction(axis)
        starts.append(mid - half)
        ends.append(mid + half)
        owners.append(np.full(count, cell_id))
        weights.append(rng.uniform(0.5, 1.2, count) * plan.expression)
    if not starts:
        return np.zeros(layout.shape)
    points, index = sample_segments(np.concatenate(starts), np.concatenate(ends), 0.5)
    owner = np.concatenate(owners)[index]
    keep = (_value_at(layout.cells, points) == owner) & (_value_at(layout.edge, points) >= 1.5)
    weight = FIBRE_PHOTONS * phenotype.actin_level * np.concatenate(weights)[index]
    return splat(points[keep], weight[keep], layout.shape)


def render_tubulin(layout: FieldLayout, phenotype: Phenotype, rng: np.random.Generator,
                   patches: np.ndarray | None = None) -> np.ndarray:
    """Beta-tubulin: diffuse patchy tubulin (dimmer over nuclei; ``patches`` as in
    :func:`render_actin`), radial microtubules or mitotic spindles, centrosomes, and (protein
    degradation) a perinuclear aggresome."""
    plans = layout.plans
    labels = layout.cells
    expression = _per_cell([p.expression * (1.3 if p.mitotic else 1.0) for p in plans])
    tubulin = (
        TUBULIN_DIFFUSE * phenotype.tubulin_level * expression[labels] * _thickness(layout, NUCLEUS_TUBULIN_DIMMING)
        * (_patches(rng, layout.shape) if patches is None else patches)
    )
    filaments = _microtubules(rng, layout, phenotype) + _spindles(rng, layout, phenotype)
    tubulin += ndimage.gaussian_filter(filaments, phenotype.microtubule_width)
    poles = np.array([pole for p in plans for pole in p.poles]).reshape(-1, 2)
    pole_level = np.array([p.expression for p in plans for _ in p.poles])
    tubulin += blob_layer(poles, CENTROSOME_PHOTONS * pole_level, 1.0, layout.shape)
    if phenotype.aggresome > 0:
        interphase = [p for p in plans if not p.mitotic]
        centres = np.array([p.poles[0] for p in interphase]).reshape(-1, 2)
        peaks = AGGRESOME_PHOTONS * phenotype.aggresome * rng.uniform(0.6, 1.2, len(interphase))
        tubulin += blob_layer(centres, peaks, 2.5, layout.shape) * (labels > 0)
    return tubulin


def _microtubules(rng: np.random.Generator, layout: FieldLayout, phenotype: Phenotype) -> np.ndarray:
    """Curved filaments radiating from each interphase centrosome until they leave the cell."""
    cells = [(i, p) for i, p in enumerate(layout.plans, start=1) if not p.mitotic]
    counts = np.array(
        [rng.poisson(MT_PER_CELL * phenotype.microtubules * p.shape.radius / _REFERENCE_RADIUS) for _, p in cells],
        np.int64,
    )
    if counts.sum() == 0:
        return np.zeros(layout.shape)
    owner = np.repeat([i for i, _ in cells], counts)
    start = np.repeat(np.array([p.poles[0] for _, p in cells]), counts, axis=0)
    reach = np.repeat([p.shape.extent for _, p in cells], counts)
    steps = int(np.ceil(2.0 * reach.max() / MT_STEP))
    heading = rng.uniform(0.0, 2.0 * np.pi, owner.size) + np.cumsum(
        rng.normal(0.0, phenotype.microtubule_curvature, (steps, owner.size)), axis=0
    )
    path = start + MT_STEP * np.cumsum(_direction(heading), axis=0)
    length = rng.uniform(0.7, 1.6, owner.size) * reach
    along = MT_STEP * np.arange(1, steps + 1)[:, None]
    alive = np.logical_and.accumulate((_value_at(layout.cells, path) == owner) & (along <= length), axis=0)
    points = path[alive]
    over_nucleus = _value_at(layout.nuclei, points) > 0
    expression = _per_cell([p.expression for p in layout.plans])
    weight = (
        MICROTUBULE_PHOTONS * phenotype.microtubule_brightness * expression[np.broadcast_to(owner, alive.shape)[alive]]
        * np.where(over_nucleus, 0.6, 1.0)
    )
    return splat(points, weight, layout.shape)


def _spindles(rng: np.random.Generator, layout: FieldLayout, phenotype: Phenotype) -> np.ndarray:
    """Mitotic microtubules of every mitotic cell, as straight fibres from its poles."""
    starts, ends, owners = [], [], []
    for cell_id, plan in enumerate(layout.plans, start=1):
        if not plan.mitotic:
            continue
        for pole in np.asarray(plan.poles):
            tips = _spindle_tips(rng, plan, pole, phenotype.microtubules)
            starts.append(np.repeat(pole[None], len(tips), axis=0))
            ends.append(tips)
            owners.append(np.full(len(tips), cell_id))
    if not starts:
        return np.zeros(layout.shape)
    points, index = sample_segments(np.concatenate(starts), np.concatenate(ends), 0.5)
    owner = np.concatenate(owners)[index]
    keep = _value_at(layout.cells, points) == owner
    expression = _per_cell([p.expression for p in layout.plans])
    weight = SPINDLE_PHOTONS * phenotype.microtubule_brightness * expression[owner]
    return splat(points[keep], weight[keep], layout.shape)


def _spindle_tips(rng: np.random.Generator, plan: CellPlan, pole: np.ndarray, density: float) -> np.ndarray:
    """Far ends (N, 2) of the fibres from ``pole``: a radial aster for a monopolar cell; otherwise
    fibres to points along the chromatin plate plus short astral fibres pointing away from it."""
    count = rng.poisson(16 * density)
    if plan.kind == "monopolar":
        return pole + rng.uniform(5.0, 10.0, count)[:, None] * _direction(rng.uniform(0.0, 2.0 * np.pi, count))
    chromatin = plan.nuclei[0]
    centre = np.array([plan.shape.y, plan.shape.x])
    across = rng.uniform(-1.0, 1.0, count)[:, None] * chromatin.semi_axes[0]
    kinetochore = centre + across * _direction(chromatin.angle)
    astral = rng.poisson(6 * density)
    away = np.arctan2(*(pole - centre)) + rng.uniform(-1.2, 1.2, astral)
    return np.concatenate([kinetochore, pole + rng.uniform(3.0, 8.0, astral)[:, None] * _direction(away)])


def render_channels(layout: FieldLayout, phenotype: Phenotype, rng: np.random.Generator) -> np.ndarray:
    """(3, H, W) float32 photon maps in channel order DNA, Actin, Tubulin.

    Actin and tubulin share part of their patchy variation (:data:`SHARED_TEXTURE`: where the
    cytoplasm is thicker, both are brighter), and the DNA channel also holds the cytoplasm's
    autofluorescence (:data:`DNA_AUTOFLUORESCENCE` photons per unit thickness) and
    :data:`TUBULIN_BLEED_THROUGH` of the tubulin light.
    """
    shared, own_actin, own_tubulin = (_patches(rng, layout.shape) for _ in range(3))
    mix = np.sqrt(SHARED_TEXTURE), np.sqrt(1.0 - SHARED_TEXTURE)
    dna = render_dna(layout, phenotype, rng)
    actin = render_actin(layout, phenotype, rng, mix[0] * (shared - 1) + mix[1] * (own_actin - 1) + 1)
    tubulin = render_tubulin(layout, phenotype, rng, mix[0] * (shared - 1) + mix[1] * (own_tubulin - 1) + 1)
    glow = DNA_AUTOFLUORESCENCE * _thickness(layout, 1.0) * shared
    return np.stack([dna + glow + TUBULIN_BLEED_THROUGH * tubulin, actin, tubulin]).astype(np.float32)
