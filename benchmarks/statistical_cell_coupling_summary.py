"""The coupling Spearman of trained Statistical Cell runs under each summary of the per-cell couplings.

``evaluate coupling`` condenses a structure's per-cell couplings (Eq 4) into one figure: their mean,
as the paper does, or a trimmed mean (``trim``: the share of the structure's cells cut at each end,
0.5 the median). A mean can be moved by a few cells far out in either tail, which matters where
the true ties to be ordered differ by a few thousandths. This script
computes the per-cell scores of each run once per estimator and scores every ``--trims`` value on
them against the store's truth, so that the summaries are compared on the same cells, partners and
model. The runs are named by stored benchmark results (``--results``, each a
``results/<name>.json`` whose block ``--part`` names its training run).

Writes ``results/statistical_cell_coupling_summary[_TAG].json`` and prints a table.

    python benchmarks/statistical_cell_coupling_summary.py --results statistical_cell \\
        statistical_cell_seed1_3d_vae_epochs_4_e14 statistical_cell_seed2_3d_vae_epochs_4_e14 [--tag TAG]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd

from common import print_table, stored_run, write_result
from morphospace.evaluate import statistical_cell as stats
from morphospace.models.run import Run, load_run
from morphospace.workflows.statistical_cell import (
    COUPLING_CONVENTION, CouplingConfig, coupling_scores, coupling_truth,
)

TRIMS = (0.0, 0.05, 0.1, 0.2, 0.5)
CONVENTION = ("per run, estimator and trim: evaluate coupling's defaults (every held-out test cell up to 500, 8 swap "
              "partners per cell and channel, seed 0; the per-cell scores computed once per run and estimator and "
              "shared by every trim); coupling of a (structure, channel) = the trimmed mean of its cells' per-cell "
              "couplings (trim = share cut at each end; 0 the mean, 0.5 the median); spearman = pooled tie-resolved "
              "Spearman r over the (structure, channel) pairs against the store's truth. Evaluation: "
              + COUPLING_CONVENTION)


def summaries(run: Run, run_dir: Path, truth: pd.DataFrame, estimator: str, trims: tuple[float, ...]
              ) -> dict[str, Any]:
    """Per trim: the coupling rows of ``run`` (loaded from ``run_dir``) under ``estimator`` and their
    agreement with ``truth`` (:func:`coupling_truth`)."""
    config = CouplingConfig(estimator=estimator)
    start = time.perf_counter()
    scores = coupling_scores(run, config, run_dir)
    seconds = time.perf_counter() - start
    by_trim = {}
    for trim in trims:
        table = stats.coupling_table(scores.true, scores.swapped, scores.structures, config.bootstrap,
                                     config.confidence, config.seed, trim)
        agreement = stats.coupling_agreement(table, truth)
        by_trim[str(trim)] = {"spearman": float(agreement.loc["pooled", "spearman_ties_resolved"]),
                              "agreement": agreement.to_dict(orient="index"),
                              "coupling": table.to_dict(orient="records")}
    return {"n_cells": len(scores.rows), "split": scores.split, "score_seconds": seconds, "trims": by_trim,
            "truth": truth.to_dict(orient="records")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs="+", required=True, help="stored result names (results/NAME.json)")
    parser.add_argument("--part", default="simulated_3d", help="the result block naming the run")
    parser.add_argument("--estimators", nargs="+", default=["reference_only", "elbo"],
                        choices=["reference_only", "elbo"])
    parser.add_argument("--trims", type=float, nargs="+", default=list(TRIMS))
    parser.add_argument("--tag", help="write results/statistical_cell_coupling_summary_TAG.json instead")
    args = parser.parse_args()
    trims = tuple(args.trims)
    runs: dict[str, Any] = {}
    rows = []
    for result in args.results:
        run_dir = stored_run(result, args.part)
        run = load_run(run_dir, "evaluate", "coupling")
        truth = coupling_truth(str(Path(run.config.data.store) / "truth"), list(run.module.reference_channels))
        runs[result] = {"run": str(run_dir), "estimators": {}}
        for estimator in args.estimators:
            block = summaries(run, run_dir, truth, estimator, trims)
            runs[result]["estimators"][estimator] = block
            rows.append({"result": result, "estimator": estimator, "cells": block["n_cells"],
                         **{f"trim {t:g}": block["trims"][str(t)]["spearman"] for t in trims}})
    print_table(rows, f"pooled tie-resolved coupling Spearman by trim ({args.part})")
    name = "statistical_cell_coupling_summary" + (f"_{args.tag}" if args.tag else "")
    write_result(name, {"convention": CONVENTION, "part": args.part, "trims": list(trims), "runs": runs})


if __name__ == "__main__":
    main()
