"""Reading and writing feature, profile and embedding tables (Parquet or CSV).

Examples
--------
>>> import pandas as pd, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t.parquet"
>>> _ = write_table(pd.DataFrame({"Metadata_Plate": ["P1"], "f": [1.0]}), path)
>>> read_table(path).shape
(1, 2)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from morphospace.atomic import atomic_file
from morphospace.errors import InputError

__all__ = ["read_table", "require_columns", "write_table"]

_SHOWN_COLUMNS = 20
"""Columns listed when a table lacks a required one."""
_CSV = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


def _is_csv(path: Path) -> bool:
    return any(str(path).lower().endswith(s) for s in _CSV)


def require_columns(table: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """Raise InputError naming ``where`` and the ``columns`` that ``table`` lacks (none: no error).

    >>> require_columns(pd.DataFrame({"a": [1]}), ["a", "b"], "t.csv")
    Traceback (most recent call last):
    ...
    morphospace.errors.InputError: t.csv: lacks the column(s) ['b']; it has ['a']
    """
    missing = [c for c in columns if c not in table.columns]
    if missing:
        shown = list(table.columns[:_SHOWN_COLUMNS]) + (["..."] if table.shape[1] > _SHOWN_COLUMNS else [])
        raise InputError(f"{where}: lacks the column(s) {missing}; it has {shown}")


def read_table(path: str | os.PathLike, required: Sequence[str] = (), not_found_hint: str = "") -> pd.DataFrame:
    """Read a ``.parquet`` or ``.csv[.gz]`` / ``.tsv[.gz]`` table holding the ``required`` columns.

    InputError names the file when it is missing (followed by ``not_found_hint``), unreadable or
    lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found" + (f"; {not_found_hint}" if not_found_hint else ""))
    try:
        if _is_csv(path):
            table = pd.read_csv(path, sep="\t" if ".tsv" in path.name.lower() else ",")
        else:
            table = pd.read_parquet(path)
    except Exception as exc:  # readers raise many types for corrupt files
        raise InputError(f"{path}: unreadable table ({type(exc).__name__}: {exc})") from None
    require_columns(table, required, str(path))
    return table


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` as Parquet (or CSV for a ``.csv`` name) through a temporary name."""
    path = Path(path)
    with atomic_file(path) as tmp:
        if _is_csv(path):
            table.to_csv(tmp, index=False, compression="gzip" if path.name.endswith(".gz") else None)
        else:
            table.to_parquet(tmp, index=False)
    return path
