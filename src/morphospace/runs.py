"""Run directories, logging and seeding.

A run directory holds the fully resolved ``config.yaml`` (defaults and seed included). Opening it
again with a different config is an error that lists the differing keys, so a stale run is never
silently reused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, TypeVar

import numpy as np
import yaml

from morphospace.config import Config, ConfigError, resolve_config, save_config
from morphospace.errors import InputError, MorphospaceError

__all__ = [
    "RunConflictError", "open_run_directory", "read_run_config", "config_differences", "setup_logging", "log_to_file",
    "seed_everything",
]

_HANDLER_FLAG = "_morphospace_handler"
ConfigT = TypeVar("ConfigT", bound=Config)
logger = logging.getLogger(__name__)


class RunConflictError(MorphospaceError):
    """An output directory was made with a different configuration."""


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings.

    >>> config_differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 0})
    ['b.c', 'd']
    """
    keys = sorted(set(old) | set(new))
    differences = []
    for key in keys:
        dotted = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            differences += config_differences(a, b, prefix=f"{dotted}.")
        elif a != b:
            differences.append(dotted)
    return differences


def open_run_directory(
    path: str | os.PathLike, config: Config, config_name: str = "config.yaml", overwrite: bool = False,
    mutable: tuple[str, ...] = (),
) -> tuple[Path, bool]:
    """Create (or reopen) a run directory for ``config``.

    Returns ``(path, resumed)``: ``resumed`` is True when the directory already held the same
    config, or one differing only in the dotted keys listed in ``mutable`` (e.g. a training
    budget, which may grow on resume; the saved config is then updated). Raises
    :class:`RunConflictError` when it holds a different one, unless ``overwrite`` is set, in
    which case the old directory is removed first.
    """
    path = Path(path)
    saved = path / config_name
    if path.exists() and overwrite:
        shutil.rmtree(path)
    if saved.is_file():
        old = yaml.safe_load(saved.read_text()) or {}
        differences = config_differences(old, config.to_dict())
        fixed = [key for key in differences if key not in mutable]
        if fixed:
            raise RunConflictError(
                f"{path}: made with a different config (keys {', '.join(fixed[:8])} differ); "
                "choose another output, restore the config, or overwrite"
            )
        if differences:
            logger.info("%s: resuming with new %s", path, ", ".join(differences))
            save_config(config, saved)
        return path, True
    if path.exists() and any(path.iterdir()):
        raise RunConflictError(f"{path}: exists and is not a morphospace run (no {config_name}); choose another output")
    path.mkdir(parents=True, exist_ok=True)
    save_config(config, saved)
    return path, False


def read_run_config(run_dir: str | os.PathLike, config_type: type[ConfigT]) -> ConfigT:
    """The saved ``config.yaml`` of a run directory, validated as ``config_type``.

    Raises InputError naming the folder when it holds no config, or the file when it does not validate.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a training run (no config.yaml)")
    try:
        return resolve_config(config_type, yaml.safe_load(path.read_text()), source=str(path))
    except ConfigError as exc:
        raise InputError(str(exc)) from None


def setup_logging(log_file: str | os.PathLike | None = None, verbose: bool = False) -> logging.Logger:
    """Log ``morphospace.*`` messages to the console (INFO, or DEBUG when verbose) and to ``log_file``."""
    logger = logging.getLogger("morphospace")
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file_handler)
    for handler in handlers:
        setattr(handler, _HANDLER_FLAG, True)
        logger.addHandler(handler)
    return logger


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike) -> Iterator[Path]:
    """Also write ``morphospace.*`` log records (INFO and up) to ``path`` (appending) inside the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("morphospace")
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
