"""Single-cell structure crops (``mode: structures``): store layout, placement rules, drugs, truth."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from morphospace.cli import main
from morphospace.config import ConfigError, resolve_config
from morphospace.io.store import CropStore
from morphospace.simulate import (
    DRUGS, STRUCTURES, SimulateConfig, SimulatedStructures, simulate, simulate_screen, simulate_structures,
)
from morphospace.simulate.structure_crops import (
    CropJob,
    control_cell,
    coupling_truth,
    crop_grid,
    expected_control_structure,
    render_job,
    structure_coupling,
)
from morphospace.simulate.structures import (
    CELL_HEIGHT,
    NUCLEUS_HEIGHT,
    CellShape,
    CropGrid,
    Ellipsoid,
    align_cell,
    golgi_heading,
    golgi_ribbon,
    render_reference,
    render_structure,
    sample_cell,
)

TINY = ["mode=structures", "structures.crop_size=[32, 32]", "structures.cells_per_condition=2",
        "structures.truth_cells=3", "structures.truth_swaps=1", "structures.truth_samples=1"]


def _config(*overrides: str) -> SimulateConfig:
    return resolve_config(SimulateConfig, {}, [*TINY, *overrides])


def _cell(seed: int, grid: CropGrid, **geometry) -> CellShape:
    return sample_cell(np.random.default_rng(seed), grid, (0.6, 0.75), (1.0, 1.5), (0.5, 0.6), 0.6, **geometry)


def _render(cell: CellShape, structure: str, grid: CropGrid, drug: str | None = None, seed: int = 7) -> np.ndarray:
    return render_structure(cell, structure, drug, grid, np.random.default_rng(seed), psf_sigma_px=1.0)


@pytest.fixture(scope="module")
def store_2d(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("structures") / "cells"
    simulate_structures(_config("plates=2"), out, progress=False)
    return out


def test_2d_store_holds_one_cell_per_crop_with_metadata_and_truth(store_2d: Path):
    store = CropStore(store_2d)
    n = len(STRUCTURES) * (1 + len(DRUGS)) * 2
    assert len(store) == n and store.channels == ["Membrane", "DNA", "Structure"]
    images = store.read(slice(None))
    assert images.shape == (n, 3, 32, 32) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert store.read_masks(slice(None)).shape == (n, 32, 32)
    cells = store.cells
    assert set(cells.columns) == {"Metadata_CellId", "Metadata_Structure", "Metadata_Compound",
                                  "Metadata_Concentration", "Metadata_Plate", "Metadata_Well"}
    assert set(cells["Metadata_Structure"]) == set(STRUCTURES)
    assert set(cells["Metadata_Compound"]) == {"DMSO", *DRUGS}
    assert (cells.loc[cells["Metadata_Compound"] == "DMSO", "Metadata_Concentration"] == 0).all()
    assert set(cells["Metadata_Plate"]) == {"Plate01", "Plate02"}
    assert cells.groupby(["Metadata_Structure", "Metadata_Compound"])["Metadata_Well"].nunique().eq(1).all()
    truth = pd.read_parquet(store_2d / "truth" / "cells.parquet")
    assert truth["Metadata_CellId"].tolist() == cells["Metadata_CellId"].tolist()
    shifted = truth.set_index(["Metadata_Structure", "Metadata_Compound"])["shifted"].groupby(level=[0, 1]).first()
    assert shifted[("Golgi", "GolgiDisperser")] and not shifted[("Golgi", "CortexThickener")]
    assert not shifted.xs("DMSO", level=1).any() and int(shifted.sum()) == 3
    assert (store_2d / "simulate_config.yaml").is_file()


def test_truth_tables_name_each_drugs_structures(store_2d: Path):
    drugs = pd.read_parquet(store_2d / "truth" / "drugs.parquet")
    hits = drugs[drugs["shifted"]]
    assert sorted(zip(hits["Metadata_Compound"], hits["structure"])) == [
        ("CortexThickener", "Cortex"), ("GolgiDisperser", "Golgi"), ("NucleolarEnlarger", "Nucleoli")]
    structures = pd.read_parquet(store_2d / "truth" / "structures.parquet")
    assert structures["structure"].tolist() == list(STRUCTURES)
    assert {"rule", "coupling_membrane", "coupling_dna", "shifted_by"} <= set(structures.columns)
    never = structures.loc[structures["shifted_by"] == "", "structure"]
    assert set(never) == {"NuclearEnvelope", "Mitochondria", "Puncta"}


def test_same_seed_same_bytes_other_seed_other_cells(tmp_path: Path, store_2d: Path):
    again = simulate_structures(_config("plates=2"), tmp_path / "again", progress=False).root
    other = simulate_structures(_config("plates=2", "seed=1"), tmp_path / "other", progress=False).root
    first = CropStore(store_2d).read(slice(None))
    assert np.array_equal(first, CropStore(again).read(slice(None)))
    assert not np.array_equal(first, CropStore(other).read(slice(None)))
    for name in ("cells", "structures", "drugs"):
        pd.testing.assert_frame_equal(pd.read_parquet(store_2d / "truth" / f"{name}.parquet"),
                                      pd.read_parquet(again / "truth" / f"{name}.parquet"))


def test_cli_set_dims_3_writes_anisotropic_stacks(tmp_path: Path):
    out = tmp_path / "cells3d"
    code = main(["--no-progress", "simulate", "--mode", "structures", "--out", str(out), "--set", "dims=3",
                 *(x for item in [*TINY[1:], "structures.depth=8", "structures.structures=[Nucleoli, Puncta]",
                                  "structures.drugs=[NucleolarEnlarger]"] for x in ("--set", item))])
    assert code == 0
    store = CropStore(out)
    assert store.read([0]).shape == (1, 3, 8, 32, 32) and store.read([0]).dtype == np.float32
    assert len(store) == 2 * 2 * 2
    dna = store.read(slice(None), ["DNA"])[:, 0]
    assert dna[:, 4].mean() > 3 * dna[:, 0].mean()  # the nucleus sits in the middle slices


def test_each_structure_lies_where_its_rule_says():
    grid = CropGrid((48, 48))
    for seed in range(4):
        cell = _cell(seed, grid)
        rho_nucleus, rho_cell = grid.normalized_radius(cell.nucleus), grid.normalized_radius(cell.membrane)
        depth_in_cell = (1.0 - rho_cell) * cell.membrane.mean_radius
        gap_to_nucleus = (rho_nucleus - 1.0) * cell.nucleus.mean_radius

        def bright(structure: str) -> np.ndarray:
            image = _render(cell, structure, grid, seed=seed)
            return image > 0.5 * image.max()

        assert np.all(np.abs(gap_to_nucleus[bright("NuclearEnvelope")]) < 1.5)
        assert np.all(rho_nucleus[bright("Nucleoli")] < 1.0)
        assert np.all((depth_in_cell[bright("Cortex")] > -1.0) & (depth_in_cell[bright("Cortex")] < 3.5))
        mitochondria = bright("Mitochondria")
        assert np.all((rho_cell[mitochondria] < 1.0) & (rho_nucleus[mitochondria] > 1.0))
        golgi = bright("Golgi")
        assert np.all((gap_to_nucleus[golgi] > 0.0) & (gap_to_nucleus[golgi] < 6.0))


def test_couplings_hold_exactly_where_a_structure_ignores_a_channel():
    grid = CropGrid((8, 32, 32), z_step_px=3.0)
    cell, other = _cell(0, grid), _cell(1, grid)
    membrane_swapped, nucleus_swapped = CellShape(other.membrane, cell.nucleus), CellShape(cell.membrane, other.nucleus)
    for structure in ("NuclearEnvelope", "Nucleoli"):
        assert np.array_equal(_render(cell, structure, grid), _render(membrane_swapped, structure, grid))
        assert not np.array_equal(_render(cell, structure, grid), _render(nucleus_swapped, structure, grid))
    assert np.array_equal(_render(cell, "Cortex", grid), _render(nucleus_swapped, "Cortex", grid))
    assert not np.array_equal(_render(cell, "Cortex", grid), _render(membrane_swapped, "Cortex", grid))
    puncta = _render(cell, "Puncta", grid)
    assert np.array_equal(puncta, _render(other, "Puncta", grid)) and puncta.max() > 0


def test_independent_puncta_do_not_follow_the_cell():
    grid = CropGrid((48, 48))
    inside, area = [], []
    for seed in range(40):
        cell = _cell(seed, grid)
        mask = grid.normalized_radius(cell.membrane) < 1.0
        puncta = _render(cell, "Puncta", grid, seed=seed)
        inside.append(puncta[mask].sum() / puncta.sum())
        area.append(mask.mean())
    assert abs(np.mean(inside) - np.mean(area)) < 0.1  # as much inside the cell as the cell's share of the crop


def test_coupling_truth_orders_structures_by_their_rules():
    # the Golgi's membrane tie is weak against its ribbon's jitter: fewer cells can read it below 0
    config = _config("structures.crop_size=[48, 48]", "structures.truth_cells=32", "structures.truth_swaps=4",
                     "structures.truth_samples=4")
    truth = coupling_truth(config).set_index("structure")
    membrane, dna = truth["coupling_membrane"], truth["coupling_dna"]
    assert (membrane[["NuclearEnvelope", "Nucleoli", "Puncta"]] == 0).all() and (dna[["Cortex", "Puncta"]] == 0).all()
    assert dna["NuclearEnvelope"] > dna["Nucleoli"] > dna["Golgi"] > dna["Mitochondria"] > 0
    assert membrane["Cortex"] > membrane["Golgi"] > 0 and membrane["Cortex"] > membrane["Mitochondria"] > 0


def _centre_of_mass(image: np.ndarray, grid: CropGrid) -> np.ndarray:
    """(y, x) px from the crop centre."""
    return np.array(ndimage.center_of_mass(image)) - (np.array(grid.shape) - 1) / 2.0


def test_aligning_puts_the_nucleus_at_the_centre_and_the_long_axis_along_x():
    grid = CropGrid((64, 64))
    for seed in range(6):
        cell = _cell(seed, grid)
        aligned = align_cell(cell)
        _, dna = render_reference(aligned, grid)
        inside = grid.normalized_radius(aligned.membrane) < 1.0
        assert np.allclose(_centre_of_mass(dna, grid), 0.0, atol=0.05)
        centre = np.array([axis[inside].mean() for axis in grid.coords])
        assert np.all(centre > -0.5)  # the cell body lies towards +y and +x, up to pixelation
        y, x = (axis[inside] - c for axis, c in zip(grid.coords, centre))
        assert (x**2).mean() >= (y**2).mean() and abs((x * y).mean()) < 0.01 * (x**2).mean()
        before = grid.normalized_radius(cell.membrane) < 1.0, grid.normalized_radius(cell.nucleus) < 1.0
        after = inside, grid.normalized_radius(aligned.nucleus) < 1.0
        for old, new in zip(before, after):  # a move of the frame: the same areas, up to pixelation
            assert abs(int(old.sum()) - int(new.sum())) <= 0.03 * old.sum()
        offset = np.subtract(cell.nucleus.centre, cell.membrane.centre)
        assert np.isclose(np.hypot(*aligned.membrane.centre), np.hypot(*offset))


def test_the_golgi_rule_reads_the_nucleus_offset_from_the_cell_not_from_the_crop():
    grid = CropGrid((64, 64))
    sides = []
    for seed in range(12):
        cell = align_cell(_cell(seed, grid))
        golgi = _render(cell, "Golgi", grid, seed=seed)
        sides.append(_centre_of_mass(golgi, grid)[1])
        moved = CellShape(*(replace(shape, centre=(shape.centre[0] + 3.0, shape.centre[1] + 2.0))
                            for shape in (cell.membrane, cell.nucleus)))
        assert np.array_equal(np.roll(golgi, (3, 2), axis=(0, 1))[4:-4, 4:-4],
                              _render(moved, "Golgi", grid, seed=seed)[4:-4, 4:-4])
    assert np.mean(sides) > 2.0 and np.mean(np.array(sides) > 0) >= 0.75  # the side with more room: +x, jittered


def test_the_golgi_faces_away_from_the_nucleus_offset_whichever_way_the_axis_points():
    membrane = Ellipsoid((0.0, 0.0), 20.0, 12.0, np.pi / 2, 1.0)  # long axis along y
    for dy, expected in ((1.5, -np.pi / 2), (-0.4, np.pi / 2)):
        nucleus = Ellipsoid((dy, 0.7), 6.0, 5.0, 0.0, 1.0)
        for angle in (membrane.angle, membrane.angle + np.pi):  # the same ellipse
            assert np.isclose(golgi_heading(CellShape(replace(membrane, angle=angle), nucleus)), expected)


def test_a_predictor_blind_to_the_cell_has_no_coupling_and_the_rule_gives_the_truth():
    # the Golgi's membrane tie is weak against its ribbon's jitter: fewer cells can read it under a side-blind one
    config = _config("structures.crop_size=[48, 48]", "structures.truth_cells=32", "structures.truth_swaps=4",
                     "structures.truth_samples=4")
    truth = coupling_truth(config).set_index("structure").loc["Golgi"]
    assert structure_coupling(config, "Golgi") == (truth["coupling_membrane"], truth["coupling_dna"])

    def rule(cell, grid, rng, psf_sigma_px):
        return golgi_ribbon(cell.nucleus, golgi_heading(cell), grid, rng, psf_sigma_px)

    assert structure_coupling(config, "Golgi", rule) == (truth["coupling_membrane"], truth["coupling_dna"])
    assert structure_coupling(config, "Golgi", lambda cell, grid, rng, psf: np.full(grid.shape, 0.1)) == (0.0, 0.0)

    def either_side(cell, grid, rng, psf_sigma_px):
        heading = golgi_heading(cell)
        return sum(golgi_ribbon(cell.nucleus, heading + turn, grid, rng, psf_sigma_px) for turn in (0.0, np.pi)) / 2

    membrane, dna = structure_coupling(config, "Golgi", either_side)
    assert membrane < truth["coupling_membrane"] and 0 < dna < truth["coupling_dna"]


def test_aligned_crops_have_the_truth_of_their_frame():
    config = _config("structures.crop_size=[48, 48]", "structures.truth_cells=8", "structures.truth_swaps=2",
                     "structures.truth_samples=4", "structures.aligned=true")
    truth = coupling_truth(config).set_index("structure")
    membrane, dna = truth["coupling_membrane"], truth["coupling_dna"]
    assert (membrane[["NuclearEnvelope", "Nucleoli", "Golgi", "Puncta"]] == 0).all()  # every Golgi on +x
    assert (dna[["Cortex", "Puncta"]] == 0).all()
    assert dna["NuclearEnvelope"] > dna["Nucleoli"] > dna["Golgi"] > 0 and membrane["Cortex"] > membrane["Mitochondria"] > 0
    image, _ = expected_control_structure(config, "NuclearEnvelope", 0)
    assert np.allclose(_centre_of_mass(image, crop_grid(config)), 0.0, atol=0.5)


def test_a_control_cells_expected_structure_is_the_stores_cell_without_noise(store_2d: Path):
    config = _config("plates=2")
    cells = CropStore(store_2d).cells
    row = int(np.flatnonzero(cells["Metadata_CellId"] == "NuclearEnvelope_DMSO_00001")[0])
    observed, expected = expected_control_structure(config, "NuclearEnvelope", 1)
    np.testing.assert_allclose(observed, CropStore(store_2d).read(slice(row, row + 1))[0, 2], atol=1e-6)
    assert expected.shape == observed.shape and expected.min() >= 0
    _, other = expected_control_structure(config, "NuclearEnvelope", 0)
    assert np.mean((observed - expected) ** 2) < 0.5 * np.mean((observed - other) ** 2)


@pytest.mark.parametrize("follow", [False, True], ids=["sizes_apart", "heights_follow_sizes"])
def test_3d_heights_are_drawn_apart_after_the_xy_geometry_of_2d(follow):
    stack, flat = CropGrid((16, 64, 64), 3.0), CropGrid((64, 64))
    # following, the simulator as it was: the nucleus's size its cell's too, so it tells the cell's height
    cells = [_cell(seed, stack, heights_follow_sizes=follow, nucleus_size_follows_cell=follow) for seed in range(400)]
    for cell, plane in zip(cells, (_cell(seed, flat, nucleus_size_follows_cell=follow) for seed in range(400))):
        assert replace(cell.membrane, height=1.0) == plane.membrane
        assert replace(cell.nucleus, height=1.0) == plane.nucleus
    radius = np.array([np.sqrt(c.membrane.major * c.membrane.minor) for c in cells])
    height, nucleus_height = (np.array([getattr(c, part).height for c in cells]) for part in ("membrane", "nucleus"))
    nucleus_minor = np.array([c.nucleus.minor for c in cells])
    uncapped = nucleus_height < 0.8 * height
    assert (nucleus_height <= 0.8 * height + 1e-9).all() and uncapped.mean() > 0.9
    # the membrane's outline and height do not fix the nucleus's height: its own draw spreads it
    assert np.std(nucleus_height / height) > 0.08
    if follow:
        assert CELL_HEIGHT[0] <= (height / radius).min() and (height / radius).max() <= CELL_HEIGHT[1]
        share_of_minor = nucleus_height / nucleus_minor
        assert NUCLEUS_HEIGHT[0] <= share_of_minor[uncapped].min() and share_of_minor.max() <= NUCLEUS_HEIGHT[1]
        assert abs(np.corrcoef(share_of_minor[uncapped], (height / radius)[uncapped])[0, 1]) < 0.15
        assert np.corrcoef(np.log(nucleus_minor), height)[0, 1] > 0.3
        return
    # apart, no xy size tells a height: the nucleus's size says nothing of its cell's height
    for size in (radius, nucleus_minor):
        for z in (height, nucleus_height):
            assert abs(np.corrcoef(np.log(size), z)[0, 1]) < 0.15
    half_xy, scale = 32.0, 0.6 * 32.0  # the heights spread over the same range as sizes' fractions
    assert CELL_HEIGHT[0] * scale <= height.min() and height.max() <= CELL_HEIGHT[1] * 0.75 * half_xy
    assert height.std() > 0.8


def _axis_alignment(cells: list[CellShape]) -> float:
    """Mean cos 2(nucleus angle - cell angle): 1 when each nucleus follows its cell's axis, about 0 if independent."""
    return float(np.mean([np.cos(2.0 * (c.nucleus.angle - c.membrane.angle)) for c in cells]))


def test_the_nucleus_axis_is_independent_of_the_cells_unless_tied():
    grid = CropGrid((64, 64))
    free = [_cell(seed, grid) for seed in range(2000)]
    tied = [_cell(seed, grid, nucleus_angle_sd=0.3) for seed in range(2000)]
    assert abs(_axis_alignment(free)) < 0.05  # se of the mean of cos over 2,000 uniform angles: 0.016
    assert np.isclose(_axis_alignment(tied), np.exp(-2.0 * 0.3**2), atol=0.03)  # E cos 2e for e ~ N(0, 0.3)
    # the angle draw takes the place of the tied one: every other part of the cell is the same
    for one, other in zip(free[:50], tied[:50]):
        assert one.membrane == other.membrane
        assert replace(one.nucleus, angle=0.0) == replace(other.nucleus, angle=0.0)


def _semi_axes(cells: list[CellShape]) -> dict[str, np.ndarray]:
    return {f"{part}_{axis}": np.array([getattr(getattr(c, part), axis) for c in cells])
            for part in ("membrane", "nucleus") for axis in ("major", "minor")}


def test_the_nucleus_size_is_drawn_apart_from_the_cells_unless_it_follows():
    grid = CropGrid((64, 64))
    free = [_cell(seed, grid) for seed in range(2000)]
    follow = [_cell(seed, grid, nucleus_size_follows_cell=True) for seed in range(2000)]
    apart, tied = _semi_axes(free), _semi_axes(follow)
    # the nucleus fits its cell either way
    for axes in (apart, tied):
        assert (axes["nucleus_major"] <= 0.8 * axes["membrane_minor"] + 1e-9).all()
        assert (axes["nucleus_minor"] <= axes["nucleus_major"]).all()
    assert np.corrcoef(tied["membrane_minor"], tied["nucleus_minor"])[0, 1] > 0.7
    # se of r over 2,000 independent cells: 0.022; the fitting cap leaves a weak tie on the major axis
    assert abs(np.corrcoef(apart["membrane_minor"], apart["nucleus_minor"])[0, 1]) < 0.07
    assert abs(np.corrcoef(apart["membrane_minor"], apart["nucleus_major"])[0, 1]) < 0.25
    assert np.isclose(apart["nucleus_minor"].mean(), tied["nucleus_minor"].mean(), rtol=0.03)
    # the size draw comes after the cell's: every cell outline is the same
    assert all(one.membrane == other.membrane for one, other in zip(free, follow))


def test_a_control_cell_is_the_stores_cell_with_its_geometry_and_goes_on_past_the_store(store_2d: Path):
    config = _config("plates=2")
    store = CropStore(store_2d)
    row = int(np.flatnonzero(store.cells["Metadata_CellId"] == "Golgi_DMSO_00001")[0])
    shape, image = control_cell(config, "Golgi", 1)
    np.testing.assert_allclose(image, store.read(slice(row, row + 1))[0], atol=1e-6)
    truth = pd.read_parquet(store_2d / "truth" / "cells.parquet").iloc[row]
    assert shape.membrane.major == pytest.approx(truth["cell_major_px"])
    beyond, _ = control_cell(config, "Golgi", config.structures.cells_per_condition)
    assert beyond != shape and beyond.nucleus.major > 0

def _measure(images: np.ndarray) -> np.ndarray:
    """Per cell: total structure intensity, bright area, intensity-weighted spread about its centroid (px)."""
    structure = images[:, 2].astype(np.float64)
    y, x = np.indices(structure.shape[1:])
    total = structure.sum(axis=(1, 2))
    centroid_y, centroid_x = [(structure * c).sum(axis=(1, 2)) / total for c in (y, x)]
    squared = (y - centroid_y[:, None, None]) ** 2 + (x - centroid_x[:, None, None]) ** 2
    spread = np.sqrt((structure * squared).sum(axis=(1, 2)) / total)
    return np.stack([total, (structure > 0.3).sum(axis=(1, 2)), spread], 1)


def test_drugs_shift_only_their_structures():
    config = _config("structures.crop_size=[48, 48]")
    cells = tuple(range(12))
    for structure in STRUCTURES:
        control = _measure(render_job(config, CropJob(structure, "DMSO", 0, "A01", cells))[0])
        for drug, effect in DRUGS.items():
            treated = _measure(render_job(config, CropJob(structure, drug, 0, "A01", cells))[0])
            spread = np.sqrt((control.var(axis=0, ddof=1) + treated.var(axis=0, ddof=1)) / len(cells))
            shift = np.max(np.abs(treated.mean(axis=0) - control.mean(axis=0)) / spread)
            if structure in effect.effects:
                assert shift > 5.0, (structure, drug, shift)
            else:
                assert shift < 3.5, (structure, drug, shift)


def test_a_drug_changes_no_unshifted_structure_even_given_the_same_draws():
    grid = CropGrid((32, 32))
    cell = _cell(3, grid)
    for structure in STRUCTURES:
        for drug, effect in DRUGS.items():
            same = np.array_equal(_render(cell, structure, grid), _render(cell, structure, grid, drug))
            assert same == (structure not in effect.effects), (structure, drug)


@pytest.mark.parametrize(("override", "key"), [
    ("structures.structures=[Nucleoli, Ribosomes]", "structures.structures"),
    ("structures.drugs=[Taxol]", "structures.drugs"),
    ("structures.crop_size=[8, 32]", "structures.crop_size"),
    ("structures.cell_size=[0.8, 0.5]", "structures.cell_size"),
    ("structures.nucleus_height=[0.5, 1.2]", "structures.nucleus_height"),
    ("structures.nucleus_angle_sd=-0.1", "structures.nucleus_angle_sd"),
    ("structures.cells_per_condition=0", "structures.cells_per_condition"),
    ("dims=4", "dims"),
])
def test_bad_settings_name_the_key(override: str, key: str):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        _config(override)


def test_dims_3_needs_structures_mode_and_screens_refuse_it(tmp_path: Path):
    with pytest.raises(ConfigError, match="key 'dims'.*3 needs mode: structures"):
        resolve_config(SimulateConfig, {}, ["dims=3"])
    with pytest.raises(ValueError, match="simulate_structures"):
        simulate_screen(_config(), tmp_path / "screen", progress=False)
    with pytest.raises(ValueError, match="does not render mode: fluorescence; use simulate_screen"):
        simulate_structures(SimulateConfig(), tmp_path / "crops", progress=False)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        simulate(_config(), tmp_path / "crops", workers=0, progress=False)
    assert not (tmp_path / "screen").exists() and not (tmp_path / "crops").exists()


def test_simulate_picks_the_simulator_of_the_mode(tmp_path: Path):
    written = simulate(_config(), tmp_path / "crops", progress=False)
    assert isinstance(written, SimulatedStructures) and written.n_cells == len(CropStore(written.root))
    assert written.summary() == f"simulated {written.n_cells} single-cell crops -> {tmp_path / 'crops'} " \
                                f"(truth in {tmp_path / 'crops' / 'truth'})"


def test_existing_output_is_refused_before_any_work(tmp_path: Path):
    (tmp_path / "cells").mkdir()
    with pytest.raises(FileExistsError):
        simulate_structures(_config(), tmp_path / "cells", progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "cells"]
