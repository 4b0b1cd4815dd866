"""What a Statistical Cell run expects of each simulated structure, against the simulator's own
expectation: where the reference-only coupling goes wrong.

For a run trained on a ``simulate --mode structures`` store (by default the 3D run of
``statistical_cell.py --parts 3d``, cached in its work folder), each held-out DMSO cell's expected
structure from its reference alone (``StatisticalCell.expected_target``, the run's normalised
intensities) is compared with the simulator's expected structure for that cell's geometry (the
predictor of the coupling truth, ``expected_control_structure``, raw intensities) by the Pearson
r over the crop's pixels: ``r_own`` with the cell's own geometry, ``r_other`` with the next
held-out cell's of the same structure. r is blind to the two intensity scales; ``r_own - r_other``
is how much of the cell's particular geometry the run's expectation holds (0: none, the
expectation could be any cell's); ``contrast`` is the range of the run's expectation over that of
the observed structure, both normalised as the run trained; ``expected_under_brightest`` is where
the run's expectation stands under each cell's brightest 1% of observed pixels, against
``expected_background`` and ``observed_brightest`` (a flat expectation reads the background there).
Writes ``results/statistical_cell_expected[_TAG].json`` and a figure of four cells per structure
(maximum over z in 3D): reference DNA, observed structure, the run's expectation, the simulator's.

    python benchmarks/statistical_cell_expected.py [--run RUN_DIR] [--cells 12] [--tag TAG]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from common import RESULTS, print_table, stored_run, write_result
from morphospace.config import load_config
from morphospace.explore.figures import save_figure
from morphospace.models.run import Run, load_run
from morphospace.simulate import SimulateConfig
from morphospace.simulate.structure_crops import expected_control_structure
from morphospace.workflows.cp2image_evaluation import held_out_rows
from morphospace.workflows.statistical_cell import prepared_cells

CONVENTION = ("held-out (test, else validation) DMSO cells of each structure, at most --cells; r_own: Pearson r over "
              "the crop's pixels between the run's expected structure from the cell's reference alone (normalised "
              "intensities) and the simulator's expected structure for the cell's geometry (mean of truth_samples "
              "draws, blurred, raw intensities); r_other: the same against the next such cell's simulator "
              "expectation; both averaged over the cells; specificity = r_own - r_other; contrast: (max - min) of "
              "the run's expectation over (max - min) of the observed structure, both normalised as the run "
              "trained, averaged over the cells; expected_background: the median of the run's expectation over the "
              "pixels whose observed intensity lies under -0.9 (normalised), expected_under_brightest: over each "
              "cell's brightest 1% of observed pixels, whose median observed intensity is observed_brightest")
SHOWN = 4
BACKGROUND = -0.9
"""Observed intensities (normalised, in [-1, 1]) under which a pixel counts as background."""


def _flat(image: np.ndarray) -> np.ndarray:
    """A 2D view: the image itself, or its maximum over z."""
    return image.max(0) if image.ndim == 3 else image


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _structure_cells(run: Run, config: SimulateConfig, rows: np.ndarray, structure: str,
                     cells: int) -> dict[str, Any]:
    """Images (reference DNA, observed, run's and simulator's expectations) and the r of the
    structure's DMSO cells among the held-out store ``rows``."""
    table = run.data.store.cells.iloc[rows]
    chosen = rows[((table["Metadata_Structure"] == structure) & (table["Metadata_Compound"] == "DMSO")).to_numpy()]
    chosen = chosen[:cells]
    target, reference, labels = prepared_cells(run, chosen)
    with torch.no_grad():
        expected = run.module.expected_target(reference, labels).float().cpu().numpy()[:, 0]
    ids = run.data.store.cells["Metadata_CellId"].to_numpy()[chosen]
    simulator = [expected_control_structure(config, structure, int(cell.rsplit("_", 1)[1]))[1] for cell in ids]
    own = [_pearson(e, s) for e, s in zip(expected, simulator)]
    other = [_pearson(e, simulator[(k + 1) % len(chosen)]) for k, e in enumerate(expected)]
    dna = run.module.reference_channels.index("DNA")
    observed = target[:, 0].numpy()
    contrast = [np.ptp(e) / np.ptp(t) for e, t in zip(expected, observed)]
    brightest = observed > np.quantile(observed, 0.99, axis=tuple(range(1, observed.ndim)), keepdims=True)
    return {"n_cells": len(chosen), "r_own": float(np.mean(own)), "r_other": float(np.mean(other)),
            "specificity": float(np.mean(own) - np.mean(other)), "contrast": float(np.mean(contrast)),
            "expected_background": float(np.median(expected[observed < BACKGROUND])),
            "expected_under_brightest": float(np.median(expected[brightest])),
            "observed_brightest": float(np.median(observed[brightest])),
            "images": [[_flat(reference[k, dna].numpy()), _flat(target[k, 0].numpy()), _flat(expected[k]),
                        _flat(simulator[k])] for k in range(min(SHOWN, len(chosen)))]}


def _figure(blocks: dict[str, dict[str, Any]], title: str) -> Figure:
    names = ("DNA", "observed", "run expects", "simulator expects")
    fig = Figure(figsize=(SHOWN * len(names), 1.25 * len(blocks) + 0.4))
    axes = fig.subplots(len(blocks), SHOWN * len(names), squeeze=False)
    for row, (structure, block) in enumerate(blocks.items()):
        for k, images in enumerate(block["images"]):
            for j, (name, image) in enumerate(zip(names, images)):
                ax = axes[row, k * len(names) + j]
                ax.imshow(image, cmap="gray")
                ax.set_title(f"{structure[:10]}: {name}" if j == 0 else name, fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a statistical_cell run on a structures store "
                                                               "(default: the 3D run of results/statistical_cell.json)")
    parser.add_argument("--cells", type=int, default=12, help="held-out DMSO cells per structure at most")
    parser.add_argument("--tag", help="write results/statistical_cell_expected_TAG.json and .png instead")
    args = parser.parse_args()
    args.run = args.run or stored_run("statistical_cell", "simulated_3d")
    run = load_run(args.run, "evaluate", "coupling")
    config = load_config(SimulateConfig, run.data.store.path / "simulate_config.yaml")
    rows, _ = held_out_rows(run.data)
    blocks = {structure: _structure_cells(run, config, rows, structure, args.cells)
              for structure in run.module.structures}
    print_table([{"structure": s, **{k: v for k, v in b.items() if k != "images"}} for s, b in blocks.items()],
                "run's expected structure against the simulator's (Pearson r over pixels)")
    name = "statistical_cell_expected" + (f"_{args.tag}" if args.tag else "")
    title = f"{args.run.name}: held-out DMSO cells (max over z in 3D; each panel scaled to its own range)"
    save_figure(_figure(blocks, title), RESULTS / f"{name}.png")
    write_result(name, {"convention": CONVENTION, "run": str(args.run.resolve()),
                        "structures": {s: {k: v for k, v in b.items() if k != "images"} for s, b in blocks.items()}})


if __name__ == "__main__":
    main()
