"""What a swapped reference channel moves in a trained 3D Statistical Cell, and which cell geometry it follows.

Written for the cortex's false tie to the DNA in 3D (the truth says the cortex ignores the DNA). For
the held-out cells of one structure of a run of the benchmark's simulated 3D part, each cell's
reference-only coupling to one channel is scored against ``--partners`` other cells of the same
structure (``draw_swap_partners``; the channel alone swapped, as ``evaluate coupling`` does), and:

- ``per_cell_correlation``: Pearson r over (cell, partner) pairs between the cell's coupling and
  |partner - own| of each geometry value of the store's truth (log nucleus area, log nucleus
  half-height, log cell half-height, log cell minor and major semi-axes);
- ``change_by_radius_px`` / ``change_by_slice``: the mean |expected structure with the swap -
  without| (image units, [-1, 1]) by distance from the crop centre in xy (rings of 4 px, over all
  slices) and by z slice (over xy);
- ``top``: over a disc of 6 px about the crop centre, the intensity-weighted mean distance of the
  expected structure from the middle slice (slices; the cortex there is the cell's top and bottom),
  with the true reference and its shift when the partner's nucleus is larger or smaller
  (|log area difference| > 0.3);
- ``geometry_correlation``: over the same cells, Pearson r of the cell's half-height with the log
  nucleus area and with the nucleus's half-height, and of the log cell minor semi-axis with the
  log nucleus area.

Writes ``results/statistical_cell_swap_cue_<tag>.json`` and prints a table.

    python benchmarks/statistical_cell_swap_cue.py RUN_DIR STORE_DIR --tag TAG [--structure Cortex]
        [--channel DNA] [--partners 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import print_table, write_result
from morphospace.evaluate.statistical_cell import draw_swap_partners
from morphospace.models.run import load_run
from morphospace.models.vae import squared_error_per_cell
from morphospace.workflows.cp2image_evaluation import held_out_rows
from morphospace.workflows.statistical_cell import prepared_cells

CONVENTION = ("held-out cells of one structure of the run; reference-only coupling per (cell, partner) = 1 - "
              "error(true reference) / error(that channel swapped for the partner's), error = squared error summed "
              "over voxels between the cell's structure and the decoder's expected structure (null latent); partners "
              "drawn uniformly among the other held-out cells of the structure; geometry from the store's "
              "truth/cells.parquet (px); change: mean |expected with swap - expected|, image units in [-1, 1]")
GEOMETRY = {"log_nucleus_area": lambda t: np.log(t.nucleus_major_px * t.nucleus_minor_px),
            "log_nucleus_height": lambda t: np.log(t.nucleus_height_px),
            "log_cell_height": lambda t: np.log(t.cell_height_px),
            "log_cell_minor": lambda t: np.log(t.cell_minor_px),
            "log_cell_major": lambda t: np.log(t.cell_major_px)}
RING_PX = 4
TOP_DISC_PX = 6.0
LARGER = 0.3
"""|log nucleus area difference| beyond which a partner's nucleus counts as larger or smaller."""


def _rings(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) distance of each pixel from the crop centre, px."""
    yy, xx = np.indices(shape)
    return np.hypot(yy - (shape[0] - 1) / 2, xx - (shape[1] - 1) / 2)


def _top_distance(expected: torch.Tensor, disc: torch.Tensor) -> np.ndarray:
    """(N,) intensity-weighted |slice - middle| of the expected structure (N, 1, D, H, W) over the
    ``disc`` (H, W), above each cell's dimmest slice there."""
    profile = expected[:, 0][:, :, disc].mean(-1).numpy()
    weight = np.clip(profile - profile.min(1, keepdims=True), 0, None)
    depth = profile.shape[1]
    distance = np.abs(np.arange(depth) - (depth - 1) / 2)
    return (weight * distance).sum(1) / weight.sum(1)


def swap_cue(run_dir: Path, store_dir: Path, structure: str, channel: str, partners: int, seed: int = 0) -> dict:
    run = load_run(run_dir)
    module = run.module
    rows, split = held_out_rows(run.data)
    target, reference, labels = prepared_cells(run, rows)
    keep = np.flatnonzero(np.asarray(module.structures)[labels.numpy()] == structure)
    target, reference, labels = target[keep], reference[keep], labels[keep]
    truth = pd.read_parquet(store_dir / "truth" / "cells.parquet").iloc[rows[keep]].reset_index(drop=True)
    geometry = {name: value(truth).to_numpy() for name, value in GEOMETRY.items()}
    k = module.reference_channels.index(channel)
    rings = _rings(tuple(target.shape[-2:]))
    disc = torch.from_numpy(rings < TOP_DISC_PX)
    partner_rows = draw_swap_partners(len(keep), partners, seed=seed)
    couplings, gaps, shifts = [], {name: [] for name in geometry}, []
    change_sum = torch.zeros(target.shape[2:])
    with torch.no_grad():
        expected = module.expected_target(reference, labels).float()
        true_error = squared_error_per_cell(target, expected).numpy()
        top = _top_distance(expected, disc)
        for order in partner_rows.T:
            swapped = reference.clone()
            swapped[:, k] = reference[order, k]
            moved = module.expected_target(swapped, labels).float()
            couplings.append(1 - true_error / squared_error_per_cell(target, moved).numpy())
            for name, value in geometry.items():
                gaps[name].append(np.abs(value[order] - value))
            shifts.append(np.stack([_top_distance(moved, disc) - top,
                                    geometry["log_nucleus_area"][order] - geometry["log_nucleus_area"]], 1))
            change_sum += (moved - expected).abs().mean((0, 1))
    coupling = np.concatenate(couplings)
    change = (change_sum / partners).numpy()
    shift = np.concatenate(shifts)
    rings_px = [(lo, lo + RING_PX) for lo in range(0, int(rings.max()) + 1, RING_PX)]
    return {
        "structure": structure, "channel": channel, "split": split, "cells": int(len(keep)), "partners": partners,
        "coupling": float(coupling.mean()),
        "per_cell_correlation": {name: float(np.corrcoef(coupling, np.concatenate(gap))[0, 1])
                                 for name, gap in gaps.items()},
        "change_by_radius_px": [{"from": lo, "to": hi, "change": float(change[:, (rings >= lo) & (rings < hi)].mean())}
                                for lo, hi in rings_px if ((rings >= lo) & (rings < hi)).any()],
        "change_by_slice": [float(v) for v in change.mean((1, 2))],
        "top": {"slices_from_middle": float(top.mean()),
                "shift_partner_nucleus_larger": float(shift[shift[:, 1] > LARGER, 0].mean()),
                "pairs_larger": int((shift[:, 1] > LARGER).sum()),
                "shift_partner_nucleus_smaller": float(shift[shift[:, 1] < -LARGER, 0].mean()),
                "pairs_smaller": int((shift[:, 1] < -LARGER).sum())},
        "geometry_correlation": {
            "cell_height_vs_log_nucleus_area": float(np.corrcoef(truth.cell_height_px,
                                                                 geometry["log_nucleus_area"])[0, 1]),
            "cell_height_vs_nucleus_height": float(np.corrcoef(truth.cell_height_px, truth.nucleus_height_px)[0, 1]),
            "log_cell_minor_vs_log_nucleus_area": float(np.corrcoef(geometry["log_cell_minor"],
                                                                    geometry["log_nucleus_area"])[0, 1])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("store_dir", type=Path)
    parser.add_argument("--tag", required=True, help="result name: statistical_cell_swap_cue_<tag>")
    parser.add_argument("--structure", default="Cortex")
    parser.add_argument("--channel", default="DNA")
    parser.add_argument("--partners", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = swap_cue(args.run_dir, args.store_dir, args.structure, args.channel, args.partners)
    print_table([{"value": name, "r": round(r, 3)} for name, r in result["per_cell_correlation"].items()],
                f"{args.structure} {args.channel}: coupling {result['coupling']:.4f}; per-cell r with |difference|")
    print_table(result["change_by_radius_px"], "mean |change| of the expected structure by xy distance (px)")
    print_table([result["top"]], "top and bottom over the centre disc (slices from the middle)")
    print_table([result["geometry_correlation"]], "geometry over the same cells")
    write_result(f"statistical_cell_swap_cue_{args.tag}", {
        "convention": CONVENTION, "run": str(args.run_dir.name), "store": str(args.store_dir.name), **result})


if __name__ == "__main__":
    main()
