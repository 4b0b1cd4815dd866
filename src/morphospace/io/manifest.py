"""Field manifests: one CSV row per field, one ``FileName_<channel>`` column per channel file.

Example manifest::

    Metadata_Plate,Metadata_Well,Metadata_Site,FileName_DNA,FileName_Actin,FileName_Tubulin
    Plate01,B02,1,images/Plate01/B02_s1_DNA.tiff,images/Plate01/B02_s1_Actin.tiff,...

Relative paths are resolved against the manifest's folder. Columns that do not start with
``FileName_`` are metadata; those not already named ``Metadata_*`` are renamed
(``plate`` -> ``Metadata_Plate``). ``Metadata_FieldId`` names each field; when absent it is built
from plate, well and site, or from the row number.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from morphospace.errors import InputError
from morphospace.io.images import read_image
from morphospace.io.importers import metadata_column_name

__all__ = ["FieldSpec", "read_manifest", "read_field", "FILE_PREFIX"]

FILE_PREFIX = "FileName_"


@dataclass(frozen=True)
class FieldSpec:
    """One field: its id, a file per channel (in channel order) and its metadata."""

    field_id: str
    files: dict[str, Path]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def plate(self) -> str:
        return str(self.metadata.get("Metadata_Plate", ""))

    def fingerprint(self) -> str:
        """A digest of the field's id and of each channel's file (path, size, modification time),
        which changes when any file of the field is replaced, edited or goes missing."""
        digest = hashlib.sha1(self.field_id.encode())
        for channel, path in self.files.items():
            try:
                stat = path.stat()
                state = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                state = "missing"
            digest.update(f"|{channel}={path.resolve()}:{state}".encode())
        return digest.hexdigest()


def _field_ids(table: pd.DataFrame) -> pd.Series:
    if "Metadata_FieldId" in table:
        return table["Metadata_FieldId"].astype(str)
    parts = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c in table]
    if parts:
        return table[parts].astype(str).agg("_".join, axis=1)
    return pd.Series([f"field{i:05d}" for i in range(len(table))], index=table.index)


def read_manifest(path: str | os.PathLike, channels: Sequence[str] | None = None,
                  missing_files: bool = False) -> list[FieldSpec]:
    """Read and check a manifest.

    Parameters
    ----------
    path
        The CSV file.
    channels
        Channels to use, in this order; all ``FileName_*`` columns in file order when None.
    missing_files
        Accept rows whose files do not exist (reading them raises InputError then), so that a
        caller can list them and go on.

    Raises
    ------
    InputError
        Unreadable CSV, no rows, no or unknown channel columns, duplicate field ids, empty file
        cells, or rows pointing to missing files (the message lists the first few).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc})") from None
    if table.empty:
        raise InputError(f"{path}: manifest has no rows")
    available = [c.removeprefix(FILE_PREFIX) for c in table.columns if c.startswith(FILE_PREFIX)]
    if not available:
        raise InputError(f"{path}: no channel columns (expected columns named {FILE_PREFIX}<channel>)")
    channels = list(channels) if channels else available
    unknown = [c for c in channels if c not in available]
    if unknown:
        raise InputError(f"{path}: no column(s) {[FILE_PREFIX + c for c in unknown]}; channels are {available}")
    metadata = table[[c for c in table.columns if not c.startswith(FILE_PREFIX)]]
    metadata = metadata.rename(columns=metadata_column_name)
    ids = _field_ids(metadata)
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise InputError(f"{path}: duplicate field id(s) {list(duplicated[:5])}")
    metadata = metadata.assign(Metadata_FieldId=ids)
    fields, missing = [], []
    for row_number, (index, row) in enumerate(table.iterrows(), start=2):
        files = {}
        for channel in channels:
            value = row[FILE_PREFIX + channel]
            if pd.isna(value) or not str(value).strip():
                raise InputError(f"{path}: line {row_number} has no file for channel {channel}")
            file = Path(str(value))
            file = file if file.is_absolute() else path.parent / file
            if not file.is_file():
                missing.append(f"line {row_number} ({channel}): {file}")
            files[channel] = file
        record = {k: (None if pd.isna(v) else v) for k, v in metadata.loc[index].items()}
        fields.append(FieldSpec(str(ids[index]), files, record))
    if missing and not missing_files:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{path}: {len(missing)} missing image file(s): " + "; ".join(missing[:5]) + more)
    return fields


def read_field(spec: FieldSpec, max_projection: bool = True, short_stacks: bool = False) -> dict[str, np.ndarray]:
    """Read and check every channel of a field: one 2-D plane (H, W) per channel, all of one shape.

    z-stacks (Z, H, W) are max-projected when ``max_projection`` is set. A file of 3 or 4 planes
    may as well be planar RGB(A) colour: it is read as a z-stack only with ``short_stacks``.
    Raises InputError naming the file on unreadable data, NaN/inf, empty images, colour images,
    such ambiguous planes, or mismatched shapes.
    """
    planes: dict[str, np.ndarray] = {}
    for channel, path in spec.files.items():
        image = read_image(path, ndim=(2, 3))
        if image.ndim == 3:
            if image.shape[-1] <= 4 and image.shape[0] > 4:
                raise InputError(f"{path}: holds {image.shape[-1]} colour channels; give one channel per file")
            if image.shape[0] in (3, 4) and not short_stacks:
                raise InputError(f"{path}: holds {image.shape[0]} planes of {image.shape[1:]}, which may be planar "
                                 "colour or a short z-stack; give one channel per file, or set short_stacks: true "
                                 "to max-project them as a z-stack")
            if not max_projection:
                raise InputError(f"{path}: is a z-stack of shape {image.shape}; enable max_projection")
            image = image.max(axis=0)
        planes[channel] = image
    shapes = {c: p.shape for c, p in planes.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{spec.files[c].name}: {s}" for c, s in shapes.items())
        raise InputError(f"field {spec.field_id}: channel images differ in shape ({detail})")
    return planes
