"""``train`` for in silico labeling and nuclei segmentation: fit an image-to-image U-Net on the
paired fields of a manifest, into ``runs/<name>/``.

Run directory: ``config.yaml`` (resolved; the perceptual loss's feature network is named in
``summary.json``), ``regions.json`` (the train / val / test rectangles of every field, so that
evaluation uses exactly the held-out regions), ``checkpoints/last.ckpt`` (training resumes from it),
``logs/session_NN/`` merged into ``metrics.csv``, ``summary.json`` and ``train.log``. As for the
generative models, only the budget keys may change between sessions.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import pydantic
import torch

from morphospace.config import Config
from morphospace.data.tiles import PairedDataModule, TileConfig, TileSplitConfig
from morphospace.errors import InputError
from morphospace.io.atomic import write_text_atomic
from morphospace.io.paired import (
    PairedChannels,
    PairedField,
    PairedNormalization,
    load_paired_field,
    read_paired_manifest,
)
from morphospace.models.isl import ImageToImage, ISLModelConfig
from morphospace.models.perceptual import fit_in_domain_features, load_vgg16_features
from morphospace.models.registry import read_checkpoint
from morphospace.models.weights import transfer_weights
from morphospace.runs import log_to_file, open_run_directory, read_run_config
from morphospace.workflows.train import (
    BUDGET_KEYS,
    RunConfig,
    Throughput,
    build_trainer,
    callback_metrics,
    merge_session_logs,
)

__all__ = ["ISLDataConfig", "ISLTrainConfig", "ISLSummary", "load_fields", "load_isl_run", "train_isl", "trained_isl"]

logger = logging.getLogger(__name__)


class ISLDataConfig(Config):
    """Paired fields and how they are tiled and split."""

    manifest: str
    channels: PairedChannels
    normalization: PairedNormalization = PairedNormalization()
    split: TileSplitConfig = TileSplitConfig()
    tiles: TileConfig = TileConfig()


class ISLTrainConfig(RunConfig):
    """An in-silico-labeling or segmentation training run."""

    data: ISLDataConfig
    model: ISLModelConfig

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> "ISLTrainConfig":
        if self.model.task == "segmentation" and not self.data.channels.mask:
            raise ValueError("task 'segmentation' needs data.channels.mask (the nuclei label column)")
        if self.model.task == "labeling" and not self.data.channels.targets:
            raise ValueError("task 'labeling' needs data.channels.targets")
        if self.data.tiles.size % self.model.net.size_factor:
            raise ValueError(f"data.tiles.size {self.data.tiles.size} must be a multiple of the network's "
                             f"factor {self.model.net.size_factor}")
        return self


class ISLSummary(pydantic.BaseModel):
    """What a training session did."""

    run_dir: Path
    epochs: int
    steps: int
    seconds: float
    tiles_per_second: float
    perceptual_features: str | None
    initialised_from: str | None = None
    metrics: dict[str, float]

    def line(self) -> str:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items() if k.startswith("val_"))
        return (f"trained {self.epochs} epoch(s), {self.steps} steps in {self.seconds:.0f} s "
                f"({self.tiles_per_second:.1f} tiles/s); {shown} -> {self.run_dir}")


def load_fields(data: ISLDataConfig) -> list[PairedField]:
    """Every field of the manifest, read and normalised."""
    return [load_paired_field(spec, data.channels, data.normalization)
            for spec in read_paired_manifest(data.manifest, data.channels)]


def _regions_record(data: PairedDataModule) -> dict[str, list[dict]]:
    """The split rectangles of every field and, for few-shot runs, the fixed training tiles."""
    record = {name: [{"field": data.fields[i].field_id, "region": list(r)} for i, r in regions]
              for name, regions in data.regions.items()}
    if data.train_set.fixed_boxes:
        record["fixed_train_tiles"] = [{"field": data.fields[i].field_id, "region": list(r)}
                                       for i, r in data.train_set.fixed_boxes]
    return record


def load_isl_run(run_dir: str | os.PathLike) -> tuple[ISLTrainConfig, ImageToImage]:
    """The config and trained model (eval mode) of a run directory."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, ISLTrainConfig)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    state = read_checkpoint(checkpoint)
    try:
        hparams = state["hyper_parameters"]
        model = ImageToImage(hparams["config"], hparams["in_channels"], hparams["out_channels"])
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise InputError(f"{checkpoint}: not an in-silico-labeling checkpoint ({type(exc).__name__}: {exc})") from None
    return config, model.eval()


def _initialise(model: ImageToImage, config: ISLTrainConfig) -> str | None:
    """Start ``model`` from the run named by ``model.init``; returns what was done."""
    init = config.model.init
    if init is None:
        return None
    source_config, source = load_isl_run(init.run)
    index = None
    if init.target is not None:
        targets = source_config.data.channels.targets
        if init.target not in targets:
            raise InputError(f"model.init.target {init.target!r} is not a target of {init.run} (has {targets})")
        index = targets.index(init.target)
    counts = transfer_weights(source.net.state_dict(), model.net, index)
    if counts["copied"] + counts["sliced"] == 0:
        raise InputError(f"{init.run}: no tensor of its network fits this run's network (model.init)")
    target = f", output row of {init.target}" if init.target else ""
    return (f"{init.run}: {counts['copied']} tensors copied, {counts['sliced']} sliced{target}, "
            f"{counts['skipped']} left at random")


def _perceptual_features(model: ImageToImage, config: ISLTrainConfig, data: PairedDataModule) -> str | None:
    """Give the perceptual loss its feature network; returns what was used."""
    loss = config.model.loss
    if loss.kind != "perceptual":
        return None
    if loss.vgg_weights:
        model.set_perceptual_features(load_vgg16_features(loss.vgg_weights, tuple(loss.vgg_layers)))
        return f"VGG-16 {loss.vgg_layers} from {loss.vgg_weights}"
    tiles = torch.stack([data.train_set[i]["target"] for i in range(min(256, len(data.train_set)))])
    features, losses = fit_in_domain_features(tiles, steps=loss.in_domain_steps, seed=config.seed)
    model.set_perceptual_features(features)
    return (f"in-domain autoencoder features on {len(tiles)} training target tiles, {loss.in_domain_steps} "
            f"steps (reconstruction MSE {losses[0]:.3g} -> {losses[-1]:.3g}); no VGG weights given")


def train_isl(config: ISLTrainConfig, overwrite: bool = False, progress: bool = True) -> ISLSummary:
    """Train (or resume) the run of ``config``; see the module docstring for what it writes."""
    try:  # check the data before anything is written
        data = PairedDataModule(load_fields(config.data), config.data.split, config.data.tiles, config.seed)
    except ValueError as exc:
        raise InputError(f"{config.data.manifest}: {exc} (see data.tiles.size and data.split.fractions)") from None
    run_dir, _ = open_run_directory(config.run_dir, config, overwrite=overwrite, mutable=BUDGET_KEYS)
    with log_to_file(run_dir / "train.log"):
        pl.seed_everything(config.seed, workers=True, verbose=False)
        write_text_atomic(run_dir / "regions.json", json.dumps(_regions_record(data), indent=2))
        first = data.fields[0]
        out_channels = 1 if config.model.task == "segmentation" else first.targets.shape[0]
        model = ImageToImage(config.model.to_dict(), first.inputs.shape[0], out_channels)
        last = run_dir / "checkpoints" / "last.ckpt"
        resumed = last.is_file()
        features = _perceptual_features(model, config, data) if not resumed else "restored from checkpoint"
        initialised = _initialise(model, config) if not resumed else "restored from checkpoint"
        throughput = Throughput("input")
        trainer = _trainer(config, run_dir, progress, throughput, has_val="val" in data.regions)
        start = time.perf_counter()
        try:
            trainer.fit(model, datamodule=data, ckpt_path=last if resumed else None)
        finally:
            merge_session_logs(run_dir)
        summary = ISLSummary(run_dir=run_dir, epochs=trainer.current_epoch, steps=trainer.global_step,
                             seconds=time.perf_counter() - start, tiles_per_second=throughput.images_per_second,
                             perceptual_features=features, initialised_from=initialised,
                             metrics=callback_metrics(trainer))
        write_text_atomic(run_dir / "summary.json", summary.model_dump_json(indent=2))
        logger.info(summary.line())
    return summary


def trained_isl(config: ISLTrainConfig, progress: bool = True) -> ISLSummary:
    """The summary of the run of ``config``: read when the run finished before, else trained
    (an interrupted run resumes)."""
    saved = config.run_dir / "summary.json"
    if saved.is_file():
        return ISLSummary.model_validate_json(saved.read_text())
    return train_isl(config, progress=progress)


def _trainer(config: ISLTrainConfig, run_dir: Path, progress: bool, throughput: pl.Callback,
             has_val: bool) -> pl.Trainer:
    return build_trainer(config, run_dir, progress, [throughput], limit_val_batches=1.0 if has_val else 0,
                         reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0)
