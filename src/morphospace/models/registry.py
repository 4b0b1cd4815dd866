"""The model families by name: configs select a family (``model.family: gan``), never an import
path, and every command dispatches through this registry.

The built-in families are the modules listed in :data:`BUILTIN_FAMILIES`, each exposing a
``FAMILY`` object; other packages add theirs through the ``morphospace.families`` entry-point group
(an entry point naming a :class:`~morphospace.models.family.Family` instance or subclass), and a
notebook or test can call :func:`register_family`.

Examples
--------
>>> get_family("vae").data, sorted(get_family("gan").verbs)
('crops', ['embed', 'evaluate', 'explore', 'generate'])
>>> config = resolve_run_config({"name": "demo", "data": {"store": "store"}, "model": {"family": "vae"}})
>>> type(config).__name__, config.model.latent_dim
('VaeRunConfig', 64)
>>> resolve_run_config({"name": "demo", "data": {"store": "store"}, "model": {"family": "gam"}})
Traceback (most recent call last):
...
morphospace.config.ConfigError: config: key 'model.family': unknown family 'gam'; choose from ['autoencoder', 'classifier', 'cp2image', 'diffusion', 'gan', 'isl', 'ssl', 'statistical_cell', 'unet_embedder', 'vae']
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping, Sequence

import pydantic

from morphospace.config import (
    ConfigError, apply_overrides, path_fields, read_config_file, resolve_config, resolve_paths,
)
from morphospace.data.sources import data_source
from morphospace.errors import InputError
from morphospace.models.family import Family
from morphospace.models.training import RunConfig

__all__ = [
    "BUILTIN_FAMILIES", "ENTRY_POINT_GROUP", "register_family", "unregister_family", "get_family", "family_names",
    "run_config_model", "resolve_run_config", "load_run_config", "read_run_config", "preset",
]

logger = logging.getLogger(__name__)

BUILTIN_FAMILIES = ("morphospace.models.gan", "morphospace.models.vae", "morphospace.models.isl",
                    "morphospace.models.cp2image", "morphospace.models.statistical_cell",
                    "morphospace.models.autoencoder", "morphospace.models.classifier",
                    "morphospace.models.unet_embedder", "morphospace.models.diffusion",
                    "morphospace.models.ssl")
"""Modules of the built-in families; each defines ``FAMILY``."""

ENTRY_POINT_GROUP = "morphospace.families"


class _Registry:
    """Families by name, filled on first use from the built-in modules and the entry points."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self.run_configs: dict[str, type[RunConfig]] = {}
        self.loaded = False

    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        for module in BUILTIN_FAMILIES:
            self.add(importlib.import_module(module).FAMILY)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                family = entry.load()
                self.add(family() if isinstance(family, type) else family)
            except Exception as exc:  # a broken plug-in must not break the built-in families
                logger.warning("model family plug-in %s (%s) was not registered: %s", entry.name, entry.value, exc)

    def add(self, family: Family, replace: bool = False) -> Family:
        if not isinstance(family, Family):
            raise TypeError(f"{family!r} is not a morphospace.models.family.Family")
        data_source(family.data)
        if family.name in self.families and not replace and self.families[family.name] is not family:
            raise ValueError(f"a model family named {family.name!r} is already registered")
        self.families[family.name] = family
        self.run_configs.pop(family.name, None)
        return family


_REGISTRY = _Registry()


def register_family(family: Family, replace: bool = False) -> Family:
    """Add ``family`` under its name; ValueError when another family has the name, unless ``replace``."""
    _REGISTRY.load()
    return _REGISTRY.add(family, replace)


def unregister_family(name: str) -> None:
    """Remove a registered family (no error when absent)."""
    _REGISTRY.load()
    _REGISTRY.families.pop(name, None)
    _REGISTRY.run_configs.pop(name, None)


def family_names() -> list[str]:
    """Names of the registered families, sorted."""
    _REGISTRY.load()
    return sorted(_REGISTRY.families)


def get_family(name: str) -> Family:
    """The family called ``name``; ConfigError naming ``model.family`` and the choices otherwise."""
    _REGISTRY.load()
    if name not in _REGISTRY.families:
        raise ConfigError(f"key 'model.family': unknown family {name!r}; choose from {family_names()}")
    return _REGISTRY.families[name]


def run_config_model(family: Family) -> type[RunConfig]:
    """The run config model of ``family``: :class:`RunConfig` with its data source's config as
    ``data`` and its model config as ``model``."""
    _REGISTRY.load()
    if family.name not in _REGISTRY.run_configs:
        _REGISTRY.run_configs[family.name] = pydantic.create_model(
            f"{family.name.title().replace('_', '')}RunConfig", __base__=RunConfig,
            __doc__=f"A training run of the {family.name} family.",
            data=(data_source(family.data).config, ...), model=(family.config, ...),
        )
    return _REGISTRY.run_configs[family.name]


def _family_name(data: Mapping[str, Any], source: str) -> str:
    model = data.get("model")
    if not isinstance(model, Mapping) or not model.get("family"):
        raise ConfigError(f"{source}: key 'model.family': missing; choose from {family_names()}")
    return str(model["family"])


def _validate_run_config(data: Mapping[str, Any], overrides: Sequence[str], source: str) -> RunConfig:
    merged = apply_overrides(data, overrides)
    name = _family_name(merged, source)
    try:
        family = get_family(name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return resolve_config(run_config_model(family), merged, source=source)


def resolve_run_config(data: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "config",
                       base: str | os.PathLike | None = None) -> RunConfig:
    """Validate a training config (plus ``key=value`` overrides) against its family's run config
    model; the family comes from ``model.family`` after the overrides. Relative paths (the data,
    a run to start from, weight files) are made absolute against the folder ``base`` (default: the
    working folder), so that the run's saved config reads the same files from any folder."""
    config = resolve_paths(_validate_run_config(data, overrides, source), base if base is not None else Path.cwd())
    config._source = source
    return config


def load_run_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a training YAML (plus overrides) into its family's run config (see :func:`resolve_run_config`)."""
    return resolve_run_config(read_config_file(path), overrides, source=str(path))


def read_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The saved config of a run directory, its paths absolute; InputError naming the folder when it
    is not a run.

    Runs saved with relative paths (by older releases) have them resolved against the folder the
    run was trained in (the folder holding ``runs_dir/name``) or else the working folder, whichever
    holds the run's data files; InputError naming the paths when neither does.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a training run (no config.yaml)")
    try:
        config = _validate_run_config(read_config_file(path), (), str(path))
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    relative = {key: value for key, value in path_fields(config).items() if not Path(value).expanduser().is_absolute()}
    if not relative:
        return config
    resolved = resolve_paths(config, _base_of_relative_paths(path, config, relative))
    resolved._source = str(path)
    return resolved


def _started_in(run_dir: Path, config: RunConfig) -> Path | None:
    """The folder a run was trained from: ``run_dir`` less its trailing ``runs_dir/name`` (None
    when ``runs_dir`` is absolute, climbs with ``..`` or the folder does not end so)."""
    tail = (Path(config.runs_dir) / config.name).parts
    run = Path(os.path.abspath(run_dir)).parts
    if Path(config.runs_dir).is_absolute() or ".." in tail or run[-len(tail):] != tail:
        return None
    return Path(*run[:-len(tail)])


def _base_of_relative_paths(saved: Path, config: RunConfig, relative: dict[str, str]) -> Path:
    """The folder that the relative paths of an older run's config are relative to."""
    candidates = list(dict.fromkeys(folder for folder in (_started_in(saved.parent, config), Path.cwd()) if folder))
    data = {key: value for key, value in relative.items() if key.startswith("data.")}
    for folder in candidates:
        if all((folder / value).expanduser().exists() for value in data.values()):
            return folder
    listed = ", ".join(f"{key}: {value}" for key, value in data.items())
    raise InputError(f"{saved}: saved with relative data paths ({listed}) found neither in "
                     f"{' nor in '.join(str(folder) for folder in candidates)}; run the command from the folder "
                     f"the run was trained in, or write absolute paths into {saved}")


def preset(name: str) -> dict[str, Any]:
    """The ``model`` section of a named preset (``lsgan``, ``beta_vae``...) of any family."""
    _REGISTRY.load()
    for family in _REGISTRY.families.values():
        if name in family.presets:
            return {"family": family.name, **family.presets[name]}
    known = sorted(p for family in _REGISTRY.families.values() for p in family.presets)
    raise KeyError(f"unknown preset {name!r}; choose from {known}")
