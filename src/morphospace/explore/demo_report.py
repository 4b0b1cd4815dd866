"""The demo study's HTML report: overview, QC, segmentation against the ground truth, crops per
MoA, CellProfiler profiles and MoA accuracy, interactive maps of the wells (profiles) and of the
cells (CellProfiler features and each model's embedding), the generative models and in silico
labeling.

:func:`write_demo_report` reads what :func:`morphospace.workflows.demo.run_demo` wrote into its
output folder, plus the evaluations it computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from matplotlib.figure import Figure

from morphospace.evaluate.segmentation import pooled_scores
from morphospace.explore.cell_map import map_layout, shared_cells_map, table_map
from morphospace.explore.figures import crop_montage_figure, segmentation_overlay_figure
from morphospace.explore.report import Report
from morphospace.io.store import CropStore

__all__ = ["write_demo_report"]


def _isl_section(report: Report, result: dict) -> None:
    report.section("In silico labeling", "A small U-Net predicts the DNA stain from the transmitted-light image "
                                         "alone; scored on fields never used in training.")
    pcc = result["scores"]["pcc"]["DNA"]
    report.table(pd.DataFrame([{"crops": kind.replace("_", "-"), "n": pcc[kind]["n"], "mean PCC": pcc[kind]["mean"]}
                               for kind in ("non_empty", "empty", "all")]),
                 caption=f"Per-crop Pearson correlation of predicted and real DNA ({result['scores']['crop_size']} px "
                         "crops of the test fields); empty crops (no nucleus) have an almost arbitrary PCC")
    for path in sorted((Path(result["run"]) / "evaluation" / "figures").glob("prediction_*.png")):
        field = path.stem.removeprefix("prediction_")
        report.image(path, "isl_prediction", f"Test field {field}: input, truth and prediction (same display range)")


def write_demo_report(out: Path, config: Any, store: CropStore, manifest: pd.DataFrame,
                      scores: dict[str, pd.DataFrame], evaluations: dict) -> Path:
    """Write ``out/report.html`` (and its figures) for the demo of ``config`` (a ``DemoConfig``);
    ``scores`` are per-field segmentation scores by object kind, ``evaluations`` the demo's
    results (``moa``, ``retrieval``, ``models``, ``isl``)."""
    report = Report("morphospace demo: a simulated BBBC021-like screen")
    truth_cells = pd.read_parquet(out / "screen" / "truth" / "cells.parquet")
    qc = pd.read_csv(out / "store" / "qc.csv")
    report.section("Overview", (
        f"{config.simulate.plates} plates, {len(manifest)} fields of {config.simulate.field_size} px, "
        f"{len(config.simulate.moas)} MoAs x {config.simulate.compounds_per_moa} compounds x "
        f"{config.simulate.concentrations} concentrations plus DMSO; seed {config.simulate.seed}. "
        + _counts_sentence(truth_cells, store, qc)
    ))
    _qc_section(report, qc)
    _segmentation_section(report, out, store, manifest, scores, config.overlay_fields)
    _crops_section(report, store, config.montage_cells, config.simulate.seed)
    _profiles_section(report, out, config, evaluations)
    _maps_section(report, out, store, evaluations)
    _models_section(report, evaluations)
    if evaluations.get("isl"):
        _isl_section(report, evaluations["isl"])
    return report.write(out / "report.html")


def _models_section(report: Report, evaluations: dict) -> None:
    if not evaluations.get("models"):
        return
    report.section("Generative models", "Trained on the prepared crops; each run has its own report, linked "
                                        "from runs/index.html (morphospace report --runs RUNS).")
    rows = [{"representation": "CellProfiler features", "NSC": evaluations["moa"]["nsc"]["accuracy"]}]
    rows += [{"representation": f"{preset} embedding", "NSC": result["moa"]["nsc"]["accuracy"]}
             for preset, result in evaluations["models"].items()]
    report.table(pd.DataFrame(rows), caption="MoA accuracy (NSC) of the same profile recipe on each representation")
    for preset, result in evaluations["models"].items():
        figures = Path(result["run"]) / "figures"
        report.image(figures / "generated_seed0.png", f"{preset}_generated", f"{preset}: samples from the prior")
        report.image(figures / "interpolation_noise.png", f"{preset}_interpolation",
                     f"{preset}: interpolations between noise vectors")
        report.image(figures / "traversal.png", f"{preset}_traversal",
                     f"{preset}: latent traversals (one dimension walked per row, the others at 0)")
        if (figures / "algebra_NucleusArea.png").is_file():
            report.image(figures / "algebra_NucleusArea.png", f"{preset}_algebra", f"{preset}: vector algebra, the "
                         "latent direction from small to large nuclei added to other cells")


def _maps_section(report: Report, out: Path, store: CropStore, evaluations: dict) -> None:
    """A map of the wells (CellProfiler profiles, a montage of each well's cells on hover) and one of
    the cells, switchable between CellProfiler features and each model's embedding."""
    report.section("Maps of wells and cells", "Hover over a point to see its cells, click or draw a lasso to list a "
                                              "selection under the map, and choose the column to colour by. Layouts "
                                              "are PCA of the z-scored features.")
    wells = table_map(pd.read_parquet(out / "features" / "profiles.parquet"), store,
                      name="CellProfiler profiles (PCA)", where="profiles.parquet")
    report.interactive(map_layout(wells, title="Wells: CellProfiler profiles", name="wells-map"))
    tables = {"CellProfiler features": pd.read_parquet(out / "features" / "cells.parquet")}
    for preset, result in evaluations.get("models", {}).items():
        tables[f"{preset} embedding"] = pd.read_parquet(Path(result["run"]) / "embeddings.parquet")
    cells = shared_cells_map(tables, store)
    report.interactive(map_layout(cells, title="Cells: choose the layout", name="cells-map"))
    for note in wells.notes + cells.notes:
        report.text(note, note=True)


def _profiles_section(report: Report, out: Path, config: Any, evaluations: dict) -> None:
    moa, retrieval = evaluations["moa"], evaluations["retrieval"]
    report.section("CellProfiler profiles and mechanism of action", (
        f"{config.features.feature_set} CellProfiler feature set per cell (cp_measure), median per well, "
        f"{config.profiles.normalize.method} against DMSO wells per plate; treatment profile = "
        f"{config.moa.operation} of wells."))
    rows = [{"evaluation": k, **{f: moa[k][f] for f in ("accuracy", "compound_accuracy", "treatments")}}
            for k in ("nsc", "nscb", "nscb_multi_batch_moas") if k in moa]
    report.table(pd.DataFrame(rows), caption=moa["convention"] + (f". {moa['nscb_note']}" if "nscb_note" in moa else ""))
    per_moa = pd.DataFrame(moa["per_moa"]["nsc"]).T.rename_axis("MoA").reset_index()
    report.table(per_moa, caption="NSC per MoA")
    confusion = out / "evaluation" / "figures" / "moa_confusion_nsc.png"
    report.image(confusion, "moa_confusion_nsc", "NSC confusion matrix: true vs predicted MoA of each treatment")
    rows = [{"retrieval": k, **retrieval[k]} for k in ("moa", "replicates") if k in retrieval]
    notes = "; ".join(f"{k}: {v}" for k, v in retrieval.get("notes", {}).items())
    if rows:
        report.table(pd.DataFrame(rows), caption=retrieval["convention"] + (f". {notes}" if notes else ""))
    elif notes:
        report.text(notes, note=True)


def _qc_section(report: Report, qc: pd.DataFrame) -> None:
    report.section("Quality control")
    counts = qc["status"].value_counts().rename_axis("status").reset_index(name="fields")
    report.table(counts, caption="ok: used; qc_failed: skipped for focus, saturation or no foreground (see "
                                 "qc.csv); error: unreadable or missing input")
    failed = qc.loc[qc["status"] != "ok", ["Metadata_FieldId", "status", "reason"]]
    if len(failed):
        report.table(failed, caption="Skipped fields and why")
    focus_columns = [c for c in qc.columns if c.startswith("focus_")]
    if focus_columns:
        fig = Figure(figsize=(3.2 * len(focus_columns), 2.6), layout="tight")
        axes = fig.subplots(1, len(focus_columns), squeeze=False)
        for ax, column in zip(axes[0], focus_columns):
            for plate, group in qc.groupby("Metadata_Plate"):
                ax.hist(group[column].dropna(), bins=20, alpha=0.6, label=str(plate))
            ax.set_xlabel(f"{column.removeprefix('focus_')} power log-log slope")
        axes[0, 0].set_ylabel("fields")
        axes[0, -1].legend(fontsize=7)
        report.figure(fig, "qc_focus", "Focus score per field and plate (steeper, i.e. more negative, is blurrier)")


def _segmentation_section(report: Report, out: Path, store: CropStore, manifest: pd.DataFrame,
                          scores: dict[str, pd.DataFrame], n_overlays: int) -> None:
    report.section("Segmentation against the simulated ground truth")
    summary = pd.DataFrame([{"objects": kind, **pooled_scores(frame)} for kind, frame in scores.items()])
    report.table(summary, caption="Instance matching at IoU >= 0.5 (Hungarian), F1 from counts pooled over fields; "
                                  "foreground IoU is 1 when both masks are empty")
    moa = manifest.set_index("Metadata_FieldId")["Metadata_MoA"]
    per_moa = pd.DataFrame({
        f"{kind} F1": frame.assign(moa=frame["Metadata_FieldId"].map(moa)).groupby("moa").apply(
            lambda g: pooled_scores(g)["f1_pooled"], include_groups=False)
        for kind, frame in scores.items()
    }).rename_axis("MoA").reset_index()
    report.table(per_moa, caption="F1 at IoU 0.5 per MoA")
    channels = store.channels
    rows = manifest.drop_duplicates("Metadata_MoA").head(n_overlays)
    for row in rows.itertuples(index=False):
        field_id = row.Metadata_FieldId
        image = np.stack([tifffile.imread(out / "screen" / getattr(row, f"FileName_{c}")) for c in channels])
        labels = out / "store" / "labels"
        if not (labels / f"{field_id}_nuclei.tiff").is_file():
            continue
        fig = segmentation_overlay_figure(image, channels, tifffile.imread(labels / f"{field_id}_nuclei.tiff"),
                                          tifffile.imread(labels / f"{field_id}_cells.tiff"),
                                          title=f"{field_id} ({row.Metadata_MoA})")
        report.figure(fig, f"segmentation_{field_id}", "Nuclei (yellow) and cells (white) found by prepare")


def _counts_sentence(truth_cells: pd.DataFrame, store: CropStore, qc: pd.DataFrame) -> str:
    """Why the number of crops differs from the number of simulated cells."""
    nuclei = int(truth_cells["Metadata_NucleiCount"].sum())
    several = int((truth_cells["Metadata_NucleiCount"] > 1).sum())
    padded = int(store.cells["Metadata_Padded"].sum()) if "Metadata_Padded" in store.cells else 0
    skipped = int((qc["status"] != "ok").sum())
    return (f"{len(truth_cells)} cells simulated, holding {nuclei} nuclei ({several} cells have several); "
            f"prepare makes one crop of {store.crop_shape[0]} px per nucleus it finds, so {len(store)} crops, "
            f"of which {padded} reach past the field's edge and are padded "
            f"({int(truth_cells['Metadata_TouchesBorder'].sum())} simulated cells touch it)"
            + (f"; {skipped} fields failed QC and gave no crops." if skipped else "."))


def _crops_section(report: Report, store: CropStore, per_group: int, seed: int) -> None:
    report.section("Crops per mechanism of action")
    cells = store.cells
    if "Metadata_MoA" not in cells:
        return
    highest = cells.groupby("Metadata_Compound")["Metadata_Concentration"].transform("max")
    chosen = cells[(cells["Metadata_Concentration"] == highest) & ~cells["Metadata_Padded"]]
    rng = np.random.default_rng(seed)
    groups = {}
    for moa, group in chosen.groupby("Metadata_MoA"):
        picks = np.sort(rng.choice(group.index.to_numpy(), min(per_group, len(group)), replace=False))
        groups[str(moa)] = store.read(picks)
    report.figure(crop_montage_figure(groups, store.channels, columns=per_group), "crops_per_moa",
                  "Random whole (unpadded) crops at each compound's highest concentration; intensity limits shared by all rows")
    counts = cells.groupby(["Metadata_MoA", "Metadata_Plate"]).size().unstack(fill_value=0).reset_index()
    report.table(counts, caption="Prepared cells per MoA and plate")
