"""Single-cell crops with one tagged structure each (``mode: structures``), written as a crop store.

Layout of ``out`` (a crop store, see :mod:`morphospace.io.store`, plus the truth)::

    images.zarr              float32 (N, 3, H, W), or (N, 3, D, H, W) with ``dims: 3``; channels
                             Membrane, DNA, Structure; intensities in [0, 1]
    masks.zarr               uint8 labels: 1 nucleus, 2 cell outside the nucleus, 0 background
    cells.parquet            Metadata_CellId, Metadata_Structure, Metadata_Compound,
                             Metadata_Concentration (uM, 0 for DMSO), Metadata_Plate, Metadata_Well
    store.json               channels, crop shape, provenance (the resolved config)
    simulate_config.yaml     the resolved SimulateConfig
    truth/structures.parquet one row per structure: structure, rule, coupling_membrane,
                             coupling_dna, shifted_by (the drugs that change it, comma-separated)
    truth/drugs.parquet      one row per condition and structure: Metadata_Compound,
                             Metadata_Concentration, structure, shifted, effect
    truth/cells.parquet      one row per crop (same order): Metadata_CellId, Metadata_Structure,
                             Metadata_Compound, shifted, and the cell and nucleus geometry (px, rad)

Crops are ordered by structure, condition (DMSO first, then ``drugs``), plate and cell. Every
(structure, condition) pair is one well, repeated on each plate; cells go to plates in turn.

**Coupling truth.** The coupling of a structure to a reference channel is the paper's swap
statistic evaluated with the ideal predictor: with S the observed structure channel of a DMSO
cell and Ŝ(m, d) the simulator's expected structure image for membrane shape m and nucleus shape
d (the mean of ``truth_samples`` draws, blurred, no noise),
``coupling_membrane = 1 - ||S - Ŝ(m, d)||² / mean_j ||S - Ŝ(m_j, d)||²`` over ``truth_swaps``
other cells j, averaged over ``truth_cells`` cells (``coupling_dna`` swaps d likewise). Under a
Gaussian likelihood this is 1 - ELBO(true) / ELBO(swapped) for a perfect model, so its order
across structures is the order the statistic should find. Draws are shared between the true and
swapped predictions, so a structure that ignores a channel scores exactly 0 for it.
"""

from __future__ import annotations

import functools
import os
import shutil
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from morphospace.atomic import refuse_existing, temporary_sibling
from morphospace.config import save_config
from morphospace.io.store import CropStoreWriter
from morphospace.parallel import compute_context, run_parallel, run_parallel_ordered
from morphospace.simulate.config import SimulateConfig, check_simulation
from morphospace.simulate.screen import plate_format
from morphospace.simulate.seeds import Stream, generator, seed_sequence
from morphospace.simulate.structures import (
    CONTROL_DRUG,
    DRUGS,
    STRUCTURE_CHANNELS,
    STRUCTURES,
    CellShape,
    CropGrid,
    align_cell,
    blur,
    cell_masks,
    render_cell,
    render_structure,
    sample_cell,
)

__all__ = [
    "SimulatedStructures", "CropJob", "crop_jobs", "crop_grid", "render_job", "simulate_structures",
    "coupling_truth", "structure_coupling", "StructureRenderer", "drug_truth", "expected_control_structure",
    "control_cell", "expected_structure", "sample_shape",
]


@dataclass(frozen=True)
class SimulatedStructures:
    """A crop store written by :func:`simulate_structures`."""

    root: Path
    truth_dir: Path
    n_cells: int
    config: SimulateConfig

    def summary(self) -> str:
        """One line: what was written where."""
        return f"simulated {self.n_cells} single-cell crops -> {self.root} (truth in {self.truth_dir})"


@dataclass(frozen=True)
class CropJob:
    """The cells of one structure under one condition on one plate."""

    structure: str
    compound: str
    plate_index: int
    well: str
    cell_indices: tuple[int, ...]

    @property
    def plate(self) -> str:
        return f"Plate{self.plate_index + 1:02d}"


def crop_grid(config: SimulateConfig) -> CropGrid:
    """Pixel grid of one crop: (H, W), or (D, H, W) with ``dims: 3``."""
    settings = config.structures
    shape = (settings.depth, *settings.crop_size) if config.dims == 3 else tuple(settings.crop_size)
    return CropGrid(shape, settings.z_step_px)


def _conditions(config: SimulateConfig) -> list[str]:
    return [CONTROL_DRUG, *config.structures.drugs]


def crop_jobs(config: SimulateConfig) -> list[CropJob]:
    """Every (structure, condition, plate) group of cells, in store order."""
    conditions = _conditions(config)
    n_wells = len(config.structures.structures) * len(conditions)
    _, columns = plate_format(n_wells)
    jobs = []
    for s, structure in enumerate(config.structures.structures):
        for c, compound in enumerate(conditions):
            position = s * len(conditions) + c
            well = f"{string.ascii_uppercase[position // columns]}{position % columns + 1:02d}"
            for plate in range(config.plates):
                cells = tuple(range(plate, config.structures.cells_per_condition, config.plates))
                if cells:
                    jobs.append(CropJob(structure, compound, plate, well, cells))
    return jobs


def _cell_rng(config: SimulateConfig, structure: str, compound: str, index: int) -> np.random.Generator:
    """The stream of one cell; it depends on catalogue positions, not on which names are listed."""
    condition = 0 if compound == CONTROL_DRUG else list(DRUGS).index(compound) + 1
    return generator(seed_sequence(config.seed, Stream.CELL, list(STRUCTURES).index(structure), condition, index))


def sample_shape(config: SimulateConfig, grid: CropGrid, rng: np.random.Generator) -> CellShape:
    """One cell's geometry drawn from ``rng`` as the store draws it: :func:`sample_cell` with the
    geometry of ``config.structures``, in the aligned frame when it asks for one."""
    s = config.structures
    shape = sample_cell(rng, grid, s.cell_size, s.elongation, s.nucleus_size, s.nucleus_offset, s.cell_height,
                        s.nucleus_height, s.nucleus_angle_sd, s.heights_follow_sizes,
                        s.nucleus_size_follows_cell)
    return align_cell(shape) if s.aligned else shape


def _render(config: SimulateConfig, grid: CropGrid, structure: str, compound: str, index: int):
    """Geometry and (3, *crop) image of one cell."""
    rng = _cell_rng(config, structure, compound, index)
    shape = sample_shape(config, grid, rng)
    drug = compound if compound != CONTROL_DRUG else None
    image = render_cell(shape, structure, drug, grid, rng, config.structures.psf_sigma_px, config.structures.noise_sd)
    return shape, image


def _geometry_row(shape: CellShape, is_3d: bool) -> dict[str, float]:
    """Semi-axes and z half-heights (3D only) in px, angles in radians, nucleus offset from the cell centre."""
    m, n = shape.membrane, shape.nucleus
    row = {
        "cell_major_px": m.major, "cell_minor_px": m.minor, "cell_angle_rad": m.angle,
        "nucleus_dy_px": n.centre[0] - m.centre[0], "nucleus_dx_px": n.centre[1] - m.centre[1],
        "nucleus_major_px": n.major,
        "nucleus_minor_px": n.minor, "nucleus_angle_rad": n.angle,
    }
    return {**row, "cell_height_px": m.height, "nucleus_height_px": n.height} if is_3d else row


def render_job(config: SimulateConfig, job: CropJob) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Images (n, 3, *crop), masks (n, *crop), store rows and truth rows of one job's cells."""
    grid = crop_grid(config)
    shifted = job.structure in DRUGS[job.compound].effects if job.compound in DRUGS else False
    concentration = DRUGS[job.compound].concentration_um if job.compound in DRUGS else 0.0
    images, masks, rows, truth = [], [], [], []
    for index in job.cell_indices:
        shape, image = _render(config, grid, job.structure, job.compound, index)
        images.append(image)
        masks.append(cell_masks(shape, grid))
        cell_id = f"{job.structure}_{job.compound.replace(' ', '')}_{index:05d}"
        meta = {"Metadata_CellId": cell_id, "Metadata_Structure": job.structure, "Metadata_Compound": job.compound}
        rows.append({**meta, "Metadata_Concentration": concentration, "Metadata_Plate": job.plate,
                     "Metadata_Well": job.well})
        truth.append({**meta, "shifted": shifted, **_geometry_row(shape, grid.is_3d)})
    return np.stack(images), np.stack(masks), pd.DataFrame(rows), pd.DataFrame(truth)


StructureRenderer = Callable[[CellShape, CropGrid, np.random.Generator, float], np.ndarray]
"""``(cell, grid, rng, psf_sigma_px) -> image`` (``grid.shape``, before blur): one draw of a structure."""


def expected_structure(
    config: SimulateConfig, grid: CropGrid, structure: str, shape: CellShape, renderer: StructureRenderer | None = None
) -> np.ndarray:
    """Mean blurred structure image over the shared truth draws, for geometry ``shape`` (no noise);
    each draw by ``renderer``, by default the simulator's rule for ``structure``."""
    psf = config.structures.psf_sigma_px
    index = list(STRUCTURES).index(structure)
    total = np.zeros(grid.shape)
    for k in range(config.structures.truth_samples):
        rng = generator(seed_sequence(config.seed, Stream.TRUTH, index, 0, k))
        if renderer is None:
            total += render_structure(shape, structure, None, grid, rng, psf)
        else:
            total += renderer(shape, grid, rng, psf)
    return blur(total / config.structures.truth_samples, grid, psf)


def control_cell(config: SimulateConfig, structure: str, index: int) -> tuple[CellShape, np.ndarray]:
    """Geometry and (3, *crop) image (Membrane, DNA, Structure; [0, 1]) of the DMSO cell ``index``
    of ``structure`` as the store renders it; from ``cells_per_condition`` on, cells of the same
    draws that the store does not hold."""
    return _render(config, crop_grid(config), structure, CONTROL_DRUG, index)


def expected_control_structure(config: SimulateConfig, structure: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The structure channel of the store's DMSO cell ``index`` of ``structure`` (the number ending
    its ``Metadata_CellId``) and the simulator's expected structure image for that cell's geometry,
    the predictor of the coupling truth: ((*crop), (*crop)), intensities in [0, 1]."""
    shape, image = control_cell(config, structure, index)
    return image[2], expected_structure(config, crop_grid(config), structure, shape)


def structure_coupling(
    config: SimulateConfig, structure: str, renderer: StructureRenderer | None = None
) -> tuple[float, float]:
    """``(coupling_membrane, coupling_dna)`` of ``structure`` (see the module doc).

    ``renderer`` draws the structure for the predictor's expected image in place of the simulator's
    rule (the observed cells keep the rule): the coupling that a predictor knowing only part of the
    rule reaches, e.g. a Golgi ribbon on either side of the nucleus instead of the side with more room.
    """
    grid = crop_grid(config)
    n = config.structures.truth_cells
    rendered = [_render(config, grid, structure, CONTROL_DRUG, i) for i in range(n)]
    shapes = [shape for shape, _ in rendered]
    partners_rng = generator(seed_sequence(config.seed, Stream.TRUTH, list(STRUCTURES).index(structure), 1))
    membrane, dna = [], []
    for i, (shape, image) in enumerate(rendered):
        observed = image[2].astype(np.float64)

        def error(candidate: CellShape) -> float:
            return float(np.mean((observed - expected_structure(config, grid, structure, candidate, renderer)) ** 2))

        true_error = error(shape)
        others = [j for j in range(n) if j != i]
        swaps = config.structures.truth_swaps
        partners = partners_rng.choice(others, size=swaps, replace=len(others) < swaps)
        membrane_swapped = np.mean([error(CellShape(shapes[j].membrane, shape.nucleus)) for j in partners])
        dna_swapped = np.mean([error(CellShape(shape.membrane, shapes[j].nucleus)) for j in partners])
        membrane.append(1.0 - true_error / membrane_swapped)
        dna.append(1.0 - true_error / dna_swapped)
    return float(np.mean(membrane)), float(np.mean(dna))


def coupling_truth(config: SimulateConfig, client=None, progress: bool = False) -> pd.DataFrame:
    """One row per structure of ``config``: structure, rule, coupling_membrane, coupling_dna, shifted_by."""
    structures = config.structures.structures
    couplings = run_parallel_ordered(functools.partial(structure_coupling, config), structures, client, progress,
                                     "coupling truth")
    return pd.DataFrame({
        "structure": structures,
        "rule": [STRUCTURES[s] for s in structures],
        "coupling_membrane": [c[0] for c in couplings],
        "coupling_dna": [c[1] for c in couplings],
        "shifted_by": [",".join(d for d in config.structures.drugs if s in DRUGS[d].effects) for s in structures],
    })


def drug_truth(config: SimulateConfig) -> pd.DataFrame:
    """One row per condition (DMSO first) and structure: whether and how the condition shifts it."""
    rows = []
    for compound in _conditions(config):
        drug = DRUGS.get(compound)
        for structure in config.structures.structures:
            effect = drug.effects.get(structure, "") if drug else ""
            concentration = drug.concentration_um if drug else 0.0
            rows.append({"Metadata_Compound": compound, "Metadata_Concentration": concentration,
                         "structure": structure, "shifted": bool(effect), "effect": effect})
    return pd.DataFrame(rows)


def simulate_structures(
    config: SimulateConfig,
    out: str | os.PathLike,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> SimulatedStructures:
    """Render the single-cell crops of ``config`` (``mode: structures``) into the crop store ``out``.

    The store and its ``truth/`` folder are built under a temporary sibling name and appear under
    ``out`` only when complete. Cells render in parallel on ``workers`` processes or a dask
    ``scheduler``; the bytes depend only on the config, not on the parallelism.

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is False (before any work).
    ValueError
        If ``config.mode`` is not ``structures`` or ``workers`` < 1.
    """
    check_simulation(config, "simulate_structures", workers)
    out = Path(out)
    refuse_existing(out, overwrite)
    jobs = crop_jobs(config)
    grid = crop_grid(config)
    work_dir = temporary_sibling(out)
    try:
        (work_dir / "truth").mkdir()
        provenance = {"pipeline": "simulate", "mode": "structures", "config": config.to_dict()}
        with compute_context(workers, scheduler) as client, CropStoreWriter(
            out, STRUCTURE_CHANNELS, grid.shape, dtype="float32", with_masks=True, pixel_size_um=config.pixel_size_um,
            provenance=provenance, overwrite=overwrite, build_dir=work_dir,
        ) as writer:
            truth_rows = _write_crops(config, jobs, writer, client, progress)
            truth_rows.to_parquet(work_dir / "truth" / "cells.parquet", index=False)
            drug_truth(config).to_parquet(work_dir / "truth" / "drugs.parquet", index=False)
            coupling_truth(config, client, progress).to_parquet(work_dir / "truth" / "structures.parquet", index=False)
            save_config(config, work_dir / "simulate_config.yaml")
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return SimulatedStructures(out, out / "truth", len(truth_rows), config)


def _write_crops(
    config: SimulateConfig, jobs: list[CropJob], writer: CropStoreWriter, client, progress: bool
) -> pd.DataFrame:
    """Render every job and append its crops in job order (results arriving early wait); return the truth rows."""
    task = functools.partial(render_job, config)
    waiting: dict[int, tuple] = {}
    truth: list[pd.DataFrame] = []
    next_position = 0
    for position, result in run_parallel(task, jobs, client, progress, "simulate"):
        waiting[position] = result
        while next_position in waiting:
            images, masks, rows, truth_rows = waiting.pop(next_position)
            writer.append(images, rows, masks)
            truth.append(truth_rows)
            next_position += 1
    return pd.concat(truth, ignore_index=True)
