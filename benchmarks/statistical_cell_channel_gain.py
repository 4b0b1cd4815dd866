"""How much a Statistical Cell run's expected structure gains from each reference channel, in the
units of its training objective.

The reference-only coupling is a ratio, 1 - error(true) / error(swapped); a gate of
``model.reference_gates`` weighs the difference instead: the squared error summed over pixels
(voxels in 3D) that a structure saves by reading its own cell's channel rather than another cell's.
For a run trained with ``model.null_latent_share``, from ``evaluate coupling``'s own scores
(``coupling_scores``: the reference_only estimator, no views, seed 0), each cell's expected
structure from its reference alone (``StatisticalCell.expected_target``) is scored against its
observed structure with the true reference and with one channel swapped for that channel of
another held-out cell of the same structure (``--repeats`` partners); gain = mean over the partners of error(swapped) - error(true),
averaged over a structure's cells. Writes ``results/statistical_cell_channel_gain_TAG.json`` and
prints a table.

    python benchmarks/statistical_cell_channel_gain.py --run RUN_DIR --tag TAG [--cells 150] [--repeats 2]
"""

from __future__ import annotations

import argparse

import pandas as pd

from common import print_table, write_result
from morphospace.evaluate import statistical_cell as stats
from morphospace.models.run import load_run
from morphospace.workflows.statistical_cell import CouplingConfig, coupling_scores

CONVENTION = ("held-out cells of the run (a uniform draw of at most --cells, seed 0, as evaluate coupling draws "
              "them); error = squared error summed over pixels between a cell's observed structure and the "
              "structure the run expects from its reference and label alone (expected_target, the run's "
              "normalised intensities in [-1, 1]); per channel, that channel alone replaced by the same channel of "
              "another held-out cell of the same structure (--repeats partners, evaluate coupling's draw, seed 0); "
              "gain = mean over partners of error(swapped) - error(true), coupling = 1 - error(true) / mean "
              "error(swapped), both averaged over a structure's cells")


def channel_gains(run_dir: str, cells: int, repeats: int) -> dict:
    run = load_run(run_dir, "evaluate", "coupling")
    config = CouplingConfig(estimator="reference_only", views="none", cells=cells, repeats=repeats)
    scores = coupling_scores(run, config, run_dir)  # reference_only scores: -error
    structures, true = scores.structures, scores.true
    table = []
    for channel, swapped in scores.swapped.items():
        per_cell = pd.DataFrame({"structure": structures, "error_true": -true, "gain": true - swapped.mean(1),
                                 "coupling": stats.coupling_per_cell(true, swapped)})
        means = per_cell.groupby("structure").mean()
        table += [{"structure": name, "channel": channel, **row.to_dict(), "n_cells": int((structures == name).sum())}
                  for name, row in means.iterrows()]
    return {"convention": CONVENTION, "run": str(run_dir), "split": scores.split, "n_cells": len(scores.rows),
            "repeats": repeats, "gates": run.module.reference_gate_values(), "gains": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a statistical_cell run trained with model.null_latent_share")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--cells", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    payload = channel_gains(args.run, args.cells, args.repeats)
    print_table(payload["gains"], f"gain of each reference channel ({payload['n_cells']} {payload['split']} cells)")
    print(f"written {write_result(f'statistical_cell_channel_gain_{args.tag}', payload)}")


if __name__ == "__main__":
    main()
