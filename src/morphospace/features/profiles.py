"""Profiles: aggregate per-cell (or per-well) tables, exclude position-like features, log-transform,
normalise against controls, select features, and sphere on control wells (typical variation
normalisation).

Works on any table of ``Metadata_*`` columns plus numeric feature columns: CellProfiler features
and learned embeddings alike. Aggregation, per-group standardisation and feature selection use
pycytominer. Sphering is implemented here as whitening with a shrunk control covariance, because
pycytominer's sphering fails whenever the control rows are fewer than the features or linearly
dependent (the usual case for plates with a few control wells).

The defaults are the configuration that scored best on the real BBBC021 per-well profiles (see
``benchmarks/bbbc021_profiles_moa.py``): drop position-like features, log of every positive
feature, centre each plate on its DMSO wells and scale by the DMSO standard deviation pooled over
plates, then whiten with the DMSO covariance shrunk 5% towards the identity. ``level: cells`` keeps
one profile per cell (no aggregation) and adapts the other steps to a table without plates or
controls (see :func:`adapt_profiles_config`).

Examples
--------
>>> import pandas as pd
>>> cells = pd.DataFrame({"Metadata_Plate": ["P1"] * 4, "Metadata_Well": ["A01", "A01", "A02", "A02"],
...                       "Metadata_Compound": ["DMSO", "DMSO", "taxol", "taxol"], "f": [1.0, 3.0, 10.0, 12.0]})
>>> aggregate_profiles(cells, ["Metadata_Plate", "Metadata_Well"], "mean")[["Metadata_Well", "Metadata_Compound", "f"]]
  Metadata_Well Metadata_Compound     f
0           A01              DMSO   2.0
1           A02             taxol  11.0
"""

from __future__ import annotations

import logging
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import pydantic

from morphospace.config import Config, resolve_config
from morphospace.errors import InputError
from morphospace.features.cellprofiler import feature_columns

__all__ = [
    "ProfilesConfig",
    "control_mask",
    "finite_features",
    "non_finite_fraction",
    "aggregate_profiles",
    "normalize_profiles",
    "select_features",
    "sphere_profiles",
    "log_transform",
    "exclude_features",
    "build_profiles",
    "adapt_profiles_config",
    "metadata_columns",
]

logger = logging.getLogger(__name__)

CONTROL_QUERY = "Metadata_Compound == 'DMSO'"


class AggregateConfig(Config):
    """Cells -> wells (or any strata)."""

    enabled: bool = True
    strata: list[str] = ["Metadata_Plate", "Metadata_Well"]
    operation: Literal["median", "mean"] = "median"


class ProfileNormalizeConfig(Config):
    """Normalisation of every feature against the control wells of each group (plate).

    ``standardize_pooled`` centres each group on its controls' mean and divides by the controls'
    standard deviation pooled over groups (robust when each plate has few control wells).
    """

    method: Literal["standardize_pooled", "standardize", "robustize", "mad_robustize", "none"] = "standardize_pooled"
    by: str | None = "Metadata_Plate"
    control: str | None = pydantic.Field(CONTROL_QUERY,
                                         description="pandas query selecting control rows; None: all rows")


class FeatureSelectConfig(Config):
    """pycytominer feature selection."""

    operations: list[Literal["variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist"]] = [
        "variance_threshold", "correlation_threshold", "drop_na_columns"]
    corr_threshold: float = pydantic.Field(0.9, gt=0, le=1)
    na_cutoff: float = pydantic.Field(0.05, ge=0, le=1)
    freq_cut: float = pydantic.Field(0.05, gt=0, le=1)
    unique_cut: float = pydantic.Field(0.01, gt=0, le=1)
    blocklist: list[str] = pydantic.Field(default_factory=list, description="features to drop with 'blocklist'")


class SphereConfig(Config):
    """Whitening fitted on the control rows (of each group when ``by`` is set)."""

    enabled: bool = True
    by: str | None = pydantic.Field(None, description="fit per group (e.g. Metadata_Batch); None: all controls")
    method: Literal["ZCA", "PCA"] = pydantic.Field("ZCA", description="ZCA keeps feature names; PCA gives PC1..")
    shrinkage: float = pydantic.Field(0.05, gt=0, le=1, description="covariance shrunk towards trace/d * identity "
                                                              "(> 0: with fewer controls than features, or collinear "
                                                              "ones, the plain covariance cannot be inverted)")
    control: str | None = pydantic.Field(CONTROL_QUERY,
                                         description="pandas query selecting control rows; None: all rows")


class ProfilesConfig(Config):
    """``profiles``: aggregate -> exclude -> log -> normalise -> select -> sphere, each step switchable."""

    level: Literal["wells", "cells"] = pydantic.Field(
        "wells", description="wells: aggregate rows by aggregate.strata; cells: one profile per cell (no aggregation; "
                             "normalisation groups and controls the table lacks become all rows)")
    aggregate: AggregateConfig = AggregateConfig()
    exclude_features: list[str] = pydantic.Field(
        default_factory=lambda: ["Location", "Center", "Orientation", "EulerNumber", "Children"],
        description="drop features whose name contains any of these (position and bookkeeping measurements)")
    log_transform: bool = pydantic.Field(True, description="natural log of every feature positive in all rows")
    max_nan_fraction: float = pydantic.Field(
        0.05, ge=0, le=1, description="drop features missing in more rows; fill the rest with the control mean")
    normalize: ProfileNormalizeConfig = ProfileNormalizeConfig()
    feature_select: FeatureSelectConfig = FeatureSelectConfig(operations=[])
    sphere: SphereConfig = SphereConfig()


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The ``Metadata_*`` columns of a table."""
    return [c for c in table.columns if str(c).startswith("Metadata_")]


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c and c not in table.columns]
    if missing:
        raise InputError(f"{what}: column(s) {missing} not in the table (metadata: {metadata_columns(table)})")


def aggregate_profiles(table: pd.DataFrame, strata: Sequence[str], operation: str = "median") -> pd.DataFrame:
    """One row per stratum: the median (or mean) of every feature; metadata columns that are
    constant within every stratum are kept, ``Metadata_ObjectCount`` counts the rows."""
    import pycytominer

    _require(table, strata, "aggregate strata")
    features = feature_columns(table)
    profiles = pycytominer.aggregate(table, strata=list(strata), features=features, operation=operation,
                                     output_type=None)
    groups = table.groupby(list(strata), sort=True, dropna=False)
    candidates = [c for c in metadata_columns(table) if c not in strata]
    constant = [c for c in candidates if (groups[c].nunique(dropna=False) <= 1).all()]
    varying = [c for c in candidates if c not in constant]
    if varying:
        logger.info("aggregation by %s drops metadata that varies within strata: %s", list(strata), varying)
    extra = groups[constant].first().reset_index() if constant else groups.size().reset_index()[list(strata)]
    counts = groups.size().rename("Metadata_ObjectCount").reset_index()
    merged = extra.merge(counts, on=list(strata)).merge(profiles, on=list(strata))
    return merged[[*strata, *constant, "Metadata_ObjectCount", *features]]


def _groups(table: pd.DataFrame, by: str | None) -> list[pd.Index]:
    if by is None:
        return [table.index]
    return [group.index for _, group in table.groupby(by, sort=True, dropna=False)]


def exclude_features(table: pd.DataFrame, patterns: Sequence[str]) -> pd.DataFrame:
    """Drop feature columns whose name contains any of ``patterns`` (plain substrings)."""
    dropped = [f for f in feature_columns(table) if any(p in f for p in patterns)]
    return table.drop(columns=dropped)


def log_transform(table: pd.DataFrame) -> pd.DataFrame:
    """Natural log of every feature that is positive in all rows; other features are kept as they are.

    Plate and batch effects on intensities and sizes are roughly multiplicative; the log makes
    them additive, so control-based centring removes them.
    """
    features = feature_columns(table)
    values = table[features].to_numpy(dtype=float, copy=True)
    positive = (values > 0).all(axis=0)
    values[:, positive] = np.log(values[:, positive])
    return _with_features(table, features, values)


def _with_features(table: pd.DataFrame, features: list[str], values: np.ndarray) -> pd.DataFrame:
    """``table`` with its feature columns replaced by ``values`` (rows aligned), built in one block."""
    others = table.drop(columns=features)
    return pd.concat([others, pd.DataFrame(values, index=table.index, columns=features)], axis=1)


def normalize_profiles(
    table: pd.DataFrame, method: str = "standardize_pooled", by: str | None = "Metadata_Plate",
    control: str | None = CONTROL_QUERY,
) -> pd.DataFrame:
    """Normalise features group by group against the control rows of the group (``control=None``:
    all rows of the group).

    ``standardize_pooled``: (x - group control mean) / control std pooled over groups (after
    centring); ``standardize``: (x - mean) / std of the group's controls; ``robustize``:
    (x - median) / IQR; ``mad_robustize``: (x - median) / (1.4826 MAD). Raises InputError when a
    group has no control rows or the control query is invalid.
    """
    if method == "none":
        return table.copy()
    if method == "standardize_pooled":
        centred = _per_group(table, by, control, _centre_on_controls)
        features = feature_columns(centred)
        scale = centred.loc[control_mask(table, control), features].std(ddof=1).replace(0.0, np.nan)
        return _with_features(centred, features, (centred[features] / scale).to_numpy())
    return _per_group(table, by, control, lambda g, f, c: _pycytominer_normalize(g, f, method, control))


def _centre_on_controls(group: pd.DataFrame, features: list[str], is_control: pd.Series) -> pd.DataFrame:
    return group[features] - group.loc[is_control, features].mean()


def sphere_profiles(
    table: pd.DataFrame, by: str | None = None, control: str | None = CONTROL_QUERY, method: str = "ZCA",
    shrinkage: float = 0.05,
) -> pd.DataFrame:
    """Whiten features with the covariance of the control rows (of each group; ``control=None``: all
    rows), shrunk towards ``trace / d * I`` by ``shrinkage`` (typical variation normalisation; Ando
    et al. 2017).

    Rows are centred on the controls' mean. ``ZCA`` keeps the feature names; ``PCA`` returns the
    whitened principal components ``PC1..PCd`` (largest control variance first).
    """
    result = _per_group(table, by, control, lambda g, f, c: _whiten(g, f, c, method, shrinkage))
    if method == "PCA":
        features = feature_columns(table)
        result = result.rename(columns={f: f"PC{i + 1}" for i, f in enumerate(features)})
    return result


def _whiten(group: pd.DataFrame, features: list[str], is_control: pd.Series, method: str,
            shrinkage: float) -> pd.DataFrame:
    controls = group.loc[is_control, features].to_numpy(dtype=float)
    if len(controls) < 2:
        raise InputError(f"whitening needs at least 2 control rows per group, got {len(controls)}")
    covariance = np.atleast_2d(np.cov(controls, rowvar=False))
    d = len(covariance)
    covariance = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / d * np.eye(d)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = eigenvalues[order]
    if eigenvalues[-1] <= 1e-10 * eigenvalues[0]:
        raise InputError(f"whitening is singular: the control covariance of {len(controls)} rows and {d} features has "
                         f"condition number {eigenvalues[0] / max(eigenvalues[-1], 1e-300):.1e}; raise "
                         "sphere.shrinkage (default 0.05)")
    eigenvectors = eigenvectors[:, order]
    transform = eigenvectors / np.sqrt(eigenvalues)
    if method == "ZCA":
        transform = transform @ eigenvectors.T
    centred = group[features].to_numpy(dtype=float) - controls.mean(axis=0)
    return pd.DataFrame(centred @ transform, index=group.index, columns=features)


def control_mask(table: pd.DataFrame, control: str | None) -> pd.Series:
    """Boolean Series over ``table``'s rows: True where the pandas query ``control`` holds (every
    row when ``control`` is None); InputError when the query cannot be evaluated.

    >>> control_mask(pd.DataFrame({"Metadata_Compound": ["DMSO", "taxol"]}), "Metadata_Compound == 'DMSO'").tolist()
    [True, False]
    """
    if control is None:
        return pd.Series(True, index=table.index)
    try:
        return table.eval(control).astype(bool)
    except Exception as exc:  # pandas raises many types for a bad query
        raise InputError(f"control query {control!r} is invalid: {exc}") from None


def _per_group(table: pd.DataFrame, by: str | None, control: str | None, apply) -> pd.DataFrame:
    """Replace the features of each group by ``apply(group, features, is_control_in_group)``."""
    _require(table, [by] if by else [], "normalisation group")
    features = feature_columns(table)
    is_control = control_mask(table, control)
    values = np.empty((len(table), len(features)))
    for index in _groups(table, by):
        group = table.loc[index]
        if not is_control.loc[index].any():
            name = group[by].iloc[0] if by else "all rows"
            raise InputError(f"group {by}={name!r} has no control rows matching {control!r}; centre on wider "
                             f"groups that all hold controls (e.g. --set normalize.by=Metadata_Batch, or "
                             f"normalize.by=null for one group)")
        values[table.index.get_indexer(index)] = apply(group, features, is_control.loc[index])[features].to_numpy()
    return _with_features(table, features, values)


def _pycytominer_normalize(group: pd.DataFrame, features: list[str], method: str,
                           control: str | None) -> pd.DataFrame:
    import pycytominer

    return pycytominer.normalize(group, features=features, meta_features=metadata_columns(group),
                                 samples=control or "all", method=method, output_type=None)


def select_features(table: pd.DataFrame, config: FeatureSelectConfig) -> pd.DataFrame:
    """Drop features by the configured pycytominer operations; metadata columns are kept."""
    import pycytominer

    if not config.operations:
        return table.copy()
    features = feature_columns(table)
    options = dict(corr_threshold=config.corr_threshold, na_cutoff=config.na_cutoff, freq_cut=config.freq_cut,
                   unique_cut=config.unique_cut)
    if "blocklist" in config.operations:
        options["blocklist"] = list(config.blocklist)
    selected = pycytominer.feature_select(table, features=features, operation=list(config.operations),
                                          output_type=None, **options)
    kept = feature_columns(selected)
    logger.info("feature selection kept %d of %d features", len(kept), len(features))
    return table[[*metadata_columns(table), *kept]]


def adapt_profiles_config(table: pd.DataFrame, config: ProfilesConfig,
                          source: str = "the table") -> tuple[ProfilesConfig, list[str]]:
    """``config`` as it applies to ``table``, and one note per setting changed (with the ``--set``
    that makes it explicit).

    At ``level: cells`` aggregation is off, and a normalisation or sphering group (``by``) that is
    not a column of the table, or a control query that names a missing column or selects no row,
    becomes all rows. At ``level: wells`` each of these, and an aggregation column the table lacks,
    is an InputError naming ``source``, the column and the setting to change.
    """
    cells, changes = config.level == "cells", {}
    if cells and config.aggregate.enabled:
        changes["aggregate.enabled=false"] = "cell level: one profile per cell, no aggregation"
    elif config.aggregate.enabled:
        missing = [c for c in config.aggregate.strata if c not in table.columns]
        if missing:
            raise InputError(f"{source}: cannot aggregate by {config.aggregate.strata}: no column(s) {missing} (its "
                             f"metadata columns: {metadata_columns(table)}). A table of single cells without wells: "
                             "--level cells (no aggregation); or name other columns: --set aggregate.strata=[...]")
    steps = (("normalize", config.normalize, config.normalize.method != "none"),
             ("sphere", config.sphere, config.sphere.enabled))
    for key, section, active in steps:
        if not active:
            continue
        if section.by and section.by not in table.columns:
            problem = f"{key}.by names {section.by!r}, not a column of the table"
            if not cells:
                raise InputError(f"{source}: {problem} (its metadata columns: {metadata_columns(table)}); name one "
                                 f"of them, or use all rows: --set {key}.by=null")
            changes[f"{key}.by=null"] = f"{problem}: {key} over all rows as one group"
        problem = _control_problem(table, section.control)
        if problem:
            problem = f"{key}.control {section.control!r} {problem}"
            if not cells:
                raise InputError(f"{source}: {problem} (its metadata columns: {metadata_columns(table)}); write a "
                                 f"query on them, or use all rows: --set {key}.control=null")
            changes[f"{key}.control=null"] = f"{problem}: {key} against all cells"
    if not changes:
        return config, []
    adapted = resolve_config(ProfilesConfig, config.to_dict(), list(changes))
    return adapted, [f"{note} ({override})" for override, note in changes.items()]


def _control_problem(table: pd.DataFrame, control: str | None) -> str | None:
    """Why the control query cannot select control rows of ``table``; None when it can."""
    if control is None:
        return None
    try:
        selected = table.eval(control).astype(bool)
    except Exception as exc:  # pandas raises many types for a bad query
        return f"cannot be evaluated ({exc})"
    return None if selected.any() else "selects no row"


def _cells_with_features(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """``table`` without the rows that have no finite feature (cells where no object was found)."""
    features = feature_columns(table)
    measured = np.isfinite(table[features].to_numpy(dtype=float)).any(axis=1)
    if not measured.any():
        raise InputError(f"{source}: no feature column with finite values (no cell has any)")
    if not measured.all():
        logger.warning("%s: left out %d of %d cells without any finite feature (no object found in the crop)",
                       source, int((~measured).sum()), len(table))
    return table[measured]


def build_profiles(table: pd.DataFrame, config: ProfilesConfig | None = None,
                   source: str = "the table") -> pd.DataFrame:
    """Aggregate, normalise, select and sphere as configured (adapted to the table, see
    :func:`adapt_profiles_config`, each change named in a warning); returns the profile table.

    Raises InputError naming ``source`` when the table has no numeric feature columns, none with
    finite values, or a configured column is missing at ``level: wells``.
    """
    config = config or ProfilesConfig()
    if not feature_columns(table):
        raise InputError(f"{source}: no numeric feature columns (besides Metadata_*)")
    config, notes = adapt_profiles_config(table, config, source)
    for note in notes:
        logger.warning("%s: %s", source, note)
    profiles = _cells_with_features(table, source) if config.level == "cells" else table
    if config.aggregate.enabled:
        profiles = aggregate_profiles(profiles, config.aggregate.strata, config.aggregate.operation)
    profiles = exclude_features(profiles, config.exclude_features)
    profiles = _infinite_as_missing(finite_features(profiles, config.max_nan_fraction, "before normalisation", source))
    if config.log_transform:
        profiles = log_transform(profiles)
    profiles = normalize_profiles(profiles, config.normalize.method, config.normalize.by, config.normalize.control)
    profiles = finite_features(profiles, config.max_nan_fraction, "after normalisation (e.g. constant in controls)",
                               source)
    profiles = _fill_missing(profiles)
    profiles = select_features(profiles, config.feature_select)
    if config.sphere.enabled:
        profiles = sphere_profiles(profiles, config.sphere.by, config.sphere.control, config.sphere.method,
                                   config.sphere.shrinkage)
    return profiles


def finite_features(table: pd.DataFrame, max_fraction: float = 0.0, stage: str = "",
                    source: str = "the table") -> pd.DataFrame:
    """``table`` without the feature columns that are NaN or infinite in more than ``max_fraction``
    of its rows (0: in any row), each named in a warning; a column that is neither ``Metadata_*``
    nor numeric is named in a warning too (it is not a feature).

    Every command that reads a feature, profile or embedding table goes through here, so that no
    score is computed with a non-finite value. Raises InputError naming ``source`` when no feature
    is left.

    >>> table = pd.DataFrame({"Metadata_Well": ["A", "B"], "area": [1.0, 2.0], "bad": [np.nan, 1.0]})
    >>> list(finite_features(table).columns)
    ['Metadata_Well', 'area']
    """
    features = feature_columns(table)
    numeric = set(features)
    text = [c for c in table.columns if not str(c).startswith("Metadata_") and c not in numeric]
    if text:
        logger.warning("%s: left out %d non-numeric column(s) that are not Metadata_*: %s", source, len(text),
                       ", ".join(map(str, text[:5])) + (" ..." if len(text) > 5 else ""))
    missing = non_finite_fraction(table)
    dropped = list(missing.index[missing > max_fraction])
    if dropped:
        logger.warning("%s: dropped %d feature(s) with NaN or infinite values in %s of rows%s: %s", source,
                       len(dropped), f"over {max_fraction:.0%}" if max_fraction else "any", f" {stage}" if stage else "",
                       ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
    if len(dropped) == len(features):
        raise InputError(f"{source}: no feature column with finite values{f' {stage}' if stage else ''} "
                         f"({len(features)} numeric column(s), all dropped)")
    return table.drop(columns=[*dropped, *text])


def non_finite_fraction(table: pd.DataFrame) -> pd.Series:
    """The share of rows in which each feature column (see
    :func:`~morphospace.features.cellprofiler.feature_columns`) is NaN or infinite, in [0, 1]; NaN
    for a table without rows.

    >>> non_finite_fraction(pd.DataFrame({"Metadata_Well": ["A", "B"], "a": [1.0, np.inf], "b": [np.nan] * 2}))
    a    0.5
    b    1.0
    dtype: float64
    """
    features = feature_columns(table)
    values = table[features].to_numpy(dtype=float)
    share = (~np.isfinite(values)).mean(axis=0) if len(table) else np.full(len(features), np.nan)
    return pd.Series(share, index=features, dtype=float)


def _infinite_as_missing(table: pd.DataFrame) -> pd.DataFrame:
    """Infinite feature values as NaN: left out of the control statistics, then filled like any
    other missing value."""
    features = feature_columns(table)
    values = table[features].to_numpy(dtype=float, copy=True)
    values[np.isinf(values)] = np.nan
    return _with_features(table, features, values)


def _fill_missing(table: pd.DataFrame) -> pd.DataFrame:
    """Set the remaining NaN or infinite values of normalised features to 0 (the controls' centre
    after control-based normalisation)."""
    features = feature_columns(table)
    values = table[features].to_numpy(dtype=float, copy=True)
    missing = ~np.isfinite(values)
    if missing.any():
        logger.info("filled %d missing value(s) in %d feature(s) with 0, the control centre", int(missing.sum()),
                    int(missing.any(axis=0).sum()))
        values[missing] = 0.0
    return _with_features(table, features, values)
