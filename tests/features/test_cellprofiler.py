from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from morphospace.errors import InputError
from morphospace.features.cellprofiler import (
    FeaturesConfig, masks_by_segmentation, measurable_objects, measure_crops, resolve_nucleus_channel,
)
from morphospace.io.store import CropStore, CropStoreWriter
from morphospace.workflows.profiling import extract_features, task_edges


def _crops(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.1, 0.9, (n, 2, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        masks[i][disk((size // 2, size // 2), 10 + i % 3, shape=(size, size))] = 2
        masks[i][disk((size // 2, size // 2), 5, shape=(size, size))] = 1
    return images, masks


def test_hand_computed_values():
    images, masks = _crops(1)
    images[:] = 0.5
    images[0, 1] = np.linspace(0, 1, 32)[None, :]
    table = measure_crops(images, masks, ["DNA", "Actin"])
    nucleus, cell = int((masks[0] == 1).sum()), int((masks[0] > 0).sum())
    assert table.loc[0, "Nuclei_AreaShape_Area"] == nucleus
    assert table.loc[0, "Cells_AreaShape_Area"] == cell
    assert table.loc[0, "Cytoplasm_AreaShape_Area"] == cell - nucleus
    assert table.loc[0, "Cells_Intensity_MeanIntensity_DNA"] == pytest.approx(0.5)
    assert table.loc[0, "Nuclei_Intensity_IntegratedIntensity_DNA"] == pytest.approx(0.5 * nucleus)
    assert table.loc[0, "Cells_Intensity_MeanIntensity_Actin"] == pytest.approx(
        images[0, 1][masks[0] > 0].mean(), rel=1e-5)


def test_names_follow_object_measurement_channel_and_skip_positions():
    images, masks = _crops()
    columns = measure_crops(images, masks, ["DNA", "Actin"], "full").columns
    assert all(c.split("_")[0] in {"Nuclei", "Cells", "Cytoplasm"} for c in columns)
    assert "Cells_Correlation_Pearson_DNA_Actin" in columns
    assert "Cytoplasm_Texture_Contrast_3_00_256_Actin" in columns
    assert "Nuclei_Granularity_1_DNA" in columns and "Cells_AreaShape_Zernike_0_0" in columns
    assert not [c for c in columns if "Center_" in c or "Location_" in c or "SpatialMoment" in c]


@pytest.mark.parametrize("feature_set", ["fast", "full"])
def test_batched_mosaic_equals_one_crop_at_a_time(feature_set):
    images, masks = _crops(5)
    together = measure_crops(images, masks, ["DNA", "Actin"], feature_set)
    one_by_one = pd.concat([measure_crops(images[i:i + 1], masks[i:i + 1], ["DNA", "Actin"], feature_set)
                            for i in range(5)], ignore_index=True)
    pd.testing.assert_frame_equal(together, one_by_one[together.columns], rtol=1e-4, atol=1e-9)  # float32 sums


def test_a_cell_cut_by_its_crop_edge_measures_the_same_in_a_corner_tile_and_a_middle_one():
    images, masks = _crops(9)
    masks[0][:, :12] = 2  # the cell runs off the crop's left edge, as in confluent fields
    images[4], masks[4] = images[0], masks[0]  # crop 0 sits in the mosaic's corner, crop 4 in its middle
    table = measure_crops(images, masks, ["DNA", "Actin"], "full")
    edge = [c for c in table.columns if "Edge" in c or "MassDisplacement" in c]
    assert edge and table.loc[0, "Cells_Intensity_IntegratedIntensityEdge_DNA"] > 0
    pd.testing.assert_series_equal(table.loc[0], table.loc[4], check_names=False, rtol=1e-4, atol=1e-9)


def test_features_of_a_store_do_not_depend_on_how_the_work_is_cut(tmp_path: Path):
    images, masks = _crops(70)
    masks[::3, :, :10] = 2  # some cells run off their crop's edge
    table = pd.DataFrame({"Metadata_Plate": ["P1"] * 70})
    with CropStoreWriter(tmp_path / "store", ["DNA", "Actin"], (32, 32), "uint16", with_masks=True) as writer:
        writer.append(images * 60000, table, masks)
    tables = []
    for chunk_cells in (1, 33, 64, "auto"):  # tasks of 32, 64, 64 crops and timed ones
        out = tmp_path / f"cells_{chunk_cells}.parquet"
        extract_features(tmp_path / "store", out, FeaturesConfig(chunk_cells=chunk_cells), progress=False)
        tables.append(pd.read_parquet(out))
    for other in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], other)


@pytest.mark.parametrize("stop, size, workers", [(5318, 640, 2), (2048, 512, 4), (100, 64, 2), (33, 64, 2),
                                                  (5318, 640, 1)])
def test_task_edges_cover_every_crop_once_in_whole_blocks_and_shrink_towards_the_end(stop, size, workers):
    edges = task_edges(32, stop, size, workers, store_chunk=64)
    sizes = np.diff(edges)
    assert edges[0] == 32 and edges[-1] == stop and (sizes > 0).all()
    assert all(edge % 32 == 0 for edge in edges[:-1])  # the same blocks whatever the cut
    assert sizes.max() <= size
    if workers > 1:
        assert (np.diff(sizes[1:]) <= 0).all()  # after the first, never longer than the one before
        assert sizes[-1] <= 32  # the last task is at most one block
    else:
        assert (sizes[1:-1] == size).all()


def test_absent_object_gives_nan_not_a_shifted_row():
    images, masks = _crops(3)
    masks[1][masks[1] == 2] = 1  # crop 1 has no cytoplasm
    table = measure_crops(images, masks, ["DNA", "Actin"])
    assert np.isnan(table.loc[1, "Cytoplasm_AreaShape_Area"])
    assert table.loc[2, "Cytoplasm_AreaShape_Area"] == int((masks[2] == 2).sum())


def test_masks_by_segmentation_keeps_the_central_cell():
    size = 48
    image = np.zeros((1, 2, size, size), np.float32)
    image[0, 0][disk((24, 24), 6)] = 1.0
    image[0, 0][disk((6, 6), 5)] = 1.0
    image[0, 1][disk((24, 24), 14)] = 0.5
    masks = masks_by_segmentation(image, ["DNA", "Actin"], "DNA", ["Actin"])
    assert masks[0, 24, 24] == 1 and masks[0, 6, 6] == 0 and masks[0, 24, 36] == 2


@pytest.fixture()
def masked_store(tmp_path: Path) -> Path:
    images, masks = _crops(10)
    table = pd.DataFrame({"Metadata_Plate": ["P1"] * 10, "Metadata_Well": [f"W{i % 2}" for i in range(10)]})
    with CropStoreWriter(tmp_path / "store", ["DNA", "Actin"], (32, 32), "uint16", with_masks=True) as writer:
        writer.append(images * 60000, table, masks)
    return tmp_path / "store"


def test_extract_features_table_and_report(masked_store: Path, tmp_path: Path):
    config = FeaturesConfig(chunk_cells=4, objects=["Nuclei", "Cells"])
    summary = extract_features(masked_store, tmp_path / "cells.parquet", config, progress=False)
    table = pd.read_parquet(tmp_path / "cells.parquet")
    assert len(table) == 10 and table["Metadata_StoreIndex"].tolist() == list(range(10))
    assert list(table.columns[:3]) == ["Metadata_Plate", "Metadata_Well", "Metadata_StoreIndex"]
    assert not [c for c in table.columns if c.startswith("Cytoplasm_")]
    report = pd.read_json(tmp_path / "cells.parquet.json", typ="series")
    assert report["intensity_scale"] == [65535.0, 65535.0]
    assert summary.nan_features == report["nan_features"]
    assert table["Cells_Intensity_MeanIntensity_DNA"].between(0, 1).all()


def test_extract_features_without_masks_segments_crops(masked_store: Path, tmp_path: Path):
    store = CropStore(masked_store)
    images = store.read(slice(None))
    images[:, 0] = 0
    images[:, 0, 10:22, 10:22] = 40000
    with CropStoreWriter(tmp_path / "plain", store.channels, (32, 32), "uint16") as writer:
        writer.append(images, store.cells)
    extract_features(tmp_path / "plain", tmp_path / "cells.parquet", progress=False)
    table = pd.read_parquet(tmp_path / "cells.parquet")
    assert ((table["Nuclei_AreaShape_Area"] - 144).abs() < 0.25 * 144).all()  # a 12 x 12 px bright square


def test_extract_features_errors(masked_store: Path, tmp_path: Path):
    with pytest.raises(InputError, match="'channels' names \\['Tubulin'\\]"):
        extract_features(masked_store, tmp_path / "x.parquet", FeaturesConfig(channels=["Tubulin"]), progress=False)
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(FileExistsError):
        extract_features(masked_store, tmp_path / "x.parquet", progress=False)


def test_nucleus_channel_is_chosen_from_the_names():
    assert resolve_nucleus_channel(["Actin", "DAPI"]) == "DAPI"
    assert resolve_nucleus_channel(["phase", "Hoechst33342"]) == "Hoechst33342"
    assert resolve_nucleus_channel(["ch0"]) == "ch0"  # the only channel
    assert resolve_nucleus_channel(["GFP", "RFP"], "RFP") == "RFP"
    with pytest.raises(InputError) as ambiguous:
        resolve_nucleus_channel(["DNA", "H2B-GFP", "Actin"], source="store")
    assert str(ambiguous.value) == (
        "store: cannot tell which channel holds the nuclei: channels ['DNA', 'H2B-GFP'] are all named like nuclear "
        "stains; its channels are ['DNA', 'H2B-GFP', 'Actin']. Name it: --set nucleus_channel=NAME")
    with pytest.raises(InputError, match=r"store: cannot tell .* no channel is named like a nuclear stain .* its "
                                         r"channels are \['GFP', 'RFP'\]\. Name it: --set nucleus_channel=NAME"):
        resolve_nucleus_channel(["GFP", "RFP"], source="store")
    with pytest.raises(InputError, match=r"store: nucleus channel 'DNA' is not one of its channels \['ch0'\]; .*"
                                         "--set nucleus_channel=NAME"):
        resolve_nucleus_channel(["ch0"], "DNA", source="store")


def test_cells_are_measured_only_where_the_data_outline_them():
    everything = ["Nuclei", "Cells", "Cytoplasm"]
    assert measurable_objects(everything, ["DNA", "Actin"], ["Actin", "Tubulin"]) == (everything, {})
    assert measurable_objects(everything, ["DNA"], ["Actin"], masks="cells") == (everything, {})
    objects, not_measured = measurable_objects(everything, ["DNA"], ["Actin"], masks="nuclei")
    assert objects == ["Nuclei"] and not_measured == {"Cells": "the store's masks mark nuclei only",
                                                      "Cytoplasm": "the store's masks mark nuclei only"}
    objects, not_measured = measurable_objects(everything, ["ch0"], ["Actin"])
    assert objects == ["Nuclei"] and "none of the cytoplasm channels ['Actin'] among the channels ['ch0']" in \
        not_measured["Cells"]


def _one_channel_store(path: Path, n: int = 8) -> Path:
    """``n`` 8-bit one-channel crops (channel ``ch0``) of a bright disc, no masks."""
    images = np.full((n, 1, 32, 32), 10, np.uint8)
    for i in range(n):
        images[i, 0][disk((16, 16), 5 + i % 3, shape=(32, 32))] = 200
    table = pd.DataFrame({"Metadata_Phenotype": np.where(np.arange(n) % 2, "big", "small")})
    with CropStoreWriter(path, ["ch0"], (32, 32), "uint8") as writer:
        writer.append(images, table)
    return path


def test_a_nucleus_only_store_gives_nuclei_features_and_says_why(tmp_path: Path):
    import json

    store = _one_channel_store(tmp_path / "store")
    summary = extract_features(store, tmp_path / "cells.parquet", FeaturesConfig(chunk_cells=3), progress=False)
    table = pd.read_parquet(tmp_path / "cells.parquet")
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    assert features and all(c.startswith("Nuclei_") for c in features)
    assert table["Nuclei_AreaShape_Area"].tolist() == pytest.approx([len(np.flatnonzero(
        disk((16, 16), 5 + i % 3, shape=(32, 32))[0])) for i in range(8)], rel=0.05)
    report = json.loads((tmp_path / "cells.parquet.json").read_text())
    assert report["nucleus_channel"] == "ch0" and report["objects"] == ["Nuclei"]
    assert set(report["objects_not_measured"]) == {"Cells", "Cytoplasm"}
    undefined = [f"Nuclei_AreaShape_NormalizedMoment_{p}_{q}" for p, q in ((0, 0), (0, 1), (1, 0))]  # by definition
    assert report["dropped_features"] == undefined == summary.dropped_features
    assert not set(undefined) & set(table.columns)
    assert "measured" in summary.line() and "Nuclei features of 8 cells" in summary.line()
    assert "Cells and Cytoplasm not measured: no cell masks" in summary.line()
    assert "3 NaN in every cell dropped" in summary.line()


def test_masks_by_segmentation_without_a_cytoplasm_channel_marks_the_nucleus_only():
    image = np.zeros((1, 1, 32, 32), np.float32)
    image[0, 0][disk((16, 16), 5)] = 1.0
    masks = masks_by_segmentation(image, ["ch0"], "ch0", ["Actin"])
    assert set(np.unique(masks)) == {0, 1} and masks[0, 16, 16] == 1


def test_task_size_is_a_count_or_auto_and_a_bad_one_names_the_key():
    from morphospace.config import ConfigError, resolve_config

    assert FeaturesConfig().chunk_cells == "auto" and resolve_config(FeaturesConfig, {"chunk_cells": 8}).chunk_cells == 8
    with pytest.raises(ConfigError, match="key 'chunk_cells'.*at least 1 or auto"):
        resolve_config(FeaturesConfig, {"chunk_cells": 0})
