"""Whether a drug-shift call on a simulated store follows the sampled cells' geometry rather than the drug.

The simulator's drugs change named structures only; a cell's shape is drawn from the same ranges
under every condition, but each condition's cells are their own draws. A drug-shift test compares
the target latents of one structure's DMSO cells with its treated cells; when the few dozen cells
of the two groups happen to differ in size, a model whose target latent carries the cell's size
(it sees the reference) can call a shift that no drug made. Here, per (drug, structure) of a run's
``evaluate drug-shift`` table: the run's target-space q value beside Mann-Whitney p values of the
nucleus's and the cell's volume (voxels of the store's masks, nucleus label 1, cell labels 1 and 2)
between the same DMSO and treated cells, and the groups' mean volumes. Then the run's drug-shift
evaluation with ``given_reference`` (``evaluate drug-shift --given-reference``: the target code less
its linear fit on the reference code, per structure): the run's own where it tested that space (as
``statistical_cell.py`` now does), else repeated as the run had it (its queries, permutations, seed
and truth) and written under ``work/statistical_cell_shift_geometry/RUN``; its q values and calls
beside the target space's, and both spaces' recall and false positives against the simulator's truth.

Writes ``results/statistical_cell_shift_geometry[_TAG].json`` and prints a table.

    python benchmarks/statistical_cell_shift_geometry.py [--run RUN] [--tag TAG]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml
from scipy.stats import mannwhitneyu

from common import ROOT, print_table, stored_run, write_result
from morphospace.io.store import CropStore
from morphospace.workflows.statistical_cell import GIVEN_REFERENCE, DrugShiftConfig, evaluate_drug_shift

CONTROL = "DMSO"
CONVENTION = ("per (drug, structure): q_target = the run's drug_shift.csv q value in the target latent space "
              "(Benjamini-Hochberg over the run's tests); p_nucleus_volume, p_cell_volume = two-sided Mann-Whitney "
              "U p values of mask voxel counts (nucleus: label 1; cell: labels 1 and 2) between the store's DMSO "
              "and treated cells of that structure, every cell of both groups; mean volumes in voxels; "
              "q_given_reference: the same test (the run's drug-shift config, permutations and seed) in the latent "
              "target_given_reference (target code in its active dimensions less its least-squares fit with an "
              "intercept on the reference code's active dimensions, per structure over every tested cell); "
              "truth_scores: recall and false positives of each space against the store's truth (BH at alpha)")


def mask_volumes(store: CropStore) -> pd.DataFrame:
    """Nucleus and cell volumes (voxels, or pixels in 2D) of every cell of the store, from its masks."""
    flat = store.read_masks(slice(None)).reshape(len(store), -1)
    return pd.DataFrame({"nucleus": (flat == 1).sum(1), "cell": (flat >= 1).sum(1)})


def geometry_table(store: CropStore, shifts: pd.DataFrame) -> pd.DataFrame:
    """One row per target-space test of ``shifts``: its q value and the two groups' volume contrast."""
    cells = store.cells.reset_index(drop=True)
    volumes = mask_volumes(store)
    structure, compound = cells["Metadata_Structure"].to_numpy(), cells["Metadata_Compound"].to_numpy()
    rows = []
    for test in shifts[shifts["latent"] == "target"].itertuples():
        a = volumes[(structure == test.structure) & (compound == CONTROL)]
        b = volumes[(structure == test.structure) & (compound == test.drug)]
        rows.append({"drug": test.drug, "structure": test.structure, "q_target": test.q_value,
                     "called": bool(test.significant),
                     "p_nucleus_volume": float(mannwhitneyu(a["nucleus"], b["nucleus"]).pvalue),
                     "p_cell_volume": float(mannwhitneyu(a["cell"], b["cell"]).pvalue),
                     "nucleus_control": float(a["nucleus"].mean()), "nucleus_treated": float(b["nucleus"].mean()),
                     "cell_control": float(a["cell"].mean()), "cell_treated": float(b["cell"].mean())})
    return pd.DataFrame(rows)


def given_reference_shifts(run: Path) -> dict:
    """The run's ``evaluate drug-shift`` with ``given_reference``: its own, where it tested that space
    already, else repeated with it (the run's queries and config)."""
    earlier = json.loads((run / "evaluation" / "drug_shift.json").read_text())
    if earlier["config"].get("given_reference"):
        return earlier
    config = DrugShiftConfig(**{**earlier["config"], "given_reference": True})
    out = ROOT / "work" / "statistical_cell_shift_geometry" / run.name
    return evaluate_drug_shift(run, earlier["control"], earlier["treated"], out, config, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a statistical_cell run on a simulated structures "
                        "store with evaluate drug-shift done (default: the 3D headline run)")
    parser.add_argument("--tag", default="", help="suffix of the result name")
    args = parser.parse_args()
    run = args.run or stored_run("statistical_cell", "simulated_3d")
    store = CropStore(yaml.safe_load((run / "config.yaml").read_text())["data"]["store"])
    table = geometry_table(store, pd.read_csv(run / "evaluation" / "drug_shift.csv"))
    shifts = given_reference_shifts(run)
    given = pd.DataFrame(shifts["tests"]).query("latent == @GIVEN_REFERENCE").set_index(["drug", "structure"])
    pairs = pd.MultiIndex.from_frame(table[["drug", "structure"]])
    table["q_given_reference"] = given["q_value"].reindex(pairs).to_numpy()
    table["called_given_reference"] = given["significant"].reindex(pairs).to_numpy()
    scores = {space: {key: shifts["truth_scores"][space][key] for key in ("recall", "false_positives",
                                                                           "false_positive_pairs", "missed")}
              for space in ("target", GIVEN_REFERENCE)}
    shown = ["drug", "structure", "q_target", "called", "q_given_reference", "called_given_reference",
             "p_nucleus_volume", "p_cell_volume", "nucleus_control", "nucleus_treated"]
    print_table(table[shown].to_dict(orient="records"), title=f"target shifts and group geometry ({run})")
    write_result(f"statistical_cell_shift_geometry{f'_{args.tag}' if args.tag else ''}",
                 {"convention": CONVENTION, "run": str(run), "store": str(store.path),
                  "truth_scores": scores, "rows": table.to_dict(orient="records")})
    print_table([{"space": space, **{k: v for k, v in score.items() if k != "false_positive_pairs"}}
                 for space, score in scores.items()], title="against the truth")


if __name__ == "__main__":
    main()
