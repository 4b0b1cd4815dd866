"""The pixel-PCA baseline: block means, per-crop z-scores, PCA fitted on chosen rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.features.pixels import downscaled_pixels, pixel_pca_embeddings
from morphospace.io.store import CropStore, CropStoreWriter


def _store(tmp_path: Path) -> CropStore:
    """20 crops (2 channels, 8 x 8): the first 10 bright on the left half, the rest on the top half."""
    rng = np.random.default_rng(0)
    images = rng.normal(0, 0.1, (20, 2, 8, 8)).astype(np.float32) + 5.0
    images[:10, :, :, :4] += 3.0
    images[10:, :, :4, :] += 3.0
    table = pd.DataFrame({"Metadata_Side": ["left"] * 10 + ["top"] * 10})
    with CropStoreWriter(tmp_path / "store", ["DNA", "Actin"], (8, 8)) as writer:
        writer.append(images, table)
    return CropStore(tmp_path / "store")


def test_downscaled_pixels_are_zscored_block_means(tmp_path: Path):
    store = _store(tmp_path)
    pixels = downscaled_pixels(store, downscale=2)
    assert pixels.shape == (20, 2 * 4 * 4)
    first = pixels[0, :16].reshape(4, 4)
    assert abs(first.mean()) < 1e-5 and abs(first.std() - 1) < 1e-4
    assert (first[:, :2] > 0).all() and (first[:, 2:] < 0).all()  # bright left half


def test_pixel_pca_separates_the_layouts_and_fits_on_given_rows(tmp_path: Path):
    store = _store(tmp_path)
    table = pixel_pca_embeddings(store, components=2, downscale=2, fit_on=np.arange(0, 20, 2))
    assert list(table.columns) == ["Metadata_Side", "Metadata_StoreIndex", "Embedding_000", "Embedding_001"]
    first = table.groupby("Metadata_Side")["Embedding_000"].mean()
    spread = table.groupby("Metadata_Side")["Embedding_000"].std().max()
    assert abs(first["left"] - first["top"]) > 10 * spread
    with pytest.raises(InputError, match="cannot downscale"):
        downscaled_pixels(store, downscale=16)
