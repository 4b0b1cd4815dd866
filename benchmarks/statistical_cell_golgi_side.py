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
the one cue of the side (percentiles over ``--offset-cells`` cells drawn as the store draws them),
and how well that cue can be read from the images: ``observer`` estimates the side from the
rendered membrane and DNA channels alone (blur and noise as in the store; a 3D stack summed over z)
by image moments, the membrane's intensity-weighted centroid and long axis and the DNA's centroid,
nothing learnt, and counts the cells whose heading it puts within a quarter turn of the simulator's,
in all and by the size of the offset.

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
from morphospace.simulate.structure_crops import (
    StructureRenderer, coupling_truth, crop_grid, sample_shape, structure_coupling,
)
from morphospace.simulate.structures import (
    CellShape, CropGrid, golgi_heading, golgi_ribbon, nucleus_offset_along_axis, render_cell,
)

CONVENTION = ("coupling = the simulator's coupling truth (structure_coupling: truth_cells DMSO Golgi cells of the "
              "store's config, truth_swaps swapped references each, truth_samples draws per expected image, squared "
              "error over the crop) with the expected image drawn by each predictor; offsets: |nucleus centre - cell "
              "centre| projected on the cell's long axis, px, over cells drawn with the store's geometry ranges; "
              "observer: share of those cells whose Golgi heading, read by image moments from the rendered membrane "
              "and DNA channels (the side of the nucleus along the long axis), lies within a quarter turn of the "
              "simulator's, in all and per bin of |offset| (px, [low, high); high null: no bound); chance 0.5")
OFFSET_BINS_PX = (0.0, 0.25, 0.5, 1.0, 2.0, np.inf)
"""Bins of |offset| (px) over which the observer's agreement is counted."""


def _either_side(cell: CellShape, grid: CropGrid, rng: np.random.Generator, psf_sigma_px: float) -> np.ndarray:
    heading = golgi_heading(cell)
    return 0.5 * sum(golgi_ribbon(cell.nucleus, heading + turn, grid, rng, psf_sigma_px) for turn in (0.0, np.pi))


def _any_direction(cell: CellShape, grid: CropGrid, rng: np.random.Generator, psf_sigma_px: float) -> np.ndarray:
    start = rng.uniform(0.0, 2.0 * np.pi)
    return 0.25 * sum(golgi_ribbon(cell.nucleus, start + k * np.pi / 2, grid, rng, psf_sigma_px) for k in range(4))


PREDICTORS: dict[str, StructureRenderer] = {"either_side": _either_side, "any_direction": _any_direction}
"""Predictors that know less of the rule than the simulator, whose own couplings are the truth's."""


def _moment_heading(membrane: np.ndarray, dna: np.ndarray, grid: CropGrid) -> float:
    """The Golgi's heading (radians, arctan2(y, x), as :func:`golgi_heading`) read from the images
    (``grid.shape``; a stack is summed over z) by moments: along the membrane's intensity-weighted
    long axis, away from the DNA centroid's offset from the membrane centroid."""
    y, x = grid.coords[-2], grid.coords[-1]
    if grid.is_3d:
        membrane, dna, y, x = membrane.sum(axis=0), dna.sum(axis=0), y[0], x[0]
    weight, nucleus = np.clip(membrane - 0.1 * membrane.max(), 0, None), np.clip(dna - 0.1 * dna.max(), 0, None)
    cy, cx = (weight * y).sum() / weight.sum(), (weight * x).sum() / weight.sum()
    syy, sxx = (weight * (y - cy) ** 2).sum(), (weight * (x - cx) ** 2).sum()
    angle = 0.5 * np.arctan2(2.0 * (weight * (y - cy) * (x - cx)).sum(), sxx - syy)
    ny, nx = (nucleus * y).sum() / nucleus.sum(), (nucleus * x).sum() / nucleus.sum()
    side = -1.0 if (ny - cy) * np.sin(angle) + (nx - cx) * np.cos(angle) > 0 else 1.0
    return float(np.arctan2(side * np.sin(angle), side * np.cos(angle)))


def side_offsets(config: SimulateConfig, n_cells: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """|offset| (n_cells,) of the nucleus centre from the cell centre along the cell's long axis, px,
    and whether the image observer's heading (:func:`_moment_heading`) lies within a quarter turn
    of the simulator's (n_cells,) bool, for cells drawn and rendered as the store does."""
    rng, grid, s = np.random.default_rng(seed), crop_grid(config), config.structures
    offsets, right = [], []
    for _ in range(n_cells):
        cell = sample_shape(config, grid, rng)
        membrane, dna = render_cell(cell, "Puncta", None, grid, rng, s.psf_sigma_px, s.noise_sd)[:2]
        offsets.append(abs(nucleus_offset_along_axis(cell)))
        right.append(np.cos(_moment_heading(membrane, dna, grid) - golgi_heading(cell)) > 0)
    return np.array(offsets), np.array(right)


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
    offsets, right = side_offsets(config, offset_cells)
    summary = {"dims": dims, **{f"p{q}_px": float(np.percentile(offsets, q)) for q in (10, 25, 50, 75, 90)},
               "share_under_1px": float(np.mean(offsets < 1.0)), "share_under_0.5px": float(np.mean(offsets < 0.5))}
    bins = zip(OFFSET_BINS_PX[:-1], OFFSET_BINS_PX[1:])
    observer = [{"dims": dims, "offset_low_px": low, "offset_high_px": high,
                 "cells": int(np.sum((offsets >= low) & (offsets < high))),
                 "side_right": float(np.mean(right[(offsets >= low) & (offsets < high)]))} for low, high in bins]
    return {"couplings": rows, "offsets": {**summary, "observer_side_right": float(np.mean(right))},
            "observer": observer}


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
    observer = [row for part in parts for row in part["observer"]]
    print_table(offsets, "nucleus offset from the cell centre along the long axis (px)")
    print_table(observer, "the Golgi's side read from the images by moments, by |offset|")
    payload = {"convention": CONVENTION, "store_seed": args.store_seed, "offset_cells": args.offset_cells,
               "couplings": couplings, "offsets": offsets, "observer": observer}
    print(f"written {write_result('statistical_cell_golgi_side', payload)}")


if __name__ == "__main__":
    main()
