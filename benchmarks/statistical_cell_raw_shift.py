"""The drug-shift test on a simulated structures store's raw crops, with no model: do the sampled cells differ?

The simulator's drugs change named structures only, but each condition's cells are their own draws,
so two groups of one structure can differ by chance in what a model reads. Here each cell's
structure channel (raw intensities in [0, 1]) is described by three numbers: its summed intensity,
its intensity-weighted mean xy distance from the crop's centre (px) and, in 3D, its
intensity-weighted mean |z| distance from the middle plane (planes). Per structure the features are
standardised over that structure's cells, and each drug's cells are tested against DMSO's with the
drug-shift test of ``evaluate drug-shift`` (centroid distance, permutation p-value), Holm over the
drugs. Beside each test: two-sided Mann-Whitney p-values of the two groups' nucleus and cell
volumes (mask voxels), the geometry a model's target code may carry from the reference.

The stores are the 3D part's of ``statistical_cell.py`` (its full settings, random-angle frame),
simulated into its work folder when missing. Writes ``results/statistical_cell_raw_shift[_TAG].json``
and prints a table per store.

    python benchmarks/statistical_cell_raw_shift.py [--store-seeds 2,0] [--permutations 1000] [--tag TAG]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from common import ROOT, print_table, write_result
from morphospace.evaluate.statistical_cell import holm, permutation_test
from morphospace.io.store import CropStore
from morphospace.simulate.structures import CONTROL_DRUG
from statistical_cell import FRAMES, SETTINGS, structures_store
from statistical_cell_shift_geometry import mask_volumes

CONVENTION = ("per store, structure and drug: the drug's cells against DMSO's of that structure (every cell of "
              "both groups in the store); features of the raw structure channel (intensities in [0, 1]): total = "
              "sum over voxels, xy_distance = intensity-weighted mean distance from the crop's centre in xy (px), "
              "z_distance = intensity-weighted mean |z - middle plane| (planes, 3D only), each standardised over "
              "the structure's cells; distance = Euclidean distance between the groups' mean feature vectors, "
              "p_value = its permutation p-value (evaluate.statistical_cell.permutation_test, seed = the test's "
              "index), q_value = Holm over the structure's drugs; p_nucleus_volume, p_cell_volume = two-sided "
              "Mann-Whitney U p-values of mask voxels (nucleus: label 1; cell: labels 1 and 2)")


def structure_features(images: np.ndarray) -> np.ndarray:
    """(n, 2) in 2D or (n, 3) in 3D features of structure channels ``images`` (n, H, W) or (n, D, H, W):
    summed intensity, intensity-weighted mean xy distance from the centre (px), and in 3D the
    intensity-weighted mean |z| distance from the middle plane (planes)."""
    axes = [np.arange(n) - (n - 1) / 2.0 for n in images.shape[1:]]
    grid = np.meshgrid(*axes, indexing="ij")
    flat = images.reshape(len(images), -1).astype(np.float64)
    total = flat.sum(1)
    weights = flat / np.maximum(total, 1e-12)[:, None]
    columns = [total, weights @ np.hypot(grid[-2], grid[-1]).ravel()]
    if images.ndim == 4:
        columns.append(weights @ np.abs(grid[0]).ravel())
    return np.stack(columns, axis=1)


def raw_shift_table(store: CropStore, n_permutations: int) -> pd.DataFrame:
    """One row per (structure, drug) of ``store``: the raw-feature drug-shift test and the volume contrasts."""
    cells = store.cells.reset_index(drop=True)
    volumes = mask_volumes(store)
    rows = []
    for structure, group in cells.groupby("Metadata_Structure", sort=True):
        index = group.index.to_numpy()
        features = structure_features(store.read(index, ["Structure"])[:, 0])
        features = (features - features.mean(0)) / features.std(0)
        compounds = group["Metadata_Compound"].to_numpy()
        tests = []
        for drug in sorted(set(compounds) - {CONTROL_DRUG}):
            pair = np.isin(compounds, [CONTROL_DRUG, drug])
            distance, p = permutation_test(features[pair], compounds[pair] == drug, None, n_permutations,
                                           seed=len(rows) + len(tests))
            a, b = volumes.iloc[index[compounds == CONTROL_DRUG]], volumes.iloc[index[compounds == drug]]
            tests.append({"structure": structure, "drug": drug, "n_control": len(a), "n_treated": len(b),
                          "distance": distance, "p_value": p,
                          "p_nucleus_volume": float(mannwhitneyu(a["nucleus"], b["nucleus"]).pvalue),
                          "p_cell_volume": float(mannwhitneyu(a["cell"], b["cell"]).pvalue)})
        for test, q in zip(tests, holm([t["p_value"] for t in tests])):
            test["q_value"] = float(q)
        rows.extend(tests)
    return pd.DataFrame(rows)


def _store(seed: int) -> Path:
    settings = {**SETTINGS["3d"]["full"], "store_seed": seed, "frame": FRAMES["3d"]}
    return structures_store(ROOT / "work" / "statistical_cell", 3, settings, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store-seeds", default="2,0", help="comma-separated seeds of the 3D stores")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--tag", default="", help="suffix of the result name")
    args = parser.parse_args()
    stores = {}
    for seed in [int(s) for s in args.store_seeds.split(",") if s]:
        path = _store(seed)
        table = raw_shift_table(CropStore(path), args.permutations)
        print_table(table.round(4).to_dict(orient="records"), title=f"raw structure features, store seed {seed}")
        stores[f"seed{seed}"] = {"store": str(path), "tests": table.to_dict(orient="records")}
    write_result(f"statistical_cell_raw_shift{f'_{args.tag}' if args.tag else ''}",
                 {"convention": CONVENTION, "permutations": args.permutations, "stores": stores})


if __name__ == "__main__":
    main()
