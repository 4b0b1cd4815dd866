"""Run directories, logging, and which process of a multi-process run may write.

A run directory holds the fully resolved ``config.yaml`` (defaults and seed included). Opening it
again with a different config is an error that lists the differing keys, so a stale run is never
silently reused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import pydantic
import yaml

from morphospace.config import Config, resolve_paths, save_config
from morphospace.errors import MorphospaceError

__all__ = [
    "RunConflictError", "check_run_directory", "open_run_directory", "is_rank_zero", "config_differences",
    "setup_logging", "log_to_file", "source_digest", "code_stamp",
]

_HANDLER_FLAG = "_morphospace_handler"
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


def check_run_directory(
    path: str | os.PathLike, config: Config, config_name: str = "config.yaml", mutable: tuple[str, ...] = (),
    overwrite: bool = False,
) -> bool:
    """Whether ``path`` holds the run of ``config`` already (True: it resumes) or nothing yet
    (False), without writing anything.

    A saved config differing only in the dotted keys listed in ``mutable`` (e.g. a training
    budget, which may grow on resume) counts as the same run. Raises :class:`RunConflictError`
    when ``path`` holds a different config or a folder that is not a run, unless ``overwrite``
    (then it counts as empty).
    """
    path = Path(path)
    if overwrite or not path.exists():
        return False
    saved = path / config_name
    if saved.is_file():
        old = _saved_values(saved, config)
        fixed = [key for key in config_differences(old, config.to_dict()) if key not in mutable]
        if fixed:
            raise RunConflictError(
                f"{path}: made with a different config (keys {', '.join(fixed[:8])} differ); "
                "choose another output, restore the config, or start again: --overwrite"
            )
        return True
    if any(not entry.name.startswith(".") for entry in path.iterdir()):  # another process's temporary files are hidden
        raise RunConflictError(f"{path}: exists and is not a morphospace run (no {config_name}); choose another output")
    return False


def open_run_directory(
    path: str | os.PathLike, config: Config, config_name: str = "config.yaml", overwrite: bool = False,
    mutable: tuple[str, ...] = (),
) -> tuple[Path, bool]:
    """Create (or reopen) a run directory for ``config`` and save the config in it.

    Returns ``(path, resumed)`` as decided by :func:`check_run_directory` (which raises on a
    conflict); with ``overwrite`` an existing directory is removed first. A resumed run's saved
    config is updated with the new values of ``mutable`` keys.
    """
    path = Path(path)
    resumed = check_run_directory(path, config, config_name, mutable, overwrite)
    if overwrite and path.exists():
        shutil.rmtree(path)
    if resumed:
        differences = config_differences(_saved_values(path / config_name, config), config.to_dict())
        if differences:
            logger.info("%s: resuming with new %s", path, ", ".join(differences))
    path.mkdir(parents=True, exist_ok=True)
    save_config(config, path / config_name)
    return path, resumed


def _saved_values(saved: Path, config: Config) -> dict[str, Any]:
    """A saved config's values as ``config``'s model reads them today (so that a key added since,
    with its default, is no difference, nor a relative path saved by an older release that names
    the same file from the working folder); the raw values when they no longer validate."""
    old = yaml.safe_load(saved.read_text()) or {}
    try:
        return resolve_paths(type(config).model_validate(old), Path.cwd()).to_dict()
    except pydantic.ValidationError:
        return old


def source_digest(root: str | os.PathLike, suffixes: tuple[str, ...] = (".py", ".yaml")) -> str:
    """The first 12 hex digits of a SHA-1 over the files under ``root`` ending in ``suffixes``: each
    file's path relative to ``root`` and its bytes, in path order (caches such as ``__pycache__``
    hold ``.pyc`` files and do not count).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     _ = (Path(root) / "a.py").write_text("x = 1")
    ...     len(source_digest(root))
    12
    """
    root = Path(root)
    digest = hashlib.sha1()
    for path in sorted(p for p in root.rglob("*") if p.suffix in suffixes and p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@functools.cache
def code_stamp() -> str:
    """``<version>+<digest>``: the installed morphospace's version and :func:`source_digest` of its
    package folder (modules and built-in configs), which names the code that trained a run; read
    once per process, so the stamp is that of the code the process imported at its first call."""
    from morphospace import __version__

    return f"{__version__}+{source_digest(Path(__file__).parent)}"


def is_rank_zero() -> bool:
    """Whether this process is the first (global rank 0) of a multi-process run, or runs alone.

    Read from what the launchers set: ``RANK`` (torchrun), ``SLURM_PROCID`` (SLURM),
    ``JSM_NAMESPACE_RANK`` (LSF), else ``NODE_RANK`` and ``LOCAL_RANK`` (Lightning's DDP launcher).
    """
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


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
