"""Fit the simulator's phenotype model of every MoA to real BBBC021 cells (one compound per MoA).

For every knob of the phenotype (``morphospace.simulate.calibrate.KNOB_BOUNDS``), DMSO-like cells
are rendered with that knob stepped by 40% of its range, with the same random streams as the
baseline cells, cut into 68 px nucleus-centred crops and measured (CellProfiler fast set): the
mean shift per unit knob, in SDs of the baseline cells, is that knob's effect. The target of an
MoA is the mean shift of its calibration compound's real crops (the compound with the most of the
1,000 all-MoA crops, ``simulator_realism.CALIBRATION_COMPOUNDS``; stain-normalised per plate and
standardised on that file's DMSO crops, as in ``simulator_realism.py``), divided by the mean
phenotype strength of the simulated screen's doses of that MoA, so that the full-strength model is
fitted. The knob values come from a two-stage fit (``fit_model``): cell and nucleus size and DNA,
actin and tubulin brightness set from the real median ratio (calibration compound / DMSO) of the
feature that measures each (``anchored_knobs``); then, by bounded least squares on the rest of the
shift, the MoA's mechanism knobs (``phenotypes.MECHANISMS``: each kept on the side of DMSO the
mechanism gives it, at least half way to the mechanism's value) and the mitotic fraction, with a small
ridge towards DMSO that was fixed before any held-out score was seen. The knob crops and their
features are kept under ``benchmarks/work/simulator_realism/`` by the simulator's settings: delete
them after changing the renderer's code.

Writes ``results/simulator_calibration.json``: per MoA the knobs that moved (more than 2% of
their range) and the fit's cosine to its target in the linear model. The simulator's
``MOA_EFFECTS`` hold these values; ``simulator_realism.py`` then scores them on the held-out
compounds.

    python benchmarks/calibrate_simulator.py [--data ../shared/data] [--fields 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from common import data_dir, print_table, write_result
from simulator_realism import (CALIBRATION_COMPOUNDS, CONTROL, CROP, WORK, ljosa_wells, measured, moa_shifts,
                               real_cells, settings_key, simulated_config, stain_brightness)
from morphospace.evaluate.realism import control_standardised, group_shifts, shared_features
from morphospace.simulate.calibrate import ANCHOR_FEATURES, KNOB_BOUNDS, anchored_knobs, fit_model, knob_steps
from morphospace.simulate.cell_crops import phenotype_crops
from morphospace.simulate.phenotypes import DMSO_PHENOTYPE, MOAS, treatments_for

BASELINE = "baseline"


def knob_cells(fields: int, workers: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Features of the baseline cells and of the cells of every knob step (``Metadata_MoA``: the knob),
    with the steps; crops and features are kept under the work folder by the simulator's settings."""
    config = simulated_config(1, seed)
    baseline = dataclasses.replace(DMSO_PHENOTYPE, mitotic_fraction=config.cells.mitotic_fraction)
    steps = knob_steps(baseline)
    npz = WORK / f"knobs_{settings_key(config.model_dump_json(), fields, sorted(KNOB_BOUNDS.items()))}.npz"
    if not npz.is_file():
        parts = [phenotype_crops(config, baseline, BASELINE, fields, CROP, seed)]
        parts += [phenotype_crops(config, phenotype, knob, fields, CROP, seed) for knob, (phenotype, _) in steps.items()]
        WORK.mkdir(parents=True, exist_ok=True)
        np.savez(npz, images=np.concatenate([p[0] for p in parts]),
                 moa=np.concatenate([p[1]["Metadata_MoA"].to_numpy().astype(str) for p in parts]))
    return measured(npz, npz.stem, workers, None)[0], steps


def knob_effects(cells: pd.DataFrame, steps: dict) -> pd.DataFrame:
    """Features x knobs: mean shift per unit of each knob, in SDs of the baseline cells."""
    features = shared_features(cells)
    standard = control_standardised(cells, features, cells["Metadata_MoA"] == BASELINE)
    shifts = group_shifts(standard, cells["Metadata_MoA"], exclude=[BASELINE])
    return pd.DataFrame({knob: shifts.loc[knob] / step for knob, (_, step) in steps.items()})


def anchor_ratios(cells: pd.DataFrame, moa: str) -> dict[str, float]:
    """Median of each anchor feature over the MoA's cells divided by its median over DMSO cells."""
    medians = cells.groupby("Metadata_MoA")[list(ANCHOR_FEATURES.values())].median()
    return {knob: float(medians.loc[moa, f] / medians.loc[CONTROL, f]) for knob, f in ANCHOR_FEATURES.items()}


def mean_strength(moa: str) -> float:
    """Mean phenotype strength over the simulated screen's compounds and doses of ``moa``."""
    return float(np.mean([t.strength for t in treatments_for([moa], 3, 3)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fields", type=int, default=6, help="512 px fields rendered per knob")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ridge", type=float, default=0.1)
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    start = time.perf_counter()
    _, real, _ = real_cells(bbbc021, args.workers, stain_brightness(ljosa_wells(bbbc021)))
    knobs, steps = knob_cells(args.fields, args.workers, args.seed)
    effects = knob_effects(knobs, steps)
    features = [f for f in shared_features(real) if f in effects.index]
    calibration = real[real["Metadata_Compound"].isin(CALIBRATION_COMPOUNDS.values()) | (real["Metadata_MoA"] == CONTROL)]
    targets = moa_shifts(calibration, features, by=None)
    models, rows = {}, []
    for moa in MOAS:
        target = targets.loc[moa] / mean_strength(moa)
        anchors = anchored_knobs(anchor_ratios(calibration, moa), mean_strength(moa))
        fitted = fit_model(effects.loc[features], target, moa, anchors, ridge=args.ridge)
        moved = {k: round(v, 3) for k, v in fitted.items()
                 if abs(v - getattr(DMSO_PHENOTYPE, k)) > 0.02 * (KNOB_BOUNDS[k][1] - KNOB_BOUNDS[k][0])}
        predicted = effects.loc[features, list(fitted)].to_numpy() @ np.array(
            [fitted[k] - getattr(DMSO_PHENOTYPE, k) for k in fitted])
        cosine = float(predicted @ target.to_numpy() / (np.linalg.norm(predicted) * np.linalg.norm(target) + 1e-12))
        models[moa] = moved
        rows.append({"moa": moa, "compound": CALIBRATION_COMPOUNDS[moa], "linear_fit_cosine": cosine,
                     "target_magnitude": float(np.linalg.norm(target)), "knobs": ", ".join(f"{k}={v}" for k, v in moved.items())})
    print_table(rows, "fitted phenotype models (full strength)")
    path = write_result("simulator_calibration", {
        "convention": __doc__.split("Writes")[0].strip(),
        "fields_per_knob": args.fields, "cells_rendered": len(knobs), "ridge": args.ridge, "features": len(features),
        "seconds": time.perf_counter() - start, "models": models, "rows": rows,
        "effects": {k: effects[k].round(4).to_dict() for k in effects.columns},
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
