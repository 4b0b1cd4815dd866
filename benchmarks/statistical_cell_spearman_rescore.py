"""The coupling Spearman of every stored Statistical Cell result, scored again with today's statistic.

``statistical_cell.py`` stores, per simulated part, the estimated coupling of each (structure,
reference channel) pair for each estimator and the simulator's truth, and the pooled tie-resolved
Spearman r it scored them with (``coupling_spearman``, ``coupling_spearman_elbo``). This script
scores the stored couplings again with ``morphospace.evaluate.statistical_cell.tie_resolved_spearman``
as it is now and puts both numbers side by side, so that a change of the statistic is seen on
every run without retraining any (a ``--quick`` check is skipped). (The change it was written for: estimates that tie exactly
where the truth ties, as a closed reference gate makes them, now rank as tied, not in an arbitrary
order against the truth's.) Writes ``results/statistical_cell_spearman_rescore.json`` and prints a
table of the results whose number changed.

    python benchmarks/statistical_cell_spearman_rescore.py
"""

from __future__ import annotations

import json
from typing import Any

from common import RESULTS, print_table, simulated_blocks, write_result
from morphospace.evaluate.statistical_cell import tie_resolved_spearman

OUTPUT = "statistical_cell_spearman_rescore"
CONVENTION = ("per statistical_cell*.json result block and estimator: as_scored = the pooled tie-resolved Spearman "
              "r stored by the benchmark (coupling_spearman for the block's coupling_estimator, "
              "coupling_spearman_elbo for elbo); rescored = tie_resolved_spearman of the same stored couplings "
              "against the same stored truth over the 12 (structure, channel) pairs, as the statistic is now")


def _estimates(block: dict[str, Any]) -> dict[str, tuple[list[dict], float]]:
    """Estimator name -> (its stored coupling rows, its stored pooled Spearman)."""
    named = block.get("coupling_estimator") or "elbo"
    estimates = {named: (block["coupling"], block["coupling_spearman"])}
    for name, other in (block.get("other_estimators") or {}).items():
        estimates[name] = (other["coupling"], other["agreement"]["pooled"]["spearman_ties_resolved"])
    return estimates


def rescore(block: dict[str, Any]) -> list[dict[str, Any]]:
    truth = {(row["structure"], channel): row[key] for row in block["truth"]
             for channel, key in (("Membrane", "coupling_membrane"), ("DNA", "coupling_dna"))}
    rows = []
    for estimator, (coupling, stored) in _estimates(block).items():
        estimated = [row["coupling"] for row in coupling]
        true = [truth[(row["structure"], row["channel"])] for row in coupling]
        rows.append({"estimator": estimator, "as_scored": stored, "rescored": tie_resolved_spearman(estimated, true)})
    return rows


def main() -> None:
    rows = []
    for path in sorted(RESULTS.glob("statistical_cell*.json")):
        document = json.loads(path.read_text())
        if document.get("quick"):  # a check of the script, not a result
            continue
        for part, key, block in simulated_blocks(document):
            if "coupling" in block and "truth" in block:
                rows += [{"result": path.stem, "part": part, "block": key, **row} for row in rescore(block)]
    rows = [row for row in rows if row["result"] != OUTPUT]
    changed = [row for row in rows if abs(row["rescored"] - row["as_scored"]) > 1e-9]
    print_table(changed, f"coupling Spearman changed by the rescoring ({len(changed)} of {len(rows)})")
    print(f"written {write_result(OUTPUT, {'convention': CONVENTION, 'results': rows})}")


if __name__ == "__main__":
    main()
