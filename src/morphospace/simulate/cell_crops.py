"""Single-cell crops cut straight from simulated fields, the way BBBC021's public crops were cut.

The real crops are squares of the raw images centred on each nucleus, not masked and not
corrected. :func:`nucleus_centred_crops` cuts the same from one rendered field (centred on the
truth nucleus centroid; cells whose square would leave the field are skipped), and
:func:`screen_crops` does it for every field of a screen's plate layout, or :func:`phenotype_crops`
for fields rendered with any :class:`~morphospace.simulate.phenotypes.Phenotype`, without writing
the screen to disk. The result is an ``(N, size, size, C)`` uint16 array and a per-crop table, as
:func:`morphospace.io.importers.import_npz` reads them.

Examples
--------
>>> from morphospace.simulate import SimulateConfig, simulate_field
>>> field = simulate_field(SimulateConfig(field_size=128, cells_per_field=4), seed=1)
>>> images, cells = nucleus_centred_crops(field, 48)
>>> images.shape[1:], images.dtype.name, len(cells) == len(images)
((48, 48, 3), 'uint16', True)
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from morphospace.simulate.config import SimulateConfig
from morphospace.simulate.field import SimulatedField, simulate_field
from morphospace.simulate.phenotypes import Phenotype, Treatment
from morphospace.simulate.screen import field_jobs, field_seed
from morphospace.simulate.seeds import Stream, seed_sequence

__all__ = ["nucleus_centred_crops", "screen_crops", "phenotype_crops"]

_CELL_COLUMNS = ("Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", "Metadata_CellId",
                 "Metadata_CellKind", "Metadata_TruthNucleusArea", "Metadata_TruthCellArea")


def nucleus_centred_crops(field: SimulatedField, size: int) -> tuple[np.ndarray, pd.DataFrame]:
    """``(N, size, size, C)`` crops of ``field.channels`` centred on each cell's nucleus centroid.

    Cells whose crop would reach past the field's edge are left out. The table holds the kept
    cells' rows of ``field.cells`` (treatment, cell id, kind, truth areas).
    """
    if size < 8:
        raise ValueError(f"crop size must be at least 8 px, got {size}")
    half = size // 2
    height, width = field.channels.shape[1:]
    top = np.rint(field.cells["Metadata_Center_Y"].to_numpy()).astype(int) - half
    left = np.rint(field.cells["Metadata_Center_X"].to_numpy()).astype(int) - half
    inside = (top >= 0) & (left >= 0) & (top + size <= height) & (left + size <= width)
    planes = np.moveaxis(field.channels, 0, -1)
    crops = [planes[t:t + size, x:x + size] for t, x in zip(top[inside], left[inside])]
    images = np.stack(crops) if crops else np.zeros((0, size, size, planes.shape[-1]), planes.dtype)
    return images, field.cells.loc[inside, list(_CELL_COLUMNS)].reset_index(drop=True)


def _collect(parts: Iterable[tuple[np.ndarray, pd.DataFrame]], size: int, channels: int) -> tuple[np.ndarray, pd.DataFrame]:
    parts = list(parts)
    images = [p[0] for p in parts if len(p[0])]
    tables = [p[1] for p in parts if len(p[1])]
    if not images:
        return np.zeros((0, size, size, channels), np.uint16), pd.DataFrame(columns=list(_CELL_COLUMNS))
    return np.concatenate(images), pd.concat(tables, ignore_index=True)


def screen_crops(config: SimulateConfig, size: int = 68) -> tuple[np.ndarray, pd.DataFrame]:
    """Nucleus-centred crops of every field of ``config``'s screen, rendered exactly as
    :func:`~morphospace.simulate.simulate_screen` would render them (same seeds, same bytes).

    The table adds each crop's ``Metadata_Plate``, ``_Well``, ``_Batch`` and ``_FieldId``.
    """
    def one(job):
        field = simulate_field(config, seed=field_seed(config, job), treatment=job.treatment,
                               plate_index=job.plate_index)
        images, cells = nucleus_centred_crops(field, size)
        return images, cells.assign(Metadata_Plate=job.plate, Metadata_Well=job.well, Metadata_Batch=job.batch,
                                    Metadata_FieldId=job.field_id)

    return _collect(map(one, field_jobs(config)), size, len(config.channels))


def phenotype_crops(config: SimulateConfig, phenotype: Phenotype, label: str, fields: int, size: int = 68,
                    seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Nucleus-centred crops of ``fields`` fields rendered with ``phenotype`` on plate 0.

    Every crop's ``Metadata_Compound`` and ``Metadata_MoA`` are ``label`` (concentration NaN) and
    ``Metadata_Plate`` is ``"Plate01"``; field ``k`` draws from the stream ``(seed, k)``, so two
    phenotypes rendered with the same seed share cell placement noise where their knobs allow.
    """
    treatment = Treatment(label, label, float("nan"), 1.0)

    def one(k):
        field = simulate_field(config, seed=seed_sequence(seed, Stream.FIELD, 0, k), treatment=treatment, phenotype=phenotype)
        images, cells = nucleus_centred_crops(field, size)
        return images, cells.assign(Metadata_Plate="Plate01", Metadata_Well=f"{label}_{k}", Metadata_Batch="Batch1",
                                    Metadata_FieldId=f"{label}_{k}")

    return _collect(map(one, range(fields)), size, len(config.channels))
