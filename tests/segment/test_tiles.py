"""Whole-field tiles: grid, downscaling, centre crop, errors, and ``prepare`` with ``tiles``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.config import resolve_config
from morphospace.errors import InputError
from morphospace.io.store import CropStore
from morphospace.segment.tiles import TilesConfig, tile_field
from morphospace.simulate import SimulateConfig, simulate_donors
from morphospace.workflows.prepare import PrepareConfig, prepare


def test_tiles_are_block_means_on_a_grid():
    field = np.random.default_rng(0).random((2, 40, 52)).astype(np.float32)
    tiles = tile_field(field, TilesConfig(size=8, downscale=2, stride=6))
    # 20 x 26 px after downscaling: rows at 0, 6, 12; columns at 0, 6, 12, 18
    assert tiles.images.shape == (12, 2, 8, 8) and tiles.masks.shape == (12, 8, 8)
    last = tiles.table.iloc[-1]
    assert (last["Metadata_TileRow"], last["Metadata_TileColumn"]) == (2, 3)
    assert (last["Metadata_Tile_Y0"], last["Metadata_Tile_X0"], last["Metadata_Tile_Size"]) == (24, 36, 16)
    expected = field[:, 24:26, 36:38].mean(axis=(1, 2))  # the last tile's top-left pixel
    assert tiles.images[-1, :, 0, 0] == pytest.approx(expected, rel=1e-6)


def test_centre_crop_offsets_the_windows():
    field = np.zeros((1, 30, 50), np.float32)
    field[0, 5:25, 15:35] = 1.0
    tiles = tile_field(field, TilesConfig(size=10, centre_crop=20))
    assert tiles.images.shape[0] == 4 and tiles.images.min() == 1.0
    assert tiles.table[["Metadata_Tile_Y0", "Metadata_Tile_X0"]].values.tolist() == [[5, 15], [5, 25], [15, 15],
                                                                                      [15, 25]]


def test_fields_too_small_are_refused():
    with pytest.raises(InputError, match="smaller than one tile of tiles.size 64"):
        tile_field(np.zeros((1, 100, 100), np.float32), TilesConfig(size=64, downscale=2))
    with pytest.raises(InputError, match="tiles.centre_crop 200 px exceeds"):
        tile_field(np.zeros((1, 100, 100), np.float32), TilesConfig(size=8, centre_crop=200))


@pytest.mark.slow
def test_prepare_with_tiles_writes_a_tile_store_with_the_manifest_labels(tmp_path: Path):
    config = SimulateConfig(mode="donors", field_size=128, plates=1,
                            donors={"donors_per_group": 2, "wells_per_donor": 1})
    screen = simulate_donors(config, tmp_path / "donors", progress=False)
    prepare_config = resolve_config(PrepareConfig, {}, ["tiles.size=64", "illumination.enabled=false"])
    prepare(screen.manifest_path, tmp_path / "tiles", prepare_config, progress=False)
    store = CropStore(tmp_path / "tiles")
    assert len(store) == 4 * 4 and store.channels == ["DNA", "Actin", "Junctions"]
    cells = store.cells
    assert {"Metadata_Donor", "Metadata_Group", "Metadata_TileRow"} <= set(cells.columns)
    assert cells.groupby("Metadata_FieldId").size().eq(4).all()
    manifest = pd.read_csv(screen.manifest_path).set_index("Metadata_FieldId")
    assert (cells["Metadata_Donor"].values == manifest.loc[cells["Metadata_FieldId"], "Metadata_Donor"].values).all()
    assert not (tmp_path / "tiles" / "labels").exists() or not any((tmp_path / "tiles" / "labels").iterdir())
