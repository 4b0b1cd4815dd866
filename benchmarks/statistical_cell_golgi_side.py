"""How much of the simulated Golgi's coupling lies in the side of the nucleus its ribbon takes.

The simulator (``simulate --mode structures``) puts the Golgi ribbon against the nucleus, centred
on the cell's long axis on the side with more room (``golgi_heading``), jittered by N(0, 0.9) rad.
The coupling truth scores the simulator's expected structure for each cell's geometry against the
cell's own structure, with the true and with swapped references (``structure_coupling``). Here the
same statistic, on the same cells, swaps and draws, is scored with predictors that know less of the
rule: ``either_side`` draws each ribbon on both sides of the nucleus along the long axis (it knows
the axis, not the side), ``any_direction`` on four headings a quarter turn apart from a uniform
start (it knows only the nucleus). What a predictor loses against ``simulator`` is the coupling
that only the side carries. ``spearman_if_all_else_exact``: the benchmark's coupling Spearman (pooled,
ties of the truth at 0 resolved) of an estimate equal to the truth for every other pair and to the
predictor's couplings for the Golgi, the best a model that predicts as that predictor does for the
Golgi can score. Also the nucleus's offset from the cell centre along the long axis,
the one cue of the side (percentiles over ``--offset-cells`` cells drawn as the store draws them).

Writes ``results/statistical_cell_golgi_side.json`` and prints a table.

    python benchmarks/statistical_cell_golgi_side.py [--dims 2,3] [--store-seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from common import print_table, write_result
from morphospace.evaluate.statistical_cell import tie_resolved_spearman
from morphospace.simulate import SimulateConfig
from morphospace.simulate.structure_crops import StructureRenderer, coupling_truth, crop_grid, structure_coupling
from morphospace.simulate.structures import (
    CellShape, CropGrid, golgi_heading, golgi_ribbon, nucleus_offset_along_axis, sample_cell,
)

CONVENTION = ("coupling = the simulator's coupling truth (structure_coupling: truth_cells DMSO Golgi cells of the "
              "store's config, truth_swaps swapped references each, truth_samples draws per expected image, squared "
              "error over the crop) with the expected image drawn by each predictor; offsets: |nucleus centre - cell "
              "centre| projected on the cell's long axis, px, over cells drawn with the store's geometry ranges")


def _either_side(cell: CellShape, grid: CropGrid, rng: np.random.Generator, psf_sigma_px: float) -> np.ndarray:
    heading = golgi_heading(cell)
    return 0.5 * sum(golgi_ribbon(cell.nucleus, heading + turn, grid, rng, psf_sigma_px) for turn in (0.0, np.pi))


def _any_direction(cell: CellShape, grid: CropGrid, rng: np.random.Generator, psf_sigma_px: float) -> np.ndarray:
    start = rng.uniform(0.0, 2.0 * np.pi)
    return 0.25 * sum(golgi_ribbon(cell.nucleus, start + k * np.pi / 2, grid, rng, psf_sigma_px) for k in range(4))


PREDICTORS: dict[str, StructureRenderer] = {"either_side": _either_side, "any_direction": _any_direction}
"""Predictors that know less of the rule than the simulator, whose own couplings are the truth's."""


def side_offsets(config: SimulateConfig, n_cells: int, seed: int = 0) -> np.ndarray:
    """|offset| (n_cells,) of the nucleus centre from the cell centre along the cell's long axis, px."""
    rng, grid, s = np.random.default_rng(seed), crop_grid(config), config.structures
    offsets = []
    for _ in range(n_cells):
        cell = sample_cell(rng, grid, s.cell_size, s.elongation, s.nucleus_size, s.nucleus_offset)
        offsets.append(abs(nucleus_offset_along_axis(cell)))
    return np.array(offsets)


def spearman_with_golgi(truth: pd.DataFrame, membrane: float, dna: float) -> float:
    """Tie-resolved Spearman r over the 12 pairs of ``truth`` (coupling_truth's table) of an estimate
    equal to the truth but for the Golgi's two couplings."""
    exact = truth.set_index("structure")[["coupling_membrane", "coupling_dna"]]
    estimate = exact.copy()
    estimate.loc["Golgi"] = [membrane, dna]
    return tie_resolved_spearman(estimate.to_numpy().ravel(), exact.to_numpy().ravel())


def golgi_side(dims: int, store_seed: int, offset_cells: int) -> dict:
    config = SimulateConfig(mode="structures", dims=dims, plates=2, seed=store_seed)
    truth = coupling_truth(config)
    golgi = truth.set_index("structure").loc["Golgi"]
    couplings = {"simulator": (golgi["coupling_membrane"], golgi["coupling_dna"])}
    couplings.update({name: structure_coupling(config, "Golgi", renderer) for name, renderer in PREDICTORS.items()})
    rows = []
    for name, (membrane, dna) in couplings.items():
        rows.append({"dims": dims, "predictor": name, "coupling_membrane": membrane, "coupling_dna": dna,
                     "spearman_if_all_else_exact": spearman_with_golgi(truth, membrane, dna)})
    offsets = side_offsets(config, offset_cells)
    summary = {"dims": dims, **{f"p{q}_px": float(np.percentile(offsets, q)) for q in (10, 25, 50, 75, 90)},
               "share_under_1px": float(np.mean(offsets < 1.0)), "share_under_0.5px": float(np.mean(offsets < 0.5))}
    return {"couplings": rows, "offsets": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default="2,3", help="comma-separated subset of 2,3")
    parser.add_argument("--store-seed", type=int, default=0)
    parser.add_argument("--offset-cells", type=int, default=4000)
    args = parser.parse_args()
    parts = [golgi_side(int(d), args.store_seed, args.offset_cells) for d in args.dims.split(",")]
    couplings = [row for part in parts for row in part["couplings"]]
    offsets = [part["offsets"] for part in parts]
    print_table(couplings, "Golgi coupling truth by what the predictor knows of the rule")
    print_table(offsets, "nucleus offset from the cell centre along the long axis (px)")
    payload = {"convention": CONVENTION, "store_seed": args.store_seed, "offset_cells": args.offset_cells,
               "couplings": couplings, "offsets": offsets}
    print(f"written {write_result('statistical_cell_golgi_side', payload)}")


if __name__ == "__main__":
    main()
