"""The BBBC021 layout: annotate tables with compound, concentration, batch and MoA.

BBBC021 (Caie et al. 2010; Ljosa et al. 2012) ships two official tables:

- ``BBBC021_v1_image.csv`` (or ``.csv.gz``): one row per image with ``Image_Metadata_Plate_DAPI``,
  ``Image_Metadata_Well_DAPI``, ``Image_FileName_DAPI``, ``Image_Metadata_Compound``,
  ``Image_Metadata_Concentration`` and ``Replicate``.
- ``BBBC021_v1_moa.csv``: ``compound, concentration, moa`` for the 103 annotated treatments + DMSO.

The batch of a plate is its week, the prefix of the plate name (``Week4_27481`` -> ``Week4``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from morphospace.errors import InputError
from morphospace.io.tables import read_table, require_columns

__all__ = ["read_bbbc021_tables", "bbbc021_image_annotations", "annotate_bbbc021", "batch_from_plate"]

IMAGE_TABLE_NAMES = ("BBBC021_v1_image.csv", "BBBC021_v1_image.csv.gz")
MOA_TABLE_NAME = "BBBC021_v1_moa.csv"
ANNOTATION_COLUMNS = (
    "Metadata_Compound",
    "Metadata_Concentration",
    "Metadata_Replicate",
    "Metadata_Batch",
    "Metadata_MoA",
)
_CONCENTRATION_DECIMALS = 6


def batch_from_plate(plate: pd.Series) -> pd.Series:
    """BBBC021 batch (week) of each plate name: ``"Week4_27481"`` -> ``"Week4"``."""
    return plate.astype(str).str.split("_", n=1).str[0]


def _find_image_table(directory: Path) -> Path:
    for name in IMAGE_TABLE_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise InputError(f"{directory}: no BBBC021 image table ({' or '.join(IMAGE_TABLE_NAMES)})")


def read_bbbc021_tables(directory: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the official image and MoA tables from ``directory`` as given (no renaming)."""
    directory = Path(directory)
    image = read_table(
        _find_image_table(directory),
        (
            "Image_Metadata_Plate_DAPI",
            "Image_Metadata_Well_DAPI",
            "Image_FileName_DAPI",
            "Image_Metadata_Compound",
            "Image_Metadata_Concentration",
        ),
    )
    moa = read_table(directory / MOA_TABLE_NAME, ("compound", "concentration", "moa"))
    return image, moa


def bbbc021_image_annotations(directory: str | os.PathLike) -> pd.DataFrame:
    """One row per BBBC021 image with plate, well, DAPI file name and every annotation column.

    Returns
    -------
    pandas.DataFrame
        Columns ``Metadata_Plate, Metadata_Well, Metadata_FileName_DAPI`` and
        :data:`ANNOTATION_COLUMNS`; ``Metadata_MoA`` is missing (NA) for compounds without an
        annotated mechanism.
    """
    image, moa = read_bbbc021_tables(directory)
    table = pd.DataFrame(
        {
            "Metadata_Plate": image["Image_Metadata_Plate_DAPI"].astype(str),
            "Metadata_Well": image["Image_Metadata_Well_DAPI"].astype(str),
            "Metadata_FileName_DAPI": image["Image_FileName_DAPI"].astype(str),
            "Metadata_Compound": image["Image_Metadata_Compound"].astype(str),
            "Metadata_Concentration": image["Image_Metadata_Concentration"].astype(float),
            "Metadata_Replicate": image["Replicate"] if "Replicate" in image else pd.NA,
        }
    )
    table["Metadata_Batch"] = batch_from_plate(table["Metadata_Plate"])
    moa_lookup = {
        (str(c), round(float(x), _CONCENTRATION_DECIMALS)): str(m)
        for c, x, m in moa[["compound", "concentration", "moa"]].itertuples(index=False)
    }
    keys = zip(table["Metadata_Compound"], table["Metadata_Concentration"].round(_CONCENTRATION_DECIMALS))
    table["Metadata_MoA"] = pd.array([moa_lookup.get(k) for k in keys], dtype="string")
    return table


def annotate_bbbc021(
    table: pd.DataFrame,
    directory: str | os.PathLike,
    plate_column: str = "Metadata_Plate",
    well_column: str = "Metadata_Well",
    dapi_file_column: str | None = None,
) -> pd.DataFrame:
    """Add compound, concentration, replicate, batch and MoA to any table holding plate + well.

    Parameters
    ----------
    table
        Rows to annotate (cells, wells, images...).
    directory
        Folder holding the official BBBC021 tables.
    plate_column, well_column
        Columns naming each row's plate and well; used when ``dapi_file_column`` is None.
    dapi_file_column
        Column holding the DAPI image file name, an alternative key (plate and well are then
        filled from the image table when absent).

    Returns
    -------
    pandas.DataFrame
        A copy of ``table`` whose :data:`ANNOTATION_COLUMNS` are set from the official tables
        (replacing columns of the same name).

    Raises
    ------
    InputError
        If a key column is missing, or rows match no BBBC021 image (the message lists examples).
    """
    source = getattr(table, "attrs", {}).get("source", "table")
    key_columns = [dapi_file_column] if dapi_file_column else [plate_column, well_column]
    require_columns(table, key_columns, f"{source} (to annotate with BBBC021)")
    images = bbbc021_image_annotations(directory)
    if dapi_file_column:
        lookup = images.set_index("Metadata_FileName_DAPI")
        keys = table[dapi_file_column].astype(str).map(lambda name: Path(name).name)
        found = keys.isin(lookup.index)
        rows = lookup.reindex(keys.to_numpy())
        fill = list(ANNOTATION_COLUMNS) + [c for c in ("Metadata_Plate", "Metadata_Well") if c not in table]
    else:
        per_well = images.drop_duplicates(["Metadata_Plate", "Metadata_Well"]).set_index(
            ["Metadata_Plate", "Metadata_Well"]
        )
        keys = pd.MultiIndex.from_arrays(
            [table[plate_column].astype(str).to_numpy(), table[well_column].astype(str).to_numpy()]
        )
        found = pd.Series(keys.isin(per_well.index), index=table.index)
        rows = per_well.reindex(keys)
        fill = list(ANNOTATION_COLUMNS)
    if not found.all():
        bad = table.loc[~np.asarray(found), key_columns].drop_duplicates().head(5)
        examples = "; ".join(", ".join(map(str, r)) for r in bad.itertuples(index=False))
        raise InputError(
            f"{source}: {int((~np.asarray(found)).sum())} row(s) match no BBBC021 image "
            f"(by {', '.join(key_columns)}), e.g. {examples}"
        )
    annotated = table.copy()
    for column in fill:
        annotated[column] = rows[column].to_numpy()
    return annotated
