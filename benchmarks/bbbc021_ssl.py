"""Self-supervised (DINO, SimCLR) and weakly supervised (WS-DINO, treatment labels) embedders on the
real BBBC021 crops and on the simulated screen, scored in the same tables as the generative models
and the baselines.

Real crops. Each model trains on all 8,774 crops (``<name>_bbbc021`` config) for a fixed number of
epochs (``--epochs``; the defaults take at most about 30 minutes each alone on 2 cores, the wall time is
reported), embeds the 1,000 all-MoA crops and is scored by the protocol of
``bbbc021_generative.py``: ``nsc`` / ``nscb`` = mean embedding per treatment, cosine 1-NN, same
compound (NSCB: also same batch) excluded; ``nsc_profiles`` / ``nscb_profiles`` = the default profile
recipe with batch-wise DMSO centring. 95% intervals: 2,000 bootstrap draws of the compounds (each
drawn compound brings all its treatments' hits), because the treatments hold about 5 cells each.
Baselines on the same crops: pixel PCA and CellProfiler fast-set features (z-scored for the mean
embedding, as their raw units make cosines meaningless); the generative models' rows are read from ``results/bbbc021_generative.json`` (measured by that benchmark).

Phenotype probes. Linear probe and 10-NN accuracy of the MoA of each of the 1,000 all-MoA crops (13
labels with DMSO), 5-fold stratified, and again with folds that keep each compound on one side
(``evaluate probe``); the same on the simulated screen's cells.

Simulated screen. The demo's screen (2 plates, 12 MoAs x 2 compounds x 2 concentrations, DMSO),
prepared and measured as the demo does; DINO and WS-DINO with the same configs train on its crops
for ``--simulated-epochs``; NSC of their well profiles against that of CellProfiler profiles
(the demo's 85%), by the demo's recipe.

Speed: training images/s through morphospace (data loading included) against a bare loop of the
same module's loss and optimiser steps on in-memory batches, in the same process.

    python benchmarks/bbbc021_ssl.py [--data ../shared/data] [--epochs dino=18,ws_dino=18,simclr=30]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bbbc021_generative import _pixel_pca, _stores
from common import ROOT, data_dir, print_table, write_result
from morphospace.config import resolve_config
from morphospace.evaluate.moa import evaluate_moa, treatment_profiles
from morphospace.evaluate.probe import probe_accuracy
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.explore.cell_map import standardised_features
from morphospace.features.profiles import ProfilesConfig
from morphospace.models.registry import load_run_config
from morphospace.models.run import load_run
from morphospace.simulate import simulate_screen
from morphospace.workflows.demo import DemoConfig
from morphospace.workflows.evaluation import run_moa_evaluation
from morphospace.workflows.latent import embed_store
from morphospace.workflows.prepare import prepare
from morphospace.workflows.profiling import extract_features, make_profiles
from morphospace.workflows.train import trained

EPOCHS = "dino=18,ws_dino=18,simclr=30"
BATCH_PROFILES = {"normalize": {"by": "Metadata_Batch"}}
MOA = "Metadata_MoA"
COMPOUND = "Metadata_Compound"
PUBLISHED = {"DeepProfiler (weakly supervised, Moshkov et al. 2024)": {"nsc": 0.971, "nscb": 0.870},
             "WS-DINO (Cross-Zamirski et al. 2022)": {"nsc": 0.98, "nscb": 0.96}}


def bootstrap_interval(predictions: pd.DataFrame, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the accuracy when the compounds are drawn with replacement."""
    hits = predictions.groupby(COMPOUND)["correct"].agg(["sum", "count"])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(hits), size=(draws, len(hits)))
    accuracies = hits["sum"].to_numpy()[picks].sum(axis=1) / hits["count"].to_numpy()[picks].sum(axis=1)
    low, high = np.percentile(accuracies, [2.5, 97.5])
    return float(low), float(high)


def scores_with_intervals(table: pd.DataFrame) -> dict[str, float]:
    """``nsc``, ``nscb`` (mean embedding per treatment) and the profile-recipe scores, with intervals."""
    out: dict[str, float] = {}
    profiled = make_profiles(table, config=resolve_config(ProfilesConfig, BATCH_PROFILES))
    for suffix, profiles in (("", treatment_profiles(table, operation="mean")),
                             ("_profiles", treatment_profiles(profiled))):
        results = evaluate_moa(profiles)
        for key in ("nsc", "nscb"):
            out[f"{key}{suffix}"] = results[key].accuracy
            out[f"{key}{suffix}_ci"] = list(bootstrap_interval(results[key].predictions))
    return out


def standardised(table: pd.DataFrame) -> pd.DataFrame:
    """The table's metadata and its z-scored features, values missing in at most 5% of the rows
    filled with the feature's median, features missing more left out."""
    x, _ = standardised_features(table)
    metadata = table[[c for c in table.columns if str(c).startswith("Metadata_")]].reset_index(drop=True)
    return pd.concat([metadata, pd.DataFrame(x).add_prefix("f")], axis=1)


def probes(table: pd.DataFrame) -> dict[str, float]:
    """Linear-probe and 10-NN MoA accuracy of per-cell features: 5 stratified folds of cells, and
    5 folds keeping compounds apart (DMSO is one compound, so it falls in one fold there). Features
    missing in at most 5% of the cells (CellProfiler's cytoplasm of a few cells) are filled with the
    median, as the maps do; features missing more are left out."""
    table = standardised(table)
    rows = probe_accuracy(table, MOA, folds=5, k=10)
    grouped = probe_accuracy(table, MOA, folds=5, k=10, group_column=COMPOUND)
    return {"probe_linear": rows.linear_accuracy, "probe_knn": rows.knn_accuracy,
            "probe_linear_by_compound": grouped.linear_accuracy, "probe_knn_by_compound": grouped.knn_accuracy,
            "probe_chance": rows.chance}


def _bare_images_per_second(run_dir: Path, batches: int = 16, batch_size: int = 64) -> float:
    """Images/s of the run's module stepping its own loss and optimiser on in-memory batches of its
    training data (after one warm-up step), at the precision it trained with."""
    run = load_run(run_dir, "embed")
    module = run.module
    module.train()
    dataset = run.data.dataset_for(run.data.store, np.arange(batches * batch_size), conditions=[
        *run.family.batch_requirements(run.config.model)])
    images = dataset.load(np.arange(batches * batch_size)).float()
    label = run.config.model.label
    labels = torch.randint(len(module.classes), (len(images),)) if label else None  # the loss's cost, not its value
    optimiser = module.configure_optimizers()
    bf16 = "bf16" in str(run.config.trainer.precision) or run.config.trainer.precision == "auto"

    def step(index: int) -> None:
        part = slice(index * batch_size, (index + 1) * batch_size)
        batch = {"image": images[part], **({label: labels[part]} if label else {})}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.losses(batch)["loss"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        module.on_train_batch_end(None, None, index)

    step(0)
    start = time.perf_counter()
    for index in range(1, batches):
        step(index)
    return (batches - 1) * batch_size / (time.perf_counter() - start)


def _train(name: str, store: Path, runs: Path, epochs: int, minutes: float | None, suffix: str = "bbbc021"):
    overrides = [f"name={name}_{suffix}", f"data.store={store}", f"runs_dir={runs}", f"trainer.max_epochs={epochs}"]
    config = load_run_config(f"{name}_bbbc021", overrides + ([f"trainer.max_minutes={minutes}"] if minutes else []))
    start = time.perf_counter()
    summary = trained(config, progress=False)
    return config.run_dir, summary, time.perf_counter() - start


def _real_model(name: str, epochs: int, training: Path, allmoa: Path, runs: Path, minutes: float | None) -> dict:
    run_dir, summary, seconds = _train(name, training, runs, epochs, minutes)
    embeddings = run_dir / "embeddings_allmoa.parquet"
    embed_store(run_dir, allmoa, embeddings, overwrite=True, progress=False)
    bare = _bare_images_per_second(run_dir)
    table = pd.read_parquet(embeddings)
    return {"model": name, "epochs": summary.epochs, "train_minutes": summary.seconds_this_session / 60,
            "wall_minutes_this_call": seconds / 60, "train_images_per_s": summary.samples_per_second,
            "bare_images_per_s": bare, "speed_vs_bare": summary.samples_per_second / bare,
            **scores_with_intervals(table), **probes(table)}


def _real_baselines(training: Path, allmoa: Path, work: Path) -> list[dict]:
    features = work / "cellprofiler_allmoa.parquet"
    if not features.is_file():
        extract_features(allmoa, features, FeaturesConfig(feature_set="fast"), workers=2, progress=False)
    pixels, cellprofiler = _pixel_pca(training, allmoa), pd.read_parquet(features)
    by_profiles = {k: v for k, v in scores_with_intervals(cellprofiler).items() if "_profiles" in k}
    return [{"model": "pixel PCA (100)", **scores_with_intervals(pixels), **probes(pixels)},
            {"model": "CellProfiler (fast set)", **scores_with_intervals(standardised(cellprofiler)), **by_profiles,
             **probes(cellprofiler)}]


def _generative_rows() -> list[dict]:
    path = ROOT / "results" / "bbbc021_generative.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    return [{"model": row["model"], "nsc": row["nsc_cytogan"], "nscb": row["nscb_cytogan"],
             "nsc_profiles": row["nsc_profiles"], "nscb_profiles": row["nscb_profiles"],
             "source": "results/bbbc021_generative.json"} for row in rows]


def _simulated(names: list[str], epochs: int, work: Path, minutes: float | None) -> dict:
    demo = DemoConfig()
    screen, store, features = work / "screen", work / "store", work / "cells.parquet"
    if not (screen / "manifest.csv").is_file():
        simulate_screen(demo.simulate, screen, workers=2, progress=False)
    if not (store / "store.json").is_file():
        prepare(screen / "manifest.csv", store, demo.prepare, workers=2, progress=False)
    if not features.is_file():
        extract_features(store, features, demo.features, workers=2, progress=False)

    def nsc(cells: pd.DataFrame) -> float:
        return run_moa_evaluation(make_profiles(cells, config=demo.profiles), None, demo.moa)["nsc"]["accuracy"]

    cellprofiler = pd.read_parquet(features)
    rows = [{"model": "CellProfiler (demo features)", "nsc": nsc(cellprofiler), **probes(cellprofiler)}]
    for name in names:
        run_dir, summary, _ = _train(name, store, work / "runs", epochs, minutes, suffix="simulated")
        embeddings = run_dir / "embeddings.parquet"
        embed_store(run_dir, out=embeddings, overwrite=True, progress=False)
        table = pd.read_parquet(embeddings)
        rows.append({"model": name, "epochs": summary.epochs, "train_minutes": summary.seconds_this_session / 60,
                     "nsc": nsc(table), **probes(table)})
    return {"cells": len(cellprofiler), "treatments": int(cellprofiler.groupby([COMPOUND, "Metadata_Concentration"])
                                                          .ngroups) - 1, "rows": rows}


def _epochs(text: str) -> dict[str, int]:
    pairs = [item.split("=") for item in text.split(",") if item]
    return {name: int(value) for name, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--epochs", default=EPOCHS, help="MODEL=EPOCHS,... on the real crops (the models run)")
    parser.add_argument("--simulated-epochs", type=int, default=20, help="epochs on the simulated screen (0: skip)")
    parser.add_argument("--simulated-models", default="dino,ws_dino")
    parser.add_argument("--minutes", type=float, help="optional wall-clock limit per model (numbers then depend on load)")
    args = parser.parse_args()
    work = ROOT / "work"
    epochs = _epochs(args.epochs)
    simulated = (_simulated([m for m in args.simulated_models.split(",") if m], args.simulated_epochs,
                            work / "ssl_simulated", args.minutes) if args.simulated_epochs else None)
    training, allmoa = _stores(data_dir(args.data) / "bbbc021", work)
    rows = [_real_model(name, n, training, allmoa, work / "ssl_runs", args.minutes) for name, n in epochs.items()]
    baselines = _real_baselines(training, allmoa, work)
    generative = _generative_rows()
    shown = ["model", "epochs", "nsc", "nsc_ci", "nscb", "nsc_profiles", "nscb_profiles", "probe_linear",
             "probe_knn", "probe_linear_by_compound", "probe_knn_by_compound"]
    print_table([{k: r.get(k) for k in shown} for r in rows + baselines + generative],
                "BBBC021, 1,000 all-MoA crops (103 treatments); probes: MoA of each crop, 5 folds")
    print("speed vs bare loop: " + ", ".join(f"{r['model']} {r['speed_vs_bare']:.2f}" for r in rows))
    if simulated:
        print_table(simulated["rows"], f"simulated screen ({simulated['cells']} cells, {simulated['treatments']} "
                                       "treatments): NSC of well profiles, probes of each cell's MoA")
    path = write_result("bbbc021_ssl", {
        "convention": ("NSC / NSCB on the 1,000 all-MoA crops (103 treatments): nsc, nscb = mean embedding per "
                       "treatment, cosine 1-NN, same compound (and for NSCB same batch) excluded; nsc_profiles, "
                       "nscb_profiles = default profile recipe with batch-wise DMSO centring; *_ci = 95% bootstrap "
                       "intervals over compounds (2,000 draws); CellProfiler's nsc, nscb use z-scored features (median-filled "
                       "where at most 5% missing), since CellProfiler's raw units make cosines meaningless. Models "
                       "trained on all 8,774 crops (the all-MoA crops "
                       "among them; ws_dino's weak labels are their treatments, compound + concentration, never "
                       "their MoAs). probe_* = MoA accuracy of each all-MoA crop (13 labels with DMSO): linear = "
                       "logistic regression, knn = 10 nearest by cosine, mean of 5 stratified folds of cells, "
                       "*_by_compound = 5 folds keeping each compound on one side. simulated = the demo's screen, "
                       "NSC of well profiles by the demo's recipe, probes as above."),
        "training": {"crops": 8774, "crop_size": 64, "epochs": epochs, "cpu_cores": 2,
                     "wall_clock_limit_minutes": args.minutes},
        "rows": rows, "baselines": baselines, "generative": generative, "simulated": simulated,
        "published": PUBLISHED})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
