"""``segment``: nuclei label images of a manifest's fields and the manifest copy that names them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from morphospace.cli import main
from morphospace.errors import InputError
from morphospace.io.manifest import read_manifest
from morphospace.io.paired import PairedChannels, load_paired_field
from morphospace.workflows.segment import SegmentConfig, segment_manifest


def _field(centres: list[tuple[int, int]], seed: int) -> np.ndarray:
    """A 64 px nuclear-stain plane: bright discs of radius 6 at ``centres`` on a noisy floor (uint16)."""
    yy, xx = np.mgrid[:64, :64]
    image = np.random.default_rng(seed).normal(100, 3, (64, 64))
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] += 400
    return image.astype(np.uint16)


@pytest.fixture
def fields(tmp_path):
    """A manifest in ``data/`` with two fields (3 and 2 nuclei) of DAPI and a phase plane."""
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    rows = []
    for name, centres in (("A01", [(15, 15), (15, 45), (45, 30)]), ("A02", [(20, 20), (44, 44)])):
        tifffile.imwrite(folder / "images" / f"{name}_dapi.tiff", _field(centres, len(rows)))
        tifffile.imwrite(folder / "images" / f"{name}_phase.tiff", _field([], 9))
        rows.append({"Metadata_Well": name, "FileName_Phase": f"images/{name}_phase.tiff",
                     "FileName_DAPI": f"images/{name}_dapi.tiff"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_labels_and_a_manifest_copy_that_paired_configs_read(fields, tmp_path):
    summary = segment_manifest(fields, tmp_path / "nuclei", manifest_out=tmp_path / "elsewhere" / "with_nuclei.csv")
    assert summary.channel == "DAPI" and summary.nuclei == 5  # the one channel named like a nuclear stain
    assert [tifffile.imread(path).max() for path in summary.labels] == [3, 2]
    assert tifffile.imread(summary.labels[0]).dtype == np.uint16
    copy = pd.read_csv(summary.manifest)
    assert copy["FileName_NucleiLabels"].tolist() == ["../nuclei/A01_nuclei.tiff", "../nuclei/A02_nuclei.tiff"]
    assert copy["FileName_DAPI"][0] == "../data/images/A01_dapi.tiff"  # still the same files from the new folder
    channels = PairedChannels(inputs=["Phase"], targets=["DAPI"], mask="NucleiLabels")
    field = load_paired_field(read_manifest(summary.manifest, channels.files)[1], channels)
    assert field.mask.max() == 2 and field.mask[20, 20] > 0 and field.mask[0, 0] == 0


def test_an_unclear_channel_names_the_channels_and_the_option(fields, tmp_path):
    table = pd.read_csv(fields)
    table["FileName_Hoechst"] = table["FileName_DAPI"]
    table.to_csv(fields, index=False)
    with pytest.raises(InputError, match=r"\['DAPI', 'Hoechst'\] are all named like nuclear stains.*--channel NAME"):
        segment_manifest(fields, tmp_path / "nuclei")
    with pytest.raises(InputError, match="'DNA' is not one of its channels"):
        segment_manifest(fields, tmp_path / "nuclei", SegmentConfig(nuclei={"channel": "DNA"}))
    assert not (tmp_path / "nuclei").exists()


def test_outputs_are_kept_unless_overwritten_and_label_columns_replaced_in_the_copy(fields, tmp_path, capsys):
    out = tmp_path / "nuclei"
    argv = ["--no-progress", "segment", "--manifest", str(fields), "--out", str(out), "--channel", "DAPI",
            "--set", "nuclei.min_area=50"]
    assert main(argv) == 0
    assert "segmented 5 nuclei in 2 field(s) of channel DAPI" in capsys.readouterr().out
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--set", "nuclei.min_area=200"]) == 0  # discs are 113 px: none left
    assert "segmented 0 nuclei" in capsys.readouterr().out
    again = ["segment", "--manifest", str(out / "manifest.csv"), "--out", str(tmp_path / "again")]
    assert main(again) == 0  # a label column of that name is replaced in the copy, the input left as it was
    assert pd.read_csv(tmp_path / "again" / "manifest.csv")["FileName_NucleiLabels"][0] == "A01_nuclei.tiff"
    assert pd.read_csv(out / "manifest.csv")["FileName_NucleiLabels"][0] == "A01_nuclei.tiff"
    assert main([*again[:-1], str(tmp_path / "other"), "--set", "column=Segmented", "--channel", "DAPI"]) == 0
    assert {"FileName_NucleiLabels", "FileName_Segmented"} <= set(pd.read_csv(tmp_path / "other" / "manifest.csv"))
