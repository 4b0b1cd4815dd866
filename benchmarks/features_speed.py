"""Speed of ``features`` (cp_measure through morphospace) against a plain cp_measure loop.

Baseline, in the same process: for each crop, each object (nuclei, cells, cytoplasm) and each
channel (and channel pair), call the same cp_measure functions on that crop alone, one process.
morphospace: ``extract_features`` on all 5,318 DMSO crops with their masks (task size auto: chunks
measured as one mosaic per call; granularity per crop), with 1 worker (in-process) and 2 workers
(local dask cluster, start-up included). Reports cells/s, the ratios to the baseline and
``features_fast_2w_vs_1w`` / ``features_full_2w_vs_1w``, for the fast and full sets.

    python benchmarks/features_speed.py [--data ../shared/data] [--cells 5318] [--baseline-cells 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from common import data_dir, print_table, write_result
from morphospace.features.cellprofiler import FEATURE_SETS, OBJECTS, FeaturesConfig, masks_by_segmentation
from morphospace.io.importers import import_npz
from morphospace.io.store import CropStore, CropStoreWriter
from morphospace.workflows.profiling import extract_features, intensity_scale


def _baseline(images: np.ndarray, masks: np.ndarray, feature_set: str) -> float:
    """Seconds for the plain per-crop cp_measure loop over every crop."""
    from cp_measure.bulk import get_core_measurements, get_correlation_measurements

    core, correlation = get_core_measurements(), get_correlation_measurements()
    chosen = FEATURE_SETS[feature_set]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for image, mask in zip(images, masks):
            for values in OBJECTS.values():
                labels = np.isin(mask, values).astype(np.int32)
                if not labels.any():
                    continue
                for name in chosen["shape"]:
                    core[name](labels, None)
                for channel in image:
                    for name in chosen["channel"]:
                        core[name](labels, channel)
                for a in range(len(image)):
                    for b in range(a + 1, len(image)):
                        for name in chosen["pair"]:
                            extra = {"scale_max": 255} if name == "costes" else {}
                            correlation[name](image[a], image[b], labels, **extra)
    return time.perf_counter() - start


def _store(bbbc021: Path, tmp: Path, cells: int) -> tuple[CropStore, np.ndarray, np.ndarray]:
    """A masked store of the first ``cells`` DMSO crops, and their scaled images and masks."""
    raw = import_npz(bbbc021 / "bbbc021_crops68_dmso_6plates.npz", tmp / "raw", channels=["DNA", "Actin", "Tubulin"],
                     progress=False)
    picks = np.arange(min(cells, len(raw)))
    images = raw.read(picks).astype(np.float32)
    masks = masks_by_segmentation(images, raw.channels, "DNA", ["Actin", "Tubulin"])
    with CropStoreWriter(tmp / "store", raw.channels, raw.crop_shape, "uint16", with_masks=True) as writer:
        writer.append(raw.read(picks), raw.cells.iloc[picks], masks)
    store = CropStore(tmp / "store")
    scale = np.asarray(intensity_scale(store, store.channels), np.float32)[None, :, None, None]
    return store, np.clip(images / scale, 0, 1), masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--cells", type=int, default=5318, help="DMSO crops measured (default all 5,318)")
    parser.add_argument("--baseline-cells", type=int, default=300, help="crops timed in the plain loop")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store, scaled, masks = _store(data_dir(args.data) / "bbbc021", Path(tmp), args.cells)
        n = len(store)
        for feature_set in ("fast", "full"):
            few = min(args.baseline_cells, n)
            baseline = few / _baseline(scaled[:few], masks[:few], feature_set)
            row = {"feature_set": feature_set, "cells": n, "baseline_cells_per_s": baseline}
            for workers in (1, 2):
                start = time.perf_counter()
                extract_features(store.path, Path(tmp) / f"{feature_set}_{workers}.parquet",
                                 FeaturesConfig(feature_set=feature_set), workers=workers, progress=False)
                row[f"workers{workers}_cells_per_s"] = n / (time.perf_counter() - start)
                row[f"workers{workers}_vs_baseline"] = row[f"workers{workers}_cells_per_s"] / baseline
            row["workers2_vs_workers1"] = row["workers2_cells_per_s"] / row["workers1_cells_per_s"]
            rows.append(row)
    print_table(rows, f"CellProfiler features of {n} BBBC021 DMSO crops (68 x 68, 3 channels, 3 objects)")
    ratios = {row["feature_set"]: row["workers2_vs_workers1"] for row in rows}
    path = write_result("features_speed", {
        "convention": ("cells per second, wall clock; baseline = plain per-crop cp_measure loop in one process over "
                       "the first --baseline-cells of the same crops, masks and measurement functions; morphospace "
                       "timings cover all crops and include reading the store, timing the first crops, writing and "
                       "gathering the Parquet parts and (2 workers) starting the local dask cluster; task size auto"),
        "features_fast_2w_vs_1w": ratios["fast"], "features_full_2w_vs_1w": ratios["full"],
        "rows": rows,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
