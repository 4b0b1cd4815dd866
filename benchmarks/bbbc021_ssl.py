"""Self-supervised (DINO, SimCLR) and weakly supervised (WS-DINO, compound labels) embedders on the
real BBBC021 crops, scored in the same table as the generative models and the baselines.

Each model trains on all 8,774 crops (``<name>_bbbc021`` config, ``--minutes`` of training at most,
the epochs it reached reported), embeds the 1,000 all-MoA crops and is scored by the protocol of
``bbbc021_generative.py``: ``nsc`` / ``nscb`` = mean embedding per treatment, cosine 1-NN, same
compound (NSCB: also same batch) excluded; ``nsc_profiles`` / ``nscb_profiles`` = the default profile
recipe with batch-wise DMSO centring. 95% intervals: 2,000 bootstrap draws of the compounds (each
drawn compound brings all its treatments' hits), because the treatments hold about 5 cells each.
Baselines on the same crops: pixel PCA and CellProfiler fast-set features. Speed: training images/s
through morphospace (data loading included) against a bare loop of the same module's loss and
optimiser steps on in-memory batches, in the same process.

    python benchmarks/bbbc021_ssl.py [--data ../shared/data] [--minutes 30] [--models dino,ws_dino,simclr]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bbbc021_generative import _baselines, _stores
from common import ROOT, data_dir, print_table, write_result
from morphospace.config import resolve_config
from morphospace.evaluate.moa import evaluate_moa, treatment_profiles
from morphospace.features.profiles import ProfilesConfig
from morphospace.models.registry import load_run_config
from morphospace.models.run import load_run
from morphospace.workflows.latent import embed_store
from morphospace.workflows.profiling import make_profiles
from morphospace.workflows.train import train

MODELS = ("dino", "ws_dino", "simclr")
BATCH_PROFILES = {"normalize": {"by": "Metadata_Batch"}}
PUBLISHED = {"DeepProfiler (weakly supervised, Moshkov et al. 2024)": {"nsc": 0.971, "nscb": 0.870},
             "WS-DINO (Cross-Zamirski et al. 2022)": {"nsc": 0.98, "nscb": 0.96}}


def bootstrap_interval(predictions: pd.DataFrame, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the accuracy when the compounds are drawn with replacement."""
    hits = predictions.groupby("Metadata_Compound")["correct"].agg(["sum", "count"])
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


def _bare_images_per_second(run_dir: Path, batches: int = 6, batch_size: int = 64) -> float:
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


def _run_model(name: str, training: Path, allmoa: Path, work: Path, minutes: float) -> dict:
    config = load_run_config(f"{name}_bbbc021", [f"data.store={training}", f"runs_dir={work / 'runs'}",
                                                 f"trainer.max_minutes={minutes}", "trainer.max_epochs=1000"])
    summary = train(config, progress=False)
    embeddings = config.run_dir / "embeddings_allmoa.parquet"
    embed_store(config.run_dir, allmoa, embeddings, overwrite=True, progress=False)
    bare = _bare_images_per_second(config.run_dir)
    return {"model": name, "epochs": summary.epochs, "train_images_per_s": summary.samples_per_second,
            "bare_images_per_s": bare, "speed_vs_bare": summary.samples_per_second / bare,
            **scores_with_intervals(pd.read_parquet(embeddings))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per model (at most)")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    work = ROOT / "work"
    training, allmoa = _stores(data_dir(args.data) / "bbbc021", work)
    rows = [_run_model(name, training, allmoa, work, args.minutes) for name in args.models.split(",") if name]
    baselines = [{"model": b["model"], "nsc": b["nsc_cytogan"], "nscb": b["nscb_cytogan"],
                  "nsc_profiles": b["nsc_profiles"], "nscb_profiles": b["nscb_profiles"]}
                 for b in _baselines(training, allmoa, work)]
    shown = ["model", "epochs", "nsc", "nsc_ci", "nscb", "nscb_ci", "nsc_profiles", "nscb_profiles", "speed_vs_bare"]
    print_table([{k: r.get(k) for k in shown} for r in rows + baselines],
                f"BBBC021, 1,000 all-MoA crops (103 treatments); models trained {args.minutes:g} min at most")
    path = write_result("bbbc021_ssl", {
        "convention": ("NSC / NSCB on the 1,000 all-MoA crops (103 treatments): nsc, nscb = mean embedding per "
                       "treatment, cosine 1-NN, same compound (and for NSCB same batch) excluded; nsc_profiles, "
                       "nscb_profiles = default profile recipe with batch-wise DMSO centring; *_ci = 95% bootstrap "
                       "intervals over compounds (2,000 draws). Models trained on all 8,774 crops (the all-MoA crops "
                       "among them; ws_dino's weak labels are their compounds, never their MoAs)."),
        "training": {"crops": 8774, "crop_size": 64, "minutes_per_model": args.minutes, "cpu_cores": 2},
        "rows": rows, "baselines": baselines, "published": PUBLISHED})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
