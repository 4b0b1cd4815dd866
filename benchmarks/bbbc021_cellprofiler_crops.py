"""CellProfiler features of the 1,000 real all-MoA BBBC021 single-cell crops, profiled per treatment
and scored by NSC: the hand-crafted baseline that learned embeddings are compared with.

The crops carry no masks, so ``features`` segments each crop (nucleus nearest the centre and its
cell). Profiles: median per well; log of positive features; centring on the DMSO wells of each
batch (most plates hold no DMSO crop in this sample) with the pooled DMSO standard deviation;
optional whitening on DMSO. Only 1,000 cells cover 103 treatments (median 5 cells per treatment), so
these numbers are far noisier than whole-screen ones.

Convention: treatment profile = mean of its wells; cosine 1-NN; DMSO excluded; NSC excludes the same
compound, NSCB also the same batch; mAP = copairs same-MoA retrieval over treatments.

    python benchmarks/bbbc021_cellprofiler_crops.py [--data ../shared/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import data_dir, moa_scores, print_table, write_result
from morphospace.config import resolve_config
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.features.profiles import ProfilesConfig
from morphospace.io.importers import import_npz
from morphospace.workflows.profiling import extract_features, make_profiles

PROFILES = {
    "wells, batch-centred, whitened": {"normalize": {"by": "Metadata_Batch"}},
    "wells, batch-centred, not whitened": {"normalize": {"by": "Metadata_Batch"}, "sphere": {"enabled": False}},
    "wells, all-DMSO-centred, whitened": {"normalize": {"by": None}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    rows, timings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = import_npz(bbbc021 / "bbbc021_crops68_random1000_allmoa.npz", tmp / "store",
                           channels=["DNA", "Actin", "Tubulin"], bbbc021_dir=bbbc021, progress=False)
        for feature_set in ("fast", "full"):
            out = tmp / f"{feature_set}.parquet"
            start = time.perf_counter()
            summary = extract_features(store.path, out, FeaturesConfig(feature_set=feature_set), workers=args.workers,
                                       progress=False)
            timings.append({"feature_set": feature_set, "cells": summary.n_cells, "features": summary.n_features,
                            "seconds": time.perf_counter() - start, "workers": args.workers})
            cells = pd.read_parquet(out)
            for name, overrides in PROFILES.items():
                profiles = make_profiles(cells, config=resolve_config(ProfilesConfig, overrides))
                rows.append({"features": feature_set, "profiles": name, **moa_scores(profiles)})
    print_table(timings, "features of 1,000 BBBC021 crops (including per-crop segmentation)")
    print_table(rows, "MoA accuracy of CellProfiler features of 1,000 BBBC021 single cells")
    path = write_result("bbbc021_cellprofiler_crops", {
        "convention": ("treatment = mean of wells (each well = median of its cells); cosine 1-NN; DMSO excluded; NSC "
                       "excludes same compound; NSCB also same batch, on all treatments and without single-batch "
                       "MoAs; moa_map = copairs same-MoA mAP over treatments"),
        "data": "bbbc021_crops68_random1000_allmoa.npz (1,000 cells, 103 treatments + DMSO)",
        "profiles": PROFILES, "timings": timings, "rows": rows,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
