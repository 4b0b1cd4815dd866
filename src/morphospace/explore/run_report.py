"""``report --run RUN``: one HTML page for a training run of any family — its config, what it
trained on, training curves, sample grids, latent-space figures, an interactive map of its
embeddings and every evaluation found in the run directory (generation, MoA and retrieval of
embeddings, in silico labeling, segmentation, coupling, drug shifts).

``report --runs DIR``: ``DIR/index.html``, every run of a folder in one table of scores, each
linking its report, and the rate-distortion figures of the folder's beta sweeps."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.figure import Figure

from morphospace.errors import InputError
from morphospace.explore.cell_map import map_layout, table_map
from morphospace.explore.report import Report
from morphospace.io.store import CropStore
from morphospace.models.training import TrainSummary

__all__ = ["write_run_report", "write_runs_index", "runs_table", "training_curves_figure"]

_FIGURE_CAPTIONS = {
    "prediction": "Input, truth and prediction of a held-out field (same display range for truth and prediction)",
    "generated": "Samples from the prior",
    "interpolation_noise": "Interpolations between pairs of noise vectors",
    "interpolation_cells": "Interpolations between pairs of real cells",
    "algebra": "Vector algebra in the latent space",
    "traversal": "Latent traversals",
    "sweep": "One feature swept in standardised units (columns), the other features held at each row's cell",
    "trajectory": ("Images along a walk between group centroids in feature space (one row per leg), from a real "
                   "cell of the first group unless the centroids themselves were walked"),
    "from_features": "Images generated from the rows (or group centroids) of a feature table",
    "real_vs_generated": "Real, generated, and nearest real crops",
    "final_samples": "Samples from the fixed noise of the training grids, when training ended",
    "final_interpolation": "Interpolations between pairs of noise vectors, when training ended",
    "final_reconstructions": "Random training crops and their reconstructions, when training ended",
    "feature_correlation_histogram": ("Pearson correlation, over held-out cells, between each requested feature and "
                                      "the same feature re-measured on the generated image (CP2Image's Figure 4a)"),
    "feature_correlation_scatter": "Requested against re-measured values of six features (best to worst)",
    "conditions_real_vs_generated": "Real and generated crops of each condition",
    "condition_interpolation": "Generation walked from one condition to another, from the same starting noise",
    "from_controls": "Control crops carried to a treatment by the flow",
    "moa_confusion": "Confusion matrix: true against predicted MoA of each treatment",
    "dendrogram": "Hierarchical clustering of the samples",
    "scatter": "2-D layout of the samples",
    "coupling": ("Coupling of each structure to each reference channel (1 - ELBO / ELBO with that channel swapped), "
                 "with bootstrap intervals; open diamonds (runs scored with --truth): the true couplings"),
}


def training_curves_figure(metrics: pd.DataFrame) -> Figure | None:
    """Epoch-level losses of a Lightning ``metrics.csv`` (columns ending in ``_epoch`` and ``val_*``)."""
    columns = [c for c in metrics.columns if c.endswith("_epoch") or c.startswith("val_")]
    if "epoch" not in metrics or not columns:
        return None
    per_epoch = metrics.groupby("epoch")[columns].last()
    fig = Figure(figsize=(3.0 * min(len(columns), 4), 2.6 * ((len(columns) + 3) // 4)), layout="tight")
    axes = fig.subplots((len(columns) + 3) // 4, min(len(columns), 4), squeeze=False).ravel()
    for ax, column in zip(axes, columns):
        series = per_epoch[column].dropna()
        ax.plot(series.index + 1, series.to_numpy(), marker="o", markersize=3)
        ax.set_title(column, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
    for ax in axes[len(columns):]:
        ax.set_axis_off()
    return fig


def _shown(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``; "n/a" for a missing one (``null`` in a result's JSON)."""
    return "n/a" if value is None else format(value, spec)


def _caption(stem: str) -> str:
    for prefix, caption in _FIGURE_CAPTIONS.items():
        if stem.startswith(prefix):
            return caption
    return stem


def write_run_report(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN/report.html`` from what the run directory holds; returns its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run_dir}: not a run directory (no config.yaml)")
    report = Report(f"morphospace run: {run_dir.name}")
    report.section("Configuration")
    report.code((run_dir / "config.yaml").read_text())
    _training_section(report, run_dir)
    figures = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    samples = [f for f in figures if f.stem.startswith("samples_epoch_")]
    if samples:
        report.section("Samples during training", "Fixed noise, the same for every epoch.")
        for path in samples[-2:]:
            report.image(path, path.stem, path.stem.replace("_", " "))
    others = [f for f in figures if not f.stem.startswith(("samples_epoch_", "training_curves"))]
    if others:
        report.section("Generation and latent space")
        for path in others:
            report.image(path, path.stem, _caption(path.stem))
    _embeddings_section(report, run_dir)
    _evaluation_section(report, run_dir / "evaluation")
    return report.write(run_dir / "report.html")


def _embeddings_section(report: Report, run_dir: Path) -> None:
    path = run_dir / "embeddings.parquet"
    if not path.is_file():
        return
    table = pd.read_parquet(path)
    dimensions = sum(str(name).startswith("Embedding_") for name in table.columns)
    report.section("Embeddings", f"{path.name}: {len(table)} cells x {dimensions} dimensions, beside the store's "
                                 "metadata (morphospace profiles and evaluate read it). The map lays them out by PCA; "
                                 "hover for a cell's crop, click or lasso to list a selection.")
    store = _run_store(run_dir)
    try:
        cell_map = table_map(table, store, name="embeddings (PCA)", where=str(path))
    except InputError as error:
        report.text(f"no map: {error}", note=True)
        return
    if store is None:
        report.text("the run's training store (data.store of its config) was not found here", note=True)
    for note in cell_map.notes:
        report.text(note, note=True)
    report.interactive(map_layout(cell_map))


def _run_store(run_dir: Path) -> CropStore | None:
    """The run's training store (``data.store`` of its config): as written, or relative to the
    run's folder or the folder above it; None when none of these holds a store."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    store = (config.get("data") or {}).get("store")
    if not store:
        return None
    for candidate in (Path(store), run_dir.parent / store, run_dir.parent.parent / store):
        if (candidate / "store.json").is_file():
            return CropStore(candidate)
    return None


def _training_section(report: Report, run_dir: Path) -> None:
    report.section("Training")
    if (run_dir / "data.json").is_file():
        data = json.loads((run_dir / "data.json").read_text())
        rows = [{"batch key": key, "kind": entry["kind"],
                 "shape per sample": " x ".join(map(str, entry["shape"])) or "-",
                 "names": ", ".join(entry["names"][:8]) + (" ..." if len(entry["names"]) > 8 else "")}
                for key, entry in data.get("batch", {}).items()]
        report.text(f"Family {data.get('family')}, data source {data.get('source')}; what each batch carries:")
        report.table(pd.DataFrame(rows))
    if (run_dir / "summary.json").is_file():
        _summary_table(report, run_dir)
    if (run_dir / "metrics.csv").is_file():
        fig = training_curves_figure(pd.read_csv(run_dir / "metrics.csv"))
        if fig is not None:
            report.figure(fig, "training_curves", "Losses per epoch (training and validation)")


def _summary_table(report: Report, run_dir: Path) -> None:
    """The last session's numbers; a summary of an older layout is shown as it is."""
    try:
        summary = TrainSummary.read(run_dir)
    except InputError:
        saved = json.loads((run_dir / "summary.json").read_text())
        report.table(pd.DataFrame([{k: v for k, v in saved.items() if isinstance(v, (int, float, str))}]))
        return
    report.table(pd.DataFrame([{"epochs": summary.epochs, "optimizer steps": summary.optimizer_steps,
                                "processes": summary.processes, "seconds (last session)": summary.seconds_this_session,
                                f"{summary.sample_unit}/s": summary.samples_per_second
                                if math.isfinite(summary.samples_per_second) else "not measured"}]))
    for key, note in summary.notes.items():
        report.text(f"{key.replace('_', ' ')}: {note}", note=True)


def _evaluation_section(report: Report, evaluation: Path) -> None:
    if not evaluation.is_dir():
        return
    generation = evaluation / "generation.json"
    if generation.is_file():
        payload = json.loads(generation.read_text())
        report.section("Generation quality", payload["convention"])
        training = payload.get("extractor_training") or {"labels": payload["config"].get("extractor_labels")}
        trained_on = training["labels"] or "self-supervised"
        rows = [{"extractor": f"{payload['in_domain']['extractor']} ({trained_on})", "FID": payload["in_domain"]["fid"],
                 "KID": payload["in_domain"]["kid_mean"], "KID sd": payload["in_domain"]["kid_std"]}]
        if isinstance(payload.get("inception"), dict):
            rows.append({"extractor": "InceptionV3", "FID": payload["inception"]["fid"],
                         "KID": payload["inception"]["kid_mean"], "KID sd": payload["inception"]["kid_std"]})
        report.table(pd.DataFrame(rows), caption=None if isinstance(payload.get("inception"), dict)
                     else str(payload.get("inception")))
        if payload.get("family") == "diffusion":
            _conditions_section(report, payload)
        else:
            _feature_and_memorisation_text(report, payload)
    for name in ("moa.json", "retrieval.json"):
        path = evaluation / name
        if path.is_file():
            payload = json.loads(path.read_text())
            report.section(f"Embedding evaluation: {name.removesuffix('.json')}", payload["convention"])
            rows = [{"evaluation": k, **{m: v for m, v in payload[k].items() if not isinstance(v, (dict, list))}}
                    for k in ("nsc", "nscb", "nscb_multi_batch_moas", "moa", "replicates") if k in payload]
            report.table(pd.DataFrame(rows))
    _isl_section(report, evaluation / "isl.json")
    _segmentation_section(report, evaluation / "segmentation.json")
    _statistical_cell_sections(report, evaluation)
    for path in sorted((evaluation / "figures").glob("*.png")) if (evaluation / "figures").is_dir() else []:
        report.image(path, f"evaluation_{path.stem}", _caption(path.stem))



def _feature_and_memorisation_text(report: Report, payload: dict) -> None:
    distances = payload["feature_distances"]
    median = _shown(distances["median_normalized_wasserstein"], ".3f")
    report.text(f"CellProfiler features: median normalised Wasserstein distance {median} over "
                f"{distances['n_features']} features.")
    memorisation = payload["memorisation"]
    report.text(f"Memorisation check: median distance to the nearest training crop, generated / held-out real = "
                f"{_shown(memorisation['median_ratio'], '.2f')}; fraction of generated crops closer than the 1st "
                f"percentile of held-out real ones: {_shown(memorisation['memorised_fraction'], '.3f')}.")


def _conditions_section(report: Report, payload: dict) -> None:
    """Per-condition scores of a conditioned diffusion run."""
    nearest = {row["generated"]: row["nearest"] for row in payload["nearest_real_group"]}
    rows = [{payload["condition_column"]: group, "cells": n, "FID": payload["fid_per_condition"].get(group),
             "KID": payload["kid_per_condition"].get(group), "shift cosine": payload["shift_cosine"].get(group),
             "nearest real group": nearest.get(group)} for group, n in payload["n_per_condition"].items()]
    report.table(pd.DataFrame(rows), caption=f"per condition (control: {payload['control']}); mean of the "
                                             f"per-condition FIDs {payload['fid_per_condition_mean']:.4g}")
    accuracy = payload.get("condition_accuracy")
    if accuracy:
        report.text(f"Condition accuracy of a classifier trained on real crops: {accuracy['accuracy_generated']:.3f} "
                    f"on generated crops, {accuracy['accuracy_real']:.3f} on held-out real crops (ratio "
                    f"{_shown(accuracy['ratio_to_real'], '.2f')}).")

def _isl_section(report: Report, path: Path) -> None:
    if not path.is_file():
        return
    payload = json.loads(path.read_text())
    report.section(f"In silico labeling ({payload.get('split', 'test')} regions)", payload["convention"])
    rows = []
    for target, scores in payload["targets"].items():
        row = {"target": target, "crops": scores["crops"], "empty crops": scores["empty_crops"]}
        for kind in ("non_empty", "empty", "all"):
            row[f"PCC {kind.replace('_', '-')}"] = scores["pcc"][kind]["mean"]
        row["SSIM non-empty"], row["PSNR non-empty"] = scores["ssim"]["mean"], scores["psnr"]["mean"]
        if "nuclei_jaccard" in scores:
            row["nuclei Jaccard"] = scores["nuclei_jaccard"]["mean"]
        rows.append(row)
    report.table(pd.DataFrame(rows), caption=f"{payload.get('crop_size')} px crops")


def _segmentation_section(report: Report, path: Path) -> None:
    if not path.is_file():
        return
    payload = json.loads(path.read_text())
    report.section(f"Segmentation ({payload.get('split', 'test')} regions)", payload["convention"])
    keys = ("crops", "crops_with_nuclei", "mean_iou", "mean_iou_non_empty", "f1_pooled", "f1_mean", "tp", "fp", "fn")
    report.table(pd.DataFrame([{key: payload.get(key) for key in keys}]),
                 caption=f"{payload.get('crop_size')} px crops")


def _statistical_cell_sections(report: Report, evaluation: Path) -> None:
    """``evaluate coupling`` (its table; the figure is shown with the other evaluation figures) and
    ``evaluate drug-shift`` (its table)."""
    coupling = evaluation / "coupling.json"
    if coupling.is_file():
        payload = json.loads(coupling.read_text())
        report.section(f"Coupling ({payload['n_cells']} {payload['split']} cells)", payload["convention"])
        report.table(pd.DataFrame(payload["coupling"]))
        if "agreement" in payload:
            agreement = pd.DataFrame.from_dict(payload["agreement"]["per_channel"], orient="index")
            report.table(agreement.rename_axis("channel").reset_index(), caption="Agreement with the truth")
    shift = evaluation / "drug_shift.json"
    if shift.is_file():
        payload = json.loads(shift.read_text())
        report.section(f"Drug shifts ({payload['treated']} against {payload['control']})", payload["convention"])
        config = payload.get("config", {})
        correction = {"bh": "Benjamini-Hochberg q", "holm": "Holm's adjusted p"}[config.get("correction", "bh")]
        report.table(pd.DataFrame(payload["tests"]),
                     caption=f"significant: {correction} (q_value) <= {config.get('alpha', 0.05)}")
        if "truth_scores" in payload:
            scores = payload["truth_scores"]
            report.text(f"Against the truth: target-space recall {_shown(scores['target']['recall'], '.2f')} of "
                        f"{scores['target']['n_shifted']} shifted pairs, {scores['target']['false_positives']} false "
                        f"positive(s); {scores['reference']['false_positives']} significant reference-space test(s).")


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _run_scores(run_dir: Path) -> dict[str, object]:
    """One row of :func:`runs_table`: what the run is and the headline number of each evaluation
    found in its ``evaluation/`` folder (missing ones stay empty)."""
    data = _json(run_dir / "data.json") or {}
    row: dict[str, object] = {"run": run_dir.name, "family": data.get("family"), "source": data.get("source")}
    try:
        summary = TrainSummary.read(run_dir)
        row["epochs"] = summary.epochs
    except InputError:
        row["epochs"] = None
    evaluation = run_dir / "evaluation"
    generation = _json(evaluation / "generation.json")
    if generation:
        row["FID"] = generation["in_domain"]["fid"]
        row["KID"] = generation["in_domain"]["kid_mean"]
        row["FID extractor"] = generation["in_domain"]["extractor"]
        accuracy = generation.get("condition_accuracy")
        if accuracy:
            row["condition accuracy / real"] = accuracy.get("ratio_to_real")
    moa = _json(evaluation / "moa.json")
    if moa:
        row["NSC"] = moa["nsc"]["accuracy"]
        row["NSCB"] = moa.get("nscb", {}).get("accuracy")
    retrieval = _json(evaluation / "retrieval.json")
    if retrieval and "moa" in retrieval:
        row["MoA mAP"] = retrieval["moa"]["mean_average_precision"]
    isl = _json(evaluation / "isl.json")
    if isl:
        row["ISL PCC"] = sum(t["pcc"]["non_empty"]["mean"] for t in isl["targets"].values()) / len(isl["targets"])
    segmentation = _json(evaluation / "segmentation.json")
    if segmentation:
        row["segmentation F1"] = segmentation.get("f1_pooled")
    coupling = _json(evaluation / "coupling.json")
    if coupling:
        row["mean coupling"] = sum(r["coupling"] for r in coupling["coupling"]) / len(coupling["coupling"])
    return row


def _run_dirs(folder: Path) -> list[Path]:
    """Every training run under ``folder``: a directory holding ``config.yaml`` and ``data.json``."""
    return sorted(p.parent for p in folder.rglob("data.json") if (p.parent / "config.yaml").is_file())


def runs_table(folder: str | os.PathLike, runs: list[Path] | None = None) -> pd.DataFrame:
    """One row per run under ``folder`` (or per run of ``runs``, found already) with its family,
    epochs and scores."""
    rows = [_run_scores(run) for run in (runs if runs is not None else _run_dirs(Path(folder)))]
    return pd.DataFrame(rows).dropna(axis=1, how="all") if rows else pd.DataFrame(columns=["run"])


def _stale(report: Path, run_dir: Path) -> bool:
    """Whether ``report`` is missing or older than anything the run wrote since."""
    if not report.is_file():
        return True
    written = report.stat().st_mtime
    sources = [run_dir / name for name in ("config.yaml", "summary.json", "embeddings.parquet")]
    sources += list((run_dir / "evaluation").glob("*.json")) + list((run_dir / "figures").glob("*.png"))
    return any(p.is_file() and p.stat().st_mtime > written for p in sources)


def write_runs_index(folder: str | os.PathLike) -> tuple[Path, pd.DataFrame]:
    """``report --runs DIR``: write each run's report where missing or out of date, then
    ``DIR/index.html``: the runs' scores in one table (each run linking its report) and the
    rate-distortion figure of every beta sweep in the folder. Returns the page and the table."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    runs = _run_dirs(folder)
    sweeps = sorted(p.parent for p in folder.rglob("beta_sweep.csv"))
    if not runs and not sweeps:
        raise InputError(f"{folder}: no training runs in it (folders holding config.yaml and data.json)")
    for run in runs:
        if _stale(run / "report.html", run):
            write_run_report(run)
    table = runs_table(folder, runs)
    links = [f"<a href='{html.escape((run / 'report.html').relative_to(folder).as_posix())}'>{html.escape(run.name)}</a>"
             for run in runs]
    report = Report(f"morphospace runs: {folder.name}")
    report.section("Runs", "Each run's headline scores, from the evaluations found in its folder (empty: not "
                           "evaluated). FID and KID are comparable only between runs scored with the same extractor "
                           "on the same real crops; NSC and mAP only between runs profiled the same way.")
    report.table(table.assign(run=links), escape=False, na_rep="")
    for sweep in sweeps:
        report.section(f"Beta sweep: {sweep.name}", "Held-out reconstruction error against KL per beta, and active "
                                                     "latent dimensions (the Statistical Cell's rate-distortion figure).")
        report.table(pd.read_csv(sweep / "beta_sweep.csv").drop(columns="run", errors="ignore"))
        if (sweep / "beta_sweep.png").is_file():
            report.image(sweep / "beta_sweep.png", f"{sweep.name}_rate_distortion", "Rate-distortion curves")
    return report.write(folder / "index.html"), table
