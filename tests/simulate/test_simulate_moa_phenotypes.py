"""Treatments change what can be measured from truth masks and pixels, relative to DMSO."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.segmentation import find_boundaries

from morphospace.simulate import COMPOUNDS, SimulateConfig, Treatment, simulate_field
from morphospace.simulate.phenotypes import dose_series

CONFIG = SimulateConfig()
OFFSET = CONFIG.optics.camera_offset
FIELDS = 4


def _per_cell(field) -> pd.DataFrame:
    """Measurements of every cell: areas, nucleus count, intensities and textures."""
    cells, nuclei = field.cell_labels.astype(int), field.nuclei_labels.astype(int)
    dna, actin, tubulin = (plane.astype(float) - OFFSET for plane in field.channels)
    ids = np.arange(1, cells.max() + 1)
    nucleus_cells = np.where(nuclei > 0, cells, 0)
    outline = np.where(find_boundaries(cells, mode="inner"), cells, 0)
    inner = np.where((cells > 0) & (outline == 0), cells, 0)
    table = pd.DataFrame(
        {
            "area": ndimage.sum_labels(np.ones_like(cells), cells, ids),
            "nucleus_area": ndimage.sum_labels(np.ones_like(cells), nucleus_cells, ids),
            "dna_mean": ndimage.mean(dna, nucleus_cells, ids),
            "dna_texture": ndimage.standard_deviation(dna, nucleus_cells, ids) / ndimage.mean(dna, nucleus_cells, ids),
            "actin_mean": ndimage.mean(actin, cells, ids),
            "cortex_ratio": ndimage.mean(actin, outline, ids) / ndimage.mean(actin, inner, ids),
            "tubulin_mean": ndimage.mean(tubulin, cells, ids),
            "tubulin_texture": ndimage.standard_deviation(tubulin, inner, ids) / ndimage.mean(tubulin, inner, ids),
        }
    )
    truth = field.cells.reset_index(drop=True)
    table["nuclei"] = truth["Metadata_NucleiCount"]
    table["mitotic"] = truth["Metadata_CellCycle"] == "mitotic"
    table["kind"] = truth["Metadata_CellKind"]
    table["border"] = truth["Metadata_TouchesBorder"]
    return table


def _measure(treatment: Treatment | None = None, moa: str = "DMSO", seed: int = 100) -> pd.DataFrame:
    fields = [simulate_field(CONFIG, seed=seed + i, moa=moa, treatment=treatment) for i in range(FIELDS)]
    return pd.concat([_per_cell(f) for f in fields], ignore_index=True)


@pytest.fixture(scope="module")
def measured():
    cache: dict[str, pd.DataFrame] = {}

    def get(moa: str) -> pd.DataFrame:
        if moa not in cache:
            cache[moa] = _measure(moa=moa)
        return cache[moa]

    return get


def _interphase(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["mitotic"] & ~table["border"]]


def test_dmso_cells_match_the_documented_sizes(measured):
    dmso = _interphase(measured("DMSO"))
    diameter = 2 * np.sqrt(dmso["area"] / np.pi)
    nucleus_diameter = 2 * np.sqrt(dmso["nucleus_area"] / np.pi)
    # BBBC021's scale: real nuclei in the 68 px crops measure about 34 px across (901 px^2)
    assert 45 < diameter.median() < 62 and 30 < nucleus_diameter.median() < 40
    assert (measured("DMSO")["nuclei"] == 1).all()


def test_aurora_inhibitors_make_large_cells_with_one_large_nucleus_or_several(measured):
    # failed cytokinesis: some cells keep 2-4 nuclei, more re-replicate into one large polyploid nucleus
    dmso, aurora = _interphase(measured("DMSO")), _interphase(measured("Aurora kinase inhibitors"))
    assert aurora["area"].median() > 1.3 * dmso["area"].median()
    polyploid, several = aurora[aurora["kind"] == "polyploid"], aurora[aurora["nuclei"] >= 2]
    assert len(polyploid) > len(several) > 0
    assert set(several["kind"]) == {"multinucleate"} and (polyploid["nuclei"] == 1).all()
    assert polyploid["nucleus_area"].median() > 2.0 * dmso["nucleus_area"].median()
    assert (polyploid["dna_mean"] * polyploid["nucleus_area"]).median() > 2.0 * (
        dmso["dna_mean"] * dmso["nucleus_area"]).median()


def test_protein_synthesis_inhibitors_make_smaller_brighter_cells(measured):
    # as real emetine and cycloheximide cells: they contract and get brighter per pixel
    dmso, treated = _interphase(measured("DMSO")), _interphase(measured("Protein synthesis"))
    assert treated["area"].median() < 0.9 * dmso["area"].median()
    assert treated["actin_mean"].median() > 1.3 * dmso["actin_mean"].median()
    assert treated["tubulin_mean"].median() > 1.3 * dmso["tubulin_mean"].median()


def test_microtubule_stabilizers_arrest_mitosis_and_brighten_tubulin(measured):
    dmso, treated = measured("DMSO"), measured("Microtubule stabilizers")
    assert treated["mitotic"].mean() > dmso["mitotic"].mean() + 0.15
    assert _interphase(treated)["tubulin_mean"].median() > 1.5 * _interphase(dmso)["tubulin_mean"].median()


def test_microtubule_destabilizers_leave_diffuse_tubulin_and_round_cells(measured):
    dmso, treated = measured("DMSO"), measured("Microtubule destabilizers")
    assert _interphase(treated)["tubulin_texture"].median() < 0.7 * _interphase(dmso)["tubulin_texture"].median()
    assert treated["mitotic"].mean() > dmso["mitotic"].mean() + 0.1


def test_actin_disruptors_lose_cortical_actin(measured):
    dmso, treated = _interphase(measured("DMSO")), _interphase(measured("Actin disruptors"))
    # the fitted model keeps at least half of the mechanism's loss of cortex (calibrate.MECHANISM_SHARE)
    assert treated["cortex_ratio"].median() < 0.85 * dmso["cortex_ratio"].median()
    assert treated["area"].median() < dmso["area"].median()


def test_eg5_inhibitors_make_monopolar_mitoses(measured):
    treated = measured("Eg5 inhibitors")
    assert treated["mitotic"].mean() > 0.3
    assert (treated.loc[treated["mitotic"], "kind"] == "monopolar").mean() > 0.8


def test_dna_damage_and_replication_change_nuclei_differently(measured):
    # real mitomycin C and camptothecin nuclei: both larger than DMSO, DNA brighter only under damage
    dmso = _interphase(measured("DMSO"))
    damage = _interphase(measured("DNA damage"))
    replication = _interphase(measured("DNA replication"))
    assert damage["nucleus_area"].median() > 1.15 * dmso["nucleus_area"].median()
    assert replication["nucleus_area"].median() > 1.1 * dmso["nucleus_area"].median()
    assert replication["dna_mean"].median() < damage["dna_mean"].median()


@pytest.mark.parametrize(
    ("moa", "column", "rising"),
    [("Protein synthesis", "area", False), ("Aurora kinase inhibitors", "nuclei", True)],
)
def test_dose_response_is_monotone(moa, column, rising):
    compound = COMPOUNDS[moa][0]
    values = []
    for dose in dose_series(compound, 3):
        treatment = Treatment(compound.name, moa, dose, compound.strength(dose))
        values.append(_interphase(_measure(treatment, seed=200))[column].mean())
    assert values == sorted(values, reverse=not rising)
    assert abs(values[-1] - values[0]) > 0.2 * values[0]
