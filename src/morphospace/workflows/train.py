"""``train``: fit a model of any registered family from a YAML config into ``runs/<name>/``.

:func:`plan_run` checks everything before anything is written: the config against its family's
schema (done when it was loaded), the data against the config (store, channels, conditions, split
columns, fields and tiles), the family's rules (crop sizes, ranges) and what its batches must
carry; a problem is a :class:`~morphospace.config.ConfigError` naming the key. :func:`train` then
writes the run and fits it with Lightning.

Run directory (the same for every family): ``config.yaml`` (resolved), ``data.json`` (family, data
source and batch entries), the data module's fitted state (crops: ``normalization.json``,
``splits.parquet``, ``conditions.json``; paired fields: ``regions.json``), ``checkpoints/last.ckpt``
(training resumes from it), ``logs/session_NN/`` merged into ``metrics.csv``, ``summary.json``
(:class:`~morphospace.models.training.TrainSummary`), ``train.log``, ``figures/`` (sample grids of
sampling families during training, and their final figures when training ends for any reason) and
family files such as ``kl_per_dimension.csv``.

Re-running a config resumes from the last checkpoint with the data state saved in it; only the
budget and where it runs (:data:`~morphospace.models.training.RESUMABLE_KEYS`) may change between
sessions, any other change is an error. Every epoch's random streams depend only on the seed and
the epoch (:class:`~morphospace.models.training.EpochSeed`), so a run interrupted and resumed ends
with the same weights as an uninterrupted one.

With several processes (``trainer.devices``, ``num_nodes``, ``strategy``) every process runs this
same function; only global rank 0 writes. The writing process holds ``runs_dir/<name>.lock`` while
it writes, so a second ``train`` of the same run stops at once with a message naming the first.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from morphospace.atomic import write_json_atomic
from morphospace.config import ConfigError, key_error
from morphospace.data.sources import RunDataModule, data_source
from morphospace.errors import InputError
from morphospace.explore.samples import TrainingFigures
from morphospace.locks import output_lock
from morphospace.models.family import Family
from morphospace.models.registry import get_family
from morphospace.models.run import last_checkpoint, read_checkpoint
from morphospace.models.training import (
    RESUMABLE_KEYS, EpochSeed, GradientSpikeClip, RunConfig, Throughput, TrainSummary, build_trainer, callback_metrics,
    epochs_trained, merge_session_logs, quiet_lightning,
)
from morphospace.runs import check_run_directory, code_stamp, is_rank_zero, log_to_file, open_run_directory

__all__ = ["RunPlan", "plan_run", "train", "trained"]

logger = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """A checked run, ready to write and fit: the data module (set up), the module, and where it
    resumes from."""

    config: RunConfig
    family: Family
    data: RunDataModule
    module: pl.LightningModule
    notes: dict[str, str]
    checkpoint: Path | None
    resumed: bool
    code: str


def plan_run(config: RunConfig, overwrite: bool = False) -> RunPlan:
    """Check ``config`` against its run folder, its data and its family, and build the data and
    model modules, without writing anything.

    Raises ConfigError naming the config file and key, RunConflictError when the run folder holds
    another config, InputError naming a bad data file.
    """
    family = get_family(config.model.family)
    try:
        resumed = check_run_directory(config.run_dir, config, mutable=RESUMABLE_KEYS, overwrite=overwrite)
        last = last_checkpoint(config.run_dir)
        checkpoint = last if resumed and last.is_file() else None
        state = read_checkpoint(checkpoint) if checkpoint else {}
        pl.seed_everything(config.seed, workers=True, verbose=False)
        source = data_source(family.data)
        data = source.build(config.data, config.seed, source.checkpoint_state(state))
        spec = data.spec
        family.check(config, spec)
        missing = spec.missing(family.batch_requirements(config.model))
        if missing:
            raise key_error("data", f"the {family.name} family needs batches carrying {', '.join(missing)}; "
                                    f"these batches carry {list(spec.entries)}")
        if checkpoint is None:
            module, notes = family.build(config, spec, data)
        else:
            module, notes = family.restore(state["hyper_parameters"]), _previous_notes(config.run_dir)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(config.source) else f"{config.source}: {message}") from None
    return RunPlan(config, family, data, module, notes, checkpoint, resumed, code_stamp())


def _previous_notes(run_dir: Path) -> dict[str, str]:
    try:
        return TrainSummary.read(run_dir).notes
    except InputError:  # an interrupted first session leaves no summary
        return {}


def train(config: RunConfig, overwrite: bool = False, progress: bool = True) -> TrainSummary:
    """Train (or resume) the run of ``config``; see the module docstring for what it writes."""
    plan = plan_run(config, overwrite)  # read only: a bad config leaves nothing behind, not even a lock
    writer = is_rank_zero()
    with output_lock(config.run_dir) if writer else contextlib.nullcontext():
        if writer and plan.checkpoint is None and not overwrite and last_checkpoint(config.run_dir).is_file():
            plan = plan_run(config)  # another process trained this run while we were planning: resume it
        return _fit(plan, overwrite, progress, writer)


def _fit(plan: RunPlan, overwrite: bool, progress: bool, writer: bool) -> TrainSummary:
    """Write the run of ``plan`` (on the writing process) and fit it."""
    config, run_dir = plan.config, plan.config.run_dir
    if writer:
        open_run_directory(run_dir, config, overwrite=overwrite, mutable=RESUMABLE_KEYS)
        plan.data.save(run_dir)
        description = {"family": plan.family.name, **plan.data.spec.to_dict()}
        write_json_atomic(run_dir / "data.json", description)
    with _session_logging(run_dir, writer), quiet_lightning():
        throughput = Throughput(next(iter(plan.data.spec.entries)))
        validates = plan.data.has_validation and is_overridden("validation_step", plan.module)
        trainer = build_trainer(config, run_dir, progress, [throughput, *_callbacks(plan, run_dir)],
                                plan.family.has_unused_parameters(config.model), **plan.data.trainer_options,
                                limit_val_batches=1.0 if validates else 0)
        logger.info("%s %s run %s: %s x %s, precision %s", "resuming" if plan.checkpoint else "starting",
                    plan.family.name, run_dir, trainer.num_nodes * trainer.num_devices,
                    type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(), trainer.precision)
        start = time.perf_counter()
        try:
            trainer.fit(plan.module, datamodule=plan.data, ckpt_path=plan.checkpoint, weights_only=True)
        finally:
            if trainer.is_global_zero:
                merge_session_logs(run_dir)
        summary = TrainSummary(
            run_dir=run_dir, family=plan.family.name, epochs=epochs_trained(trainer), optimizer_steps=trainer.global_step,
            seconds_this_session=time.perf_counter() - start, samples_per_second=throughput.samples_per_second,
            sample_unit=plan.family.sample_unit, processes=trainer.world_size, resumed=plan.resumed,
            metrics=_metrics(trainer, plan.module), notes={**plan.notes, **plan.family.notes_after_fit(plan.module)},
            torch_threads=torch.get_num_threads(), code=plan.code)
        if trainer.is_global_zero:
            summary.write()
            logger.info(summary.line())
    return summary


@contextlib.contextmanager
def _session_logging(run_dir: Path, writer: bool):
    """``train.log`` for the writing process; the others log warnings only."""
    if writer:
        with log_to_file(run_dir / "train.log"):
            yield
        return
    package = logging.getLogger("morphospace")
    level = package.level
    package.setLevel(logging.WARNING)
    try:
        yield
    finally:
        package.setLevel(level)


def _callbacks(plan: RunPlan, run_dir: Path) -> list[pl.Callback]:
    config = plan.config
    callbacks: list[pl.Callback] = [EpochSeed(config.seed), *plan.family.callbacks(config, run_dir)]
    if config.trainer.gradient_spike_factor is not None:
        callbacks.append(GradientSpikeClip(config.trainer.gradient_spike_factor, config.trainer.gradient_spike_window))
    if "generate" in plan.family.verbs:
        trainer = config.trainer
        callbacks.append(TrainingFigures(run_dir / "figures", plan.data.spec.names("image"), trainer.sample_images,
                                         trainer.sample_every_n_epochs, config.seed))
    return callbacks


def _metrics(trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, float]:
    metrics = callback_metrics(trainer)
    if hasattr(module, "active_dimensions"):
        metrics["active_dims"] = float(module.active_dimensions())
    return metrics


def trained(config: RunConfig, progress: bool = True, same_code: bool = False) -> TrainSummary:
    """The summary of the run of ``config``: read when the run already reached the config's budget
    (a rerun changes nothing), else trained (an interrupted run, or one given a larger budget,
    resumes).

    A run whose last session was trained by other code (its summary's ``code`` differs from
    :func:`~morphospace.runs.code_stamp`) is reused with a warning naming both, or, with
    ``same_code`` (benchmarks, whose numbers must come from the code they ship with), trained again
    from the start in place of the old one.
    """
    if check_run_directory(config.run_dir, config, mutable=RESUMABLE_KEYS):
        try:
            summary = TrainSummary.read(config.run_dir)
        except InputError:  # interrupted before its first summary, or written by an older release
            return train(config, progress=progress)
        other_code = summary.code != code_stamp()
        if other_code and same_code:
            logger.info("%s: trained by code %s, not %s; training it again", config.run_dir,
                        summary.code or "of an older release", code_stamp())
            return train(config, overwrite=True, progress=progress)
        if _reached_budget(summary, config):
            if other_code:
                logger.warning("%s: reused, though trained by code %s, not %s (morphospace train --overwrite "
                               "trains it again)", config.run_dir, summary.code or "of an older release", code_stamp())
            return summary
    return train(config, progress=progress)


def _reached_budget(summary: TrainSummary, config: RunConfig) -> bool:
    """Whether a session ended at the budget of ``config``: its epochs or steps, or (with a
    wall-clock limit, which the summary cannot tell from an interruption) any finished session."""
    trainer = config.trainer
    return (summary.epochs >= trainer.max_epochs or 0 < trainer.max_steps <= summary.optimizer_steps
            or trainer.max_minutes is not None)
