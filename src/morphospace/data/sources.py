"""Data sources: the kinds of training data a model family can ask for, by name.

``crops``
    Single-cell crops of a crop store with their conditions (:class:`~morphospace.data.dataset.CropDataModule`,
    config :class:`~morphospace.data.dataset.DataConfig`).
``paired``
    Tiles of paired fields from a manifest, input and target channels of the same field
    (:class:`~morphospace.data.tiles.PairedDataModule`, config :class:`~morphospace.data.tiles.PairedDataConfig`).

Every source's data module is a Lightning data module that also offers ``spec`` (a
:class:`~morphospace.data.spec.DataSpec`), ``has_validation``, ``trainer_options`` and
``save(run_dir)`` (its fitted state as files), which is all the run skeleton uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import lightning.pytorch as pl

from morphospace.config import Config
from morphospace.data.dataset import CropDataModule, DataConfig
from morphospace.data.spec import DataSpec
from morphospace.data.tiles import PairedDataConfig, PairedDataModule

__all__ = ["RunDataModule", "DataSource", "data_source", "DATA_SOURCES"]


@runtime_checkable
class RunDataModule(Protocol):
    """What the run skeleton needs of a data module beside Lightning's hooks."""

    spec: DataSpec
    has_validation: bool
    trainer_options: dict[str, Any]

    def save(self, run_dir: str | os.PathLike) -> None: ...


@dataclass(frozen=True)
class DataSource:
    """A kind of training data: its config model, its data module class, and how the module is
    built (set up, ready to serve) from a config, the run's seed (paired fields draw their tiles
    from it; crops split, shuffle and augment with their own ``data.seed``) and, when resuming, the
    state a checkpoint saved under the module's class name."""

    name: str
    config: type[Config]
    module: type[pl.LightningDataModule]
    build: Callable[[Any, int, dict | None], pl.LightningDataModule]

    def checkpoint_state(self, checkpoint: dict[str, Any]) -> dict | None:
        """The module's state in a Lightning checkpoint's content, if saved there."""
        return checkpoint.get(self.module.__qualname__) or None


def _crops(config: DataConfig, seed: int, state: dict | None) -> CropDataModule:
    module = CropDataModule(config)
    if state:
        module.load_state_dict(state)
    module.setup()
    return module


def _paired(config: PairedDataConfig, seed: int, state: dict | None) -> PairedDataModule:
    return PairedDataModule.from_config(config, seed)


DATA_SOURCES: dict[str, DataSource] = {
    "crops": DataSource("crops", DataConfig, CropDataModule, _crops),
    "paired": DataSource("paired", PairedDataConfig, PairedDataModule, _paired),
}


def data_source(name: str) -> DataSource:
    """The source called ``name``; KeyError listing the known ones otherwise."""
    if name not in DATA_SOURCES:
        raise KeyError(f"unknown data source {name!r}; known: {sorted(DATA_SOURCES)}")
    return DATA_SOURCES[name]
