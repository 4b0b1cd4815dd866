"""Which part of a swapped reference channel a trained Statistical Cell answers: its xy shape or its height.

The coupling statistic swaps a whole reference channel for another cell's. In 3D a channel's
geometry has an xy part (outline, position) and a z part (the half-height). Here a trained run's
expected structure (the reference_only estimator) and the simulator's ideal predictor (the
coupling truth's expected image) are scored on the same cells under four swaps per channel:
``whole`` (the partner's membrane or nucleus, as the coupling does), ``height`` (the cell's own
outline with the partner's half-height), ``xy`` (the partner's outline with the cell's own
half-height), ``size`` (the cell's own centre, angle and half-height with the partner's xy
semi-axes: the part of the xy outline that tells the other object's size) and ``noise`` (the
cell's own geometry, the channel imaged with another noise draw: what a model answers that the
geometry does not; the truth's predictor reads 0). Coupling per swap = mean over cells of
1 - error(true) / mean error(swapped), squared error over the crop, as ``evaluate coupling`` and
the truth define it; the median over cells too (``model_median``, ``truth_median``).

Cells are DMSO cells rendered with the run's store config at indices the store does not hold
(from ``cells_per_condition`` on), so no cell was seen in training. The swapped references are
re-rendered from the counterfactual geometry with the simulator's blur and one noise draw per cell,
the same draw for the true and swapped references (but for ``noise``); the target is the cell's own structure channel.
Both are normalised as the run trained.

Writes ``results/statistical_cell_height_cue[_TAG].json`` and prints a table.

    python benchmarks/statistical_cell_height_cue.py [--run RUN] [--cells 24] [--partners 2] [--tag TAG]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from common import print_table, stored_run, write_result
from morphospace.config import load_config
from morphospace.models.run import load_run
from morphospace.simulate import SimulateConfig
from morphospace.simulate.structure_crops import control_cell, crop_grid, expected_structure
from morphospace.simulate.structures import CellShape, CropGrid, blur, render_reference

CONVENTION = ("coupling per (structure, channel, swap) = mean over cells of 1 - e(true) / mean over partners of "
              "e(swapped); e = squared error between the cell's structure channel and the expected structure: model = "
              "the run's expected structure from the reference alone (expected_target: the target decoder at its "
              "null latent, or the expected-structure U-Net; reference_only estimator, normalised intensities, summed "
              "over the crop); truth = the simulator's expected image (the coupling truth's predictor, [0, 1] "
              "intensities, mean over the crop); swaps of the membrane or the nucleus geometry: whole, height only "
              "(own outline, partner's z half-height), xy only (partner's outline, own z half-height), size only "
              "(own centre, angle and z half-height, partner's xy semi-axes), noise only (own geometry, the swapped "
              "channel with another noise draw per partner); the mean and the median over cells; DMSO cells at "
              "indices the run's store does not hold")
SWAPS = ("whole", "height", "xy", "size", "noise")
REFERENCE = ("Membrane", "DNA")
"""The reference channels in the order :func:`observed_reference` images them."""


def swapped_shape(cell: CellShape, partner: CellShape, channel: str, swap: str) -> CellShape:
    """``cell`` with its membrane (``channel`` Membrane) or nucleus (DNA) taken from ``partner``:
    whole, only the half-height, only the xy outline, or only the xy size (the partner's semi-axes
    about the cell's own centre, angle and half-height); ``noise`` keeps the cell's own."""
    part = "membrane" if channel == "Membrane" else "nucleus"
    own, other = getattr(cell, part), getattr(partner, part)
    new = {"whole": other, "height": replace(own, height=other.height), "xy": replace(other, height=own.height),
           "size": replace(own, major=other.major, minor=other.minor), "noise": own}[swap]
    return replace(cell, **{part: new})


def observed_reference(cell: CellShape, grid: CropGrid, psf_sigma_px: float, noise: np.ndarray) -> np.ndarray:
    """Membrane and DNA (2, *grid.shape) of ``cell`` as the store images them, with the given noise draw."""
    channels = np.stack([blur(image, grid, psf_sigma_px) for image in render_reference(cell, grid)]) + noise
    return np.clip(channels, 0.0, 1.0).astype(np.float32)


def height_cue(run_dir: Path, n_cells: int, n_partners: int, seed: int = 0) -> list[dict]:
    """One row per (structure, channel, swap): model and truth couplings (see :data:`CONVENTION`)."""
    run = load_run(run_dir, "evaluate", "coupling")
    store = Path(run.config.data.store)
    config = load_config(SimulateConfig, store / "simulate_config.yaml")
    grid, settings = crop_grid(config), config.structures
    order = json.loads((run_dir / "normalization.json").read_text())["channels"]
    channels = list(run.module.reference_channels)
    rows = []
    for label, structure in enumerate(run.module.structures):
        cells = [control_cell(config, structure, settings.cells_per_condition + i) for i in range(n_cells)]
        rng = np.random.default_rng(seed)
        noise_rng = np.random.default_rng([seed, label])  # apart, so the other swaps draw as before
        couplings = {(c, s): ([], []) for c in channels for s in SWAPS}
        for i, (cell, image) in enumerate(cells):
            partners = rng.choice([j for j in range(n_cells) if j != i], n_partners, replace=False)
            noise = rng.normal(0.0, settings.noise_sd, (2, *grid.shape))
            shapes = [cell] + [swapped_shape(cell, cells[j][0], c, s) for c, s in couplings for j in partners]
            noises = [noise] + [_swap_noise(noise, REFERENCE.index(c), noise_rng, settings.noise_sd) if s == "noise"
                                else noise for c, s in couplings for _ in partners]
            model = _model_errors(run, shapes, image[2], label, grid, settings.psf_sigma_px, noises, order)
            truth = np.array([np.mean((image[2] - expected_structure(config, grid, structure, s)) ** 2)
                              for s in shapes])
            for k, key in enumerate(couplings):
                swapped = slice(1 + k * n_partners, 1 + (k + 1) * n_partners)
                for errors, out in zip((model, truth), couplings[key]):
                    out.append(1.0 - errors[0] / errors[swapped].mean())
        for (channel, swap), (model, truth) in couplings.items():
            rows.append({"structure": structure, "channel": channel, "swap": swap,
                         "model": float(np.mean(model)), "truth": float(np.mean(truth)),
                         "model_median": float(np.median(model)), "truth_median": float(np.median(truth)),
                         "n_cells": n_cells})
        print(f"{structure}: done", flush=True)
    return rows


def _swap_noise(noise: np.ndarray, channel: int, rng: np.random.Generator, noise_sd: float) -> np.ndarray:
    """``noise`` (2, *crop) with the draw of reference channel ``channel`` (0 membrane, 1 DNA) drawn again."""
    redrawn = noise.copy()
    redrawn[channel] = rng.normal(0.0, noise_sd, noise.shape[1:])
    return redrawn


def _model_errors(run, shapes: list[CellShape], structure_image: np.ndarray, label: int, grid: CropGrid,
                  psf_sigma_px: float, noises: list[np.ndarray], order: list[str]) -> np.ndarray:
    """(len(shapes),) squared error of the run's expected structure for each reference geometry and noise draw."""
    references = np.stack([observed_reference(s, grid, psf_sigma_px, n) for s, n in zip(shapes, noises)])
    named = {"Membrane": references[:, 0], "DNA": references[:, 1],
             "Structure": np.repeat(structure_image[None], len(shapes), 0)}
    images = run.data.normalizer.transform(torch.from_numpy(np.stack([named[c] for c in order], axis=1)))
    target = images[:, order.index("Structure")][:, None]
    reference = images[:, [order.index(c) for c in run.module.reference_channels]]
    expected = run.module.expected_target(reference, torch.full((len(shapes),), label)).float().cpu()
    return ((expected - target) ** 2).flatten(1).sum(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a 3D statistical_cell run on a simulated "
                        "structures store (default: the 3D run of results/statistical_cell.json)")
    parser.add_argument("--cells", type=int, default=24, help="DMSO cells per structure")
    parser.add_argument("--partners", type=int, default=2, help="swap partners per cell")
    parser.add_argument("--tag", default="", help="suffix of the result name")
    args = parser.parse_args()
    run_dir = args.run or stored_run("statistical_cell", "simulated_3d")
    rows = height_cue(run_dir, args.cells, args.partners)
    print_table(rows, f"coupling by what the swap changes ({run_dir.name})")
    payload = {"convention": CONVENTION, "run": str(run_dir.resolve()), "cells": args.cells,
               "partners": args.partners, "rows": rows}
    name = "statistical_cell_height_cue" + (f"_{args.tag}" if args.tag else "")
    print(f"written {write_result(name, payload)}")


if __name__ == "__main__":
    main()
