"""Donors' monolayers (``mode: donors``): the phenotype's effect, donors, layout, files and truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.feature import structure_tensor

from morphospace.cli import main
from morphospace.config import ConfigError, resolve_config
from morphospace.io.images import read_image
from morphospace.io.manifest import read_manifest
from morphospace.simulate import SimulateConfig, simulate_donors, simulate_screen
from morphospace.simulate.donors import donor_field_jobs, donors_for
from morphospace.simulate.monolayer import MonolayerLook, monolayer_maps

TINY = ["mode=donors", "field_size=96", "plates=2", "donors.donors_per_group=3", "donors.wells_per_donor=2"]


def _config(*overrides: str) -> SimulateConfig:
    return resolve_config(SimulateConfig, {}, [*TINY, *overrides])


def _maps(disruption: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    look = MonolayerLook(disruption=disruption, cell_diameter_px=40.0, fibre_period_px=6.0, alignment=0.9)
    return monolayer_maps((256, 256), look, np.random.default_rng(seed))


def _fibre_coherence(actin: np.ndarray) -> float:
    """Orientation coherence of the actin map over the whole field: 1 when every ridge is parallel."""
    a, b, c = (float(t.mean()) for t in structure_tensor(actin, sigma=2.0, order="rc"))
    return float(np.hypot(a - c, 2 * b) / (a + c))


def _junction_cover(junctions: np.ndarray, labels: np.ndarray) -> float:
    """Share of the cell borders stained by the junction channel."""
    border = np.zeros(labels.shape, bool)
    border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return float((junctions[border] > 0.1).mean())


def test_disruption_breaks_junctions_and_misaligns_fibres():
    healthy = [_maps(0.0, seed) for seed in range(3)]
    disrupted = [_maps(1.0, seed) for seed in range(3)]
    cover = [np.mean([_junction_cover(m[2], labels) for m, labels in group]) for group in (healthy, disrupted)]
    coherence = [np.mean([_fibre_coherence(m[1]) for m, _ in group]) for group in (healthy, disrupted)]
    assert cover[0] > 0.85 and cover[1] < 0.65
    assert coherence[0] > 2 * coherence[1]


def test_maps_are_confluent_cells_with_one_nucleus_each():
    maps, labels = _maps(0.3)
    assert maps.shape == (3, 256, 256) and labels.shape == (256, 256)
    n_cells = len(np.unique(labels))
    assert 20 <= n_cells <= 80 and labels.min() == 1  # about (256 / 40)^2 cells, no background
    nucleus_pixels = maps[0] > 0.5
    assert 0.05 < nucleus_pixels.mean() < 0.35
    cells_with_nucleus = len(np.unique(labels[nucleus_pixels]))
    assert cells_with_nucleus >= 0.6 * n_cells  # cells cut by the border may keep their nucleus outside


def test_donors_have_even_severities_and_shuffled_names():
    donors = donors_for(_config("donors.donors_per_group=5", "donors.phenotype_strength=0.4"))
    healthy, disease = donors[:5], donors[5:]
    assert all(d.group == "healthy" and d.severity == 0 and d.look.disruption == 0 for d in healthy)
    assert sorted(d.severity for d in disease) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(d.look.disruption == pytest.approx(0.4 * d.severity) for d in disease)
    names = [d.name for d in donors]
    assert sorted(names) == [f"Donor{i:02d}" for i in range(1, 11)]
    assert names != sorted(names)


def test_layout_gives_each_donor_its_wells_and_fields():
    config = _config("fields_per_well=2")
    jobs = donor_field_jobs(config)
    table = pd.DataFrame([{"plate": j.plate, "well": j.well, "donor": d} for j, d in jobs])
    assert len(jobs) == 6 * 2 * 2
    assert table.groupby("donor").size().tolist() == [4] * 6
    assert (table.groupby(["plate", "well"])["donor"].nunique() == 1).all()
    assert table.groupby(["plate", "well"]).size().eq(2).all()
    assert table["plate"].nunique() == 2


def test_screen_files_truth_and_manifest(tmp_path: Path):
    screen = simulate_donors(_config(), tmp_path / "donors", progress=False)
    manifest = pd.read_csv(screen.manifest_path)
    assert list(manifest.columns[:7]) == ["Metadata_FieldId", "Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                          "Metadata_Batch", "Metadata_Donor", "Metadata_Group"]
    assert len(manifest) == screen.n_fields == 12
    fields = read_manifest(screen.manifest_path)
    assert list(fields[0].files) == ["DNA", "Actin", "Junctions"]
    image = read_image(screen.root / manifest["FileName_Actin"].iloc[0])
    assert image.shape == (96, 96) and image.dtype == np.uint16
    truth = pd.read_parquet(screen.truth_dir / "donors.parquet")
    assert truth["n_fields"].tolist() == [2] * 6
    groups = manifest.groupby("Metadata_Donor")["Metadata_Group"].first()
    assert (truth.set_index("Metadata_Donor")["Metadata_Group"] == groups.loc[truth["Metadata_Donor"]]).all()
    assert (pd.read_parquet(screen.truth_dir / "fields.parquet")["n_cells"] > 1).all()


def test_same_config_same_bytes(tmp_path: Path):
    first = simulate_donors(_config("donors.donors_per_group=2", "donors.wells_per_donor=1", "plates=1"),
                            tmp_path / "a", progress=False)
    second = simulate_donors(first.config, tmp_path / "b", progress=False)
    name = pd.read_csv(first.manifest_path)["FileName_Junctions"].iloc[-1]
    assert (first.root / name).read_bytes() == (second.root / name).read_bytes()


def test_bad_settings_are_refused_naming_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="donors.severity"):
        _config("donors.severity=[0.5, 1.5]")
    with pytest.raises(ConfigError, match="exceed a 384-well plate; use more plates"):
        _config("plates=1", "donors.donors_per_group=100", "donors.wells_per_donor=4")
    with pytest.raises(ValueError, match="use simulate_donors"):
        simulate_screen(_config(), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_donors_screen(tmp_path: Path, capsys):
    out = tmp_path / "donors"
    code = main(["--no-progress", "simulate", "--mode", "donors", "--out", str(out), "--set", "field_size=64",
                 "--set", "plates=1", "--set", "donors.donors_per_group=2", "--set", "donors.wells_per_donor=1"])
    assert code == 0
    assert "simulated 4 fields of 4 donors" in capsys.readouterr().out
    assert (out / "truth" / "donors.parquet").is_file() and (out / "simulate_config.yaml").is_file()
