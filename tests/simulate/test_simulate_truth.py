"""Linking the crops of a store prepared from a simulated screen to the simulator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.io.images import write_tiff
from morphospace.simulate.truth import truth_for_crops


@pytest.fixture()
def truth_dir(tmp_path: Path) -> Path:
    """Field A (6 x 8): nucleus 1 of cell 1, nuclei 2 and 3 of cell 2; field B: nucleus 1 of cell 1."""
    root = tmp_path / "truth"
    a = np.zeros((6, 8), np.uint16)
    a[1:3, 1:3] = 1
    a[1:3, 5:7] = 2
    a[4, 5:8] = 3
    b = np.zeros((6, 8), np.uint16)
    b[3:5, 3:5] = 1
    write_tiff(root / "Plate01_A01_s1_nuclei.tiff", a)
    write_tiff(root / "Plate01_A02_s1_nuclei.tiff", b)
    pd.DataFrame({"Metadata_FieldId": ["Plate01_A01_s1"] * 3 + ["Plate01_A02_s1"],
                  "Metadata_NucleusId": [1, 2, 3, 1], "Metadata_CellId": [1, 2, 2, 1]}
                 ).to_parquet(root / "nuclei.parquet")
    pd.DataFrame({"Metadata_FieldId": ["Plate01_A01_s1", "Plate01_A01_s1", "Plate01_A02_s1"],
                  "Metadata_CellId": [1, 2, 1], "Metadata_TruthNucleusArea": [4, 7, 4],
                  "Metadata_TruthCellArea": [20, 30, 12], "Metadata_TruthDNALevel": [1.0, 1.5, 0.8]}
                 ).to_parquet(root / "cells.parquet")
    return root


def _crops(field_ids, xs, ys) -> pd.DataFrame:
    return pd.DataFrame({"Metadata_FieldId": field_ids, "Metadata_Nucleus_Center_X": xs,
                         "Metadata_Nucleus_Center_Y": ys}, index=[10 + i for i in range(len(xs))])


def test_each_crop_gets_the_truth_of_the_cell_under_its_nucleus_centre(truth_dir: Path):
    crops = _crops(["Plate01_A01_s1", "Plate01_A02_s1", "Plate01_A01_s1", "Plate01_A01_s1", "Plate01_A01_s1",
                    "Plate01_A01_s1"],
                   [1.4, 3.6, 6.9, 4.0, 20.0, 5.5],
                   [1.6, 3.5, 4.2, 0.0, 1.0, 1.5])
    truth = truth_for_crops(crops, truth_dir)
    assert truth.index.tolist() == crops.index.tolist()
    # A nucleus 1 -> cell 1; B nucleus 1 -> cell 1 of B; A nucleus 3 -> cell 2; background; outside;
    # (5.5, 1.5) rounds to pixel (2, 6) of A nucleus 2 -> cell 2
    assert truth["Metadata_TruthNucleusArea"].tolist()[:3] == [4, 4, 7]
    assert truth["Metadata_TruthDNALevel"].tolist()[:3] == [1.0, 0.8, 1.5]
    assert truth["Metadata_TruthCellArea"].iloc[5] == 30
    assert truth.iloc[3:5].isna().all(axis=None)
    assert truth["Metadata_FieldId"].iloc[1] == "Plate01_A02_s1"


def test_missing_truth_is_refused_naming_the_file(truth_dir: Path, tmp_path: Path):
    with pytest.raises(InputError, match="Plate02_A01_s1_nuclei.tiff"):
        truth_for_crops(_crops(["Plate02_A01_s1"], [1.0], [1.0]), truth_dir)
    with pytest.raises(InputError, match="no such truth folder"):
        truth_for_crops(_crops(["Plate01_A01_s1"], [1.0], [1.0]), tmp_path / "nowhere")
    (truth_dir / "cells.parquet").unlink()
    with pytest.raises(InputError, match=r"cells.parquet: table not found; pass the truth folder"):
        truth_for_crops(_crops(["Plate01_A01_s1"], [1.0], [1.0]), truth_dir)
    with pytest.raises(InputError, match="lacks"):
        truth_for_crops(pd.DataFrame({"Metadata_FieldId": ["Plate01_A01_s1"]}), truth_dir)


def test_a_label_the_nucleus_table_does_not_list_is_refused(truth_dir: Path):
    pd.DataFrame({"Metadata_FieldId": ["Plate01_A01_s1"], "Metadata_NucleusId": [1], "Metadata_CellId": [1]}
                 ).to_parquet(truth_dir / "nuclei.parquet")
    with pytest.raises(InputError, match=r"nuclei.parquet: field 'Plate01_A01_s1' has labels \[2\]"):
        truth_for_crops(_crops(["Plate01_A01_s1"], [5.0], [1.0]), truth_dir)
