"""Atomic writes: a file or directory appears complete under its final name, or not at all.

Every result, config, table, figure, report and store morphospace writes whole goes through here
(logs that grow line by line are appended; Lightning writes its checkpoints itself). Temporary
names are unique per process and call (so that concurrent writers of the same file, e.g. the ranks of a multi-process
run, never share one), and they are created by the writer with the default modes filtered by the
user's umask (0644 files and 0755 directories under umask 022), never the 0600 / 0700 of
:mod:`tempfile`.

Examples
--------
>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_file(root / "numbers.txt") as tmp:
...     _ = tmp.write_text("1 2 3")
>>> (root / "numbers.txt").read_text(), sorted(p.name for p in root.iterdir())
('1 2 3', ['numbers.txt'])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_file", "write_text_atomic", "write_json_atomic", "write_npz_atomic", "json_text", "json_ready", "atomic_directory",
           "temporary_sibling", "replace_directory", "refuse_existing"]


def refuse_existing(path: str | os.PathLike, overwrite: bool = False) -> None:
    """FileExistsError naming ``path`` when it exists and ``overwrite`` is not set: every command
    that writes results keeps earlier ones unless told to replace them."""
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (choose another output, or overwrite it: --overwrite)")


def _temporary_name(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden name beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` for the caller to write; when the block
    succeeds it replaces ``path`` in one rename, when it fails the temporary file is removed.

    The parent directory is created when missing. Writers create the temporary file themselves,
    so it gets their usual mode under the user's umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_file`; returns ``path``."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "x") as handle:
        handle.write(text)
    return path


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON types: NaN, infinities and pandas' NA / NaT become None (JSON
    ``null``), numpy and torch scalars and arrays become numbers and lists, paths and other objects
    their text; dict keys become text. Nested containers are converted throughout.

    >>> import numpy as np
    >>> json_ready({"a": np.float32(0.5), "b": [float("nan"), np.array([1, np.inf])], 3: Path("x")})
    {'a': 0.5, 'b': [None, [1.0, None]], '3': 'x'}
    """
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_ready(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return json_ready(value.tolist())
    from pandas import isna

    return None if isna(value) is True else str(value)  # pandas' NA and NaT are missing values


def json_text(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``value`` (see :func:`json_ready`): no bare ``NaN`` or ``Infinity``,
    which strict parsers reject."""
    return json.dumps(json_ready(value), indent=indent, allow_nan=False)


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as strict JSON (:func:`json_text`, missing values as ``null``) to ``path``
    through :func:`atomic_file`; returns ``path``. Every JSON file morphospace writes goes through here."""
    return write_text_atomic(path, json_text(value))


def write_npz_atomic(path: str | os.PathLike, /, **arrays: Any) -> Path:
    """Write ``arrays`` as a compressed npz to ``path`` through :func:`atomic_file`; object arrays
    (text) are stored as fixed-width unicode, so the file loads without pickle. Returns ``path``."""
    arrays = {k: np.asarray(v).astype(str) if np.asarray(v).dtype == object else np.asarray(v)
              for k, v in arrays.items()}
    with atomic_file(path) as tmp, open(tmp, "xb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)


def temporary_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """Create and return a fresh hidden directory beside ``path`` (same filesystem, so that a
    later rename is atomic), with the mode of an ordinary directory under the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = _temporary_name(path, suffix + ".tmp")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to ``path`` when the block succeeds.

    On any exception the temporary directory is removed and ``path`` is left as it was. With
    ``overwrite=True`` an existing ``path`` is replaced only after the new one is complete.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (checked before any work starts).
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``; an existing ``target`` is removed only after the move is possible."""
    if target.exists():
        trash = temporary_sibling(target, suffix=".old")
        os.replace(target, trash / target.name)
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)
