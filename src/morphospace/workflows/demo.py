"""``demo``: the study on a simulated screen — simulate, prepare, check segmentation against the
ground truth, measure CellProfiler features, build profiles, score MoA accuracy (NSC) and retrieval
(mAP), train small generative models (a VAE and a GAN) and score their embeddings, train a small
in-silico-labeling U-Net from transmitted light to DNA on the screen's first plate rendered in
transmitted mode and score its PCC on held-out fields, and write ``report.html`` (with interactive
maps of the cells and wells) and ``runs/index.html`` (each run's report and scores).

Every training budget is in epochs, so the same seed gives the same numbers whatever the machine's
load. Steps already done in the output folder (same config) are reused, so a second run only
rebuilds the report.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pydantic

from morphospace.config import Config
from morphospace.evaluate.segmentation import pooled_scores, score_label_files
from morphospace.explore.demo_report import write_demo_report
from morphospace.explore.run_report import write_runs_index
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.features.profiles import ProfilesConfig
from morphospace.io.store import CropStore
from morphospace.io.tables import write_table
from morphospace.models.registry import preset, resolve_run_config
from morphospace.models.training import RunConfig
from morphospace.runs import log_to_file, open_run_directory
from morphospace.simulate import SimulateConfig, simulate_screen
from morphospace.workflows.evaluation import (
    MoAEvaluationConfig, RetrievalConfig, run_moa_evaluation, run_retrieval_evaluation,
)
from morphospace.workflows.isl import evaluate_isl_run
from morphospace.workflows.latent import embed_store, explore_algebra, explore_interpolate, explore_traverse, generate
from morphospace.workflows.prepare import PrepareConfig, prepare
from morphospace.workflows.profiling import extract_features, make_profiles
from morphospace.workflows.train import trained

__all__ = ["DemoConfig", "DemoSummary", "run_demo"]

logger = logging.getLogger(__name__)


def _demo_screen() -> SimulateConfig:
    """Two plates of 192 px fields (cells per field scaled with the area): about as many cells as the
    demo held before the simulator's cells grew to BBBC021's scale, so it takes about as long."""
    return SimulateConfig(plates=2, compounds_per_moa=2, concentrations=2).with_field_size(192)


_MINUTES = ("optional wall-clock limit; the numbers then depend on the machine's load (null: epochs only)")


class DemoModelsConfig(Config):
    """Generative models the demo trains on the prepared crops: presets of the gan and vae families
    with their epochs (about a minute each on 2 CPU cores)."""

    presets: dict[str, int] = pydantic.Field(default_factory=lambda: {"vae": 10, "lsgan": 6},
                                             description="preset name -> training epochs")
    minutes: float | None = pydantic.Field(None, gt=0, description=_MINUTES)
    crop_size: int = pydantic.Field(64, ge=8)
    base_channels: int = pydantic.Field(32, ge=4)

    @pydantic.field_validator("presets")
    @classmethod
    def _known(cls, value: dict[str, int]) -> dict[str, int]:
        for name, epochs in value.items():
            try:
                preset(name)
            except KeyError as exc:
                raise ValueError(str(exc).strip("'\"")) from None
            if epochs < 1:
                raise ValueError(f"preset {name}: epochs must be at least 1, got {epochs}")
        return value

    def train_config(self, name: str, store: Path, runs_dir: Path, seed: int) -> RunConfig:
        """The training config of preset ``name`` on ``store``."""
        return resolve_run_config({
            "name": name, "runs_dir": str(runs_dir), "seed": seed,
            "data": {"store": str(store), "crop_size": self.crop_size, "batch_size": 64,
                     "normalization": {"out_range": [-1, 1]}, "split": {"by": None, "train": 1.0, "val": 0.0,
                                                                         "test": 0.0}},
            "model": {**preset(name), "latent_dim": 100, "base_channels": self.base_channels},
            "trainer": {"max_minutes": self.minutes, "max_epochs": self.presets[name], "sample_every_n_epochs": 5},
        }, source=f"demo model {name}")


class DemoISLConfig(Config):
    """The demo's in-silico-labeling step: transmitted light -> DNA on the first plate of the screen,
    rendered in transmitted mode, split by field."""

    enabled: bool = True
    max_epochs: int = pydantic.Field(15, ge=1, description="training budget")
    minutes: float | None = pydantic.Field(None, gt=0, description=_MINUTES)
    tile: int = pydantic.Field(64, ge=16, description="training tile side, px (a multiple of 4)")
    channels: list[int] = pydantic.Field(default_factory=lambda: [16, 32, 64], min_length=2)

    def train_config(self, manifest: Path, runs_dir: Path, seed: int) -> RunConfig:
        """The training config of the transmitted-light screen's ``manifest``."""
        return resolve_run_config({
            "name": "isl_dna", "runs_dir": str(runs_dir), "seed": seed,
            "data": {"manifest": str(manifest), "channels": {"inputs": ["Transmitted"], "targets": ["DNA"]},
                     "split": {"by": "field", "fractions": {"train": 0.7, "val": 0.1, "test": 0.2}, "seed": seed},
                     "tiles": {"size": self.tile, "tiles_per_epoch": 256, "batch_size": 16}},
            "model": {"family": "isl", "net": {"channels": self.channels, "residual_units": 1}},
            "trainer": {"max_minutes": self.minutes, "max_epochs": self.max_epochs},
        }, source="demo isl")


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
    scores = {kind: score_label_files(screen_dir / "truth", store_dir / "labels", field_ids, kind)
              for kind in ("nuclei", "cells")}
    for kind, frame in scores.items():
        write_table(frame, out / f"segmentation_{kind}.csv")
    evaluations = _profile_and_evaluate(out, config, workers, progress)
    evaluations["models"] = {name: _train_and_evaluate(out, config, name, progress)
                             for name in config.models.presets}
    evaluations["isl"] = _in_silico_labeling(out, config, workers, progress) if config.isl.enabled else None
    write_runs_index(out / "runs")
    report_path = write_demo_report(out, config, store, manifest, scores, evaluations)
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
    return {"moa": run_moa_evaluation(table, evaluation, config.moa, overwrite=True),
            "retrieval": run_retrieval_evaluation(table, evaluation, config.retrieval, overwrite=True)}


def _train_and_evaluate(out: Path, config: DemoConfig, name: str, progress: bool) -> dict:
    """Train preset ``name`` on the demo's crops, embed them, and score the embeddings' MoA accuracy."""
    train_config = config.models.train_config(name, out / "store", out / "runs", config.simulate.seed)
    run = train_config.run_dir
    if not (run / "summary.json").is_file():
        logger.info("training %s on the prepared crops (%d epochs)", name, config.models.presets[name])
    trained(train_config, progress=progress)
    embeddings = run / "embeddings.parquet"
    if not embeddings.is_file():
        embed_store(run, out=embeddings, progress=progress)
    generate(run, n=32, seed=0)
    explore_interpolate(run, seeds=tuple(range(8)), steps=8)
    explore_traverse(run, n_dims=6)
    if train_config.model.family == "vae":  # a GAN would need each cell projected into its noise space
        explore_algebra(run, "NucleusArea")
    profiles = make_profiles(embeddings, config=config.profiles)
    return {"moa": run_moa_evaluation(profiles, run / "evaluation", config.moa, overwrite=True), "run": str(run)}


def _in_silico_labeling(out: Path, config: DemoConfig, workers: int, progress: bool) -> dict:
    """Render the first plate in transmitted mode, train transmitted -> DNA, score it on held-out fields."""
    screen = out / "screen_transmitted"
    if not (screen / "manifest.csv").is_file():
        logger.info("rendering the first plate in transmitted light into %s", screen)
        simulate_screen(config.simulate.model_copy(update={"mode": "transmitted", "plates": 1}), screen,
                        workers=workers, progress=progress)
    train_config = config.isl.train_config(screen / "manifest.csv", out / "runs", config.simulate.seed)
    trained(train_config, progress=progress)
    evaluation = evaluate_isl_run(train_config.run_dir, overwrite=True)
    return {"run": train_config.run_dir, "scores": evaluation.scores}
