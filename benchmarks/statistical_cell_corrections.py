"""Drug-shift calls of the Statistical Cell benchmark under each multiple-test correction.

``statistical_cell.py`` called a (drug, structure) shift significant when its Benjamini-Hochberg
q <= 0.05 (``evaluate drug-shift``'s default), which bounds the share of false calls on average;
the benchmark's aim, "every shifted structure and no false positive at alpha 0.05", asks for the
family-wise error that Holm's correction bounds, which the benchmark now uses (its results name it
under ``drug_shift_correction``; a result without that key called at Benjamini-Hochberg). This
script reads the permutation p-values that every result of ``statistical_cell.py`` stores
(``results/statistical_cell*.json``, blocks ``simulated_2d`` and ``simulated_3d``, and a part run
outside its default frame, e.g. ``simulated_3d_aligned``; a ``--quick``
check is skipped), adjusts them within each latent space by each correction
(``morphospace.evaluate.statistical_cell.call_shifts``), and scores the calls against the truth that
the result recorded (its found and missed shifted pairs): recall and false positives in the target
space, significant tests in the reference space (all false: the simulator's drugs leave membrane and
DNA alone), and where a result tested it, recall and false positives given the reference (``evaluate
drug-shift --given-reference``). Nothing is retrained. It checks first that its calls under the
correction a result used are the stored ones. A result that repeats another's run and target- and
reference-space p-values is scored once (the first in name order). Writes
``results/statistical_cell_corrections.json`` and prints a table.

    python benchmarks/statistical_cell_corrections.py [--alpha 0.05]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from common import RESULTS, print_table, simulated_blocks, write_result
from morphospace.evaluate.statistical_cell import CORRECTIONS, call_shifts, shift_recall
from morphospace.workflows.statistical_cell import GIVEN_REFERENCE

PARTS = ("simulated_2d", "simulated_3d")
CONVENTION = ("per statistical_cell*.json result block (one per run and target- and reference-space p-values: "
              "the first file holding them): its drug-shift permutation p-values (each drug against DMSO per "
              "structure and latent space, as stored) adjusted within each latent space by each correction; "
              "significant: adjusted p <= alpha; truth: the shifted pairs the result recorded (found and missed); "
              "recall and false_positives in the target space, "
              "reference_false_positives: significant reference-space tests; meets_aim: recall 1 and no "
              "target-space false positive (the benchmark's drug_shift_recall and drug_shift_false_positives); "
              "recall_given_reference, false_positives_given_reference: the same in the space "
              "target_given_reference, for results that tested it (evaluate drug-shift --given-reference); "
              "summary: runs per part meeting it, with recall under 1, and with a reference-space call")


def _truth(block: dict[str, Any], tests: pd.DataFrame) -> pd.DataFrame:
    """Every tested (drug, structure) pair with ``shifted`` from the result's found and missed pairs."""
    target = block["drug_shift_scores"]["target"]
    shifted = {tuple(pair) for pair in target["found"] + target["missed"]}
    pairs = tests.loc[tests["latent"] == "target", ["drug", "structure"]].drop_duplicates()
    return pd.DataFrame({"Metadata_Compound": pairs["drug"], "structure": pairs["structure"],
                         "shifted": [pair in shifted for pair in zip(pairs["drug"], pairs["structure"])]})


def _scores(block: dict[str, Any], alpha: float, source: Path) -> dict[str, Any]:
    tests = pd.DataFrame(block["drug_shift_tests"])
    truth = _truth(block, tests)
    stored = block.get("drug_shift_correction", "bh")  # results before the key called at Benjamini-Hochberg
    scores: dict[str, Any] = {}
    for correction in CORRECTIONS:
        calls = call_shifts(tests, correction, alpha)
        if correction == stored and alpha == 0.05 and not calls["significant"].equals(tests["significant"]):
            raise SystemExit(f"{source}: the {correction} calls differ from the stored ones")
        target = shift_recall(calls, truth)
        reference = int(calls.loc[calls["latent"] == "reference", "significant"].sum())
        scores[correction] = {"recall": target["recall"], "false_positives": target["false_positives"],
                              "reference_false_positives": reference,
                              "meets_aim": target["recall"] == 1.0 and target["false_positives"] == 0}
        if (tests["latent"] == GIVEN_REFERENCE).any():
            given = shift_recall(calls, truth, GIVEN_REFERENCE)
            scores[correction] |= {"recall_given_reference": given["recall"],
                                   "false_positives_given_reference": given["false_positives"]}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    rows, seen = [], set()
    for path in sorted(RESULTS.glob("statistical_cell*.json")):
        result = json.loads(path.read_text())
        if result.get("quick"):  # a check of the script, not a result
            continue
        for part, key, block in simulated_blocks(result):
            if "drug_shift_tests" not in block:
                continue
            identity = (block["training"]["run"], tuple(t["p_value"] for t in block["drug_shift_tests"]
                                                        if t["latent"] in ("target", "reference")))
            if identity in seen:  # the same run's result written under another name, or again with more spaces
                continue
            seen.add(identity)
            scores = _scores(block, args.alpha, path)
            rows.append({"result": path.stem, "part": part, "block": key, "run": Path(block["training"]["run"]).name,
                         **{f"{c}_{k}": v for c, s in scores.items() for k, v in s.items()}})
    print_table(rows, f"drug-shift calls by correction (alpha {args.alpha})")
    summary = {part: {correction: {"runs": sum(r["part"] == part for r in rows),
                                   "meet_aim": sum(r["part"] == part and r[f"{correction}_meets_aim"] for r in rows),
                                   "recall_below_1": sum(r["part"] == part and r[f"{correction}_recall"] < 1
                                                         for r in rows),
                                   "reference_calls": sum(r["part"] == part
                                                          and r[f"{correction}_reference_false_positives"] > 0
                                                          for r in rows)}
                      for correction in CORRECTIONS} for part in PARTS}
    print_table([{"part": part, "correction": c, **counts} for part, by in summary.items() for c, counts in by.items()],
                "runs meeting the aim (recall 1, no target-space false positive)")
    path = write_result("statistical_cell_corrections", {"convention": CONVENTION, "alpha": args.alpha,
                                                         "summary": summary, "runs": rows})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
