"""Shared fixtures: tiny generated data only (tests never need ../shared/data)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.io.store import CropStoreWriter


@pytest.fixture()
def small_store(tmp_path: Path) -> Path:
    """60 crops (2 channels, 12x12) on plates P0, P1, P2 with plate-dependent brightness;
    crop i has value i in pixel (0, 0) of channel 0 and MoA "A" or "B"."""
    n = 60
    rng = np.random.default_rng(0)
    plates = np.repeat(["P0", "P1", "P2"], n // 3)
    brightness = np.repeat([1.0, 10.0, 100.0], n // 3)
    images = rng.uniform(0, 1, (n, 2, 12, 12)).astype(np.float32) * brightness[:, None, None, None]
    images[:, 0, 0, 0] = np.arange(n)
    table = pd.DataFrame({"Metadata_Plate": plates, "Metadata_MoA": np.where(np.arange(n) % 2, "A", "B"),
                          "Metadata_Well": [f"W{i % 5}" for i in range(n)]})
    path = tmp_path / "store"
    with CropStoreWriter(path, ["DNA", "Actin"], (12, 12), "float32", chunk_cells=8) as writer:
        writer.append(images, table)
    return path
