"""Healthy and disease donors imaged as whole monolayer fields (``mode: donors``), with the truth.

Layout of ``out`` (paths in the manifest are relative to ``out``)::

    manifest.csv                  one row per field: Metadata_FieldId, Metadata_Plate, Metadata_Well,
                                  Metadata_Site, Metadata_Batch, Metadata_Donor, Metadata_Group,
                                  FileName_DNA, FileName_Actin, FileName_Junctions
    simulate_config.yaml          the resolved SimulateConfig
    images/<plate>/<field_id>_<channel>.tiff   uint16 camera images
    truth/<field_id>_cells.tiff   uint16 cell labels (1..n per field)
    truth/donors.parquet          one row per donor: Metadata_Donor, Metadata_Group, severity (0 for
                                  healthy donors), disruption, the nuisance (cell_diameter_px,
                                  fibre_period_px, alignment, gain_<channel>) and n_fields
    truth/fields.parquet          one row per field: Metadata_FieldId, Metadata_Donor, n_cells

Donor names (``Donor01``...) are numbered in a shuffled order, so they do not give the group away.
Every field is drawn from its own random stream: the output is byte-identical for the same config
whatever the number of workers.

Examples
--------
>>> import tempfile, pathlib
>>> from morphospace.simulate import SimulateConfig
>>> config = SimulateConfig(mode="donors", field_size=96, plates=1,
...                         donors={"donors_per_group": 2, "wells_per_donor": 1})
>>> screen = simulate_donors(config, pathlib.Path(tempfile.mkdtemp()) / "donors", progress=False)
>>> screen.n_fields, screen.n_donors
(4, 4)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from morphospace.atomic import atomic_directory
from morphospace.config import save_config
from morphospace.io.images import write_tiff
from morphospace.parallel import compute_context, run_parallel_ordered
from morphospace.simulate.config import DONOR_CHANNELS, SimulateConfig, check_simulation
from morphospace.simulate.monolayer import MonolayerLook, render_monolayer
from morphospace.simulate.optics import sample_batch_gains, sample_plate_optics, vignetting
from morphospace.simulate.phenotypes import DMSO
from morphospace.simulate.screen import FieldJob, plate_format
from morphospace.simulate.seeds import Stream, generator, seed_sequence

__all__ = ["GROUPS", "Donor", "SimulatedDonors", "donors_for", "donor_field_jobs", "simulate_donors"]

GROUPS = ("healthy", "disease")
DONOR = "Metadata_Donor"
GROUP = "Metadata_Group"


@dataclass(frozen=True)
class Donor:
    """One donor: its group, severity (0 for healthy donors), look and channel gains (3,)."""

    name: str
    group: str
    severity: float
    look: MonolayerLook
    gains: tuple[float, float, float]

    def truth_row(self) -> dict[str, object]:
        return {DONOR: self.name, GROUP: self.group, "severity": self.severity,
                "disruption": self.look.disruption, "cell_diameter_px": self.look.cell_diameter_px,
                "fibre_period_px": self.look.fibre_period_px, "alignment": self.look.alignment,
                **{f"gain_{c}": g for c, g in zip(DONOR_CHANNELS, self.gains)}}


@dataclass(frozen=True)
class SimulatedDonors:
    """A donors screen written by :func:`simulate_donors`."""

    root: Path
    manifest_path: Path
    truth_dir: Path
    n_fields: int
    n_donors: int
    config: SimulateConfig

    def summary(self) -> str:
        """One line: what was written where."""
        return (f"simulated {self.n_fields} fields of {self.n_donors} donors -> {self.manifest_path} "
                f"(truth in {self.truth_dir})")


def donors_for(config: SimulateConfig) -> list[Donor]:
    """The donors of ``config``: healthy ones first, then disease ones, named in a shuffled order.

    >>> donors = donors_for(SimulateConfig(mode="donors", donors={"donors_per_group": 3}))
    >>> [d.group for d in donors], sorted(round(d.severity, 1) for d in donors[3:])
    (['healthy', 'healthy', 'healthy', 'disease', 'disease', 'disease'], [0.2, 0.6, 1.0])
    """
    settings = config.donors
    rng = generator(seed_sequence(config.seed, Stream.DONOR))
    n = settings.donors_per_group
    severities = [0.0] * n + list(rng.permutation(np.linspace(*settings.severity, n)))
    numbers = rng.permutation(2 * n) + 1
    donors = []
    for i, severity in enumerate(severities):
        look = MonolayerLook(disruption=settings.phenotype_strength * float(severity),
                             cell_diameter_px=float(rng.uniform(*settings.cell_diameter_px)),
                             fibre_period_px=float(rng.uniform(*settings.fibre_period_px)),
                             alignment=float(rng.uniform(*settings.alignment)))
        gains = tuple(float(g) for g in rng.lognormal(0.0, settings.donor_gain_sd, len(DONOR_CHANNELS)))
        donors.append(Donor(f"Donor{numbers[i]:02d}", GROUPS[i >= n], float(severity), look, gains))
    return donors


def donor_field_jobs(config: SimulateConfig) -> list[tuple[FieldJob, int]]:
    """Every field as ``(job, donor index)``: each donor's wells shuffled over the plates at random
    positions, ordered by plate, well and site."""
    n_donors, wells_per_donor = config.donors.n_donors, config.donors.wells_per_donor
    rng = generator(seed_sequence(config.seed, Stream.LAYOUT))
    wells = rng.permutation(np.repeat(np.arange(n_donors), wells_per_donor))
    rows, columns = plate_format(config.wells_per_plate)
    jobs = []
    for plate, plate_wells in enumerate(np.array_split(wells, config.plates)):
        positions = np.sort(rng.choice(rows * columns, size=len(plate_wells), replace=False))
        for position, donor in zip(positions, plate_wells):
            for site in range(1, config.fields_per_well + 1):
                job = FieldJob(plate, int(position // columns), int(position % columns), site, DMSO, 1)
                jobs.append((job, int(donor)))
    return jobs


def _plate_conditions(config: SimulateConfig, plate_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Vignetting (H, W) and channel gains (3,) of a plate."""
    rng = generator(seed_sequence(config.seed, Stream.PLATE, plate_index))
    optics = sample_plate_optics(config.optics, rng)
    gains = sample_batch_gains(config.optics, rng, len(DONOR_CHANNELS))
    return vignetting((config.field_size, config.field_size), optics), gains


def _render(config: SimulateConfig, donors: list[Donor], root: Path, item: tuple[FieldJob, int]) -> dict[str, object]:
    """Render one field, write its channel and label TIFFs under ``root``; return its truth row."""
    job, donor_index = item
    donor = donors[donor_index]
    illumination, plate_gains = _plate_conditions(config, job.plate_index)
    well_rng = generator(seed_sequence(config.seed, Stream.WELL, job.plate_index, job.row, job.column))
    well_gains = well_rng.lognormal(0.0, config.donors.well_gain_sd, len(DONOR_CHANNELS))
    rng = generator(seed_sequence(config.seed, Stream.FIELD, job.plate_index, job.row, job.column, job.site))
    field = render_monolayer((config.field_size, config.field_size), donor.look, config.optics, illumination,
                             np.asarray(donor.gains) * plate_gains * well_gains, rng)
    for channel, plane in zip(DONOR_CHANNELS, field.channels):
        write_tiff(root / job.image_path(channel), plane)
    write_tiff(root / "truth" / f"{job.field_id}_cells.tiff", field.cell_labels)
    return {"Metadata_FieldId": job.field_id, DONOR: donor.name, "n_cells": field.n_cells}


def _manifest_row(job: FieldJob, donor: Donor) -> dict[str, object]:
    location = dict(list(job.metadata().items())[:5])  # field id, plate, well, site, batch
    return {**location, DONOR: donor.name, GROUP: donor.group,
            **{f"FileName_{c}": job.image_path(c) for c in DONOR_CHANNELS}}


def simulate_donors(
    config: SimulateConfig,
    out: str | os.PathLike,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> SimulatedDonors:
    """Render the donors screen of ``config`` (``mode: donors``) into the folder ``out`` (see the
    module doc for the layout), built under a temporary sibling name and renamed when complete;
    fields render on ``workers`` processes or an existing dask ``scheduler``.

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is False (before any work).
    ValueError
        If ``config.mode`` is not ``donors`` or ``workers`` < 1.
    """
    check_simulation(config, "simulate_donors", workers)
    donors = donors_for(config)
    jobs = donor_field_jobs(config)
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as root:
        with compute_context(workers, scheduler) as client:
            rows = run_parallel_ordered(functools.partial(_render, config, donors, root), jobs, client, progress,
                                        "simulate")
        pd.DataFrame([_manifest_row(job, donors[d]) for job, d in jobs]).to_csv(root / "manifest.csv", index=False)
        fields = pd.DataFrame(rows)
        fields.to_parquet(root / "truth" / "fields.parquet", index=False)
        truth = pd.DataFrame([d.truth_row() for d in donors])
        truth["n_fields"] = truth[DONOR].map(fields[DONOR].value_counts()).fillna(0).astype(int)
        truth.to_parquet(root / "truth" / "donors.parquet", index=False)
        save_config(config, root / "simulate_config.yaml")
    return SimulatedDonors(out, out / "manifest.csv", out / "truth", len(jobs), len(donors), config)
