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
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from morphospace.atomic import atomic_file
from morphospace.errors import InputError

__all__ = ["read_table", "require_columns", "write_table", "select_cells"]

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


_EQUALITIES = re.compile(r"^\s*[A-Za-z_][\w.]*\s*=(?!=)[^,]*(,\s*[A-Za-z_][\w.]*\s*=(?!=)[^,]*)*$")
"""``COLUMN=VALUE[,COLUMN=VALUE...]`` (single equals signs)."""


def _equalities_mask(cells: pd.DataFrame, text: str, option: str, source: str) -> pd.Series:
    mask = pd.Series(True, index=cells.index)
    for pair in text.split(","):
        column, value = (part.strip() for part in pair.split("=", 1))
        require_columns(cells, [column], f"{option} {text!r} on the cells of {source}")
        values = cells[column]
        if pd.api.types.is_numeric_dtype(values):
            try:
                mask &= np.isclose(values.to_numpy(float), float(value))
            except ValueError:
                raise InputError(f"{option} {text!r}: {column} is numeric, {value!r} is not a number") from None
        else:
            mask &= values.astype(str) == value
    return mask


def select_cells(cells: pd.DataFrame, query: str, option: str, source: str | os.PathLike) -> np.ndarray:
    """(N,) bool: the rows of ``cells`` matching ``query``, a pandas query (``Metadata_Compound ==
    'taxol' and Metadata_Concentration > 1``) or equalities ``COLUMN=VALUE[,COLUMN=VALUE]`` (values
    compared as text, or as numbers in numeric columns). InputError naming ``option`` and ``source``
    for a bad query, a missing column or no match.

    >>> cells = pd.DataFrame({"Metadata_Compound": ["DMSO", "taxol", "taxol"], "Metadata_Concentration": [0, 1, 3.0]})
    >>> select_cells(cells, "Metadata_Compound=taxol,Metadata_Concentration=3", "--condition", "cells").tolist()
    [False, False, True]
    >>> select_cells(cells, "Metadata_Concentration > 0", "--condition", "cells").tolist()
    [False, True, True]
    """
    if _EQUALITIES.match(query):
        mask = _equalities_mask(cells, query, option, str(source))
    else:
        try:
            mask = cells.eval(query)
        except Exception as exc:  # pandas raises many kinds for a bad expression
            raise InputError(f"{option} {query!r}: not a valid query on the cell table of {source} "
                             f"({type(exc).__name__}: {exc}); its columns: {list(cells.columns)}") from None
        if not isinstance(mask, pd.Series) or mask.dtype != bool:
            raise InputError(f"{option} {query!r}: not a true/false condition on the cells of {source}")
    if not mask.any():
        raise InputError(f"{option} {query!r}: no cell of {source} matches")
    return mask.to_numpy()


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
