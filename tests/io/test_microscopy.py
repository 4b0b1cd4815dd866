import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from morphospace.cli import main
from morphospace.errors import InputError
from morphospace.io import microscopy
from morphospace.io.manifest import (
    DEFAULT_FIELD_PATTERN,
    manifest_from_folder,
    read_field,
    read_manifest,
)
from morphospace.io.microscopy import describe_file, read_channel_planes
from morphospace.io.paired import (
    PairedChannels,
    load_paired_field,
    read_paired_manifest,
)


def _planes(shape, offset=0) -> np.ndarray:
    """Distinct, non-constant uint16 pixels of ``shape``."""
    return (np.arange(np.prod(shape)).reshape(shape) % 1000 + offset).astype(np.uint16)


def _ome_tiff(path: Path, data: np.ndarray, axes: str, names: list[str]) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, ome=True, metadata={"axes": axes, "Channel": {"Name": names}})
    return data


def test_ome_tiff_channels_scenes_and_planes(tmp_path: Path):
    path = tmp_path / "two.ome.tiff"
    first, second = _planes((3, 2, 16, 20)), _planes((2, 16, 20), offset=7)
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(first, metadata={"axes": "ZCYX", "Channel": {"Name": ["DAPI", "GFP"]}})
        writer.write(second, metadata={"axes": "CYX", "Channel": {"Name": ["A", "B"]}})
    scenes = describe_file(path)
    assert [(s.channels, s.n_planes, s.n_timepoints, s.shape) for s in scenes] == [
        (["DAPI", "GFP"], 3, 1, (16, 20)), (["A", "B"], 1, 1, (16, 20))]
    np.testing.assert_array_equal(read_channel_planes(path, "GFP"), first[:, 1])
    np.testing.assert_array_equal(read_channel_planes(path, 0), first[:, 0])
    np.testing.assert_array_equal(read_channel_planes(path, "B", scene=1), second[1:])
    with pytest.raises(InputError, match=r"two.ome.tiff: no channel 'DNA'; the file's channels are \['DAPI', 'GFP'\]"):
        read_channel_planes(path, "DNA")
    with pytest.raises(InputError, match="no scene 2; the file holds 2 scene"):
        read_channel_planes(path, 0, scene=2)


def test_time_series_and_broken_files_are_errors(tmp_path: Path):
    _ome_tiff(tmp_path / "movie.ome.tif", _planes((4, 1, 8, 8)), "TCYX", ["DAPI"])
    with pytest.raises(InputError, match="movie.ome.tif: scene 0 holds 4 time points"):
        read_channel_planes(tmp_path / "movie.ome.tif", "DAPI")
    (tmp_path / "cut.ome.tiff").write_bytes(b"II*\0garbage")
    with pytest.raises(InputError, match="cut.ome.tiff: unreadable microscope file"):
        describe_file(tmp_path / "cut.ome.tiff")


def test_vendor_formats_name_the_extra_to_install(tmp_path: Path, monkeypatch):
    def no_plugin(name):
        raise ImportError(name)

    monkeypatch.setattr(microscopy.importlib, "import_module", no_plugin)
    (tmp_path / "field.nd2").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match=re.escape("field.nd2: reading .nd2 files needs bioio and its bioio-nd2 "
                                                   "plugin: pip install 'morphospace[nd2]'")):
        describe_file(tmp_path / "field.nd2")


def test_manifest_entries_select_a_channel_of_a_file(tmp_path: Path):
    data = _ome_tiff(tmp_path / "f.ome.tiff", _planes((3, 2, 12, 12)), "ZCYX", ["DAPI", "GFP"])
    tifffile.imwrite(tmp_path / "mito.tif", _planes((12, 12), offset=3))
    pd.DataFrame({"Metadata_Well": ["B02"], "FileName_DNA": ["f.ome.tiff#DAPI"], "FileName_GFP": ["f.ome.tiff"],
                  "FileName_Protein": ["f.ome.tiff#1"], "FileName_Mito": ["mito.tif"]}).to_csv(
        tmp_path / "manifest.csv", index=False)
    (spec,) = read_manifest(tmp_path / "manifest.csv")
    assert spec.files["DNA"] == tmp_path / "f.ome.tiff" and spec.file_channels == {"DNA": "DAPI", "Protein": "1"}
    planes = read_field(spec)  # three z-planes of a file that names its axes: no short_stacks needed
    np.testing.assert_array_equal(planes["DNA"], data[:, 0].max(axis=0))
    np.testing.assert_array_equal(planes["GFP"], data[:, 1].max(axis=0))
    np.testing.assert_array_equal(planes["Protein"], planes["GFP"])
    assert planes["Mito"].shape == (12, 12)
    with pytest.raises(InputError, match="is a z-stack"):
        read_field(spec, max_projection=False)


def test_manifest_scene_column_picks_the_scene(tmp_path: Path):
    path = tmp_path / "plate.ome.tiff"
    with tifffile.TiffWriter(path, ome=True) as writer:
        for offset in (0, 5):
            writer.write(_planes((1, 8, 8), offset), metadata={"axes": "CYX", "Channel": {"Name": ["DAPI"]}})
    pd.DataFrame({"Metadata_Scene": [0, 1], "Metadata_Site": [1, 2], "FileName_DNA": ["plate.ome.tiff"] * 2}).to_csv(
        tmp_path / "manifest.csv", index=False)
    first, second = read_manifest(tmp_path / "manifest.csv")
    assert second.scene == 1 and first.fingerprint() != second.fingerprint()
    assert read_field(second)["DNA"].min() == 5 and read_field(first)["DNA"].min() == 0


@pytest.mark.parametrize("name, expected", [
    ("Plate1_B02_s3.ome.tiff", {"plate": "Plate1", "well": "B02", "site": "3", "channel": None}),
    ("Plate1/B02_s3_DNA.tif", {"plate": "Plate1", "well": "B02", "site": "3", "channel": "DNA"}),
    ("run/Plate1_B02_s3_w1DAPI.tif", {"plate": "Plate1", "well": "B02", "site": "3", "channel": "DAPI"}),
    ("P2_AF48_w2.TIF", {"plate": "P2", "well": "AF48", "site": None, "channel": "w2"}),
    ("C03.nd2", {"plate": None, "well": "C03", "site": None, "channel": None}),
])
def test_default_pattern(name, expected):
    assert re.search(DEFAULT_FIELD_PATTERN, name).groupdict() == expected


def test_manifest_from_multichannel_files(tmp_path: Path):
    written = {name: _ome_tiff(tmp_path / "raw" / f"{name}.ome.tiff", _planes((2, 16, 16), i), "CYX", ["DAPI", "GFP"])
               for i, name in enumerate(["Plate1_B02_s1", "Plate1_B02_s2", "Plate2_C03_s1"])}
    (tmp_path / "raw" / "notes.txt").write_text("acquisition notes")
    summary = manifest_from_folder(tmp_path / "raw", tmp_path / "manifest.csv", channels=["DAPI=DNA"])
    assert (summary.n_files, summary.n_fields, summary.channels) == (3, 3, {"DAPI": "DNA", "GFP": "GFP"})
    assert "1 other file(s) left out" in summary.line()
    table = pd.read_csv(tmp_path / "manifest.csv")
    assert list(table.columns) == ["Metadata_FieldId", "Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                   "FileName_DNA", "FileName_GFP"]
    assert table["Metadata_FieldId"].tolist() == ["Plate1_B02_1", "Plate1_B02_2", "Plate2_C03_1"]
    assert table["Metadata_Site"].tolist() == [1, 2, 1]
    assert table["FileName_DNA"].iloc[0] == "raw/Plate1_B02_s1.ome.tiff#DAPI"
    specs = read_manifest(tmp_path / "manifest.csv")
    for spec, name in zip(specs, written):
        planes = read_field(spec)
        np.testing.assert_array_equal(planes["DNA"], written[name][0])
        np.testing.assert_array_equal(planes["GFP"], written[name][1])
    with pytest.raises(FileExistsError):
        manifest_from_folder(tmp_path / "raw", tmp_path / "manifest.csv")


def test_manifest_from_one_file_per_channel(tmp_path: Path, capsys):
    (tmp_path / "raw" / "Plate01").mkdir(parents=True)
    for site in (1, 2):
        for wave, channel in ((1, "DAPI"), (2, "Actin")):
            tifffile.imwrite(tmp_path / "raw" / "Plate01" / f"B02_s{site}_w{wave}{channel}.tif",
                             _planes((10, 10), offset=10 * site + wave))
    assert main(["manifest", "--from", str(tmp_path / "raw"), "--out", str(tmp_path / "raw" / "manifest.csv"),
                 "--channels", "DNA,Actin"]) == 0
    assert "2 field(s) from 4 file(s), channels DAPI as DNA, Actin" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "raw" / "manifest.csv")
    assert table[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].values.tolist() == [
        ["Plate01", "B02", 1], ["Plate01", "B02", 2]]
    assert table["FileName_DNA"].tolist() == ["Plate01/B02_s1_w1DAPI.tif", "Plate01/B02_s2_w1DAPI.tif"]
    second = read_manifest(tmp_path / "raw" / "manifest.csv")[1]
    assert read_field(second)["DNA"].min() == 21 and read_field(second)["Actin"].min() == 22
    (tmp_path / "raw" / "Plate01" / "B02_s2_w2Actin.tif").unlink()
    with pytest.raises(InputError, match=r"field Plate01_B02_2 \(raw/Plate01/B02_s2_w1DAPI.tif\) has no file for "
                                         r"channel\(s\) \['Actin'\]"):
        manifest_from_folder(tmp_path / "raw", tmp_path / "other.csv")


def test_manifest_from_multi_scene_files_and_errors(tmp_path: Path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "empty").mkdir()
    with tifffile.TiffWriter(tmp_path / "raw" / "C03.ome.tiff", ome=True) as writer:
        for offset in (0, 5):
            writer.write(_planes((8, 8), offset), metadata={"axes": "YX", "Channel": {"Name": ["DAPI"]}})
    manifest_from_folder(tmp_path / "raw", tmp_path / "manifest.csv")
    table = pd.read_csv(tmp_path / "manifest.csv")
    assert table["Metadata_FieldId"].tolist() == ["C03_scene0", "C03_scene1"]
    assert table["Metadata_Scene"].tolist() == [0, 1] and table["FileName_DAPI"].tolist() == ["raw/C03.ome.tiff"] * 2
    assert read_field(read_manifest(tmp_path / "manifest.csv")[1])["DAPI"].min() == 5
    with pytest.raises(InputError, match="not a regular expression"):
        manifest_from_folder(tmp_path / "raw", tmp_path / "other.csv", pattern="(?P<well>")
    with pytest.raises(InputError, match="give 1 new names in this order"):
        manifest_from_folder(tmp_path / "raw", tmp_path / "other.csv", channels=["DNA", "Actin"])
    with pytest.raises(InputError, match="empty: no microscope files"):
        manifest_from_folder(tmp_path / "empty", tmp_path / "other.csv")
    assert not (tmp_path / "other.csv").exists()


def test_ome_zarr_through_bioio(tmp_path: Path):
    pytest.importorskip("bioio")
    writers = pytest.importorskip("bioio_ome_zarr.writers")
    data = _planes((2, 16, 16))
    writer = writers.OMEZarrWriter(tmp_path / "raw" / "Plate1_D04_s1.ome.zarr", level_shapes=[data.shape],
                                   dtype=data.dtype, axes_names=["c", "y", "x"],
                                   axes_types=["channel", "space", "space"],
                                   channels=[writers.Channel(label="DAPI", color="0000FF"),
                                             writers.Channel(label="GFP", color="00FF00")])
    writer.write_full_volume(data)
    summary = manifest_from_folder(tmp_path / "raw", tmp_path / "manifest.csv")
    assert summary.n_fields == 1 and list(summary.channels) == ["DAPI", "GFP"]
    (spec,) = read_manifest(tmp_path / "manifest.csv")
    assert spec.field_id == "Plate1_D04_1"
    np.testing.assert_array_equal(read_field(spec)["GFP"], data[1])



def test_paired_fields_read_channels_of_one_file(tmp_path: Path):
    data = _ome_tiff(tmp_path / "pair.ome.tiff", _planes((2, 12, 12)), "CYX", ["Phase", "DAPI"])
    pd.DataFrame({"FileName_Light": ["pair.ome.tiff#Phase"], "FileName_DNA": ["pair.ome.tiff#DAPI"]}).to_csv(
        tmp_path / "manifest.csv", index=False)
    channels = PairedChannels(inputs=["Light"], targets=["DNA"])
    (spec,) = read_paired_manifest(tmp_path / "manifest.csv", channels)
    field = load_paired_field(spec, channels)
    assert field.inputs.shape == field.targets.shape == (1, 12, 12)
    np.testing.assert_allclose(field.targets[0] * data[1].std() + data[1].mean(), data[1], atol=1e-3)

@pytest.mark.slow
def test_prepare_takes_the_manifest_as_written(tmp_path: Path):
    from skimage.draw import disk

    from morphospace.config import load_config
    from morphospace.io.store import CropStore
    from morphospace.workflows.prepare import PrepareConfig, prepare

    rng = np.random.default_rng(0)
    centres = [(20, 20), (20, 60), (60, 20), (60, 60)]
    for well in ("B02", "B03"):
        dna, actin = rng.normal(100, 5, (2, 80, 80))
        for centre in centres:
            dna[disk(centre, 5, shape=dna.shape)] += 800
            actin[disk(centre, 11, shape=actin.shape)] += 300
        _ome_tiff(tmp_path / "raw" / f"Plate1_{well}_s1.ome.tiff", np.stack([dna, actin]).astype(np.uint16), "CYX",
                  ["Hoechst", "Phalloidin"])
    manifest_from_folder(tmp_path / "raw", tmp_path / "manifest.csv", channels=["DNA", "Actin"])
    config = load_config(PrepareConfig, None, ["crops.size=32", "cells.channels=[Actin]"])
    summary = prepare(tmp_path / "manifest.csv", tmp_path / "store", config, progress=False)
    store = CropStore(tmp_path / "store")
    assert summary.n_cells == len(store) == 2 * len(centres) and store.channels == ["DNA", "Actin"]
    assert sorted(set(store.cells["Metadata_Well"])) == ["B02", "B03"]
