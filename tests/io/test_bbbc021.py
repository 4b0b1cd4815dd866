from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.io.bbbc021 import annotate_bbbc021, batch_from_plate
from morphospace.io.importers import import_npz

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bbbc021"


@pytest.fixture()
def tables(tmp_path: Path) -> Path:
    pd.DataFrame({
        "Image_FileName_DAPI": ["B02_s1_w1A.tif", "B02_s2_w1B.tif", "C05_s1_w1C.tif", "D07_s1_w1D.tif"],
        "Image_Metadata_Plate_DAPI": ["Week1_100", "Week1_100", "Week1_100", "Week2_200"],
        "Image_Metadata_Well_DAPI": ["B02", "B02", "C05", "D07"],
        "Replicate": [1, 1, 1, 2],
        "Image_Metadata_Compound": ["DMSO", "DMSO", "taxol", "mystery"],
        "Image_Metadata_Concentration": [0.0, 0.0, 0.3, 1.0],
    }).to_csv(tmp_path / "BBBC021_v1_image.csv.gz", index=False)
    pd.DataFrame({"compound": ["DMSO", "taxol"], "concentration": [0.0, 0.3],
                  "moa": ["DMSO", "Microtubule stabilizers"]}).to_csv(tmp_path / "BBBC021_v1_moa.csv", index=False)
    return tmp_path


def test_batch_is_the_week():
    assert batch_from_plate(pd.Series(["Week4_27481", "Week10_40111"])).tolist() == ["Week4", "Week10"]


def test_annotate_by_plate_and_well(tables: Path):
    table = pd.DataFrame({"Metadata_Plate": ["Week1_100", "Week2_200", "Week1_100"],
                          "Metadata_Well": ["C05", "D07", "B02"], "Metadata_Compound": ["stale", "x", "y"]})
    out = annotate_bbbc021(table, tables)
    assert out["Metadata_Compound"].tolist() == ["taxol", "mystery", "DMSO"]
    assert out["Metadata_Concentration"].tolist() == [0.3, 1.0, 0.0]
    assert out["Metadata_Batch"].tolist() == ["Week1", "Week2", "Week1"]
    assert out["Metadata_MoA"].tolist()[0] == "Microtubule stabilizers" and pd.isna(out["Metadata_MoA"][1])
    assert table["Metadata_Compound"].tolist() == ["stale", "x", "y"]


def test_annotate_by_dapi_file_name(tables: Path):
    table = pd.DataFrame({"dapi": ["some/dir/C05_s1_w1C.tif"]})
    out = annotate_bbbc021(table, tables, dapi_file_column="dapi")
    assert (out["Metadata_Plate"][0], out["Metadata_Well"][0], out["Metadata_MoA"][0]) == (
        "Week1_100", "C05", "Microtubule stabilizers")


def test_unmatched_rows_are_an_error(tables: Path):
    table = pd.DataFrame({"Metadata_Plate": ["Week1_100", "Week9_999"], "Metadata_Well": ["B02", "A01"]})
    with pytest.raises(InputError, match="1 row.*match no BBBC021 image.*Week9_999, A01"):
        annotate_bbbc021(table, tables)
    with pytest.raises(InputError, match="lacks the column"):
        annotate_bbbc021(table.drop(columns="Metadata_Well"), tables)
    with pytest.raises(InputError, match="no BBBC021 image table"):
        annotate_bbbc021(table, tables / "nowhere")


@pytest.mark.skipif(not (DATA / "bbbc021_crops68_dmso_6plates.npz").is_file(),
                    reason="real BBBC021 crops not available (../shared/data/bbbc021 is absent)")
@pytest.mark.slow
def test_real_bbbc021_dmso_import(tmp_path: Path):
    store = import_npz(DATA / "bbbc021_crops68_dmso_6plates.npz", tmp_path / "s", channels=["DNA", "Actin", "Tubulin"],
                       bbbc021_dir=DATA, progress=False)
    assert len(store) == 5318 and store.channels == ["DNA", "Actin", "Tubulin"] and store.crop_shape == (68, 68)
    cells = store.cells
    for column in ("Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration",
                   "Metadata_MoA", "Metadata_Batch"):
        assert cells[column].notna().all(), column
    assert set(cells["Metadata_MoA"]) == {"DMSO"} and set(cells["Metadata_Batch"]) == {"Week4"}
    assert cells["Metadata_Plate"].nunique() == 6
    raw = np.load(DATA / "bbbc021_crops68_dmso_6plates.npz")["images"][:3]
    np.testing.assert_array_equal(store.read([0, 1, 2]), np.moveaxis(raw, 3, 1))
