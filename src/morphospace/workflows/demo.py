"""``demo``: the study on a simulated screen — simulate, prepare, check segmentation against the
ground truth, measure CellProfiler features, build profiles, score MoA accuracy (NSC) and retrieval
(mAP), train small generative models (a VAE and a GAN) and score their embeddings, train a small
in-silico-labeling U-Net from transmitted light to DNA on the screen's first plate rendered in
transmitted mode and score its PCC on held-out fields, and write ``report.html``.

Steps already done in the output folder (same config) are reused, so a second run only rebuilds
the report.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import tifffile
import torch
from matplotlib.figure import Figure

from morphospace.config import Config
from morphospace.evaluate.segmentation import pooled_scores, segmentation_scores
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.features.profiles import ProfilesConfig
from morphospace.explore.figures import crop_montage_figure, segmentation_overlay_figure
from morphospace.explore.report import Report
from morphospace.io.store import CropStore
from morphospace.config import resolve_config
from morphospace.models.registry import PRESETS
from morphospace.runs import log_to_file, open_run_directory
from morphospace.simulate import SimulateConfig, simulate_screen
from morphospace.workflows.evaluation import (
    MoAEvaluationConfig, RetrievalConfig, run_moa_evaluation, run_retrieval_evaluation,
)
from morphospace.workflows.prepare import PrepareConfig, prepare
from morphospace.workflows.latent import embed_store, explore_interpolate, generate
from morphospace.workflows.profiling import extract_features, make_profiles
from morphospace.workflows.isl import ISLTrainConfig, load_fields, load_isl_run, trained_isl
from morphospace.workflows.isl_inference import evaluate_isl_run
from morphospace.workflows.train import TrainConfig, train

__all__ = ["DemoConfig", "DemoSummary", "run_demo", "score_segmentation"]

logger = logging.getLogger(__name__)


def _demo_screen() -> SimulateConfig:
    return SimulateConfig(plates=2, compounds_per_moa=2, concentrations=2)


class DemoModelsConfig(Config):
    """Generative models the demo trains on the prepared crops (presets of :data:`PRESETS`)."""

    presets: list[str] = ["vae", "lsgan"]
    minutes: float = pydantic.Field(1.0, gt=0, description="training budget per model")
    max_epochs: int = pydantic.Field(20, ge=1)
    crop_size: int = pydantic.Field(64, ge=8)
    base_channels: int = pydantic.Field(32, ge=4)

    @pydantic.field_validator("presets")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in PRESETS]
        if unknown:
            raise ValueError(f"unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")
        return value

    def train_config(self, preset: str, store: Path, runs_dir: Path, seed: int) -> TrainConfig:
        """The training config of ``preset`` on ``store``."""
        return resolve_config(TrainConfig, {
            "name": preset, "runs_dir": str(runs_dir), "seed": seed,
            "data": {"store": str(store), "crop_size": self.crop_size, "batch_size": 64,
                     "normalization": {"out_range": [-1, 1]}, "split": {"by": None, "train": 1.0, "val": 0.0,
                                                                         "test": 0.0}},
            "model": {**PRESETS[preset], "latent_dim": 100, "base_channels": self.base_channels},
            "trainer": {"max_minutes": self.minutes, "max_epochs": self.max_epochs, "sample_every_n_epochs": 5},
        })


class DemoISLConfig(Config):
    """The demo's in-silico-labeling step: transmitted light -> DNA on the first plate of the screen,
    rendered in transmitted mode, split by field."""

    enabled: bool = True
    minutes: float = pydantic.Field(0.5, gt=0, description="training budget")
    max_epochs: int = pydantic.Field(15, ge=1)
    tile: int = pydantic.Field(64, ge=16, description="training tile side, px (a multiple of 4)")
    channels: list[int] = pydantic.Field(default_factory=lambda: [16, 32, 64], min_length=2)

    def train_config(self, manifest: Path, runs_dir: Path, seed: int) -> ISLTrainConfig:
        """The training config of the transmitted-light screen's ``manifest``."""
        return resolve_config(ISLTrainConfig, {
            "name": "isl_dna", "runs_dir": str(runs_dir), "seed": seed,
            "data": {"manifest": str(manifest), "channels": {"inputs": ["Transmitted"], "targets": ["DNA"]},
                     "split": {"by": "field", "fractions": {"train": 0.7, "val": 0.1, "test": 0.2}, "seed": seed},
                     "tiles": {"size": self.tile, "tiles_per_epoch": 256, "batch_size": 16}},
            "model": {"family": "isl", "net": {"channels": self.channels, "residual_units": 1}},
            "trainer": {"max_minutes": self.minutes, "max_epochs": self.max_epochs},
        }, source="isl")


class DemoConfig(Config):
    """The demo study: a small simulated screen and how it is prepared and shown."""

    simulate: SimulateConfig = pydantic.Field(default_factory=_demo_screen)
    prepare: PrepareConfig = pydantic.Field(default_factory=PrepareConfig)
    features: FeaturesConfig = pydantic.Field(default_factory=FeaturesConfig)
    profiles: ProfilesConfig = pydantic.Field(default_factory=ProfilesConfig)
    moa: MoAEvaluationConfig = pydantic.Field(default_factory=MoAEvaluationConfig)
    retrieval: RetrievalConfig = pydantic.Field(default_factory=lambda: RetrievalConfig(null_size=2000))
    models: DemoModelsConfig = pydantic.Field(default_factory=DemoModelsConfig)
    isl: DemoISLConfig = pydantic.Field(default_factory=DemoISLConfig)
    montage_cells: int = pydantic.Field(8, ge=1, le=32, description="crops shown per MoA")
    overlay_fields: int = pydantic.Field(3, ge=0, le=12, description="fields shown with segmentation outlines")


@dataclass
class DemoSummary:
    """Where the demo wrote its results and the headline numbers."""

    out: Path
    report: Path
    n_fields: int
    n_cells: int
    nuclei_f1: float
    cells_f1: float
    nsc: float
    moa_map: float
    embedding_nsc: dict[str, float]
    isl_pcc: float | None
    seconds: float

    def line(self) -> str:
        return (f"demo: {self.n_cells} cells from {self.n_fields} simulated fields; segmentation F1 at IoU 0.5 "
                f"nuclei {self.nuclei_f1:.3f}, cells {self.cells_f1:.3f}; CellProfiler profiles NSC "
                f"{self.nsc:.1%}, same-MoA mAP {self.moa_map:.3f}"
                + "".join(f"; {k} embedding NSC {v:.1%}" for k, v in self.embedding_nsc.items())
                + (f"; transmitted->DNA PCC {self.isl_pcc:.3f}" if self.isl_pcc is not None else "")
                + f"; {self.seconds:.0f} s -> {self.report}")


def score_segmentation(truth_dir: Path, labels_dir: Path, field_ids: list[str], kind: str) -> pd.DataFrame:
    """Per-field scores of ``labels_dir/<id>_<kind>.tiff`` against ``truth_dir/<id>_<kind>.tiff``."""
    rows = []
    for field_id in field_ids:
        predicted = labels_dir / f"{field_id}_{kind}.tiff"
        if not predicted.is_file():
            continue
        truth = tifffile.imread(truth_dir / f"{field_id}_{kind}.tiff")
        rows.append({"Metadata_FieldId": field_id, **segmentation_scores(truth, tifffile.imread(predicted))})
    return pd.DataFrame(rows)


def run_demo(
    out: str | os.PathLike = "morphospace-demo",
    config: DemoConfig | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> DemoSummary:
    """Run the demo study into ``out`` and return its summary (see the module docstring)."""
    start = time.perf_counter()
    config = config or DemoConfig()
    out, _ = open_run_directory(out, config, overwrite=overwrite)
    with log_to_file(out / "demo.log"):
        return _run_steps(out, config, workers, progress, start)


def _run_steps(out: Path, config: DemoConfig, workers: int, progress: bool, start: float) -> DemoSummary:
    screen_dir, store_dir = out / "screen", out / "store"
    if not (screen_dir / "manifest.csv").is_file():
        logger.info("simulating the screen into %s", screen_dir)
        simulate_screen(config.simulate, screen_dir, workers=workers, progress=progress)
    if not (store_dir / "store.json").is_file():
        logger.info("preparing crops into %s", store_dir)
        prepare(screen_dir / "manifest.csv", store_dir, config.prepare, workers=workers, progress=progress)
    store = CropStore(store_dir)
    manifest = pd.read_csv(screen_dir / "manifest.csv")
    field_ids = manifest["Metadata_FieldId"].astype(str).tolist()
    scores = {kind: score_segmentation(screen_dir / "truth", store_dir / "labels", field_ids, kind)
              for kind in ("nuclei", "cells")}
    for kind, frame in scores.items():
        frame.to_csv(out / f"segmentation_{kind}.csv", index=False)
    evaluations = _profile_and_evaluate(out, config, workers, progress)
    evaluations["models"] = {preset: _train_and_evaluate(out, config, preset, progress)
                             for preset in config.models.presets}
    evaluations["isl"] = _in_silico_labeling(out, config, workers, progress) if config.isl.enabled else None
    report_path = _write_report(out, config, store, manifest, scores, evaluations)
    logger.info("report written to %s", report_path)
    return DemoSummary(
        out=out, report=report_path, n_fields=len(manifest), n_cells=len(store),
        nuclei_f1=pooled_scores(scores["nuclei"])["f1_pooled"], cells_f1=pooled_scores(scores["cells"])["f1_pooled"],
        nsc=evaluations["moa"]["nsc"]["accuracy"],
        moa_map=evaluations["retrieval"].get("moa", {}).get("mean_average_precision", float("nan")),
        embedding_nsc={k: v["moa"]["nsc"]["accuracy"] for k, v in evaluations["models"].items()},
        isl_pcc=evaluations["isl"]["scores"]["pcc"]["DNA"]["non_empty"]["mean"] if evaluations["isl"] else None,
        seconds=time.perf_counter() - start,
    )


def _profile_and_evaluate(out: Path, config: DemoConfig, workers: int, progress: bool) -> dict:
    """CellProfiler features of every crop, well profiles, and their MoA and retrieval scores."""
    features, profiles = out / "features" / "cells.parquet", out / "features" / "profiles.parquet"
    if not features.is_file():
        logger.info("measuring CellProfiler features into %s", features)
        extract_features(out / "store", features, config.features, workers=workers, progress=progress)
    if not profiles.is_file():
        make_profiles(features, profiles, config.profiles)
    table = pd.read_parquet(profiles)
    evaluation = out / "evaluation"
    return {"moa": run_moa_evaluation(table, evaluation, config.moa),
            "retrieval": run_retrieval_evaluation(table, evaluation, config.retrieval)}


def _train_and_evaluate(out: Path, config: DemoConfig, preset: str, progress: bool) -> dict:
    """Train ``preset`` on the demo's crops, embed them, and score the embeddings' MoA accuracy."""
    train_config = config.models.train_config(preset, out / "store", out / "runs", config.simulate.seed)
    run = train_config.run_dir
    if not (run / "summary.json").is_file():
        logger.info("training %s on the prepared crops (%g min)", preset, config.models.minutes)
        train(train_config, progress=progress)
    embeddings = run / "embeddings.parquet"
    if not embeddings.is_file():
        embed_store(run, out=embeddings, progress=progress)
    generate(run, n=32, seed=0)
    explore_interpolate(run, seeds=tuple(range(8)), steps=8)
    profiles = make_profiles(embeddings, config=config.profiles)
    return {"moa": run_moa_evaluation(profiles, run / "evaluation", config.moa), "run": str(run)}


def _in_silico_labeling(out: Path, config: DemoConfig, workers: int, progress: bool) -> dict:
    """Render the first plate in transmitted mode, train transmitted -> DNA, score it on held-out fields."""
    screen = out / "screen_transmitted"
    if not (screen / "manifest.csv").is_file():
        logger.info("rendering the first plate in transmitted light into %s", screen)
        simulate_screen(config.simulate.model_copy(update={"mode": "transmitted", "plates": 1}), screen,
                        workers=workers, progress=progress)
    train_config = config.isl.train_config(screen / "manifest.csv", out / "runs", config.simulate.seed)
    trained_isl(train_config, progress=progress)
    evaluation = evaluate_isl_run(train_config.run_dir)
    return {"run": train_config.run_dir, "scores": evaluation.scores}


def _isl_section(report: Report, result: dict) -> None:
    report.section("In silico labeling", "A small U-Net predicts the DNA stain from the transmitted-light image "
                                         "alone; scored on fields never used in training.")
    pcc = result["scores"]["pcc"]["DNA"]
    report.table(pd.DataFrame([{"crops": kind.replace("_", "-"), "n": pcc[kind]["n"], "mean PCC": pcc[kind]["mean"]}
                               for kind in ("non_empty", "empty", "all")]),
                 caption=f"Per-crop Pearson correlation of predicted and real DNA ({result['scores']['crop_size']} px "
                         "crops of the test fields); empty crops (no nucleus) have an almost arbitrary PCC")
    config, model = load_isl_run(result["run"])
    test_field = json.loads((Path(result["run"]) / "regions.json").read_text())["test"][0]["field"]
    field = next(f for f in load_fields(config.data) if f.field_id == test_field)
    predicted = model.predict_field(torch.from_numpy(field.inputs))[0].numpy()
    fig = Figure(figsize=(9, 3.2))
    low, high = np.percentile(field.targets[0], [1, 99.7])
    for ax, (title, image, limits) in zip(fig.subplots(1, 3), (
            ("transmitted light", field.inputs[0], {}), ("DNA (truth)", field.targets[0], {"vmin": low, "vmax": high}),
            ("DNA (predicted)", predicted, {"vmin": low, "vmax": high}))):
        ax.imshow(image, cmap="gray", **limits)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    report.figure(fig, "isl_prediction", f"Test field {test_field}: input, truth and prediction (same display range)")


def _write_report(out: Path, config: DemoConfig, store: CropStore, manifest: pd.DataFrame,
                  scores: dict[str, pd.DataFrame], evaluations: dict) -> Path:
    report = Report("morphospace demo: a simulated BBBC021-like screen")
    truth_cells = pd.read_parquet(out / "screen" / "truth" / "cells.parquet")
    qc = pd.read_csv(out / "store" / "qc.csv")
    report.section("Overview", (
        f"{config.simulate.plates} plates, {len(manifest)} fields of {config.simulate.field_size} px, "
        f"{len(config.simulate.moas)} MoAs x {config.simulate.compounds_per_moa} compounds x "
        f"{config.simulate.concentrations} concentrations plus DMSO; seed {config.simulate.seed}. "
        f"{len(truth_cells)} cells simulated, {len(store)} crops of {store.crop_shape[0]} px prepared."
    ))
    _qc_section(report, qc)
    _segmentation_section(report, out, store, manifest, scores, config.overlay_fields)
    _crops_section(report, store, config.montage_cells, config.simulate.seed)
    _profiles_section(report, out, config, evaluations)
    _models_section(report, evaluations)
    if evaluations.get("isl"):
        _isl_section(report, evaluations["isl"])
    return report.write(out / "report.html")


def _models_section(report: Report, evaluations: dict) -> None:
    if not evaluations.get("models"):
        return
    report.section("Generative models", "Trained on the prepared crops; each run has its own report "
                                        "(morphospace report --run RUN).")
    rows = [{"representation": "CellProfiler features", "NSC": evaluations["moa"]["nsc"]["accuracy"]}]
    rows += [{"representation": f"{preset} embedding", "NSC": result["moa"]["nsc"]["accuracy"]}
             for preset, result in evaluations["models"].items()]
    report.table(pd.DataFrame(rows), caption="MoA accuracy (NSC) of the same profile recipe on each representation")
    for preset, result in evaluations["models"].items():
        figures = Path(result["run"]) / "figures"
        report.image(figures / "generated_seed0.png", f"{preset}_generated", f"{preset}: samples from the prior")
        report.image(figures / "interpolation_noise.png", f"{preset}_interpolation",
                     f"{preset}: interpolations between noise vectors")


def _profiles_section(report: Report, out: Path, config: DemoConfig, evaluations: dict) -> None:
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
    report.table(counts, caption="ok: used; qc_failed: skipped for focus or saturation; error: unreadable input")
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
