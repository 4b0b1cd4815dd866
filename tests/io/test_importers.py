from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from morphospace.cli import main
from morphospace.errors import InputError
from morphospace.io.importers import (
    import_folders,
    import_images,
    import_npz,
    metadata_column_name,
    to_channels_first,
)
from morphospace.io.store import CropStore


def _crops(n=5, h=12, w=12, c=3, dtype=np.uint16):
    return (np.arange(n * h * w * c) % 1000).astype(dtype).reshape(n, h, w, c)


def test_metadata_column_names():
    assert metadata_column_name("source_dapi_file") == "Metadata_SourceDapiFile"
    assert metadata_column_name("moa") == "Metadata_MoA"
    assert metadata_column_name("Metadata_Well") == "Metadata_Well"


@pytest.mark.parametrize("layout, shape", [("NHWC", (2, 8, 8, 3)), ("NCHW", (2, 3, 8, 8)), ("NHW", (2, 8, 8))])
def test_layouts(layout, shape):
    out = to_channels_first(np.zeros(shape), "auto", "x")
    assert out.shape == ((2, 1, 8, 8) if layout == "NHW" else (2, 3, 8, 8))
    assert to_channels_first(np.zeros(shape), layout, "x").shape == out.shape


def test_ambiguous_layout_needs_a_hint():
    with pytest.raises(InputError, match="pass layout"):
        to_channels_first(np.zeros((2, 8, 8, 8)), "auto", "crops.npz")


def test_npz_import_keeps_pixels_and_metadata(tmp_path: Path):
    images = _crops()
    np.savez(tmp_path / "c.npz", images=images, plate=np.array(list("AABBB")), concentration=np.arange(5.0))
    store = import_npz(tmp_path / "c.npz", tmp_path / "s", channels=["DNA", "Actin", "Tubulin"], progress=False)
    np.testing.assert_array_equal(store.read(slice(None)), np.moveaxis(images, 3, 1))
    assert store.images.dtype == np.uint16
    assert list(store.cells.columns) == ["Metadata_Plate", "Metadata_Concentration", "Metadata_SourceIndex"]
    assert store.cells["Metadata_Plate"].tolist() == list("AABBB")


def test_npz_float64_becomes_float32(tmp_path: Path):
    np.savez(tmp_path / "c.npz", images=np.random.default_rng(0).random((3, 4, 10, 10)))
    store = import_npz(tmp_path / "c.npz", tmp_path / "s", progress=False)
    assert store.images.dtype == np.float32 and store.channels == ["ch0", "ch1", "ch2", "ch3"]


@pytest.mark.parametrize(
    "content, message",
    [
        (dict(images=np.full((2, 8, 8, 3), np.nan)), "NaN or infinite pixels in 2 crop"),
        (dict(pictures=np.zeros((2, 8, 8, 3))), "no array named 'images'"),
        (dict(images=np.zeros((8, 8))), "expected crops"),
    ],
)
def test_npz_bad_content(tmp_path: Path, content, message):
    np.savez(tmp_path / "c.npz", **content)
    with pytest.raises(InputError, match=message) as info:
        import_npz(tmp_path / "c.npz", tmp_path / "s", progress=False)
    assert "c.npz" in str(info.value)
    assert not (tmp_path / "s").exists()


def test_npz_wrong_channel_names_and_truncation(tmp_path: Path):
    np.savez(tmp_path / "c.npz", images=_crops())
    with pytest.raises(InputError, match="3 image channel"):
        import_npz(tmp_path / "c.npz", tmp_path / "s", channels=["DNA"], progress=False)
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.npz: unreadable or truncated"):
        import_npz(tmp_path / "cut.npz", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_tiff_import_single_crops_and_stacks(tmp_path: Path):
    crops = np.moveaxis(_crops(4), 3, 1)
    tifffile.imwrite(tmp_path / "a.tiff", crops[0], photometric="minisblack")
    tifffile.imwrite(tmp_path / "stack.tiff", crops[1:], photometric="minisblack")
    pd.DataFrame({"file": ["a.tiff", "stack.tiff", "stack.tiff", "stack.tiff"], "frame": [None, 0, 1, 2],
                  "well": ["B02", "B03", "B03", "B04"]}).to_csv(tmp_path / "meta.csv", index=False)
    store = import_images(tmp_path, tmp_path / "meta.csv", tmp_path / "s", channels=["DNA", "Actin", "Tubulin"],
                          progress=False)
    np.testing.assert_array_equal(store.read(slice(None)), crops)
    assert store.cells["Metadata_Well"].tolist() == ["B02", "B03", "B03", "B04"]
    assert store.cells["Metadata_File"].tolist()[0] == "a.tiff"


def test_tiff_rows_pointing_to_missing_files(tmp_path: Path):
    tifffile.imwrite(tmp_path / "a.tiff", np.moveaxis(_crops(1), 3, 1)[0], photometric="minisblack")
    pd.DataFrame({"file": ["a.tiff", "gone.tiff"]}).to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(InputError, match="gone.tiff.*missing file"):
        import_images(tmp_path, tmp_path / "meta.csv", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_tiff_shape_mismatch(tmp_path: Path):
    tifffile.imwrite(tmp_path / "a.tiff", np.ones((3, 8, 8), np.uint16) * np.arange(8, dtype=np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "b.tiff", np.ones((3, 9, 9), np.uint16) * np.arange(9, dtype=np.uint16), photometric="minisblack")
    pd.DataFrame({"file": ["a.tiff", "b.tiff"]}).to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(InputError, match="different shapes"):
        import_images(tmp_path, tmp_path / "meta.csv", tmp_path / "s", progress=False)


def test_several_npz_files_into_one_store(tmp_path: Path):
    np.savez(tmp_path / "a.npz", images=_crops(3), plate=np.array(["A"] * 3))
    np.savez(tmp_path / "b.npz", images=_crops(2), well=np.array(["B02", "B03"]))
    store = import_npz([tmp_path / "a.npz", tmp_path / "b.npz"], tmp_path / "s", progress=False)
    assert len(store) == 5 and store.cells["Metadata_SourceFile"].tolist() == ["a.npz"] * 3 + ["b.npz"] * 2
    assert store.cells["Metadata_SourceIndex"].tolist() == [0, 1, 2, 0, 1]
    assert store.cells["Metadata_Plate"].isna().sum() == 2
    np.savez(tmp_path / "c.npz", images=_crops(2, h=10, w=10))
    with pytest.raises(InputError, match="c.npz: crops .* differ from the first file"):
        import_npz([tmp_path / "a.npz", tmp_path / "c.npz"], tmp_path / "s2", progress=False)
    assert not (tmp_path / "s2").exists()


def test_bad_metadata_frames_and_files_are_named(tmp_path: Path):
    images = np.ones((4, 8, 8, 2), np.uint16)
    np.savez(tmp_path / "short.npz", images=images, plate=np.array(["A"] * 3))
    with pytest.raises(InputError, match="array 'plate' of shape \\(3,\\) is not per-crop metadata.*\\(4"):
        import_npz(tmp_path / "short.npz", tmp_path / "s1", progress=False)
    np.savez(tmp_path / "flat.npz", images=images, table=np.ones((4, 2)))
    with pytest.raises(InputError, match="array 'table' of shape \\(4, 2\\) is not per-crop metadata"):
        import_npz(tmp_path / "flat.npz", tmp_path / "s2", progress=False)
    (tmp_path / "pickle.npz").write_bytes(b"\x80\x04not numpy")
    with pytest.raises(InputError, match="pickle.npz: not an npz file"):
        import_npz(tmp_path / "pickle.npz", tmp_path / "s3", progress=False)
    tifffile.imwrite(tmp_path / "stack.tiff", np.random.default_rng(0).integers(0, 99, (3, 8, 8), np.uint16))
    pd.DataFrame({"file": ["stack.tiff"], "frame": ["first"]}).to_csv(tmp_path / "crops.csv", index=False)
    with pytest.raises(InputError, match="crops.csv: 'frame' of the row for 'stack.tiff' is 'first', not a whole"):
        import_images(tmp_path, tmp_path / "crops.csv", tmp_path / "s4", progress=False)
    assert not any((tmp_path / name).exists() for name in ("s1", "s2", "s3", "s4"))


def _class_folders(root: Path, counts: dict[str, int], size: int = 32) -> dict[str, np.ndarray]:
    """One-channel uint8 PNGs, ``counts[label]`` of them in ``root/label``; returns each file's pixels."""
    written = {}
    rng = np.random.default_rng(0)
    for label, count in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (size, size), dtype=np.uint8)
            iio.imwrite(root / label / f"cell{i}.png", image)
            written[f"{label}/cell{i}.png"] = image
    return written


def test_folders_import_one_class_per_sub_folder(tmp_path: Path, caplog):
    written = _class_folders(tmp_path / "crops", {"mitotic": 2, "apoptotic": 3, "interphase": 1})
    (tmp_path / "crops" / "mitotic" / "notes.txt").write_text("not an image")
    (tmp_path / "crops" / "apoptotic" / ".DS_Store").write_bytes(b"\0")
    store = import_folders(tmp_path / "crops", tmp_path / "s", label_column="phenotype", progress=False)
    assert len(store) == 6 and store.crop_shape == (32, 32) and store.channels == ["ch0"]
    assert list(store.cells.columns) == ["Metadata_Phenotype", "Metadata_FileName"]
    assert store.cells["Metadata_Phenotype"].tolist() == ["apoptotic"] * 3 + ["interphase"] + ["mitotic"] * 2
    names = store.cells["Metadata_FileName"].tolist()
    assert names == sorted(written)
    np.testing.assert_array_equal(store.read(slice(None))[:, 0], np.stack([written[n] for n in names]))
    assert "skipped 1 file(s) that are not images (e.g. mitotic/notes.txt)" in caplog.text


def test_folders_default_label_column_and_colour_images(tmp_path: Path):
    (tmp_path / "crops" / "a").mkdir(parents=True)
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "crops" / "a" / "x.png", rgb)
    store = import_folders(tmp_path / "crops", tmp_path / "s", channels=["DNA", "Actin", "Tubulin"], progress=False)
    assert store.cells["Metadata_Label"].tolist() == ["a"] and store.channels == ["DNA", "Actin", "Tubulin"]
    np.testing.assert_array_equal(store.read([0])[0], np.moveaxis(rgb, 2, 0))


def test_folders_odd_shape_is_named(tmp_path: Path):
    _class_folders(tmp_path / "crops", {"a": 2})
    iio.imwrite(tmp_path / "crops" / "a" / "zz_big.png", np.arange(40 * 40, dtype=np.uint8).reshape(40, 40))
    with pytest.raises(InputError, match=r"zz_big.png: crop \(1, 40, 40\) uint8 differs from .*cell0.png: "
                                         r"\(1, 32, 32\)"):
        import_folders(tmp_path / "crops", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_folders_need_class_sub_folders(tmp_path: Path):
    (tmp_path / "flat").mkdir()
    iio.imwrite(tmp_path / "flat" / "x.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    with pytest.raises(InputError, match="1 image\\(s\\) lie directly in the folder .*x.png"):
        import_folders(tmp_path / "flat", tmp_path / "s", progress=False)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(InputError, match="no class sub-folder with image files"):
        import_folders(tmp_path / "empty", tmp_path / "s", progress=False)
    with pytest.raises(InputError, match="missing: folder not found"):
        import_folders(tmp_path / "missing", tmp_path / "s", progress=False)


def test_cli_imports_folders_and_images_with_the_tiff_alias(tmp_path: Path, capsys):
    _class_folders(tmp_path / "crops", {"a": 2, "b": 1}, size=12)
    assert main(["--no-progress", "import", "--folders", str(tmp_path / "crops"), "--label-column",
                 "Metadata_Phenotype", "--out", str(tmp_path / "s")]) == 0
    assert "imported 3 crops (12, 12) with channels ch0" in capsys.readouterr().out
    assert CropStore(tmp_path / "s").cells["Metadata_Phenotype"].tolist() == ["a", "a", "b"]
    pd.DataFrame({"file": ["a/cell0.png", "b/cell0.png"]}).to_csv(tmp_path / "crops.csv", index=False)
    for option, out in (("--images", "s2"), ("--tiff", "s3")):
        assert main(["--no-progress", "import", option, str(tmp_path / "crops"), "--metadata", str(tmp_path / "crops.csv"),
                     "--out", str(tmp_path / out)]) == 0
        assert len(CropStore(tmp_path / out)) == 2
    assert main(["import", "--npz", str(tmp_path / "x.npz"), "--label-column", "x", "--out", str(tmp_path / "s4")]) == 2
    assert "--label-column names the class column of --folders" in capsys.readouterr().err
