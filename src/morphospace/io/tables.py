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
from pathlib import Path

import pandas as pd

from morphospace.atomic import atomic_file
from morphospace.errors import InputError

__all__ = ["read_table", "write_table"]

_CSV = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


def _is_csv(path: Path) -> bool:
    return any(str(path).lower().endswith(s) for s in _CSV)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``.parquet`` or ``.csv[.gz]`` / ``.tsv[.gz]`` table; InputError names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found")
    try:
        if _is_csv(path):
            return pd.read_csv(path, sep="\t" if ".tsv" in path.name.lower() else ",")
        return pd.read_parquet(path)
    except Exception as exc:  # readers raise many types for corrupt files
        raise InputError(f"{path}: unreadable table ({type(exc).__name__}: {exc})") from None


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` as Parquet (or CSV for a ``.csv`` name) through a temporary name."""
    path = Path(path)
    with atomic_file(path) as tmp:
        if _is_csv(path):
            table.to_csv(tmp, index=False, compression="gzip" if path.name.endswith(".gz") else None)
        else:
            table.to_parquet(tmp, index=False)
    return path
