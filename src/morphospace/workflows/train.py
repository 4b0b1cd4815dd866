"""``train``: fit a generative model on a crop store from a YAML config, into ``runs/<name>/``.

Re-running a config resumes from the last checkpoint with the split and normalisation saved in it;
only the budget keys (``trainer.max_epochs``, ``max_minutes``, ``max_steps``) may change between
sessions, any other change is an error. The time budget counts every session. A resumed session
reseeds the random streams from the config's seed, so its batches differ from those an
uninterrupted run would have drawn.

Run directory: ``config.yaml`` (resolved), ``normalization.json`` and ``splits.parquet`` (the data
module's fitted state), ``data.json`` (channel names and model input shape), ``checkpoints/last.ckpt`` (Lightning; training resumes from it),
``logs/session_NN/`` (one CSV log per training session) merged into ``metrics.csv``,
``kl_per_dimension.csv`` (VAEs: mean KL of every latent dimension per epoch), ``figures/samples_epoch_NNN.png`` (fixed-noise sample grids),
``summary.json`` (budget, speed, final metrics) and ``train.log``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pydantic
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from morphospace.config import Config
from morphospace.data.dataset import CropDataModule, DataConfig
from morphospace.errors import InputError
from morphospace.explore.figures import composite, montage
from morphospace.io.atomic import write_text_atomic
from morphospace.io.images import write_png
from morphospace.models.base import GenerativeModel
from morphospace.models.registry import ModelConfig, build_model, model_from_checkpoint, read_checkpoint
from morphospace.runs import log_to_file, open_run_directory, read_run_config

__all__ = [
    "TrainerConfig", "RunConfig", "TrainConfig", "TrainSummary", "train", "load_run", "to_unit_range", "sample_grid",
    "resolve_precision", "count_sessions", "merge_session_logs", "Throughput",
]

logger = logging.getLogger(__name__)

BUDGET_KEYS = ("trainer.max_epochs", "trainer.max_minutes", "trainer.max_steps")


class TrainerConfig(Config):
    """Lightning Trainer settings and the training budget."""

    max_epochs: int = pydantic.Field(20, ge=1)
    max_minutes: float | None = pydantic.Field(
        None, gt=0, description="wall-clock budget of the run, summed over resumed sessions")
    max_steps: int = pydantic.Field(-1, ge=-1, description="optimiser steps: GAN batches with a generator "
                                                             "update count twice")
    limit_train_batches: float | int = pydantic.Field(1.0, gt=0)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = pydantic.Field(
        "auto", description="auto: bf16 autocast where the hardware has bf16 units (GPU, AVX512-BF16/AMX CPU), else fp32")
    channels_last: bool = True
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    log_every_n_steps: int = pydantic.Field(20, ge=1)
    sample_every_n_epochs: int = pydantic.Field(1, ge=1)
    sample_images: int = pydantic.Field(64, ge=1)
    tensorboard: bool = pydantic.Field(False, description="also log to TensorBoard (needs the tensorboard extra)")


class RunConfig(Config):
    """What every training run has: a name, the folder of runs, a seed and the trainer settings."""

    name: str = pydantic.Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    runs_dir: str = "runs"
    seed: int = 0
    trainer: TrainerConfig = TrainerConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


class TrainConfig(RunConfig):
    """A training run of a generative model: which crops, which model, how long."""

    data: DataConfig
    model: ModelConfig

    @pydantic.model_validator(mode="after")
    def _model_range(self) -> "TrainConfig":
        normalization = self.data.normalization
        if normalization.method == "zscore" or tuple(normalization.out_range) != (-1.0, 1.0):
            raise ValueError("generative models output tanh values in [-1, 1]: use a percentile or fixed "
                             "normalisation with data.normalization.out_range [-1, 1]")
        return self


@dataclass
class TrainSummary:
    """What a training run did."""

    run_dir: Path
    epochs: int
    steps: int
    seconds: float
    images_per_second: float
    metrics: dict[str, float]

    def line(self) -> str:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items() if k.endswith("_epoch") or k == "active_dims")
        return (f"trained {self.epochs} epoch(s), {self.steps} steps in {self.seconds:.0f} s "
                f"({self.images_per_second:.0f} images/s); {shown} -> {self.run_dir}")


def to_unit_range(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Model images in [-1, 1] -> numpy in [0, 1]."""
    array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip((array + 1) / 2, 0, 1)


def sample_grid(images: torch.Tensor | np.ndarray, channels: list[str], columns: int = 8) -> np.ndarray:
    """RGB montage (H, W, 3) of model images (N, C, H, W) in [-1, 1]; each channel's display range
    is its 1st-99.5th percentile over the whole grid, so brightness differences between tiles stay."""
    unit = to_unit_range(images)
    flat = np.moveaxis(unit, 1, 0).reshape(unit.shape[1], -1)
    limits = [tuple(np.percentile(channel, [1.0, 99.5])) for channel in flat]
    return montage(np.stack([composite(image, channels, limits=limits) for image in unit]), columns)


class SampleGrid(Callback):
    """Save a grid of samples from fixed noise every ``every`` epochs into ``figures/``."""

    def __init__(self, directory: Path, channels: list[str], n: int, every: int, seed: int) -> None:
        self.directory, self.channels, self.n, self.every, self.seed = directory, channels, n, every, seed

    def on_train_epoch_end(self, trainer: pl.Trainer, module: GenerativeModel) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every and epoch + 1 != trainer.max_epochs:
            return
        images = module.sample(self.n, torch.Generator().manual_seed(self.seed))
        grid = (sample_grid(images, self.channels) * 255).astype(np.uint8)
        write_png(self.directory / f"samples_epoch_{epoch + 1:03d}.png", grid)


class KLPerDimension(Callback):
    """Append each epoch's mean KL per latent dimension of a VAE to ``kl_per_dimension.csv``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: pl.Trainer, module: GenerativeModel) -> None:
        if not hasattr(module, "finish_kl_epoch"):
            return
        module.finish_kl_epoch()  # callbacks run before the module's own epoch-end hook
        kl = module.kl_per_dimension
        header = not self.path.is_file()
        with self.path.open("a") as handle:
            if header:
                handle.write("epoch," + ",".join(f"z{i}" for i in range(len(kl))) + "\n")
            handle.write(f"{trainer.current_epoch}," + ",".join(f"{v:.6g}" for v in kl.tolist()) + "\n")


class Throughput(Callback):
    """Training images per second of the fit loop, from the end of its first (warm-up) batch on;
    ``key`` names the batch entry whose first dimension counts the images."""

    def __init__(self, key: str = "image") -> None:
        self.key = key
        self.images, self.seconds, self._start, self._batches = 0, 0.0, 0.0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        if self._batches == 1:
            self._start = time.perf_counter()
            return
        self.images += int(batch[self.key].shape[0])
        self.seconds = time.perf_counter() - self._start

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def _image_shape(data: CropDataModule) -> tuple[int, int, int]:
    channels = len(data.config.channels or data.store.channels)
    size = data.config.crop_size or data.store.crop_shape[-1]
    if data.config.crop_size is None and data.store.crop_shape[0] != data.store.crop_shape[1]:
        raise InputError(f"{data.store.path}: crops are not square; set data.crop_size")
    return channels, size, size


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto`` -> ``bf16-mixed`` on a CUDA GPU or CPU with bf16 units (AVX512-BF16 / AMX), else ``32-true``.

    On CPUs without bf16 units autocast emulates bf16 and is an order of magnitude slower
    (measured: 7 vs 163 images/s for the default VAE on an AVX2-only CPU).
    """
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def build_trainer(config: RunConfig, run_dir: Path, progress: bool, callbacks: list[pl.Callback],
                  **options) -> pl.Trainer:
    """The Lightning Trainer of a run: its budget and precision, a ``last.ckpt`` checkpoint every
    epoch, CSV logs per session (and TensorBoard when asked), then ``callbacks``; ``options`` are
    further Trainer arguments."""
    trainer = config.trainer
    loggers = [CSVLogger(run_dir / "logs", name="", version=f"session_{count_sessions(run_dir):02d}")]
    if trainer.tensorboard:
        loggers.append(_tensorboard_logger(run_dir))
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last="link", save_top_k=1, every_n_epochs=1)
    return pl.Trainer(
        max_epochs=trainer.max_epochs, max_steps=trainer.max_steps,
        max_time={"minutes": trainer.max_minutes} if trainer.max_minutes else None,
        limit_train_batches=trainer.limit_train_batches,
        precision=resolve_precision(trainer.precision, trainer.accelerator),
        accelerator=trainer.accelerator, devices=trainer.devices, strategy=trainer.strategy,
        log_every_n_steps=trainer.log_every_n_steps, callbacks=[checkpoint, *callbacks],
        logger=loggers, default_root_dir=run_dir,
        enable_progress_bar=progress, enable_model_summary=False, **options,
    )


def callback_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The scalar metrics the Trainer last logged."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}


def _trainer(config: TrainConfig, run_dir: Path, channels: list[str], progress: bool,
             throughput: Throughput) -> pl.Trainer:
    trainer = config.trainer
    return build_trainer(config, run_dir, progress, [
        SampleGrid(run_dir / "figures", channels, trainer.sample_images, trainer.sample_every_n_epochs, config.seed),
        throughput,
        KLPerDimension(run_dir / "kl_per_dimension.csv"),
    ])


def _tensorboard_logger(run_dir: Path):
    from lightning.pytorch.loggers import TensorBoardLogger

    try:
        return TensorBoardLogger(run_dir / "tensorboard", name="", version=f"session_{count_sessions(run_dir):02d}")
    except ModuleNotFoundError as exc:
        raise InputError(f"trainer.tensorboard needs TensorBoard ({exc}); pip install 'morphospace[tensorboard]'") from None


def count_sessions(run_dir: Path) -> int:
    """How many training sessions have logged into the run so far."""
    return len(list((run_dir / "logs").glob("session_*")))


def merge_session_logs(run_dir: Path) -> None:
    """Concatenate every session's Lightning ``metrics.csv`` into ``RUN/metrics.csv``."""
    import pandas as pd

    try:
        parts = [pd.read_csv(p) for p in sorted((run_dir / "logs").glob("session_*/metrics.csv"))]
    except (OSError, ValueError) as exc:  # a session cut short can leave a partial log
        logger.warning("could not merge the training logs into metrics.csv: %s", exc)
        return
    if parts:
        merged = pd.concat(parts, ignore_index=True)
        tmp = run_dir / ".metrics.csv.tmp"
        merged.to_csv(tmp, index=False)
        os.replace(tmp, run_dir / "metrics.csv")


def train(config: TrainConfig, overwrite: bool = False, progress: bool = True) -> TrainSummary:
    """Train (or resume) the run of ``config``; see the module docstring for what it writes."""
    run_dir, resumed = open_run_directory(config.run_dir, config, overwrite=overwrite, mutable=BUDGET_KEYS)
    with log_to_file(run_dir / "train.log"):
        pl.seed_everything(config.seed, workers=True, verbose=False)
        last = run_dir / "checkpoints" / "last.ckpt"
        data = CropDataModule(config.data)
        if last.is_file():  # keep exactly the split and normalisation the run started with
            data.load_state_dict(torch.load(last, map_location="cpu", weights_only=True).get("CropDataModule", {}))
        data.setup()
        data.save(run_dir)
        channels = list(config.data.channels or data.store.channels)
        image_shape = _image_shape(data)
        write_text_atomic(run_dir / "data.json", json.dumps({"channels": channels, "image_shape": list(image_shape)}))
        model = build_model(config.model, image_shape, config.trainer.channels_last)
        throughput = Throughput()
        trainer = _trainer(config, run_dir, channels, progress, throughput)
        if last.is_file():
            logger.info("resuming %s from %s", run_dir, last)
        start = time.perf_counter()
        try:
            trainer.fit(model, datamodule=data, ckpt_path=last if last.is_file() else None)
        finally:
            merge_session_logs(run_dir)
        summary = TrainSummary(run_dir, trainer.current_epoch, trainer.global_step, time.perf_counter() - start,
                               throughput.images_per_second, _metrics(trainer, model))
        _write_summary(run_dir, summary, resumed)
        logger.info(summary.line())
    return summary


def _metrics(trainer: pl.Trainer, model: GenerativeModel) -> dict[str, float]:
    metrics = callback_metrics(trainer)
    if hasattr(model, "active_dimensions"):
        metrics["active_dims"] = float(model.active_dimensions())
    return metrics


def _write_summary(run_dir: Path, summary: TrainSummary, resumed: bool) -> None:
    payload = {"epochs": summary.epochs, "optimizer_steps": summary.steps, "seconds_this_session": summary.seconds,
               "images_per_second": summary.images_per_second, "resumed": resumed, "metrics": summary.metrics,
               "torch_threads": torch.get_num_threads()}
    write_text_atomic(run_dir / "summary.json", json.dumps(payload, indent=2))


def load_run(run_dir: str | os.PathLike) -> tuple[TrainConfig, GenerativeModel, CropDataModule]:
    """The config, the trained model (eval mode) and the data module (with the run's saved split
    and normalisation) of a run directory."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, TrainConfig)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    state = read_checkpoint(checkpoint)
    model = model_from_checkpoint(state, str(checkpoint))
    data = CropDataModule(config.data)
    data.load_state_dict(state.get("CropDataModule", {}) or _saved_data_state(run_dir))
    data.setup()
    return config, model, data


def _saved_data_state(run_dir: Path) -> dict[str, Any]:
    """Data module state from ``normalization.json`` and ``splits.parquet`` (checkpoints carry it too)."""
    import pandas as pd

    splits = pd.read_parquet(run_dir / "splits.parquet")
    normalizer = json.loads((run_dir / "normalization.json").read_text())
    return {"splits": dict(zip(splits["store_index"].astype(int), splits["split"])), "normalizer": normalizer}
