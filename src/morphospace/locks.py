"""Output locks: one morphospace process at a time writes a store or a run folder.

A lock is a small file beside the output (``STORE.lock``, ``runs/NAME.lock``) created exclusively,
holding the process id, host, start time and command of its owner. A second process asking for it
stops at once with a message naming the lock and the owner. A lock whose owner is gone (same host,
no such process) is stale and taken over; a lock of another host cannot be checked and is left to
the user to remove.

Examples
--------
>>> import pathlib, tempfile
>>> store = pathlib.Path(tempfile.mkdtemp()) / "store"
>>> with output_lock(store):  # doctest: +ELLIPSIS
...     output_lock(store).__enter__()
Traceback (most recent call last):
...
morphospace.locks.LockedError: ...store.lock: another morphospace process is writing ...store: pid ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

from morphospace.atomic import json_text
from morphospace.errors import MorphospaceError

__all__ = ["LockedError", "output_lock", "lock_path"]


class LockedError(MorphospaceError):
    """Another process holds the lock of an output."""


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``<output>.lock`` beside it."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _create(path: Path) -> bool:
    """Create the lock file with this process as owner; False when it exists."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w") as file:
        file.write(json_text(_owner(), indent=None))
    return True


def _take(path: Path, output: Path) -> None:
    if _create(path):
        return
    holder = _read(path)
    if holder is None:  # being written by its owner this instant, or left empty by a crash
        raise LockedError(f"{path}: another morphospace process is taking the lock of {output}; try again, or "
                          "remove the lock file if no process is writing there")
    here = holder.get("host") == socket.gethostname()
    if here and not _alive(int(holder.get("pid", -1))):
        stale = path.with_name(f"{path.name}.stale.{os.getpid()}")
        try:
            os.replace(path, stale)  # only one taker wins the stale file
        except FileNotFoundError:
            pass
        else:
            stale.unlink(missing_ok=True)
        if _create(path):
            return
        holder = _read(path) or holder
    where = "" if here else f" on host {holder.get('host')} (remove the lock file if that run is gone)"
    raise LockedError(f"{path}: another morphospace process is writing {output}: pid {holder.get('pid')}{where}, "
                      f"started {holder.get('started')}, `{holder.get('command')}`; wait for it to finish")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``output`` inside the block (see the module docstring); the lock file is
    removed on exit. Raises :class:`LockedError` when a live process holds it."""
    output = Path(output)
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    _take(path, output)
    try:
        yield path
    finally:
        holder = _read(path)
        if holder is not None and holder.get("pid") == os.getpid():
            path.unlink(missing_ok=True)
