"""The simulator's truth for the crops of a store prepared from a simulated screen.

``prepare`` keeps each crop's ``Metadata_FieldId`` (the screen's field id) and the centre of its
segmented nucleus (``Metadata_Nucleus_Center_X``/``_Y``, pixels of the field); the screen's ``truth``
folder (see :mod:`morphospace.simulate.screen`) holds every field's truth nucleus labels, which cell
owns each nucleus, and the per-cell truth table. :func:`truth_for_crops` joins the two.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from morphospace.errors import InputError
from morphospace.io.images import read_image
from morphospace.io.tables import read_table, require_columns

__all__ = ["truth_for_crops", "TRUTH_COLUMNS"]

FIELD_ID = "Metadata_FieldId"
CELL_ID = "Metadata_CellId"
NUCLEUS_ID = "Metadata_NucleusId"
CENTRE_X, CENTRE_Y = "Metadata_Nucleus_Center_X", "Metadata_Nucleus_Center_Y"
TRUTH_COLUMNS = ("Metadata_TruthNucleusArea", "Metadata_TruthCellArea", "Metadata_TruthDNALevel")
_TRUTH_HINT = "pass the truth folder of a screen written by `morphospace simulate` (tables of an older simulator lack columns)"
"""Exact per-cell quantities of the truth table (see :class:`~morphospace.simulate.SimulatedField`)."""


def _nuclei_under_centres(truth_dir: Path, field_id: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Truth nucleus id (0: background or outside the field) at the pixels nearest ``(x, y)``."""
    path = truth_dir / f"{field_id}_nuclei.tiff"
    if not path.is_file():
        raise InputError(f"{path}: no truth nucleus labels for field {field_id!r} in {truth_dir}")
    labels = read_image(path, ndim=(2,), allow_constant=True)
    finite = np.isfinite(x) & np.isfinite(y)
    column = np.rint(np.where(finite, x, -1)).astype(np.int64)
    row = np.rint(np.where(finite, y, -1)).astype(np.int64)
    inside = finite & (row >= 0) & (row < labels.shape[0]) & (column >= 0) & (column < labels.shape[1])
    ids = np.zeros(len(x), np.int64)
    ids[inside] = labels[row[inside], column[inside]]
    return ids


def truth_for_crops(crops: pd.DataFrame, truth_dir: str | os.PathLike) -> pd.DataFrame:
    """The truth row (``truth/cells.parquet``) of each crop: that of the cell owning the truth nucleus
    under the crop's nucleus centre (rounded to the nearest pixel).

    Parameters
    ----------
    crops
        A crop store's cell table (or rows of it) with ``Metadata_FieldId`` and
        ``Metadata_Nucleus_Center_X``/``_Y`` in pixels of the field.
    truth_dir
        The ``truth`` folder of the simulated screen the store was prepared from.

    Returns
    -------
    pandas.DataFrame
        ``crops``' index, the columns of ``truth/cells.parquet`` (with :data:`TRUTH_COLUMNS`); every
        value missing (NaN) for a crop whose centre lies on background or outside its field.

    Raises
    ------
    InputError
        ``crops`` lacks a column; ``truth_dir`` lacks ``cells.parquet``, ``nuclei.parquet`` or a
        field's ``<field_id>_nuclei.tiff``; a label under a centre is not in ``nuclei.parquet``.
    """
    require_columns(crops, (FIELD_ID, CENTRE_X, CENTRE_Y),
                    "the crop table (it must come from a store prepared from a simulated screen's manifest)")
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise InputError(f"{truth_dir}: no such truth folder")
    cells = read_table(truth_dir / "cells.parquet", (FIELD_ID, CELL_ID, *TRUTH_COLUMNS), _TRUTH_HINT)
    nuclei = read_table(truth_dir / "nuclei.parquet", (FIELD_ID, NUCLEUS_ID, CELL_ID), _TRUTH_HINT)
    owner = nuclei.set_index([FIELD_ID, NUCLEUS_ID])[CELL_ID]
    cell_row = pd.Series(np.arange(len(cells)), index=pd.MultiIndex.from_frame(cells[[FIELD_ID, CELL_ID]]))
    field_ids = crops[FIELD_ID].astype(str).to_numpy()
    x, y = crops[CENTRE_X].to_numpy(dtype=float), crops[CENTRE_Y].to_numpy(dtype=float)
    positions = np.full(len(crops), -1, np.int64)
    for field_id in np.unique(field_ids):
        in_field = np.flatnonzero(field_ids == field_id)
        ids = _nuclei_under_centres(truth_dir, field_id, x[in_field], y[in_field])
        on_nucleus = ids > 0
        keys = pd.MultiIndex.from_arrays([np.full(on_nucleus.sum(), field_id), ids[on_nucleus]])
        owners = owner.reindex(keys).to_numpy(dtype=float)
        unlisted = np.isnan(owners)
        if unlisted.any():
            raise InputError(f"{truth_dir / 'nuclei.parquet'}: field {field_id!r} has labels "
                             f"{np.unique(ids[on_nucleus][unlisted]).tolist()} in its nucleus TIFF that the table "
                             "does not list")
        rows = cell_row.reindex(pd.MultiIndex.from_arrays([keys.get_level_values(0), owners.astype(np.int64)]))
        if rows.isna().any():
            raise InputError(f"{truth_dir / 'cells.parquet'}: field {field_id!r} lacks cells owning its nuclei")
        positions[in_field[on_nucleus]] = rows.to_numpy(dtype=np.int64)
    return cells.reset_index(drop=True).reindex(positions).set_axis(crops.index)
