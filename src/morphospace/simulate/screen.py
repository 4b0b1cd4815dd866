"""A whole screen on disk: plate layouts, batches, rendering in parallel, images, manifest and truth.

Layout of ``out`` (paths in the manifest are relative to ``out``)::

    manifest.csv                          one row per field
    simulate_config.yaml                  the resolved SimulateConfig
    images/<plate>/<field_id>_<channel>.tiff   uint16, one plane per channel (DNA, Actin, Tubulin;
                                          transmitted mode: Transmitted, DNA, Membrane)
    truth/<field_id>_nuclei.tiff          uint16 nucleus labels (ids 1..n per field)
    truth/<field_id>_cells.tiff           uint16 cell labels (ids 1..m per field)
    truth/cells.parquet                   one row per cell (see SimulatedField: state, centre, exact
                                          nucleus and cell areas, DNA level)
    truth/nuclei.parquet                  one row per nucleus, with its owning cell id
"""

from __future__ import annotations

import functools
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from morphospace.config import save_config
from morphospace.atomic import atomic_directory
from morphospace.io.images import write_tiff
from morphospace.parallel import compute_context, run_parallel_ordered
from morphospace.simulate.config import SimulateConfig, check_simulation
from morphospace.simulate.field import simulate_field
from morphospace.simulate.phenotypes import DMSO, Treatment, treatments_for
from morphospace.simulate.seeds import Stream, generator, seed_sequence

__all__ = ["SimulatedScreen", "FieldJob", "simulate_screen", "plate_layout", "field_jobs", "field_seed", "plate_format"]

MANIFEST_METADATA = (
    "Metadata_FieldId",
    "Metadata_Plate",
    "Metadata_Well",
    "Metadata_Site",
    "Metadata_Batch",
    "Metadata_Compound",
    "Metadata_Concentration",
    "Metadata_MoA",
)
_PLATE_FORMATS = ((8, 12), (16, 24))


@dataclass(frozen=True)
class SimulatedScreen:
    """A screen written by :func:`simulate_screen`."""

    root: Path
    manifest_path: Path
    truth_dir: Path
    n_fields: int
    n_cells: int
    config: SimulateConfig

    def summary(self) -> str:
        """One line: what was written where."""
        return f"simulated {self.n_cells} cells in {self.n_fields} fields -> {self.manifest_path}"

    @property
    def cells_path(self) -> Path:
        """``truth/cells.parquet``."""
        return self.truth_dir / "cells.parquet"

    @property
    def nuclei_path(self) -> Path:
        """``truth/nuclei.parquet``."""
        return self.truth_dir / "nuclei.parquet"


@dataclass(frozen=True)
class FieldJob:
    """One field of the screen: where it is, what it received, and its file stem."""

    plate_index: int
    row: int
    column: int
    site: int
    treatment: Treatment
    plates_per_batch: int

    @property
    def plate(self) -> str:
        return f"Plate{self.plate_index + 1:02d}"

    @property
    def well(self) -> str:
        return f"{string.ascii_uppercase[self.row]}{self.column + 1:02d}"

    @property
    def batch(self) -> str:
        return f"Batch{self.plate_index // self.plates_per_batch + 1}"

    @property
    def field_id(self) -> str:
        return f"{self.plate}_{self.well}_s{self.site}"

    def image_path(self, channel: str) -> str:
        """Channel file, relative to the screen root."""
        return f"images/{self.plate}/{self.field_id}_{channel}.tiff"

    def metadata(self) -> dict[str, object]:
        """The ``Metadata_*`` columns of the manifest."""
        values = (
            self.field_id, self.plate, self.well, self.site, self.batch,
            self.treatment.compound, float(self.treatment.concentration), self.treatment.moa,
        )
        return dict(zip(MANIFEST_METADATA, values))


def plate_format(wells: int) -> tuple[int, int]:
    """Rows and columns of the smallest standard plate (96 or 384 wells) holding ``wells``."""
    for rows, columns in _PLATE_FORMATS:
        if wells <= rows * columns:
            return rows, columns
    raise ValueError(f"{wells} wells do not fit a 384-well plate")


def plate_layout(config: SimulateConfig, plate_index: int) -> list[tuple[int, int, Treatment]]:
    """``(row, column, treatment)`` of every used well of a plate (0-based), in well order.

    Each plate holds the DMSO wells and every treatment once, at positions shuffled by a
    plate-specific stream of ``config.seed``.
    """
    treatments = [DMSO] * config.dmso_wells_per_plate + treatments_for(
        config.moas, config.compounds_per_moa, config.concentrations
    )
    rows, columns = plate_format(len(treatments))
    rng = generator(seed_sequence(config.seed, Stream.LAYOUT, plate_index))
    positions = np.sort(rng.choice(rows * columns, size=len(treatments), replace=False))
    order = rng.permutation(len(treatments))
    return [(int(p // columns), int(p % columns), treatments[i]) for p, i in zip(positions, order)]


def field_jobs(config: SimulateConfig) -> list[FieldJob]:
    """Every field of the screen, ordered by plate, well and site."""
    return [
        FieldJob(plate, row, column, site, treatment, config.plates_per_batch)
        for plate in range(config.plates)
        for row, column, treatment in plate_layout(config, plate)
        for site in range(1, config.fields_per_well + 1)
    ]


def field_seed(config: SimulateConfig, job: FieldJob) -> np.random.SeedSequence:
    """The field's own random stream: fixed by the screen's seed and the field's position."""
    return seed_sequence(config.seed, Stream.FIELD, job.plate_index, job.row, job.column, job.site)


def render_job(config: SimulateConfig, root: Path, job: FieldJob) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Render one field, write its channel and label TIFFs under ``root``; return its truth rows."""
    field = simulate_field(config, seed=field_seed(config, job), treatment=job.treatment, plate_index=job.plate_index)
    for channel, plane in zip(field.channel_names, field.channels):
        write_tiff(root / job.image_path(channel), plane)
    write_tiff(root / "truth" / f"{job.field_id}_nuclei.tiff", field.nuclei_labels)
    write_tiff(root / "truth" / f"{job.field_id}_cells.tiff", field.cell_labels)
    location = {
        "Metadata_FieldId": job.field_id, "Metadata_Plate": job.plate, "Metadata_Well": job.well,
        "Metadata_Site": job.site, "Metadata_Batch": job.batch,
    }
    return field.cells.assign(**location), field.nuclei.assign(**location)


def _render_all(
    jobs: list[FieldJob], config: SimulateConfig, root: Path, workers: int, scheduler: str | None, progress: bool
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Results of :func:`render_job` in job order, rendered in this process or on a dask cluster."""
    with compute_context(workers, scheduler) as client:
        return run_parallel_ordered(functools.partial(render_job, config, root), jobs, client, progress, "simulate")


def _file_columns(job: FieldJob, config: SimulateConfig) -> dict[str, str]:
    """The manifest's ``FileName_*`` columns of a field: its channels, and in transmitted mode also
    ``FileName_NucleiLabels`` (the truth nuclei, as segmentation targets)."""
    columns = {f"FileName_{c}": job.image_path(c) for c in config.channels}
    if config.mode == "transmitted":
        columns["FileName_NucleiLabels"] = f"truth/{job.field_id}_nuclei.tiff"
    return columns


def _ordered(frames: Iterable[pd.DataFrame], first: tuple[str, ...]) -> pd.DataFrame:
    table = pd.concat(list(frames), ignore_index=True)
    return table[[*first, *(c for c in table.columns if c not in first)]]


def simulate_screen(
    config: SimulateConfig,
    out: str | os.PathLike,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> SimulatedScreen:
    """Render the screen of ``config`` into the folder ``out`` (see the module doc for the layout).

    The folder is built under a temporary sibling name and renamed when complete. Fields render in
    parallel on ``workers`` processes or an existing dask ``scheduler`` (see
    :func:`morphospace.parallel.compute_context`); output is byte-identical for the same config
    whatever the parallelism.

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is False (before any work).
    ValueError
        If ``workers`` < 1 or ``config.mode`` is ``structures`` or ``donors``.
    """
    check_simulation(config, "simulate_screen", workers)
    jobs = field_jobs(config)
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as root:
        results = _render_all(jobs, config, root, workers, scheduler, progress)
        cells, nuclei = [r[0] for r in results], [r[1] for r in results]
        manifest = pd.DataFrame(
            [{**job.metadata(), **_file_columns(job, config)} for job in jobs]
        )
        manifest.to_csv(root / "manifest.csv", index=False)
        cell_table = _ordered(cells, MANIFEST_METADATA)
        cell_table.to_parquet(root / "truth" / "cells.parquet", index=False)
        _ordered(nuclei, MANIFEST_METADATA[:5]).to_parquet(root / "truth" / "nuclei.parquet", index=False)
        save_config(config, root / "simulate_config.yaml")
    return SimulatedScreen(out, out / "manifest.csv", out / "truth", len(jobs), len(cell_table), config)
