"""How much a simulated screen looks and responds like a real one, read from per-cell feature tables.

Two questions, each a small function on :class:`pandas.DataFrame` feature tables (one row per
cell, ``Metadata_*`` columns beside the features):

- **Look**: can a classifier tell control cells of the two sources apart? :func:`domain_auc` is
  the cross-validated ROC AUC of a logistic regression (0.5: indistinguishable, 1: always told
  apart), on all shared features or on the unit-free ones (:func:`dimensionless_features`), which
  no choice of pixel size or camera gain can match by itself.
- **Stain batches**: a real screen's stains differ in brightness from batch to batch (BBBC021's
  week 1 tubulin is twice as bright as the other weeks'). :func:`control_brightness` measures each
  channel's brightness per plate from its control wells, and :func:`brightness_normalised` divides
  crops by it, so that cells of different batches can share one control reference.
- **Response**: does each perturbation move the simulated cells the way it moves real cells?
  :func:`control_standardised` expresses every feature in standard deviations of the source's own
  control cells (centred per plate or batch), :func:`group_shifts` averages that per group (a
  mechanism of action), and :func:`shift_agreement` compares the two sources' shift vectors: cosine
  per group, cosine of mismatched pairs (the floor a random pairing gives) and the Spearman of shift
  magnitudes across groups.

Examples
--------
>>> import numpy as np, pandas as pd
>>> real = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 2.0]}, index=["x", "y"])
>>> agreement = shift_agreement(real * 3, real)
>>> agreement.cosine.round(3).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from morphospace.errors import InputError
from morphospace.features.cellprofiler import angular_period, feature_columns

__all__ = [
    "DIMENSIONLESS_MEASURES",
    "ShiftAgreement",
    "dimensionless_features",
    "shared_features",
    "domain_auc",
    "control_standardised",
    "control_brightness",
    "brightness_normalised",
    "group_shifts",
    "shift_agreement",
]

DIMENSIONLESS_MEASURES = (
    "AreaShape_Eccentricity", "AreaShape_Solidity", "AreaShape_Extent", "AreaShape_FormFactor",
    "AreaShape_Compactness", "AreaShape_NormalizedMoment", "AreaShape_HuMoment", "Correlation_Pearson",
)
"""Measurements that carry no unit: shape ratios, scale-normalised moments, Pearson correlations."""

def shared_features(*tables: pd.DataFrame) -> list[str]:
    """Feature columns (not ``Metadata_*``, numeric, not all NaN, not angles) present in every table,
    in the first table's order."""
    if not tables:
        raise InputError("give at least one feature table")
    numeric = [set(feature_columns(t)) for t in tables[1:]]
    columns = [c for c in feature_columns(tables[0]) if angular_period(c) is None
               and all(c in n for n in numeric) and all(t[c].notna().any() for t in tables)]
    if not columns:
        raise InputError("the tables share no feature column")
    return columns


def dimensionless_features(columns: Sequence[str]) -> list[str]:
    """The columns whose measurement is in :data:`DIMENSIONLESS_MEASURES`.

    >>> dimensionless_features(["Cells_AreaShape_Area", "Cells_AreaShape_Solidity",
    ...                         "Nuclei_Correlation_Pearson_DNA_Actin"])
    ['Cells_AreaShape_Solidity', 'Nuclei_Correlation_Pearson_DNA_Actin']
    """
    return [c for c in columns if any(measure in c for measure in DIMENSIONLESS_MEASURES)]


def _filled(values: pd.DataFrame) -> pd.DataFrame:
    """Infinite values as NaN, then every NaN as its column's median (0 where a column is all NaN)."""
    values = values.replace([np.inf, -np.inf], np.nan)
    return values.fillna(values.median()).fillna(0.0)


def domain_auc(first: pd.DataFrame, second: pd.DataFrame, features: Sequence[str], folds: int = 5,
               max_rows: int | None = 3000, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling rows of ``first`` from ``second``.

    Both tables are cut to the same number of rows (at most ``max_rows``, drawn at random with
    ``seed``) so that chance is 0.5; features are standardised within each training fold and NaN
    filled with the pooled median. The AUC is computed on the out-of-fold probabilities of
    ``folds`` stratified folds.

    >>> rng = np.random.default_rng(0)
    >>> a = pd.DataFrame({"f": rng.normal(0, 1, 200)})
    >>> round(domain_auc(a, pd.DataFrame({"f": rng.normal(0, 1, 200)}), ["f"]), 1)
    0.5
    >>> domain_auc(a, pd.DataFrame({"f": rng.normal(10, 1, 200)}), ["f"])
    1.0
    """
    features = list(features)
    if not features:
        raise InputError("domain_auc needs at least one feature")
    rows = min(len(first), len(second), max_rows or len(first) + len(second))
    if rows < folds:
        raise InputError(f"domain_auc needs at least {folds} rows per table, got {min(len(first), len(second))}")
    rng = np.random.default_rng(seed)
    parts = [t.iloc[np.sort(rng.choice(len(t), rows, replace=False))][features] for t in (first, second)]
    x = _filled(pd.concat(parts, ignore_index=True)).to_numpy(float)
    y = np.repeat([0, 1], rows)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=split, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


def control_standardised(table: pd.DataFrame, features: Sequence[str], control: pd.Series,
                         by: str | None = None, clip: float | None = 10.0) -> pd.DataFrame:
    """``features`` of every row in standard deviations of the control rows.

    Each group of ``by`` (a plate or batch column; the whole table when None) is centred on the
    median of its own control rows, then every feature is divided by the standard deviation of the
    centred control rows pooled over groups. NaN become the control median (0) and values are
    clipped to +-``clip``, so that a few failed segmentations cannot dominate a mean. A group
    without control rows is an error naming it.

    ``control`` is a boolean Series aligned with ``table``. Returns a float frame with the table's
    index and ``features`` as columns; a feature constant in the controls gets scale 1.
    """
    control = control.reindex(table.index).fillna(False).astype(bool)
    values = table[list(features)].astype(float).replace([np.inf, -np.inf], np.nan)
    groups = table[by] if by else pd.Series("all", index=table.index)
    missing = sorted(set(groups) - set(groups[control]))
    if missing:
        raise InputError(f"no control rows in {by} {missing[:5]}: cannot centre them on their own controls")
    centres = values[control].groupby(groups[control]).median()
    centred = values - centres.reindex(groups.to_numpy()).to_numpy()
    scale = centred[control].std().replace(0.0, 1.0).fillna(1.0)
    standard = (centred / scale).fillna(0.0)
    return standard.clip(-clip, clip) if clip else standard


def control_brightness(wells: pd.DataFrame, control: pd.Series, columns: Mapping[str, str],
                       by: str = "Metadata_Plate") -> pd.DataFrame:
    """Brightness of each channel per plate, relative to the whole screen, from its control wells.

    ``wells``: one row per well (or cell) with a ``by`` column; ``control``: boolean Series aligned
    with it; ``columns``: channel name -> the intensity column that measures it (e.g. ``"Tubulin":
    "Cells_Intensity_MeanIntensity_Tubulin"``). Returns a frame indexed by the groups of ``by``, one
    column per channel: the median of the column over the group's control rows divided by its median
    over all control rows (1 = a typical plate, 2 = twice as bright). A group without control rows,
    a missing column or a non-positive median is an error naming it.

    >>> wells = pd.DataFrame({"Metadata_Plate": ["p", "p", "q", "q"], "I": [1.0, 1.0, 3.0, 3.0]})
    >>> control_brightness(wells, pd.Series([True] * 4), {"DNA": "I"})["DNA"].tolist()
    [0.5, 1.5]
    """
    missing = [c for c in columns.values() if c not in wells.columns] + ([by] if by not in wells.columns else [])
    if missing:
        raise InputError(f"control_brightness: no column {missing[0]!r} in the wells table")
    control = control.reindex(wells.index).fillna(False).astype(bool)
    absent = sorted(set(wells[by]) - set(wells.loc[control, by]))
    if absent:
        raise InputError(f"no control rows in {by} {absent[:5]}: their brightness cannot be measured")
    controls = wells[control]
    overall = controls[list(columns.values())].median()
    if (overall <= 0).any() or overall.isna().any():
        raise InputError(f"control median of {overall.index[(overall <= 0) | overall.isna()][0]!r} is not positive")
    per_group = controls.groupby(by)[list(columns.values())].median() / overall
    return per_group.rename(columns={column: channel for channel, column in columns.items()})


def brightness_normalised(images: np.ndarray, groups: Sequence[str], brightness: pd.DataFrame,
                          channels: Sequence[str]) -> np.ndarray:
    """``images`` (N, H, W, C) with each crop's channels divided by its group's brightness.

    ``groups``: the group (plate) of each crop, length N; ``brightness``: groups x channels, as
    :func:`control_brightness` returns; ``channels``: the name of each of the C channels. Integer
    images keep their type (rounded and clipped to its range); a group or channel missing from
    ``brightness`` is an error naming it.

    >>> images = np.full((2, 1, 1, 1), 100, np.uint16)
    >>> bright = pd.DataFrame({"DNA": [2.0, 0.5]}, index=["p", "q"])
    >>> brightness_normalised(images, ["p", "q"], bright, ["DNA"]).ravel().tolist()
    [50, 200]
    """
    images = np.asarray(images)
    groups = np.asarray(groups).astype(str)
    if images.ndim != 4 or images.shape[-1] != len(channels) or len(groups) != len(images):
        raise ValueError(f"images {images.shape} must be (N, H, W, C) with C = {len(channels)} channels "
                         f"and N = {len(groups)} groups")
    unknown = [c for c in channels if c not in brightness.columns]
    unknown_groups = sorted(set(groups) - set(brightness.index.astype(str)))
    if unknown or unknown_groups:
        raise InputError(f"no brightness for {'channel' if unknown else 'group'} "
                         f"{(unknown or unknown_groups)[:5]}")
    factors = brightness.rename(index=str).loc[groups, list(channels)].to_numpy(np.float64)
    scaled = images.astype(np.float64) / factors[:, None, None, :]
    if np.issubdtype(images.dtype, np.integer):
        info = np.iinfo(images.dtype)
        return np.clip(np.rint(scaled), info.min, info.max).astype(images.dtype)
    return scaled.astype(images.dtype)


def group_shifts(standardised: pd.DataFrame, labels: pd.Series, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Mean standardised feature vector per label (rows: labels, sorted; columns: features)."""
    labels = labels.reindex(standardised.index)
    keep = ~labels.isin(list(exclude)) & labels.notna()
    return standardised[keep].groupby(labels[keep]).mean().sort_index()


@dataclass(frozen=True)
class ShiftAgreement:
    """Per-group comparison of simulated and real shifts, and its summaries.

    ``table``: one row per group shared by both sources, with ``cosine``, ``simulated_magnitude``
    and ``real_magnitude`` (Euclidean norms, in control SDs). ``mismatched_cosine``: mean cosine of
    simulated group i against real group j != i. ``magnitude_spearman``: Spearman of the two
    magnitude columns across groups (NaN with fewer than 3 groups).
    """

    table: pd.DataFrame
    mismatched_cosine: float
    magnitude_spearman: float

    @property
    def cosine(self) -> pd.Series:
        return self.table["cosine"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a @ b.T) / norms


def shift_agreement(simulated: pd.DataFrame, real: pd.DataFrame) -> ShiftAgreement:
    """Compare two shift tables (rows: groups, columns: features) on their shared groups and columns."""
    groups = [g for g in simulated.index if g in real.index]
    columns = [c for c in simulated.columns if c in real.columns]
    if not groups or not columns:
        raise InputError("the simulated and real shift tables share no group or no feature")
    sim = simulated.loc[groups, columns].to_numpy(float)
    ref = real.loc[groups, columns].to_numpy(float)
    cosines = _cosines(sim, ref)
    table = pd.DataFrame({
        "cosine": np.diag(cosines),
        "simulated_magnitude": np.linalg.norm(sim, axis=1),
        "real_magnitude": np.linalg.norm(ref, axis=1),
    }, index=pd.Index(groups, name="group"))
    off_diagonal = cosines[~np.eye(len(groups), dtype=bool)]
    mismatched = float(np.nanmean(off_diagonal)) if off_diagonal.size else float("nan")
    spearman = (float(stats.spearmanr(table.simulated_magnitude, table.real_magnitude).statistic)
                if len(groups) >= 3 else float("nan"))
    return ShiftAgreement(table, mismatched, spearman)
