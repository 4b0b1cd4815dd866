"""Which cells a field holds: cell-cycle state, outline, nuclei and centrosomes of each cell.

Cell kinds (the value of ``Metadata_CellKind`` in the truth tables):

- ``normal``: interphase cell, one nucleus, one centrosome beside the nucleus.
- ``multinucleate``: interphase cell with 2-4 separate smaller nuclei around its centre.
- ``polyploid``: interphase cell with one large nucleus.
- ``metaphase``: mitotic, round, a bar of condensed DNA between two spindle poles.
- ``prometaphase``: mitotic, round, a compact mass of condensed DNA, two spindle poles.
- ``monopolar``: mitotic, round, a ring of condensed DNA around a single aster (Eg5 inhibition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morphospace.simulate.config import CellsConfig
from morphospace.simulate.geometry import StarShape, place_centres, random_star
from morphospace.simulate.phenotypes import Phenotype

__all__ = ["CellPlan", "MITOTIC_KINDS", "INTERPHASE_KINDS", "sample_cells"]

INTERPHASE_KINDS = ("normal", "multinucleate", "polyploid")
MITOTIC_KINDS = ("metaphase", "prometaphase", "monopolar")

_LARGE_CELL_FACTOR = 1.2  # extra radius of multinucleate and polyploid cells
_METAPHASE_SHARE = 0.6  # of bipolar mitoses
_RING_INNER = 0.45  # inner radius of a monopolar DNA ring, fraction of its outer radius
_REFERENCE_NUCLEUS_DIAMETER = 19.0  # px: the interphase nucleus the mitotic chromatin sizes were drawn for


@dataclass(frozen=True)
class CellPlan:
    """One cell before rasterisation (px coordinates ``(y, x)``).

    ``poles`` are the microtubule organising centres: one for interphase and monopolar cells,
    two for bipolar mitoses. ``dna_level`` multiplies the DNA brightness of the cell's nuclei and
    ``expression`` the actin and tubulin brightness of the cell. ``ring`` is the inner radius of
    a DNA ring (fraction of the nucleus radius), 0 for a filled nucleus.
    """

    kind: str
    shape: StarShape
    nuclei: tuple[StarShape, ...]
    poles: tuple[tuple[float, float], ...]
    dna_level: float
    expression: float
    ring: float = 0.0

    @property
    def mitotic(self) -> bool:
        return self.kind in MITOTIC_KINDS

    @property
    def cycle(self) -> str:
        """``"mitotic"`` or ``"interphase"``."""
        return "mitotic" if self.mitotic else "interphase"


def _sample_kind(rng: np.random.Generator, phenotype: Phenotype) -> str:
    draw = rng.random(3)
    if draw[0] < phenotype.mitotic_fraction:
        if draw[1] < phenotype.monopolar_fraction:
            return "monopolar"
        return "metaphase" if draw[2] < _METAPHASE_SHARE else "prometaphase"
    if draw[1] < phenotype.multinucleate_fraction:
        return "multinucleate"
    if draw[1] < phenotype.multinucleate_fraction + phenotype.polyploid_fraction:
        return "polyploid"
    return "normal"


def _lerp(bounds: tuple[float, float], fraction: float) -> float:
    return bounds[0] + fraction * (bounds[1] - bounds[0])


def sample_cells(
    rng: np.random.Generator,
    cells: CellsConfig,
    phenotype: Phenotype,
    size: int,
    mean_count: float,
) -> list[CellPlan]:
    """Plans of the cells of one ``size`` x ``size`` field: Poisson count, placed without crowding.

    The mean count falls as the phenotype's cells grow (``mean_count / cell_scale**2``), so a
    confluent field stays confluent and larger cells come with fewer of them.
    """
    count = int(rng.poisson(mean_count / phenotype.cell_scale**2))
    kinds = [_sample_kind(rng, phenotype) for _ in range(count)]
    quantiles = rng.random((count, 2))
    radii = np.array([_cell_radius(cells, phenotype, kind, q[0]) for kind, q in zip(kinds, quantiles)])
    centres = place_centres(rng, radii, size, cells.packing, cells.clustering)
    chromatin_scale = _lerp(cells.nucleus_diameter_px, 0.5) / _REFERENCE_NUCLEUS_DIAMETER
    plans = []
    for kind, q, radius, centre in zip(kinds, quantiles, radii, centres):
        if centre is None:
            continue
        nucleus_radius = 0.5 * _lerp(cells.nucleus_diameter_px, 0.5 * (q[0] + q[1])) * phenotype.nucleus_scale
        plans.append(_plan(rng, kind, centre, float(radius), nucleus_radius, phenotype, chromatin_scale))
    return plans


def _cell_radius(cells: CellsConfig, phenotype: Phenotype, kind: str, quantile: float) -> float:
    if kind in MITOTIC_KINDS:
        return 0.5 * _lerp(cells.mitotic_diameter_px, quantile)
    radius = 0.5 * _lerp(cells.cell_diameter_px, quantile) * phenotype.cell_scale
    return radius * (_LARGE_CELL_FACTOR if kind != "normal" else 1.0)


def _plan(
    rng: np.random.Generator,
    kind: str,
    centre: tuple[float, float],
    radius: float,
    nucleus_radius: float,
    phenotype: Phenotype,
    chromatin_scale: float = 1.0,
) -> CellPlan:
    dna_level = float(rng.lognormal(0.0, 0.12))
    expression = float(rng.lognormal(0.0, 0.15))
    if kind in MITOTIC_KINDS:
        return _mitotic_plan(rng, kind, centre, radius, dna_level, expression, chromatin_scale)
    angle = rng.uniform(0.0, np.pi)
    elongation = 1.0 + (phenotype.cell_elongation - 1.0) * rng.uniform(0.6, 1.4)
    shape = random_star(rng, centre, radius, elongation, angle, phenotype.cell_irregularity)
    nucleus_radius = min(nucleus_radius, 0.55 * radius)
    if kind == "multinucleate":
        nuclei = _multiple_nuclei(rng, centre, nucleus_radius, phenotype)
        return CellPlan(kind, shape, nuclei, (centre,), dna_level, expression)
    if kind == "polyploid":
        nucleus_radius = min(1.45 * nucleus_radius, 0.6 * radius)
        dna_level *= 1.25
    nucleus = _offset_nucleus(rng, shape, nucleus_radius, phenotype)
    return CellPlan(kind, shape, (nucleus,), (_centrosome(shape, nucleus),), dna_level, expression)


def _offset_nucleus(rng: np.random.Generator, cell: StarShape, radius: float, phenotype: Phenotype) -> StarShape:
    """A nucleus shifted from the cell centre by 5-18% of the cell radius, roughly along its axis."""
    direction = cell.angle + rng.choice([0.0, np.pi]) + rng.normal(0.0, 0.5)
    shift = rng.uniform(0.05, 0.18) * cell.radius
    y = cell.y + shift * np.sin(direction)
    x = cell.x + shift * np.cos(direction)
    elongation = 1.0 + (phenotype.nucleus_elongation - 1.0) * rng.uniform(0.5, 1.5)
    angle = cell.angle + rng.normal(0.0, 0.3)
    return random_star(rng, (y, x), radius, elongation, angle, 0.04, orders=3)


def _centrosome(cell: StarShape, nucleus: StarShape) -> tuple[float, float]:
    """Just outside the nucleus, on the side facing the cell centre."""
    dy, dx = cell.y - nucleus.y, cell.x - nucleus.x
    direction = np.arctan2(dy, dx)
    reach = float(nucleus.radius_at(np.array(direction))) + 2.5
    return nucleus.y + reach * np.sin(direction), nucleus.x + reach * np.cos(direction)


def _multiple_nuclei(
    rng: np.random.Generator, centre: tuple[float, float], radius: float, phenotype: Phenotype
) -> tuple[StarShape, ...]:
    """2-4 smaller round nuclei on a circle around ``centre``, spaced so they do not touch."""
    count = int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2]))
    radius *= rng.uniform(0.72, 0.82)
    ring = radius * 1.08 / np.sin(np.pi / count) + 2.0
    start = rng.uniform(0.0, 2.0 * np.pi)
    nuclei = []
    for k in range(count):
        theta = start + 2.0 * np.pi * k / count + rng.normal(0.0, 0.1)
        position = (centre[0] + ring * np.sin(theta), centre[1] + ring * np.cos(theta))
        elongation = 1.0 + (phenotype.nucleus_elongation - 1.0) * rng.uniform(0.0, 0.5)
        nuclei.append(random_star(rng, position, radius, elongation, rng.uniform(0, np.pi), 0.04, orders=3))
    return tuple(nuclei)


def _mitotic_plan(
    rng: np.random.Generator,
    kind: str,
    centre: tuple[float, float],
    radius: float,
    dna_level: float,
    expression: float,
    chromatin_scale: float = 1.0,
) -> CellPlan:
    """A round cell with condensed chromatin (sizes times ``chromatin_scale``) and one or two spindle poles."""
    shape = random_star(rng, centre, radius, rng.uniform(1.0, 1.08), rng.uniform(0.0, np.pi), 0.02)
    axis = rng.uniform(0.0, np.pi)
    if kind == "monopolar":
        ring = random_star(rng, centre, chromatin_scale * rng.uniform(6.5, 8.0), 1.05, axis, 0.03, orders=2)
        return CellPlan(kind, shape, (ring,), (centre,), 1.8 * dna_level, expression, ring=_RING_INNER)
    if kind == "metaphase":
        chromatin = random_star(rng, centre, chromatin_scale * rng.uniform(4.0, 4.6), rng.uniform(2.6, 3.2),
                                axis + np.pi / 2, 0.04)
    else:
        chromatin = random_star(rng, centre, chromatin_scale * rng.uniform(5.0, 6.0), 1.2, axis, 0.12)
    reach = 0.55 * radius
    poles = tuple(
        (centre[0] + sign * reach * np.sin(axis), centre[1] + sign * reach * np.cos(axis)) for sign in (1.0, -1.0)
    )
    return CellPlan(kind, shape, (chromatin,), poles, 2.0 * dna_level, expression)
