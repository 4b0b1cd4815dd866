from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.errors import StoreError
from morphospace.io.store import CropStore, CropStoreWriter


def _table(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"Metadata_Plate": [f"P{i % 2}" for i in range(start, start + n)],
                         "Metadata_ObjectNumber": np.arange(start, start + n)})


def _images(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n, dtype=np.float32)[:, None, None, None] * np.ones((n, 2, 6, 5), np.float32))


def test_round_trip_across_chunk_boundaries(tmp_path: Path):
    with CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5), "float32", with_masks=True,
                         pixel_size_um=0.65, provenance={"source": "test"}, chunk_cells=4) as writer:
        for start, n in [(0, 3), (3, 7), (10, 1)]:
            writer.append(_images(n, start), _table(n, start), np.full((n, 6, 5), start % 3))
    store = CropStore(tmp_path / "s")
    assert len(store) == 11 and store.crop_shape == (6, 5) and store.channels == ["DNA", "Actin"]
    assert store.images.chunks[0] == 4
    np.testing.assert_array_equal(store.read(slice(None))[:, 0, 0, 0], np.arange(11))
    np.testing.assert_array_equal(store.cells["Metadata_ObjectNumber"], np.arange(11))
    assert store.read_masks([3])[0, 0, 0] == 0 and store.read_masks([10])[0, 0, 0] == 1
    assert store.info["pixel_size_um"] == 0.65 and store.info["provenance"] == {"source": "test"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_read_any_order_with_repeats_and_channel_subset(tmp_path: Path):
    with CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5), chunk_cells=4) as writer:
        writer.append(_images(9), _table(9))
    store = CropStore(tmp_path / "s")
    picked = store.read([7, 1, 7, 4], channels=["Actin"])
    assert picked.shape == (4, 1, 6, 5)
    np.testing.assert_array_equal(picked[:, 0, 0, 0], [7, 1, 7, 4])
    with pytest.raises(StoreError, match="no channel"):
        store.read([0], channels=["Tubulin"])


def test_three_dimensional_crops(tmp_path: Path):
    with CropStoreWriter(tmp_path / "s", ["DNA"], (3, 4, 4), "uint16") as writer:
        writer.append(np.ones((2, 1, 3, 4, 4)), _table(2))
    store = CropStore(tmp_path / "s")
    assert store.images.shape == (2, 1, 3, 4, 4) and store.images.dtype == np.uint16


def test_failure_leaves_nothing(tmp_path: Path):
    with pytest.raises(RuntimeError, match="boom"):
        with CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5)) as writer:
            writer.append(_images(3), _table(3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_store_is_kept_unless_overwrite(tmp_path: Path):
    with CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5)) as writer:
        writer.append(_images(2), _table(2))
    with pytest.raises(FileExistsError):
        CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5))
    with pytest.raises(RuntimeError):
        with CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5), overwrite=True) as writer:
            writer.append(_images(5), _table(5))
            raise RuntimeError("interrupted")
    assert len(CropStore(tmp_path / "s")) == 2
    with CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5), overwrite=True) as writer:
        writer.append(_images(5), _table(5))
    assert len(CropStore(tmp_path / "s")) == 5


def test_append_validation(tmp_path: Path):
    with pytest.raises(ValueError):
        with CropStoreWriter(tmp_path / "a", ["DNA", "Actin"], (6, 5)) as writer:
            writer.append(np.ones((2, 3, 6, 5)), _table(2))
    with pytest.raises(ValueError, match="must start with 'Metadata_'"):
        with CropStoreWriter(tmp_path / "b", ["DNA", "Actin"], (6, 5)) as writer:
            writer.append(_images(2), pd.DataFrame({"plate": ["a", "b"]}))
    with pytest.raises(ValueError, match="NaN"):
        with CropStoreWriter(tmp_path / "c", ["DNA", "Actin"], (6, 5)) as writer:
            writer.append(np.full((1, 2, 6, 5), np.nan), _table(1))
    assert list(tmp_path.iterdir()) == []


def test_uint16_storage_rounds_and_clips(tmp_path: Path):
    with CropStoreWriter(tmp_path / "s", ["DNA"], (2, 2), "uint16") as writer:
        writer.append(np.array([[[[-5.0, 1.6], [70000.0, 3.0]]]]), _table(1))
    np.testing.assert_array_equal(CropStore(tmp_path / "s").read([0])[0, 0], [[0, 2], [65535, 3]])


def test_broken_stores_raise_store_error(tmp_path: Path):
    with pytest.raises(StoreError, match="no store.json"):
        CropStore(tmp_path)
    with CropStoreWriter(tmp_path / "s", ["DNA", "Actin"], (6, 5)) as writer:
        writer.append(_images(3), _table(3))
    _table(2).to_parquet(tmp_path / "s" / "cells.parquet")
    with pytest.raises(StoreError, match="inconsistent store"):
        CropStore(tmp_path / "s")


def test_a_missing_chunk_is_an_error_not_zeros(tmp_path: Path):
    import shutil

    with CropStoreWriter(tmp_path / "store", ["DNA"], (8, 8), chunk_cells=4) as writer:
        writer.append(np.ones((10, 1, 8, 8), np.float32), pd.DataFrame({"Metadata_Plate": ["P"] * 10}))
    shutil.rmtree(tmp_path / "store" / "images.zarr" / "c" / "1")
    with pytest.raises(StoreError, match="images.zarr: 1 of 3 chunk\\(s\\) are missing"):
        CropStore(tmp_path / "store")
