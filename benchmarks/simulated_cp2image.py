"""CP2Image on a small simulated screen, scored against the simulator's exact truth.

Steps: ``simulate`` a screen (the built-in defaults of ``morphospace simulate`` scaled down: by
default 1 plate of 4 DMSO wells and the 12 MoAs x 1 compound x 2 doses, 2 fields of 256 px per well,
about 14 cells per field, so 56 fields and about 780 cells), ``prepare`` it, measure the crops with
cp_measure (fast set), train the built-in config ``cp2image_simulated`` (20% of the cells held out
at random as the test split) for ``--epochs`` epochs, feature matching starting after 10 steps per
layer, and ``evaluate generation --truth``: on up to ``--eval-cells`` held-out cells, Pearson and
Spearman r between the simulator's truth (nucleus area, DNA level, cell area) and the feature
re-measured on the image generated from the cell's features, beside the same feature of the real
cell (the reference). Everything runs on 2 workers / 2 CPU cores; the whole script takes about 9
minutes at the defaults (about 2 minutes with ``--concentrations 1 --fields-per-well 1 --epochs 1
--eval-cells 20``, a check of the script, not a result). Work files go to
``benchmarks/work/simulated_cp2image/`` (rebuilt on every run).

    python benchmarks/simulated_cp2image.py [--fields-per-well 2] [--epochs 20] [--eval-cells 150]
"""

from __future__ import annotations

import argparse
import shutil

from common import ROOT, print_table, timed, write_result
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.models.registry import load_run_config
from morphospace.simulate import SimulateConfig, simulate_screen
from morphospace.workflows.evaluation import GenerationConfig, run_generation_evaluation
from morphospace.workflows.prepare import PrepareConfig, prepare
from morphospace.workflows.profiling import extract_features
from morphospace.workflows.train import train

WORKERS = 2
FEATURE_MATCHING = (10, 20)
"""Delay and ramp (generator steps) of the feature-matching terms: about 10 steps make an epoch of
this screen, so the config's 150 / 300 (sized for BBBC021) would leave the pixel loss alone."""
HEADLINE = {  # result key -> (feature, measured set)
    "truth_r_nucleus_area_generated": ("Nuclei_AreaShape_Area", "generated"),
    "truth_r_nucleus_area_real": ("Nuclei_AreaShape_Area", "real"),
    "truth_r_dna_generated": ("Nuclei_Intensity_MeanIntensity_DNA", "generated"),
    "truth_r_dna_real": ("Nuclei_Intensity_MeanIntensity_DNA", "real"),
}


def _screen_config(args: argparse.Namespace) -> SimulateConfig:
    return SimulateConfig(plates=args.plates, compounds_per_moa=1, concentrations=args.concentrations,
                          dmso_wells_per_plate=4, fields_per_well=args.fields_per_well, seed=0)


def _pearson(block: dict, feature: str, measured: str) -> float | None:
    pair = block["pairs"].get(feature)
    return pair[measured]["pearson_r"] if pair else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plates", type=int, default=1)
    parser.add_argument("--concentrations", type=int, default=2)
    parser.add_argument("--fields-per-well", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of cp2image_simulated")
    parser.add_argument("--eval-cells", type=int, default=150, help="held-out cells re-measured (and FID/KID cells)")
    args = parser.parse_args()
    work = ROOT / "work" / "simulated_cp2image"
    shutil.rmtree(work, ignore_errors=True)
    seconds: dict[str, float] = {}
    screen = timed("simulate", seconds, simulate_screen, _screen_config(args), work / "screen", workers=WORKERS,
                    progress=False)
    store, features = work / "store", work / "cells.parquet"
    timed("prepare", seconds, prepare, screen.manifest_path, store, PrepareConfig(), workers=WORKERS, progress=False)
    timed("features", seconds, extract_features, store, features, FeaturesConfig(feature_set="fast"),
           workers=WORKERS, progress=False)
    config = load_run_config("cp2image_simulated", [
        f"data.store={store}", f"data.conditions.features.table={features}", f"runs_dir={work / 'runs'}",
        f"trainer.max_epochs={args.epochs}", f"model.feature_matching_delay_steps={FEATURE_MATCHING[0]}",
        f"model.feature_matching_ramp_steps={FEATURE_MATCHING[1]}"])
    summary = timed("train", seconds, train, config, progress=False)
    evaluation = timed("evaluate", seconds, run_generation_evaluation, config.run_dir, config=GenerationConfig(
        n=max(10, args.eval_cells), feature_cells=max(10, args.eval_cells), extractor_epochs=3,
        extractor=str(work / "extractor.pt"), truth=str(screen.truth_dir)))
    block = evaluation["simulator_truth"]
    headline = {key: _pearson(block, feature, measured) for key, (feature, measured) in HEADLINE.items()}
    rows = [{"feature": feature, "truth": pair["truth"], "n": pair["generated"]["n"],
             "pearson_generated": pair["generated"]["pearson_r"], "pearson_real": pair["real"]["pearson_r"],
             "spearman_generated": pair["generated"]["spearman_r"], "spearman_real": pair["real"]["spearman_r"]}
            for feature, pair in block["pairs"].items()]
    print_table(rows, f"simulator truth vs features of {block['n_one_nucleus']} held-out one-nucleus cells "
                      f"(of {block['n_cells']}; generated = re-measured on the generated image, real = the real cell)")
    print_table([{"step": step, "seconds": value} for step, value in seconds.items()], "time per step")
    path = write_result("simulated_cp2image", {
        "convention": ("Pearson r over held-out one-nucleus cells between the simulator's exact truth and a "
                       "feature: nucleus area (px) vs Nuclei_AreaShape_Area, DNA level (relative DNA brightness "
                       "rendered) vs Nuclei_Intensity_MeanIntensity_DNA; _generated: re-measured on the image "
                       "generated from the cell's features, _real: the feature table's value of the real cell "
                       "(the reference). simulator_truth: the full block of generation.json."),
        **headline,
        "screen": {"plates": args.plates, "compounds_per_moa": 1, "concentrations": args.concentrations,
                   "dmso_wells_per_plate": 4, "fields_per_well": args.fields_per_well, "field_size": 256,
                   "fields": screen.n_fields, "truth_cells": screen.n_cells},
        "training": {"config": "cp2image_simulated", "epochs": summary.epochs,
                     "feature_matching_delay_ramp_steps": list(FEATURE_MATCHING),
                     "train_images_per_s": summary.samples_per_second, "workers": WORKERS},
        "feature_correlation": {k: evaluation["feature_correlation"][k]
                                for k in ("share_r_above_0_5", "median_r", "n_cells")},
        "simulator_truth": block, "seconds": seconds,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
