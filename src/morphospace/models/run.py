"""A trained run, loaded: its config, family, module (eval mode) and data module with the fitted
state the run saved, for the commands that use runs (embed, generate, explore, predict, evaluate).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pydantic
import torch

from morphospace.data.sources import data_source
from morphospace.errors import InputError
from morphospace.models.family import Family
from morphospace.models.registry import get_family, read_run_config
from morphospace.models.training import RunConfig

__all__ = ["Run", "load_run", "load_module", "last_checkpoint", "read_checkpoint", "module_from_checkpoint",
           "require_verb"]


@dataclass
class Run:
    """A loaded run; ``data`` serves exactly the split, normalisation and conditions it trained with."""

    path: Path
    config: RunConfig
    family: Family
    module: pl.LightningModule
    data: pl.LightningDataModule


def read_checkpoint(checkpoint: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """The content of a checkpoint file, loaded without unpickling objects (tensors and plain types).

    Raises InputError naming the file when it is missing, truncated or not a plain checkpoint.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: checkpoint not found")
    try:
        return torch.load(checkpoint, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise InputError(f"{checkpoint}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None


def module_from_checkpoint(family: Family, state: dict[str, Any], source: str = "checkpoint") -> pl.LightningModule:
    """Rebuild ``family``'s module from checkpoint content (see :func:`read_checkpoint`), in eval mode."""
    try:
        module = family.restore(state["hyper_parameters"])
        module.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError, pydantic.ValidationError) as exc:
        raise InputError(f"{source}: not a checkpoint of the {family.name} family "
                         f"({type(exc).__name__}: {exc})") from None
    return module.eval()


def require_verb(run_dir: str | os.PathLike, config: RunConfig, verb: str, kind: str | None = None) -> Family:
    """The run's family; InputError naming the run and what it supports when ``verb`` (and the
    ``evaluate`` ``kind``) does not apply to it."""
    family = get_family(config.model.family)
    if not family.supports(verb, config.model, kind):
        wanted = f"{verb} {kind}" if kind else verb
        raise InputError(f"{run_dir}: runs of the {family.name} family do not support '{wanted}'; this one supports "
                         f"{family.describe(config.model)}")
    return family


def last_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint a run resumes from and is used from: ``checkpoints/last.ckpt``, or when it is
    gone (it links to the newest epoch's file), the checkpoint of the latest epoch and step."""
    folder = Path(run_dir) / "checkpoints"
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    saved = [(tuple(int(n) for n in re.findall(r"\d+", path.stem)), path) for path in folder.glob("epoch=*.ckpt")]
    return max(saved)[1] if saved else last


def _restore(run_dir: Path, verb: str | None, kind: str | None
             ) -> tuple[RunConfig, Family, dict[str, Any], pl.LightningModule]:
    config = read_run_config(run_dir)
    family = require_verb(run_dir, config, verb, kind) if verb else get_family(config.model.family)
    checkpoint = last_checkpoint(run_dir)
    state = read_checkpoint(checkpoint)
    return config, family, state, module_from_checkpoint(family, state, str(checkpoint))


def load_module(run_dir: str | os.PathLike, verb: str | None = None, kind: str | None = None
                ) -> tuple[RunConfig, pl.LightningModule]:
    """The config and trained module (eval mode) of a run, without its data; InputError as for
    :func:`load_run`."""
    config, _, _, module = _restore(Path(run_dir), verb, kind)
    return config, module


def load_run(run_dir: str | os.PathLike, verb: str | None = None, kind: str | None = None) -> Run:
    """Load a finished (or interrupted) run for ``verb``; raises InputError when the folder is not
    a run, has no checkpoint, or its family does not support ``verb``."""
    run_dir = Path(run_dir)
    config, family, state, module = _restore(run_dir, verb, kind)
    source = data_source(family.data)
    data = source.build(config.data, config.seed, source.checkpoint_state(state))
    return Run(run_dir, config, family, module, data)
