"""A small screen on disk: layout, manifest, truth tables, determinism, parallelism, atomicity."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from morphospace.config import load_config
from morphospace.simulate import SimulateConfig, SimulatedScreen, simulate_screen
from morphospace.simulate.screen import plate_layout

SMALL = SimulateConfig(
    seed=3,
    plates=3,
    plates_per_batch=2,
    field_size=96,
    fields_per_well=2,
    dmso_wells_per_plate=2,
    compounds_per_moa=1,
    concentrations=2,
    moas=["Actin disruptors", "Eg5 inhibitors"],
    cells_per_field=3,
)
MANIFEST_COLUMNS = [
    "Metadata_FieldId", "Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Batch",
    "Metadata_Compound", "Metadata_Concentration", "Metadata_MoA",
    "FileName_DNA", "FileName_Actin", "FileName_Tubulin",
]
CELL_COLUMNS = {
    "Metadata_FieldId", "Metadata_Plate", "Metadata_Well", "Metadata_Batch", "Metadata_Compound",
    "Metadata_Concentration", "Metadata_MoA", "Metadata_CellId", "Metadata_CellCycle",
    "Metadata_NucleiCount", "Metadata_PhenotypeStrength", "Metadata_Center_X", "Metadata_Center_Y",
    "Metadata_TouchesBorder",
}


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> SimulatedScreen:
    return simulate_screen(SMALL, tmp_path_factory.mktemp("serial") / "screen", workers=1, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_result_describes_the_written_screen(screen):
    assert screen.root.is_dir() and screen.manifest_path == screen.root / "manifest.csv"
    assert screen.truth_dir == screen.root / "truth" and screen.config == SMALL
    assert screen.n_fields == 3 * (2 + 2 * 1 * 2) * 2
    assert screen.n_cells == len(pd.read_parquet(screen.truth_dir / "cells.parquet")) > 0
    assert load_config(SimulateConfig, screen.root / "simulate_config.yaml") == SMALL
    assert not [p for p in screen.root.parent.iterdir() if p.name.startswith(".")]


def test_manifest_columns_names_and_paths(screen):
    manifest = pd.read_csv(screen.manifest_path)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == screen.n_fields and manifest["Metadata_FieldId"].is_unique
    for row in manifest.itertuples():
        assert re.fullmatch(r"Plate0[1-3]_[A-H](0[1-9]|1[0-2])_s[12]", row.Metadata_FieldId)
        assert row.Metadata_FieldId == f"{row.Metadata_Plate}_{row.Metadata_Well}_s{row.Metadata_Site}"
        for channel in ("DNA", "Actin", "Tubulin"):
            path = getattr(row, f"FileName_{channel}")
            assert path == f"images/{row.Metadata_Plate}/{row.Metadata_FieldId}_{channel}.tiff"
            assert (screen.root / path).is_file()
    batches = manifest.groupby("Metadata_Plate")["Metadata_Batch"].unique().map(list).to_dict()
    assert batches == {"Plate01": ["Batch1"], "Plate02": ["Batch1"], "Plate03": ["Batch2"]}
    dmso = manifest[manifest["Metadata_MoA"] == "DMSO"]
    assert set(dmso["Metadata_Compound"]) == {"DMSO"} and set(dmso["Metadata_Concentration"]) == {0.0}


def test_every_plate_holds_dmso_and_each_treatment_once(screen):
    manifest = pd.read_csv(screen.manifest_path)
    wells = manifest[manifest["Metadata_Site"] == 1]
    for _, plate in wells.groupby("Metadata_Plate"):
        assert plate["Metadata_Well"].is_unique
        assert (plate["Metadata_MoA"] == "DMSO").sum() == 2
        treated = plate[plate["Metadata_MoA"] != "DMSO"]
        assert len(treated) == 4
        assert not treated.duplicated(["Metadata_Compound", "Metadata_Concentration"]).any()
    layouts = [[(r, c) for r, c, _ in plate_layout(SMALL, p)] for p in range(3)]
    assert layouts[0] != layouts[1] or layouts[1] != layouts[2]


def test_images_and_truth_files_are_consistent(screen):
    manifest = pd.read_csv(screen.manifest_path)
    cells = pd.read_parquet(screen.truth_dir / "cells.parquet")
    nuclei = pd.read_parquet(screen.truth_dir / "nuclei.parquet")
    assert CELL_COLUMNS <= set(cells.columns)
    assert set(cells["Metadata_CellCycle"]) <= {"interphase", "mitotic"}
    assert {"Metadata_FieldId", "Metadata_NucleusId", "Metadata_CellId"} <= set(nuclei.columns)
    for row in manifest.itertuples():
        planes = [tifffile.imread(screen.root / getattr(row, f"FileName_{c}")) for c in ("DNA", "Actin", "Tubulin")]
        assert all(p.dtype == np.uint16 and p.shape == (96, 96) for p in planes)
        cell_labels = tifffile.imread(screen.truth_dir / f"{row.Metadata_FieldId}_cells.tiff")
        nucleus_labels = tifffile.imread(screen.truth_dir / f"{row.Metadata_FieldId}_nuclei.tiff")
        assert cell_labels.dtype == nucleus_labels.dtype == np.uint16
        field_cells = cells[cells["Metadata_FieldId"] == row.Metadata_FieldId]
        field_nuclei = nuclei[nuclei["Metadata_FieldId"] == row.Metadata_FieldId]
        assert sorted(field_cells["Metadata_CellId"]) == sorted(set(np.unique(cell_labels)) - {0})
        assert sorted(field_nuclei["Metadata_NucleusId"]) == sorted(set(np.unique(nucleus_labels)) - {0})
        for nucleus in field_nuclei.itertuples():
            owners = np.unique(cell_labels[nucleus_labels == nucleus.Metadata_NucleusId])
            assert owners.tolist() == [nucleus.Metadata_CellId]
        assert (field_cells["Metadata_MoA"] == row.Metadata_MoA).all()
        assert (field_cells["Metadata_Well"] == row.Metadata_Well).all()


@pytest.mark.slow
def test_two_workers_write_identical_files(screen, tmp_path):
    parallel = simulate_screen(SMALL, tmp_path / "parallel", workers=2, progress=False)
    assert _files(parallel.root) == _files(screen.root)


@pytest.mark.slow
def test_same_seed_repeats_and_other_seed_differs(screen, tmp_path):
    again = simulate_screen(SMALL, tmp_path / "again", progress=False)
    assert _files(again.root) == _files(screen.root)
    other = simulate_screen(SMALL.model_copy(update={"seed": 4}), tmp_path / "other", progress=False)
    first, second = _files(screen.root), _files(other.root)
    assert first["truth/cells.parquet"] != second["truth/cells.parquet"]
    common = sorted(set(first) & set(second) - {"manifest.csv", "simulate_config.yaml"})
    assert any(first[name] != second[name] for name in common if name.endswith("_DNA.tiff"))


def test_existing_output_is_an_error_unless_overwrite(tmp_path, capsys):
    config = SMALL.model_copy(update={"plates": 1, "fields_per_well": 1})
    out = tmp_path / "screen"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError):
        simulate_screen(config, out, progress=False)
    assert (out / "keep.txt").read_text() == "old"
    simulate_screen(config, out, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.csv").is_file()
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="workers"):
        simulate_screen(config, tmp_path / "none", workers=0)
