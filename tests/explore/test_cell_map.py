"""``explore map``: maps of cells and wells, their colours, thumbnails and page, and what a user sees
of them in Chromium (hover shows the cell's crop, a click fills the gallery, no script errors)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bokeh.palettes import Category10, Viridis256
from matplotlib.path import Path as PolygonPath
from PIL import Image

from morphospace.cli import main
from morphospace.errors import InputError
from morphospace.explore.browser import browser_missing, click_point, hover_point, lasso_select, open_page
from morphospace.explore.cell_map import (
    cell_thumbnails, color_scheme, group_thumbnails, standardised_features, table_map, write_map,
)
from morphospace.io.store import CropStore

needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=f"no browser check: {browser_missing()}")


def _cells_table(store: CropStore, seed: int = 0) -> pd.DataFrame:
    """The store's cells with two features that both separate the MoAs, as ``features`` writes them."""
    cells = store.cells.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    shift = (cells["Metadata_MoA"] == "A").to_numpy() * 4.0
    return cells.assign(Metadata_StoreIndex=np.arange(len(cells)), f1=rng.normal(size=len(cells)) + shift,
                        f2=rng.normal(size=len(cells)) + shift, constant=1.0)


def _decoded(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_categories_get_one_colour_each_and_missing_values_grey():
    colors, legend = color_scheme(pd.Series(["b", "a", "b", None]))
    assert colors == [Category10[10][1], Category10[10][0], Category10[10][1], "#bbbbbb"]
    assert "a (1)" in legend and "b (2)" in legend and "missing (1)" in legend


def test_many_numbers_are_coloured_by_rank():
    values = pd.Series(np.exp(np.arange(40.0)))  # a skewed column: ranks spread it over the scale
    colors, legend = color_scheme(values)
    assert colors[0] == Viridis256[int(256 / 40)] and colors[-1] == Viridis256[255]
    assert len(set(colors)) == 40 and "rank" in legend


def test_features_are_z_scored_and_unusable_columns_left_out():
    table = pd.DataFrame({"Metadata_A": list("xyz" * 3), "good": np.arange(9.0), "gap": [np.nan] + [1.0] * 8,
                          "flat": 2.0, "one_missing": [np.inf, 1, 2, 3, 4, 5, 6, 7, 8]})
    x, left_out = standardised_features(table, max_missing=0.2)  # 1 of 9 rows missing: filled with the median
    assert x.shape == (9, 2) and np.allclose(x.mean(axis=0), 0) and np.allclose(x.std(axis=0), 1)
    assert np.isclose(x[0, 1], 0)  # filled with 4.5, the median of 1..8, which is also the new column's mean
    assert left_out == ["gap", "flat"]
    assert standardised_features(table, max_missing=0.05)[1] == ["gap", "flat", "one_missing"]
    with pytest.raises(InputError, match="no numeric feature columns"):
        standardised_features(table[["Metadata_A"]])


def test_a_map_of_cells_has_their_crops_and_separates_groups(small_store: Path):
    store = CropStore(small_store)
    cell_map = table_map(_cells_table(store), store)
    assert cell_map.n_points == 60 and cell_map.color == "Metadata_MoA"
    assert set(cell_map.color_columns) == {"Metadata_Plate", "Metadata_MoA", "Metadata_Well"}
    xy, moa = cell_map.views[0].xy, cell_map.metadata["Metadata_MoA"].to_numpy()
    within = np.mean([xy[moa == g, 0].std() for g in "AB"])
    assert abs(xy[moa == "A", 0].mean() - xy[moa == "B", 0].mean()) > 2 * within  # the shift leads PC1
    first = _decoded(cell_map.thumbnails[0])
    assert first.shape == (64, 64, 3) and first.std() > 0


def test_thumbnails_share_display_limits_so_brightness_compares(small_store: Path):
    store = CropStore(small_store)
    dim, bright = (_decoded(uri).mean() for uri in cell_thumbnails(store, np.array([0, 59]), size=12))
    assert bright > dim + 50  # plate P2 is 100 times brighter than P0


def test_well_rows_show_a_montage_of_their_cells(small_store: Path):
    store = CropStore(small_store)
    wells = pd.DataFrame({"Metadata_Plate": ["P0", "P1", "P9"], "Metadata_Well": ["W0", "W1", "W0"]})
    uris = group_thumbnails(store, wells, size=40, per_group=4)
    assert uris[2] == "" and _decoded(uris[0]).shape == (40, 40, 3)
    profiles = wells.iloc[:2].assign(f1=[0.0, 1.0], f2=[1.0, 0.0])
    with pytest.raises(InputError, match="a map needs at least 3"):
        table_map(profiles, store)


def test_large_tables_are_sampled_with_a_note_and_the_same_seed_gives_the_same_map(small_store: Path):
    table = _cells_table(CropStore(small_store))
    first, second = table_map(table, max_points=20, seed=3), table_map(table, max_points=20, seed=3)
    assert first.n_points == 20 and first.metadata.equals(second.metadata)
    assert np.array_equal(first.views[0].xy, second.views[0].xy)
    assert any("20 of 60 rows" in note for note in first.notes) and any("no crop store" in n for n in first.notes)


def test_bad_input_is_named(small_store: Path, tmp_path: Path):
    store = CropStore(small_store)
    table = _cells_table(store)
    with pytest.raises(InputError, match="'Metadata_Dose' is not a metadata column"):
        table_map(table, store, color="Metadata_Dose")
    with pytest.raises(InputError, match="'f1' is not a metadata column"):
        table_map(table, store, color="f1")
    with pytest.raises(InputError, match="Metadata_StoreIndex runs to 99"):
        table_map(table.assign(Metadata_StoreIndex=np.arange(40, 100)), store)
    path = tmp_path / "cells.parquet"
    table.to_parquet(path)
    assert main(["explore", "map", "--table", str(path), "--out", str(tmp_path / "map.png")]) == 2
    assert not (tmp_path / "map.png").exists()


def test_the_page_is_self_contained(small_store: Path, tmp_path: Path, capsys):
    path = tmp_path / "cells.parquet"
    _cells_table(CropStore(small_store)).to_parquet(path)
    assert main(["explore", "map", "--table", str(path), "--store", str(small_store), "--color", "Metadata_Plate",
                 "--out", str(tmp_path / "map.html")]) == 0
    assert "60 points with crops" in capsys.readouterr().out
    page = (tmp_path / "map.html").read_text()
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page  # every script inlined
    assert page.count("data:image/png;base64,") >= 60 and "Bokeh" in page


@needs_browser
def test_in_chromium_hover_shows_the_cell_and_a_click_fills_the_gallery(small_store: Path, tmp_path: Path):
    store = CropStore(small_store)
    table = _cells_table(store)
    path = tmp_path / "cells.parquet"
    table.to_parquet(path)
    _, cell_map = write_map(path, tmp_path / "map.html", small_store)
    xy = cell_map.views[0].xy
    isolated = int(np.argmax(np.linalg.norm(xy - xy.mean(axis=0), axis=1)))  # the outermost point
    with open_page(tmp_path / "map.html") as check:
        source, seconds = hover_point(check, "map", isolated)
        assert source == cell_map.thumbnails[isolated] and seconds < 5
        summary = click_point(check, "map", isolated)
        assert summary.startswith("1 selected") and cell_map.metadata["Metadata_MoA"][isolated] in summary
        check.page.locator("select").first.select_option("Metadata_Plate")
        check.page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('map-legend').text.includes('P2')")
        centre, spread = xy.mean(axis=0), xy.std(axis=0)
        square = [tuple(centre + spread * corner) for corner in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        inside = int(PolygonPath(square).contains_points(xy).sum())
        assert 5 < inside < 60 and lasso_select(check, "map", square).startswith(f"{inside} selected")
        assert check.errors == []


@needs_browser
def test_in_chromium_a_map_of_10000_points_renders_and_answers_hover(tmp_path: Path):
    rng = np.random.default_rng(0)
    n = 10_000
    table = pd.DataFrame({"Metadata_Group": rng.choice(list("ABCDEFGH"), n), "Metadata_Dose": rng.uniform(0, 10, n),
                          **{f"f{i}": rng.normal(size=n) for i in range(6)}})
    path = tmp_path / "big.csv"
    table.to_csv(path, index=False)
    _, cell_map = write_map(path, tmp_path / "big.html")
    assert cell_map.n_points == n and cell_map.thumbnails is None
    with open_page(tmp_path / "big.html") as check:
        x, y = check.page.evaluate("""() => { const plot = Bokeh.documents[0].get_model_by_name('map');
            const view = Bokeh.index.find_one(plot), box = view.canvas_view.el.getBoundingClientRect();
            return [box.left + view.frame.bbox.hcenter, box.top + view.frame.bbox.vcenter]; }""")
        check.page.mouse.move(x, y)
        check.page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('map-preview').text.includes('Group')")
        assert check.errors == [] and check.load_seconds < 30


def _umap_installed() -> bool:
    try:
        from umap import UMAP  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_umap_installed(), reason="umap-learn is installed")
def test_umap_without_its_extra_names_the_extra(small_store: Path):
    with pytest.raises(InputError, match=r"morphospace\[umap\]"):
        table_map(_cells_table(CropStore(small_store)), method="umap")


@pytest.mark.slow
@pytest.mark.skipif(not _umap_installed(), reason="umap-learn is not installed (the umap extra)")
def test_umap_layout_separates_the_groups(small_store: Path):
    cell_map = table_map(_cells_table(CropStore(small_store)), method="umap")
    xy, moa = cell_map.views[0].xy, cell_map.metadata["Metadata_MoA"].to_numpy()
    assert cell_map.views[0].labels == ("UMAP 1", "UMAP 2")
    nearest = np.argsort(np.linalg.norm(xy[:, None] - xy[None], axis=2), axis=1)[:, 1]
    assert (moa[nearest] == moa).mean() > 0.9  # neighbours on the map share the MoA
