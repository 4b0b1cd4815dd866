"""Render one field: cells, truth labels, fluorescence channels and the per-cell truth table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from morphospace.simulate.compartments import render_channels, render_dna
from morphospace.simulate.config import SimulateConfig
from morphospace.simulate.layout import FieldLayout, build_layout
from morphospace.simulate.optics import form_image, sample_batch_gains, sample_plate_optics, vignetting
from morphospace.simulate.phenotypes import (
    CONTROL,
    DMSO_PHENOTYPE,
    Phenotype,
    Treatment,
    default_treatment,
    phenotype_for,
)
from morphospace.simulate.population import sample_cells
from morphospace.simulate.seeds import Stream, generator, seed_sequence
from morphospace.simulate.transmitted import phase_contrast, render_membrane, thickness_map, uneven_background

__all__ = ["CHANNELS", "SimulatedField", "simulate_field", "batch_index"]

CHANNELS = ("DNA", "Actin", "Tubulin")


@dataclass(frozen=True)
class SimulatedField:
    """One rendered field and its exact truth.

    ``channels``: (3, H, W) uint16 in ``channel_names`` order (:data:`CHANNELS`, or Transmitted,
    DNA, Membrane in transmitted mode). ``nuclei_labels`` and
    ``cell_labels``: (H, W) uint16 instance labels, 0 background, ids consecutive from 1.
    ``cells``: one row per cell id (columns ``Metadata_CellId``, ``Metadata_CellCycle``,
    ``Metadata_CellKind``, ``Metadata_NucleiCount``, ``Metadata_PhenotypeStrength``,
    ``Metadata_Center_X``/``_Y`` (centroid of the cell's nucleus pixels), ``Metadata_TouchesBorder``,
    the exact ``Metadata_TruthNucleusArea`` and ``Metadata_TruthCellArea`` (pixels of the cell's
    nuclei and of the cell in the labels) and ``Metadata_TruthDNALevel`` (relative DNA brightness the
    cell was rendered with: its own level times the phenotype's, 1 for a typical DMSO G1 cell; the
    DNA photons of its nuclei scale with it), plus the treatment's ``Metadata_Compound``,
    ``Metadata_Concentration``, ``Metadata_MoA``).
    ``nuclei``: one row per nucleus id with its owning ``Metadata_CellId`` and centroid.
    """

    channels: np.ndarray
    nuclei_labels: np.ndarray
    cell_labels: np.ndarray
    cells: pd.DataFrame
    nuclei: pd.DataFrame
    treatment: Treatment
    channel_names: tuple[str, ...] = CHANNELS


def batch_index(config: SimulateConfig, plate_index: int) -> int:
    """0-based batch of a 0-based plate."""
    return plate_index // config.plates_per_batch


def simulate_field(
    config: SimulateConfig | None = None,
    *,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    moa: str = CONTROL,
    strength: float | None = None,
    treatment: Treatment | None = None,
    plate_index: int = 0,
    phenotype: Phenotype | None = None,
) -> SimulatedField:
    """Render one field in memory.

    Parameters
    ----------
    config
        Screen settings (defaults when None); ``field_size``, ``cells_per_field``, ``cells`` and
        ``optics`` are used, and ``config.seed`` fixes the plate's vignetting and batch's gains.
    seed
        The field's own randomness: same seed (and config) -> identical field.
    moa, strength
        Shortcut when ``treatment`` is None: ``"DMSO"``, or an MoA rendered as its first compound at
        the top dose, or at phenotype ``strength`` in [0, 1] if given (concentration then NaN).
    treatment
        Exact treatment (compound, MoA, concentration, strength), as in a screen's plate layout.
    plate_index
        0-based plate whose illumination and batch gains apply.
    phenotype
        Render with these knobs instead of the treatment's (the treatment still labels the cells);
        for calibrating phenotype models.

    Examples
    --------
    >>> field = simulate_field(seed=0)  # one DMSO field
    >>> field.channels.shape, field.channels.dtype.name
    ((3, 256, 256), 'uint16')
    """
    config = config or SimulateConfig()
    treatment = treatment or default_treatment(moa, strength)
    rng = generator(seed)
    baseline = dataclasses.replace(DMSO_PHENOTYPE, mitotic_fraction=config.cells.mitotic_fraction)
    phenotype = phenotype or phenotype_for(treatment.moa, treatment.strength, baseline)
    plans = sample_cells(rng, config.cells, phenotype, config.field_size, config.cells_per_field)
    layout = build_layout(plans, config.field_size, config.cells.nucleus_margin_px)
    plate = sample_plate_optics(config.optics, generator(seed_sequence(config.seed, Stream.PLATE, plate_index)))
    batch_rng = generator(seed_sequence(config.seed, Stream.BATCH, batch_index(config, plate_index)))
    gains = sample_batch_gains(config.optics, batch_rng, len(CHANNELS))
    illumination = vignetting(layout.shape, plate)
    if config.mode == "transmitted":
        channels = _transmitted_channels(config, layout, phenotype, illumination, gains, rng)
    else:
        channels = form_image(render_channels(layout, phenotype, rng), config.optics, illumination, gains, rng)
    return SimulatedField(
        channels=channels,
        nuclei_labels=layout.nuclei.astype(np.uint16),
        cell_labels=layout.cells.astype(np.uint16),
        cells=cell_table(layout, treatment, phenotype),
        nuclei=nucleus_table(layout),
        treatment=treatment,
        channel_names=config.channels,
    )


def _transmitted_channels(config: SimulateConfig, layout: FieldLayout, phenotype: Phenotype,
                          illumination: np.ndarray,
                          gains: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(3, H, W) uint16: transmitted light, DNA and membrane fluorescence of the same cells."""
    fluorophores = np.stack([render_dna(layout, phenotype, rng), render_membrane(layout)]).astype(np.float32)
    fluorescence = form_image(fluorophores, config.optics, illumination, gains[:2], rng)
    light = illumination * uneven_background(layout.shape, config.transmitted.unevenness, rng)
    transmitted = phase_contrast(thickness_map(layout, config.transmitted, rng), config.transmitted, config.optics,
                                 light, rng)
    return np.concatenate([transmitted[None], fluorescence])


def _centroids(labels: np.ndarray, owners: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (x, y) of the pixels of ``labels`` grouped by ``owners[label]``, for owners 1..count."""
    yy, xx = np.nonzero(labels)
    groups = owners[labels[yy, xx]]
    area = np.bincount(groups, minlength=count + 1)[1:].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.bincount(groups, xx, minlength=count + 1)[1:] / area
        y = np.bincount(groups, yy, minlength=count + 1)[1:] / area
    return x, y


def cell_table(layout: FieldLayout, treatment: Treatment, phenotype: Phenotype) -> pd.DataFrame:
    """Per-cell truth of a field rendered with ``phenotype`` (see :class:`SimulatedField`)."""
    count = len(layout.plans)
    centre_x, centre_y = _centroids(layout.nuclei, layout.nucleus_owner, count)
    cells = layout.cells
    border = np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))
    nucleus_area = np.bincount(layout.nucleus_owner[layout.nuclei].ravel(), minlength=count + 1)[1:]
    cell_area = np.bincount(cells.ravel(), minlength=count + 1)[1:]
    return pd.DataFrame(
        {
            "Metadata_Compound": treatment.compound,
            "Metadata_Concentration": float(treatment.concentration),
            "Metadata_MoA": treatment.moa,
            "Metadata_CellId": np.arange(1, count + 1, dtype=np.int64),
            "Metadata_CellCycle": [plan.cycle for plan in layout.plans],
            "Metadata_CellKind": [plan.kind for plan in layout.plans],
            "Metadata_NucleiCount": np.bincount(layout.nucleus_owner[1:], minlength=count + 1)[1:].astype(np.int64),
            "Metadata_PhenotypeStrength": float(treatment.strength),
            "Metadata_Center_X": centre_x,
            "Metadata_Center_Y": centre_y,
            "Metadata_TouchesBorder": np.isin(np.arange(1, count + 1), border),
            "Metadata_TruthNucleusArea": nucleus_area.astype(np.int64),
            "Metadata_TruthCellArea": cell_area.astype(np.int64),
            "Metadata_TruthDNALevel": np.array([plan.dna_level for plan in layout.plans]) * phenotype.dna_level,
        },
        index=pd.RangeIndex(count),
    )


def nucleus_table(layout: FieldLayout) -> pd.DataFrame:
    """Per-nucleus truth: ``Metadata_NucleusId``, owning ``Metadata_CellId`` and centroid."""
    count = len(layout.nucleus_shapes)
    centre_x, centre_y = _centroids(layout.nuclei, np.arange(count + 1), count)
    return pd.DataFrame(
        {
            "Metadata_NucleusId": np.arange(1, count + 1, dtype=np.int64),
            "Metadata_CellId": layout.nucleus_owner[1:].astype(np.int64),
            "Metadata_Center_X": centre_x,
            "Metadata_Center_Y": centre_y,
        }
    )
