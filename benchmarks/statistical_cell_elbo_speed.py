"""Speed of the ELBO coupling's scores with the target model alone against both models.

``evaluate coupling --estimator elbo`` scores each held-out cell's target ELBO under its true
reference and under ``repeats`` swaps per reference channel. The target ELBO needs the target
model only; ``elbo_per_cell(..., models=("target",))`` skips the reference model's encoder and
decoder, which the coupling never read. On a trained run (``--run``, default the run that
``results/statistical_cell.json`` names for its 3D part), this times both ways on the same
``--cells`` held-out cells (the coupling's draw, seed 0) under the true reference and ``--swaps``
DNA swaps, in the coupling's chunks of 64 cells, alternating, ``--repeats`` times, in one process
(eval mode, float32, the run's memory format, as ``evaluate coupling`` runs). Reported: each way's
median seconds, the ratio both / target alone, and the largest absolute difference between the two
target ELBOs (nats), which must be 0 up to float rounding. Writes
``results/statistical_cell_elbo_speed.json``.

    python benchmarks/statistical_cell_elbo_speed.py [--run RUN] [--cells 307] [--swaps 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from common import print_table, stored_run, write_result
from morphospace.evaluate.statistical_cell import draw_swap_partners
from morphospace.models.run import load_run
from morphospace.models.statistical_cell import MODELS
from morphospace.workflows.cp2image_evaluation import held_out_rows
from morphospace.workflows.statistical_cell import BATCH_SIZE, prepared_cells, swapped_reference


def _target_elbos(module, target, reference, labels, models) -> torch.Tensor:
    """(N,) target ELBO of every cell under ``reference``, computed with ``models``, in chunks."""
    parts = [module.elbo_per_cell(target[s:s + BATCH_SIZE], reference[s:s + BATCH_SIZE],
                                  labels[s:s + BATCH_SIZE], seed=k,
                                  models=models)["target"] for k, s in enumerate(range(0, len(target), BATCH_SIZE))]
    return torch.cat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained statistical_cell run (default: the 3D part's of statistical_cell)")
    parser.add_argument("--cells", type=int, default=307)
    parser.add_argument("--swaps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_dir = args.run or stored_run("statistical_cell", "simulated_3d")
    torch.set_num_threads(2)
    run = load_run(run_dir, "evaluate", "coupling")
    rows, _ = held_out_rows(run.data)
    rows = np.sort(np.random.default_rng(0).choice(rows, min(args.cells, len(rows)), replace=False))
    target, reference, labels = prepared_cells(run, rows)
    if labels is None:
        raise SystemExit(f"{run_dir}: a run with a structure label is needed (model.label)")
    structures = np.asarray(run.module.structures, dtype=object)[labels.numpy()]
    partners = draw_swap_partners(len(rows), args.swaps, structures, 0)
    dna = run.module.reference_channels.index("DNA")
    references = [reference, *(swapped_reference(reference, column, dna) for column in partners.T)]
    seconds: dict[str, list[float]] = {"both": [], "target": []}
    elbos: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, models in (("both", MODELS), ("target", ("target",))):
                start = time.perf_counter()
                elbos[name] = torch.cat([_target_elbos(run.module, target, ref, labels, models) for ref in references])
                seconds[name].append(time.perf_counter() - start)
    both, alone = statistics.median(seconds["both"]), statistics.median(seconds["target"])
    row = {"cells": len(rows), "references": len(references), "seconds_both_models": both,
           "seconds_target_alone": alone, "speedup": both / alone,
           "max_abs_elbo_difference": float((elbos["both"] - elbos["target"]).abs().max()),
           "elbo_scale": float(elbos["both"].abs().mean())}
    print_table([row], "target ELBO of the coupling: both models against the target alone")
    convention = ("wall-clock seconds on the machine's CPU threads (2), median over repeats, of the target ELBO of "
                  "every cell under its true reference and each DNA swap, in chunks of 64, eval mode, float32, "
                  "the run's elbo_samples (0: the posterior mean); speedup = both / target alone, measured in one process")
    payload = {"convention": convention, "run": str(run_dir),
               "repeats": args.repeats, "seconds": seconds, **row}
    print(f"written {write_result('statistical_cell_elbo_speed', payload)}")


if __name__ == "__main__":
    main()
