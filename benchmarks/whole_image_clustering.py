"""Whole-image embeddings for clustering samples (the whole-image-embedding seed's Table 6.1) on
simulated donors, and the BBBC021 week-4 check.

Parts (``--parts donors,bbbc021``; a run of some parts keeps the other parts' blocks of the result):

- ``donors``: ``simulate --mode donors`` (``--donors-per-group`` healthy and as many disease donors,
  2 wells x 2 fields of 512 px each; disruption = ``--phenotype-strength`` x severity, severities
  evenly spread over [0.2, 1]), ``prepare`` with the built-in ``prepare_fields`` (128 px tiles, 16 per
  field). Embedders: ``pca`` (50 components of 4x block-mean pixels), ``autoencoder``,
  ``unet_embedder``, ``classifier_cnn``, ``classifier_densenet121`` (from scratch: no ImageNet
  weights here) and ``cellprofiler`` (nuclei and cells segmented, the fast cp_measure set, mean per
  field). **Cross-fitting by donor**: the donors are cut into two folds (each group alternated in
  order of severity); every trained embedder (and the PCA) is fitted on one fold's tiles and embeds
  the other fold, and every score is computed within the held-out fold, then averaged over the two
  folds, so that no score sees a donor its embedder was trained on. Field level: the mean over a
  field's tiles; donor level: the mean over a donor's fields.
- ``bbbc021``: the week-4 plates 27801, 27821 and 27861 (DMSO and cycloheximide at 5, 15 and
  50 uM on each); samples = plate x treatment; the crops (64 px centre) embedded by the pixel PCA
  and by an autoencoder trained on those crops (both unsupervised), averaged per sample; K-means
  (k = 2) on the DMSO and 50 uM samples scored by V-measure against the treatment.

Scores: ``morphospace.evaluate.clustering`` (SVM with RBF kernel, stratified 5-fold accuracy;
K-means k = 2, homogeneity, completeness, V-measure, Davies-Bouldin and silhouette, on z-scored
embeddings). ``severity_spearman``: Spearman r between the disease donors' severity and their
position in the optimally ordered leaves of an average-linkage cosine dendrogram of the held-out
fold's donors, oriented so that the healthy donors' mean position is the low end; mean of the folds.

    python benchmarks/whole_image_clustering.py [--data ../shared/data] [--parts donors,bbbc021] [--quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.preprocessing import StandardScaler

from bbbc021_generative import _stores
from common import RESULTS, ROOT, data_dir, print_table, timed, write_result
from morphospace.config import load_config
from morphospace.evaluate.clustering import evaluate_clustering
from morphospace.features.cellprofiler import FeaturesConfig, feature_columns
from morphospace.features.pixels import pixel_pca_embeddings
from morphospace.features.profiles import aggregate_profiles
from morphospace.io.store import CropStore, CropStoreWriter
from morphospace.models.registry import load_run_config
from morphospace.simulate import SimulateConfig, simulate_donors
from morphospace.workflows.latent import embed_store
from morphospace.workflows.prepare import PrepareConfig, prepare
from morphospace.workflows.profiling import extract_features
from morphospace.workflows.train import trained

PARTS = ("donors", "bbbc021")
WORKERS = 2
DONOR, GROUP, FIELD = "Metadata_Donor", "Metadata_Group", "Metadata_FieldId"
WEEK4_PLATES = ["Week4_27801", "Week4_27821", "Week4_27861"]
EMBEDDERS = {  # name: (built-in config, overrides)
    "autoencoder": ("autoencoder_fields", []),
    "unet_embedder": ("unet_embedder_fields", []),
    "classifier_cnn": ("classifier_fields", []),
    "classifier_densenet121": ("classifier_fields", ["model.backbone=densenet121"]),
}
CLASSIFIERS = ("classifier_cnn", "classifier_densenet121")
SETTINGS = {
    "full": {"field_size": 512, "wells": 2, "fields": 2, "tile": 128, "epochs": {
        "autoencoder": 15, "unet_embedder": 8, "classifier_cnn": 15, "classifier_densenet121": 4}, "bbbc021_epochs": 10},
    "quick": {"field_size": 256, "wells": 1, "fields": 2, "tile": 64, "epochs": {
        "autoencoder": 1, "unet_embedder": 1, "classifier_cnn": 1, "classifier_densenet121": 1}, "bbbc021_epochs": 1},
}


# ----------------------------------------------------------------------------- scoring


def _severity_spearman(donors: pd.DataFrame, severity: pd.Series) -> float:
    """Spearman r of severity and dendrogram leaf position among the disease donors (see the module doc)."""
    x = StandardScaler().fit_transform(donors[feature_columns(donors)].to_numpy(float))
    distances = pdist(x, metric="cosine")
    order = leaves_list(optimal_leaf_ordering(linkage(distances, "average"), distances))
    position = pd.Series(np.argsort(order), index=donors[DONOR].to_numpy())
    healthy = donors[GROUP].to_numpy() == "healthy"
    if position[healthy].mean() > position[~healthy].mean():
        position = len(position) - 1 - position
    disease = donors.loc[~healthy, DONOR].to_numpy()
    return float(spearmanr(severity.loc[disease].to_numpy(), position.loc[disease].to_numpy()).statistic)


def _level_scores(table: pd.DataFrame) -> dict[str, float]:
    result = evaluate_clustering(table, GROUP)
    kmeans = result.metrics["K-means (k=2)"]
    return {"svm_accuracy": result.svm_accuracy, "v_measure": float(kmeans["V-measure"]),
            "silhouette": float(kmeans["Silhouette"]), "davies_bouldin": float(kmeans["Davies-Bouldin"]),
            "homogeneity": float(kmeans["Homogeneity"]), "completeness": float(kmeans["Completeness"])}


def _fold_scores(fields: pd.DataFrame, severity: pd.Series) -> dict[str, Any]:
    """Field- and donor-level scores of one held-out fold's field embeddings."""
    donors = aggregate_profiles(fields.drop(columns="Metadata_ObjectCount", errors="ignore"), [DONOR], "mean")
    return {"field": _level_scores(fields), "donor": _level_scores(donors),
            "severity_spearman": _severity_spearman(donors, severity)}


def _mean_scores(folds: list[dict[str, Any]]) -> dict[str, Any]:
    levels = {level: {key: float(np.mean([f[level][key] for f in folds])) for key in folds[0][level]}
              for level in ("field", "donor")}
    return {**levels, "severity_spearman": float(np.mean([f["severity_spearman"] for f in folds])),
            "per_fold": folds}


# ----------------------------------------------------------------------------- simulated donors


def _donor_folds(truth: pd.DataFrame) -> list[list[str]]:
    """Two folds of donors: within each group, donors in order of severity (healthy: by name) alternate."""
    folds: list[list[str]] = [[], []]
    for _, group in truth.sort_values(["severity", DONOR]).groupby(GROUP, sort=True):
        for position, donor in enumerate(group[DONOR]):
            folds[position % 2].append(donor)
    return folds


def _fields_of(tiles: pd.DataFrame, donors: list[str]) -> pd.DataFrame:
    held_out = tiles[tiles[DONOR].isin(donors)]
    return aggregate_profiles(held_out.drop(columns="Metadata_StoreIndex", errors="ignore"), [FIELD], "mean")


def _trained_embedder(name: str, tiles: Path, work: Path, train_donors: list[str], fold: int,
                      epochs: int, seconds: dict[str, float]) -> pd.DataFrame:
    """Tile embeddings (all tiles) by ``name`` trained on ``train_donors``' tiles (cached run)."""
    config_name, overrides = EMBEDDERS[name]
    config = load_run_config(config_name, [
        f"name={name}_fold{fold}_e{epochs}", f"runs_dir={work / 'runs'}", f"data.store={tiles}",
        f"data.include={{{DONOR}: {json.dumps(train_donors)}}}", "data.split.train=1.0", "data.split.val=0",
        "data.split.test=0", f"trainer.max_epochs={epochs}", "trainer.precision=32-true", *overrides])
    timed(f"train_{name}_fold{fold}", seconds, trained, config, progress=False)
    out = work / "embeddings" / f"{name}_fold{fold}_e{epochs}.parquet"
    if not out.is_file():
        timed(f"embed_{name}_fold{fold}", seconds, embed_store, config.run_dir, tiles, out, progress=False)
    return pd.read_parquet(out)


def _cellprofiler_fields(screen: Path, work: Path, seconds: dict[str, float]) -> pd.DataFrame:
    """Mean of the fast CellProfiler features of each field's cells (cached)."""
    store, table = work / "cells", work / "cells_features.parquet"
    if not (store / "store.json").is_file():
        timed("prepare_cells", seconds, prepare, screen / "manifest.csv", store, PrepareConfig(), workers=WORKERS,
              progress=False)
    if not table.is_file():
        timed("features_cells", seconds, extract_features, store, table, FeaturesConfig(feature_set="fast"),
              workers=WORKERS, progress=False)
    cells = pd.read_parquet(table)
    features = [c for c in feature_columns(cells) if np.isfinite(cells[c]).all()]
    keep = [c for c in cells.columns if c.startswith("Metadata_")] + features
    return aggregate_profiles(cells[keep].drop(columns="Metadata_StoreIndex", errors="ignore"), [FIELD], "mean")


def _donors_part(settings: dict[str, Any], work: Path, donors_per_group: int, strength: float) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    screen = work / f"donors_{donors_per_group}_{strength:g}_{settings['field_size']}"
    if not (screen / "manifest.csv").is_file():
        timed("simulate", seconds, simulate_donors, SimulateConfig(
            mode="donors", field_size=settings["field_size"], plates=2, fields_per_well=settings["fields"],
            donors={"donors_per_group": donors_per_group, "wells_per_donor": settings["wells"],
                    "phenotype_strength": strength}), screen, workers=WORKERS, progress=False)
    tiles = screen.with_name(f"{screen.name}_tiles")
    if not (tiles / "store.json").is_file():
        config = load_config(PrepareConfig, "prepare_fields", [f"tiles.size={settings['tile']}"])
        timed("prepare_tiles", seconds, prepare, screen / "manifest.csv", tiles, config, workers=WORKERS,
              progress=False)
    truth = pd.read_parquet(screen / "truth" / "donors.parquet")
    severity = truth.set_index(DONOR)["severity"]
    folds = _donor_folds(truth)
    store = CropStore(tiles)
    embedders: dict[str, Callable[[int], pd.DataFrame]] = {
        "pca": lambda fold: pixel_pca_embeddings(store, 50, 4, fit_on=store.cells[DONOR].isin(folds[1 - fold]))}
    for name in EMBEDDERS:
        embedders[name] = lambda fold, name=name: _trained_embedder(
            name, tiles, screen.with_name(f"{screen.name}_work"), folds[1 - fold], fold, settings["epochs"][name],
            seconds)
    scores = {}
    for name, embed in embedders.items():
        scores[name] = _mean_scores([_fold_scores(_fields_of(embed(fold), folds[fold]), severity)
                                     for fold in (0, 1)])
    cellprofiler = _cellprofiler_fields(screen, screen.with_name(f"{screen.name}_work"), seconds)
    scores["cellprofiler"] = _mean_scores([_fold_scores(cellprofiler[cellprofiler[DONOR].isin(folds[fold])], severity)
                                           for fold in (0, 1)])
    best = max(CLASSIFIERS, key=lambda n: scores[n]["donor"]["svm_accuracy"])
    rows = [{"embedder": n, **{f"{level}_{k}": s[level][k] for level in ("field", "donor")
                               for k in ("svm_accuracy", "v_measure", "silhouette", "davies_bouldin")},
             "severity_spearman": s["severity_spearman"]} for n, s in scores.items()]
    print_table(rows, f"simulated donors ({2 * donors_per_group} donors, phenotype strength {strength:g}; "
                      "scores within held-out folds, mean of 2)")
    print_table([{"step": k, "seconds": v} for k, v in seconds.items()], "donors: time per step (2 CPU cores)")
    return {
        "embedders": scores, "best_classifier": best,
        "best_classifier_svm_accuracy": scores[best]["donor"]["svm_accuracy"],
        "best_classifier_v_measure": scores[best]["donor"]["v_measure"],
        "severity_spearman": scores[best]["severity_spearman"],
        "design": {"donors_per_group": donors_per_group, "phenotype_strength": strength,
                   "disruption_range": [0.2 * strength, strength], "wells_per_donor": settings["wells"],
                   "fields_per_well": settings["fields"], "field_size": settings["field_size"],
                   "tile_size": settings["tile"], "tiles": len(store), "folds": folds},
        "budgets": {"epochs": settings["epochs"], "cpu_cores": WORKERS, "seconds": seconds},
    }


# ----------------------------------------------------------------------------- BBBC021 week 4


def _week4_store(bbbc021: Path, work: Path) -> Path:
    """The week-4 crops of DMSO and cycloheximide (all doses) on the three plates, as a store (cached)."""
    target = work / "stores" / "bbbc021_week4_cycloheximide"
    if (target / "store.json").is_file():
        return target
    source = CropStore(_stores(bbbc021, ROOT / "work")[0])
    cells = source.cells
    compound = cells["Metadata_Compound"].astype(str)
    rows = np.flatnonzero(cells["Metadata_Plate"].isin(WEEK4_PLATES).to_numpy()
                          & (compound.eq("DMSO") | compound.str.startswith("cyclohex")).to_numpy())
    with CropStoreWriter(target, source.channels, source.crop_shape, str(source.images.dtype)) as writer:
        writer.append(source.read(rows), cells.iloc[rows].reset_index(drop=True))
    return target


def _sample_table(tiles: pd.DataFrame) -> pd.DataFrame:
    table = tiles.assign(Metadata_Treatment=tiles["Metadata_Compound"].astype(str) + " "
                         + tiles["Metadata_Concentration"].astype(float).map("{:g}".format))
    table = table.drop(columns=[c for c in ("Metadata_StoreIndex",) if c in table.columns])
    return aggregate_profiles(table, ["Metadata_Plate", "Metadata_Treatment"], "mean")


def _bbbc021_part(bbbc021: Path, settings: dict[str, Any], work: Path) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    store_path = _week4_store(bbbc021, work)
    store = CropStore(store_path)
    config = load_run_config("autoencoder_fields", [
        f"name=autoencoder_week4_e{settings['bbbc021_epochs']}", f"runs_dir={work / 'runs'}",
        f"data.store={store_path}", "data.crop_size=64", "data.split.by=null", "data.split.train=1.0",
        "data.split.val=0", "data.split.test=0", f"trainer.max_epochs={settings['bbbc021_epochs']}",
        "trainer.precision=32-true"])
    timed("train_autoencoder", seconds, trained, config, progress=False)
    out = work / "embeddings" / f"{config.name}.parquet"
    if not out.is_file():
        timed("embed_autoencoder", seconds, embed_store, config.run_dir, store_path, out, progress=False)
    tables = {"pca": pixel_pca_embeddings(store, 50, 4), "autoencoder": pd.read_parquet(out)}
    scores = {}
    for name, table in tables.items():
        samples = _sample_table(table)
        dose = samples["Metadata_Treatment"].str.split().str[-1].astype(float)
        extremes = samples[(samples["Metadata_Treatment"].str.startswith("DMSO")) | (dose == dose.max())]
        result = evaluate_clustering(extremes, "Metadata_Treatment")
        scores[name] = {"kmeans2_v_measure": float(result.metrics.loc["V-measure", "K-means (k=2)"]),
                        "samples": len(extremes),
                        "clusters": result.assignments[["label", "K-means (k=2)"]].values.tolist()}
    print_table([{"embedder": n, **{k: v for k, v in s.items() if k != "clusters"}} for n, s in scores.items()],
                "BBBC021 week 4: K-means (k = 2) on DMSO and the highest cycloheximide dose, per plate")
    return {"embedders": scores, "kmeans2_v_measure": scores["autoencoder"]["kmeans2_v_measure"],
            "crops": len(store), "budgets": {"autoencoder_epochs": settings["bbbc021_epochs"], "seconds": seconds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--quick", action="store_true", help="a check of the script, not a result")
    parser.add_argument("--donors-per-group", type=int, default=16)
    parser.add_argument("--phenotype-strength", type=float, default=0.5)
    args = parser.parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    name = "whole_image_clustering" + ("_quick" if args.quick else "")
    work = ROOT / "work" / name
    previous = RESULTS / f"{name}.json"
    result = json.loads(previous.read_text()) if previous.is_file() else {}
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if "donors" in parts:
        result["simulated_donors"] = _donors_part(settings, work, 4 if args.quick else args.donors_per_group,
                                                  args.phenotype_strength)
    if "bbbc021" in parts:
        result["bbbc021_week4"] = _bbbc021_part(data_dir(args.data) / "bbbc021", settings, work)
    result["convention"] = __doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
    print(f"wrote {write_result(name, {k: v for k, v in result.items() if k not in ('benchmark', 'date', 'machine')})}")


if __name__ == "__main__":
    main()
