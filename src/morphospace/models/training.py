"""The training parts every model family shares: the run config, the Lightning Trainer of a run,
its generic callbacks, precision, and the one ``summary.json`` schema.

Multi-process training (``trainer.devices``, ``num_nodes``, ``strategy``) is Lightning's: every
process runs the same command; only the process of global rank 0 writes files (the launch rank is
read from the environment: Lightning's DDP launcher, torchrun and SLURM set it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping

import lightning.pytorch as pl
import pydantic
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from morphospace.atomic import atomic_file, write_json_atomic
from morphospace.config import Config
from morphospace.data.dataset import epoch_seed
from morphospace.errors import InputError

__all__ = [
    "TrainerConfig", "RunConfig", "TrainSummary", "Throughput", "build_trainer", "callback_metrics",
    "epochs_trained", "resolve_precision", "cpu_has_bf16", "count_sessions", "merge_session_logs", "quiet_lightning",
    "EpochSeed", "GradientSpikeClip", "log_metrics", "resolve_strategy", "RESUMABLE_KEYS", "with_lr_schedule",
]

logger = logging.getLogger(__name__)

RESUMABLE_KEYS = ("trainer.max_epochs", "trainer.max_minutes", "trainer.max_steps", "trainer.accelerator",
                  "trainer.devices", "trainer.num_nodes", "trainer.strategy")
"""Config keys that may change when a run resumes: the budget and where it runs."""

_FRAMEWORK_WARNINGS = (
    r"The number of training batches .* is smaller than the logging interval",
    r"Total length of .* across ranks is zero",
    r"Checkpoint directory .* exists and is not empty",
    r"Experiment logs directory .* exists and is not empty",
    r"The '.*_dataloader' does not have many workers",
    r"The `srun` command is available on your system but is not used",
    r"Trying to infer the `batch_size` from an ambiguous collection",
    r"Found \d+ module\(s\) in eval mode at the start of training",  # frozen feature networks of losses
    r"You passed in a `val_dataloader` but have no `validation_step`",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class TrainerConfig(Config):
    """Lightning Trainer settings and the training budget.

    The budget is epochs (``max_epochs``) or optimiser steps (``max_steps``), so that the same seed
    and config give the same numbers whatever the machine's load; ``max_minutes`` adds an optional
    wall-clock limit (summed over resumed sessions), whose results then depend on the load.
    """

    max_epochs: int = pydantic.Field(20, ge=1)
    max_minutes: float | None = pydantic.Field(
        None, gt=0, description="optional wall-clock budget of the run, summed over resumed sessions")
    max_steps: int = pydantic.Field(-1, ge=-1, description="optimiser steps: GAN batches with a generator "
                                                             "update count twice")
    limit_train_batches: float | int = pydantic.Field(1.0, gt=0)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = pydantic.Field(
        "auto", description="auto: bf16 autocast where the hardware has bf16 units (GPU, AVX512-BF16/AMX CPU), else fp32")
    channels_last: bool = pydantic.Field(
        True, description="convolutions in channels-last memory format (the 3D variant for z-stacks); faster on CPUs")
    accelerator: str = pydantic.Field("auto", description="auto, cpu, gpu, ...")
    devices: int | str = pydantic.Field(
        "auto", description="devices (processes) per node, e.g. 2 for two GPUs or two CPU processes with ddp")
    num_nodes: int = pydantic.Field(1, ge=1, description="machines of a multi-node run (torchrun or SLURM)")
    strategy: str = pydantic.Field("auto", description="auto, ddp (one process per device), deepspeed, fsdp, ...")
    log_every_n_steps: int = pydantic.Field(20, ge=1)
    sample_every_n_epochs: int = pydantic.Field(1, ge=1, description="sampling families: grid of samples")
    sample_images: int = pydantic.Field(64, ge=1)
    tensorboard: bool = pydantic.Field(False, description="also log to TensorBoard (needs the tensorboard extra)")
    gradient_spike_factor: float | None = pydantic.Field(
        None, gt=1, description="clip each network's gradient norm to this factor times the median of its last "
                                "gradient_spike_window norms (GradientSpikeClip); null: no clipping")
    gradient_spike_window: int = pydantic.Field(100, ge=2, description="optimiser steps in that median")

    @pydantic.field_validator("strategy")
    @classmethod
    def _launched_processes(cls, value: str) -> str:
        if any(word in value for word in ("spawn", "fork", "notebook")):
            raise ValueError(f"{value!r} trains in child processes that cannot write the run's summary; use 'ddp' "
                             "(the launcher starts one process per device running the same command)")
        return value


class RunConfig(Config):
    """What every training run has: a name, the folder of runs, a seed, the trainer settings, and
    the data and model sections, whose types the model family sets (see
    :func:`morphospace.models.registry.run_config_model`)."""

    name: str = pydantic.Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    runs_dir: str = "runs"
    seed: int = 0
    trainer: TrainerConfig = TrainerConfig()
    data: Config
    model: Config

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


_MissingAsNaN = Annotated[float, pydantic.BeforeValidator(lambda value: math.nan if value is None else value)]
"""A float that the strict JSON of ``summary.json`` stores as ``null`` when it is NaN or infinite."""


class TrainSummary(pydantic.BaseModel):
    """What a training session did; ``summary.json`` of every run."""

    model_config = pydantic.ConfigDict(extra="forbid")

    run_dir: Path = pydantic.Field(Path("."), exclude=True, description="where it was read from or written to")
    family: str
    epochs: float = pydantic.Field(description="epochs trained; the last one as a fraction when a step or time "
                                               "budget stopped it part-way")
    optimizer_steps: int
    seconds_this_session: float
    samples_per_second: _MissingAsNaN = pydantic.Field(description="all processes together, after the warm-up batch")
    sample_unit: str = pydantic.Field(description="what a sample is: crops, tiles, ...")
    processes: int = 1
    resumed: bool = False
    metrics: dict[str, _MissingAsNaN] = pydantic.Field(default_factory=dict)
    notes: dict[str, str] = pydantic.Field(default_factory=dict, description="family-specific facts")
    torch_threads: int = 1
    code: str = pydantic.Field("", description="morphospace.runs.code_stamp of the code that trained this session; "
                                               "empty for sessions of older releases")

    def line(self) -> str:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items()
                          if k.endswith("_epoch") or k.startswith("val_") or k == "active_dims")
        speed = (f"{self.samples_per_second:.1f} {self.sample_unit}/s" if math.isfinite(self.samples_per_second)
                 else "speed not measured: fewer than 2 batches")
        return (f"trained {self.epochs:g} epoch(s), {self.optimizer_steps} steps in {self.seconds_this_session:.0f} s "
                f"({speed}); {shown} -> {self.run_dir}")

    def write(self) -> Path:
        """Write ``RUN/summary.json`` atomically."""
        return write_json_atomic(self.run_dir / "summary.json", self.model_dump(mode="json"))

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> "TrainSummary":
        """The summary of a finished session of ``run_dir``; InputError when missing or foreign."""
        path = Path(run_dir) / "summary.json"
        try:
            summary = cls.model_validate_json(path.read_text())
        except (OSError, pydantic.ValidationError) as exc:
            raise InputError(f"{path}: no readable training summary ({type(exc).__name__})") from None
        summary.run_dir = Path(run_dir)
        return summary


class Throughput(Callback):
    """Training samples per second of the fit loop, from the end of the first (warm-up) batch on,
    all processes together; ``key`` names the batch entry whose first dimension counts samples."""

    def __init__(self, key: str = "image") -> None:
        self.key = key
        self.samples, self.seconds, self._start, self._batches = 0, 0.0, 0.0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        if self._batches == 1:
            self._start = time.perf_counter()
            return
        self.samples += int(batch[self.key].shape[0])
        self.seconds = time.perf_counter() - self._start

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.world_size > 1:  # a collective: every process reaches it (on its device: NCCL needs CUDA)
            samples = torch.tensor(float(self.samples), device=trainer.strategy.root_device)
            self.samples = int(trainer.strategy.reduce(samples, reduce_op="sum").item())

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


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


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Inside the block, Lightning's informational lines (tips, accelerator listings) and its
    warnings about benign set-ups (few batches, no validation, resumed folders) are not shown;
    other warnings and errors are."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _FRAMEWORK_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def resolve_strategy(trainer: TrainerConfig, unused_parameters: bool = False) -> str:
    """The Lightning strategy of ``trainer``; for a module whose backward passes leave some
    parameters without gradients, its DDP variant that looks for them (also when ``auto`` would
    choose DDP: several devices or nodes).

    >>> resolve_strategy(TrainerConfig(strategy="ddp"), unused_parameters=True)
    'ddp_find_unused_parameters_true'
    >>> resolve_strategy(TrainerConfig(devices=1), unused_parameters=True)
    'auto'
    """
    strategy = trainer.strategy
    if not unused_parameters:
        return strategy
    if strategy == "ddp":
        return "ddp_find_unused_parameters_true"
    several = trainer.num_nodes > 1 or (isinstance(trainer.devices, int) and trainer.devices > 1) or (
        trainer.devices in ("auto", "-1", -1) and trainer.accelerator in ("auto", "gpu", "cuda")
        and torch.cuda.device_count() > 1)
    return "ddp_find_unused_parameters_true" if strategy == "auto" and several else strategy


def build_trainer(config: RunConfig, run_dir: Path, progress: bool, callbacks: list[pl.Callback],
                  unused_parameters: bool = False, **options: Any) -> pl.Trainer:
    """The Lightning Trainer of a run: its budget, precision and processes (see
    :func:`resolve_strategy` for ``unused_parameters``), a ``last.ckpt`` checkpoint every epoch, CSV
    logs per session (and TensorBoard when asked), then ``callbacks``; ``options`` are further
    Trainer arguments. Build (and fit) it inside :func:`quiet_lightning`."""
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
        accelerator=trainer.accelerator, devices=trainer.devices, num_nodes=trainer.num_nodes,
        strategy=resolve_strategy(trainer, unused_parameters), log_every_n_steps=trainer.log_every_n_steps,
        callbacks=[checkpoint, *callbacks], logger=loggers, default_root_dir=run_dir,
        enable_progress_bar=progress, enable_model_summary=False, **options,
    )


def _tensorboard_logger(run_dir: Path):
    from lightning.pytorch.loggers import TensorBoardLogger

    try:
        return TensorBoardLogger(run_dir / "tensorboard", name="", version=f"session_{count_sessions(run_dir):02d}")
    except ModuleNotFoundError as exc:
        raise InputError(f"trainer.tensorboard needs TensorBoard ({exc}); "
                         "pip install 'morphospace[tensorboard]'") from None


def epochs_trained(trainer: pl.Trainer) -> float:
    """Epochs a fitted Trainer has trained: whole epochs, with the last as the fraction of its batches
    that ran when a step or time budget (or an early stop) ended it part-way, e.g. 2.4."""
    epochs = trainer.current_epoch  # counts an epoch cut short as a whole one
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    per_epoch = trainer.num_training_batches
    if epochs > 0 and math.isfinite(per_epoch) and 0 < done < per_epoch:
        return round(epochs - 1 + done / per_epoch, 3)
    return float(epochs)


def callback_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The scalar metrics the Trainer last logged."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}


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
        with atomic_file(run_dir / "metrics.csv") as tmp:
            pd.concat(parts, ignore_index=True).to_csv(tmp, index=False)


class EpochSeed(Callback):
    """Each training epoch starts from random streams that depend only on the seed, the epoch and
    the process rank: torch's generator (model noise: GAN priors, VAE sampling, dropout) and, through
    its ``set_epoch``, the data module's augmentation. A run resumed from an epoch's checkpoint
    therefore continues exactly as an uninterrupted one would, and the processes of a
    multi-process run draw differently."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank))
        set_epoch = getattr(trainer.datamodule, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(trainer.current_epoch)


class GradientSpikeClip(Callback):
    """Clip a gradient spike of one network before the optimiser sees it.

    The parameters an optimiser steps are grouped by the module's top-level attribute that holds
    them (``encoder``, ``decoder``, ``target_encoder``...). Before each step, a group whose gradient
    norm (L2 over its parameters) exceeds ``factor`` times the median of its last ``window`` norms is
    scaled down to that bound (the median needs at least ``min_history`` norms, which the first steps
    only record; default the smaller of 10 and ``window``). Each group is bounded on its own, so a
    spike in one network neither scales the others nor passes whole into Adam's running mean of
    squared gradients, where it would slow that network's later updates for hundreds of steps. The
    norms are those of the unscaled gradients (Lightning unscales mixed-precision gradients before
    this hook); the recorded norms are kept in checkpoints, so a resumed run clips as the
    uninterrupted one would; a zero norm (a network without gradient in that step) is not recorded.
    Logged per group: ``gradient_spikes_clipped_<group>``, the steps it was clipped, summed per epoch.

    >>> net = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1)})
    >>> clip = GradientSpikeClip(factor=3.0, window=4, min_history=2)
    >>> for scale in (1.0, 1.0, 100.0):
    ...     net.zero_grad()
    ...     net["a"](torch.ones(1, 2)).sum().mul(scale).backward()
    ...     clipped = clip.clip(net, list(net.parameters()))
    >>> clipped, round(float(torch.cat([p.grad.flatten() for p in net.parameters()]).norm() / 3.0), 4)
    (['a'], 1.7321)
    """

    def __init__(self, factor: float, window: int = 100, min_history: int | None = None) -> None:
        min_history = min(10, window) if min_history is None else min_history
        if factor <= 1 or window < 2 or not 1 <= min_history <= window:
            raise ValueError(f"need factor > 1 and 1 <= min_history <= window (>= 2), got {factor}, {min_history}, "
                             f"{window}")
        self.factor, self.window, self.min_history = factor, window, min_history
        self.norms: dict[str, deque[float]] = {}

    @staticmethod
    def groups(module: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> dict[str, list[torch.nn.Parameter]]:
        """``parameters`` that have a gradient, by the top-level attribute of ``module`` holding them."""
        owners = {id(p): name.split(".")[0] for name, p in module.named_parameters()}
        groups: dict[str, list[torch.nn.Parameter]] = {}
        for parameter in parameters:
            if parameter.grad is not None and id(parameter) in owners:
                groups.setdefault(owners[id(parameter)], []).append(parameter)
        return groups

    def clip(self, module: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> list[str]:
        """Record each group's gradient norm and clip the spikes among ``parameters`` (see the class);
        the names of the groups clipped."""
        return self._clip_groups(self.groups(module, parameters))

    def _clip_groups(self, groups: dict[str, list[torch.nn.Parameter]]) -> list[str]:
        clipped = []
        for name, group in groups.items():
            history = self.norms.setdefault(name, deque(maxlen=self.window))
            bound = self.factor * float(torch.tensor(list(history)).median()) if len(history) >= self.min_history \
                else math.inf
            norm = float(torch.nn.utils.clip_grad_norm_(group, bound))
            if math.isfinite(norm) and norm > 0:  # a zero gradient says nothing of the network's scale
                history.append(norm)
            if norm > bound:
                clipped.append(name)
        return clipped

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        groups = self.groups(module, [p for group in optimizer.param_groups for p in group["params"]])
        clipped = self._clip_groups(groups)
        for name in groups:
            module.log(f"gradient_spikes_clipped_{name}", float(name in clipped), on_step=False, on_epoch=True,
                       reduce_fx="sum", sync_dist=False)

    def state_dict(self) -> dict[str, Any]:
        return {"norms": {name: list(history) for name, history in self.norms.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.norms = {name: deque(values, maxlen=self.window) for name, values in state_dict["norms"].items()}


def log_metrics(module: pl.LightningModule, values: Mapping[str, torch.Tensor | float], batch_size: int,
                on_step: bool = True, prog_bar: bool = False) -> None:
    """Log scalar ``values`` of a batch: with ``on_step`` as ``<name>_step`` (this process's batch)
    and ``<name>_epoch``, else under their own names at epoch level only. Epoch values are means
    over the epoch's batches and, in a multi-process run, over the processes: they are reduced
    once at the epoch's end, never per step."""
    values = {name: value.detach() if isinstance(value, torch.Tensor) else value for name, value in values.items()}
    if on_step:
        module.log_dict({f"{name}_step": value for name, value in values.items()}, on_step=True, on_epoch=False,
                        prog_bar=prog_bar, batch_size=batch_size)
    module.log_dict({f"{name}_epoch" if on_step else name: value for name, value in values.items()}, on_step=False,
                    on_epoch=True, sync_dist=True, prog_bar=prog_bar, batch_size=batch_size)


def with_lr_schedule(optimizer: torch.optim.Optimizer, trainer: pl.Trainer, schedule: Literal["constant", "cosine"]
                     ) -> torch.optim.Optimizer | dict[str, Any]:
    """``optimizer`` as ``configure_optimizers`` returns it, with ``schedule`` over the run's optimiser steps.

    ``constant`` keeps the learning rate; ``cosine`` scales it by 0.5 (1 + cos(pi t / T)) at step t of
    the T steps of the budget (``trainer.max_steps``, or ``max_epochs`` times the batches per epoch),
    from the full rate at the first step to 0 at the last, updated every step. T is read when
    training starts, so a run resumed with a larger budget stretches the rest of the schedule over
    it (the step count is restored from the checkpoint). A wall-clock limit (``max_minutes``) may
    stop the run before the rate has fallen. Raises InputError when the budget has no step count.
    """
    if schedule == "constant":
        return optimizer
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total) or total < 1:
        raise InputError(f"model.lr_schedule {schedule!r} needs a budget in epochs or steps "
                         f"(trainer.max_epochs or trainer.max_steps), got {total} steps")

    def factor(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
