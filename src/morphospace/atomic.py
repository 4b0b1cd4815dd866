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
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_file", "write_text_atomic", "atomic_directory", "temporary_sibling", "replace_directory",
           "refuse_existing"]


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
