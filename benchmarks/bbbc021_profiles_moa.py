"""MoA accuracy of the real BBBC021 CellProfiler profiles (Ljosa et al. 2013, 632 wells x 516 per-well
mean features), joined with the official image and MoA tables, for several profiling methods.

Rows:
(a) per-plate standardisation against DMSO wells (pycytominer), all features;
(b) (a) + pycytominer feature selection (variance, correlation > 0.9, NaN);
(c) (b) + sphering (whitening with the DMSO covariance, shrunk 5% towards the identity);
(d) the morphospace default: drop position features, log of positive features, centre each plate on
    its DMSO wells and scale by the pooled DMSO standard deviation, then the same sphering;
and ablations of (d). No step uses MoA labels; they enter only the scoring.

Convention: treatment profile = mean of a treatment's wells; 1-NN by cosine; DMSO neither query
nor neighbour; NSC excludes the same compound, NSCB also the same batch (week); NSCB on all 103
treatments and on the 92 without the single-batch MoAs. Published on these profiles: means ~83% NSC;
factor analysis (fitted on single cells) 94% NSC / 77% NSCB.

    python benchmarks/bbbc021_profiles_moa.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse

import pandas as pd

from common import data_dir, moa_scores, print_table, write_result
from morphospace.config import resolve_config
from morphospace.features.profiles import ProfilesConfig
from morphospace.workflows.profiling import make_profiles

SELECTION = {"operations": ["variance_threshold", "correlation_threshold", "drop_na_columns"]}
PLAIN = {"aggregate": {"enabled": False}, "exclude_features": [], "log_transform": False,
         "normalize": {"method": "standardize"}, "sphere": {"enabled": False}}
VARIANTS = {
    "(a) per-plate standardize vs DMSO": PLAIN,
    "(b) (a) + feature selection": {**PLAIN, "feature_select": SELECTION},
    "(c) (b) + sphering on DMSO": {**PLAIN, "feature_select": SELECTION, "sphere": {"enabled": True}},
    "(d) default: log, pooled DMSO scale, sphering": {"aggregate": {"enabled": False}},
    "(d) without sphering": {"aggregate": {"enabled": False}, "sphere": {"enabled": False}},
    "(d) without log": {"aggregate": {"enabled": False}, "log_transform": False},
    "(d) with feature selection": {"aggregate": {"enabled": False}, "feature_select": SELECTION},
    "(d) sphering fitted per batch": {"aggregate": {"enabled": False}, "sphere": {"by": "Metadata_Batch"}},
}
PUBLISHED = [
    {"method": "Ljosa 2013, means (published)", "nsc": 0.83, "nscb_92": None},
    {"method": "Ljosa 2013, factor analysis on cells (published)", "nsc": 0.94, "nscb_92": 0.77},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    wells = pd.read_csv(bbbc021 / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz")
    rows = []
    for name, overrides in VARIANTS.items():
        profiles = make_profiles(wells, config=resolve_config(ProfilesConfig, overrides), bbbc021_dir=bbbc021)
        rows.append({"method": name, "features": sum(not c.startswith("Metadata_") for c in profiles.columns),
                     **moa_scores(profiles)})
    print_table(rows, "BBBC021 per-well CellProfiler profiles (632 wells, 103 treatments)")
    print_table(PUBLISHED, "published on the same profiles")
    path = write_result("bbbc021_profiles_moa", {
        "convention": ("treatment = mean of wells; cosine 1-NN; DMSO excluded; NSC excludes same compound; NSCB "
                       "also same batch (week), on 103 treatments and on 92 (single-batch MoAs dropped); "
                       "nsc_compound_mean = mean of per-compound accuracies; moa_map = copairs mAP of same-MoA "
                       "retrieval across compounds over treatment profiles"),
        "data": "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz joined with BBBC021_v1_image.csv and BBBC021_v1_moa.csv",
        "variants": VARIANTS, "rows": rows, "published": PUBLISHED,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
