from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from morphospace.errors import InputError
from morphospace.io.manifest import read_manifest


def _write(tmp_path: Path, rows: dict) -> Path:
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_reads_fields_and_resolves_relative_paths(tmp_path: Path):
    for name in ("a_dna.tif", "a_act.tif"):
        tifffile.imwrite(tmp_path / name, np.ones((4, 4), np.uint16))
    path = _write(tmp_path, {"plate": ["P1"], "Metadata_Well": ["B02"], "Metadata_Site": [1],
                             "FileName_DNA": ["a_dna.tif"], "FileName_Actin": [str(tmp_path / "a_act.tif")]})
    (field,) = read_manifest(path)
    assert field.field_id == "P1_B02_1" and list(field.files) == ["DNA", "Actin"]
    assert field.files["DNA"] == tmp_path / "a_dna.tif" and field.plate == "P1"
    (field,) = read_manifest(path, channels=["Actin"])
    assert list(field.files) == ["Actin"]


def test_missing_files_are_listed(tmp_path: Path):
    path = _write(tmp_path, {"FileName_DNA": ["x.tif", "y.tif"], "Metadata_FieldId": ["f1", "f2"]})
    with pytest.raises(InputError, match=r"2 missing image file\(s\): line 2 \(DNA\).*x.tif"):
        read_manifest(path)


@pytest.mark.parametrize(
    "rows, channels, message",
    [
        ({"Metadata_Plate": ["P1"]}, None, "no channel columns"),
        ({"FileName_DNA": ["x.tif"]}, ["Actin"], "no column"),
        ({"FileName_DNA": ["a.tif", "a.tif"], "Metadata_FieldId": ["f", "f"]}, None, "duplicate field id"),
        ({"FileName_DNA": [None]}, None, "no file for channel DNA"),
    ],
)
def test_bad_manifests(tmp_path: Path, rows, channels, message):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((4, 4), np.uint16))
    with pytest.raises(InputError, match=message):
        read_manifest(_write(tmp_path, rows), channels)


def test_missing_manifest(tmp_path: Path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")
