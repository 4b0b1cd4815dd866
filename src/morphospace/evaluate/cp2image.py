"""What an image generated from CellProfiler features keeps of them (CP2Image's evaluation).

A model that draws a cell from its feature vector is scored by measuring the generated image again
with the same CellProfiler settings and comparing:

- :func:`feature_correlations` / :func:`summarize_correlations`: per feature, Pearson and Spearman r
  between the requested value (the input) and the re-measured one, over cells; for angles
  (orientation, Zernike phases) their circular counterparts (:func:`circular_correlation`), since a
  linear r of an angle that wraps around is meaningless;
- :func:`sweep_response`: Spearman r (circular for angles) of a re-measured feature against the
  values requested along a sweep of that one feature;
- :func:`closer_to_own_group`: whether cells generated from a group's centroid (a dose) land nearer
  the real cells of that group than the real cells of a reference (DMSO);
- :func:`nsc_generated_vs_real`: MoA accuracy (NSC) of profiles re-measured on generated cells
  against that of the same cells' real profiles;
- :func:`truth_correlations`: on a simulated screen, Pearson and Spearman r between the simulator's
  exact truth of each cell (nucleus area, DNA level, cell area) and the matching feature.

Generated images leave the model in the data module's normalised range; :func:`to_feature_scale`
maps them back to the intensity scale the feature table was measured at, and :func:`remeasure`
measures them as ``morphospace features`` measured the real crops.

Examples
--------
>>> import pandas as pd
>>> requested = pd.DataFrame({"area": [1.0, 2.0, 3.0, 4.0], "flat": [5.0] * 4})
>>> table = feature_correlations(requested, requested * 2)
>>> table["pearson_r"].round(6).tolist(), table["spearman_r"].round(6).tolist()
([1.0, nan], [1.0, nan])
>>> summarize_correlations(table)["share_r_above_0_5"]
1.0
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import pearsonr, rankdata, spearmanr

from morphospace.errors import InputError
from morphospace.evaluate.moa import COMPOUND, MOA, evaluate_moa, treatment_profiles
from morphospace.features.cellprofiler import (
    OBJECTS, angular_period, feature_columns, masks_by_segmentation, measurable_objects, measure_crops,
    resolve_nucleus_channel,
)
from morphospace.features.profiles import finite_features, normalize_profiles

__all__ = [
    "circular_correlation",
    "feature_correlations",
    "summarize_correlations",
    "correlation_histogram_figure",
    "correlation_scatter_figure",
    "sweep_response",
    "summarize_sweeps",
    "closer_to_own_group",
    "nsc_generated_vs_real",
    "truth_correlations",
    "TRUTH_PAIRS",
    "to_feature_scale",
    "remeasure",
]

logger = logging.getLogger(__name__)

MIN_PAIRS = 3
"""Fewest finite (requested, re-measured) pairs for which a correlation is computed."""


# ----------------------------------------------------------------------------- correlations


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def circular_correlation(x: np.ndarray, y: np.ndarray, period: float, ranks: bool = False) -> float:
    """Circular correlation of two angles (n,) of the given ``period`` (e.g. 180 for an axial
    orientation in degrees, 2 pi for a phase in radians): Jammalamadaka and SenGupta's
    r = sum sin(a - a0) sin(b - b0) / sqrt(sum sin^2(a - a0) sum sin^2(b - b0)), with a0, b0 the
    circular means, in [-1, 1]; with ``ranks`` the angles are first replaced by their uniform scores
    2 pi rank / n (ranks of the angles modulo the period, ties averaged: the rank-based analogue,
    as Spearman's is of Pearson's). NaN when either side has no spread.

    >>> angles = np.array([-80.0, -40.0, 0.0, 40.0, 80.0])
    >>> round(circular_correlation(angles, angles + 180.0, 180.0), 6)  # a full turn apart: the same
    1.0
    """
    a, b = (2 * np.pi * np.asarray(v, dtype=float) / period for v in (x, y))
    if ranks:
        a, b = (2 * np.pi * rankdata(np.round(np.mod(v, 2 * np.pi), 9)) / len(v) for v in (a, b))
    a, b = (v - np.angle(np.exp(1j * v).mean()) for v in (a, b))
    denominator = np.sqrt((np.sin(a) ** 2).sum() * (np.sin(b) ** 2).sum())
    return float((np.sin(a) * np.sin(b)).sum() / denominator) if denominator > 1e-12 else float("nan")


def _correlation(x: np.ndarray, y: np.ndarray, spearman: bool, period: float | None = None) -> float:
    """Pearson (or Spearman) r of the finite pairs, circular for angles of ``period``; NaN with
    fewer than :data:`MIN_PAIRS` pairs or when either side is constant."""
    x, y = _finite_pairs(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    if len(x) < MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    if period is not None:
        return circular_correlation(x, y, period, ranks=spearman)
    return float((spearmanr if spearman else pearsonr)(x, y)[0])


def feature_correlations(requested: pd.DataFrame, remeasured: pd.DataFrame) -> pd.DataFrame:
    """Per feature, how well the value re-measured on each generated cell follows the value it was
    generated from.

    ``requested`` and ``remeasured`` hold the same cells in the same row order (their index is
    ignored); the features are the numeric non-``Metadata_`` columns present in both, in
    ``requested``'s order. Each r uses the rows where both values are finite. Angles (see
    :func:`~morphospace.features.cellprofiler.angular_period`) get the circular coefficients of
    :func:`circular_correlation` in both columns (plain and rank-based).

    Returns
    -------
    pandas.DataFrame
        Index ``feature``; ``pearson_r``, ``spearman_r`` (NaN when fewer than 3 finite pairs or when
        either side is constant, e.g. a feature the generator never varies), ``n`` (finite pairs),
        ``circular`` (whether the feature is an angle scored by circular correlation).

    Raises
    ------
    InputError
        The tables differ in their number of rows, or share no feature.
    """
    if len(requested) != len(remeasured):
        raise InputError(f"requested and re-measured feature tables differ in rows: {len(requested)} vs "
                         f"{len(remeasured)}; they must hold the same cells in the same order")
    shared = set(feature_columns(remeasured))
    features = [c for c in feature_columns(requested) if c in shared]
    if not features:
        raise InputError("the requested and re-measured feature tables share no feature column")
    rows = {}
    for feature in features:
        x, y = requested[feature].to_numpy(dtype=float), remeasured[feature].to_numpy(dtype=float)
        period = angular_period(feature)
        rows[feature] = {"pearson_r": _correlation(x, y, False, period), "spearman_r": _correlation(x, y, True, period),
                         "n": int(len(_finite_pairs(x, y)[0])), "circular": period is not None}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("feature")


def summarize_correlations(table: pd.DataFrame, threshold: float = 0.5, n_listed: int = 20) -> dict[str, Any]:
    """Summary of :func:`feature_correlations` on Pearson r.

    Returns ``n_features``, ``n_undefined`` and ``undefined`` (features whose r is NaN; left out of
    every share and median), ``n_circular`` (angles, scored by circular correlation),
    ``share_r_above_0_5`` (share of the defined features with r > ``threshold``; the key keeps its
    name for any threshold, which is recorded as ``threshold``),
    ``median_r``, ``share_spearman_above_0_5``, ``median_spearman``, and ``best`` / ``worst``: the
    ``n_listed`` highest / lowest Pearson r as ``{feature: r}``, highest (lowest) first.

    >>> table = pd.DataFrame({"pearson_r": [0.9, 0.2, np.nan], "spearman_r": [0.8, 0.6, np.nan]},
    ...                      index=["a", "b", "c"])
    >>> summary = summarize_correlations(table, n_listed=1)
    >>> summary["share_r_above_0_5"], summary["median_r"], summary["best"], summary["worst"], summary["undefined"]
    (0.5, 0.55, {'a': 0.9}, {'b': 0.2}, ['c'])
    """
    pearson = table["pearson_r"].dropna().sort_values(ascending=False)
    spearman = table["spearman_r"].dropna()
    undefined = [str(f) for f in table.index[table["pearson_r"].isna()]]
    share = (lambda values: float((values > threshold).mean()) if len(values) else float("nan"))
    return {
        "threshold": threshold,
        "n_features": int(len(table)),
        "n_undefined": len(undefined),
        "n_circular": int(table["circular"].sum()) if "circular" in table else 0,
        "undefined": undefined,
        "share_r_above_0_5": share(pearson),
        "median_r": float(pearson.median()) if len(pearson) else float("nan"),
        "share_spearman_above_0_5": share(spearman),
        "median_spearman": float(spearman.median()) if len(spearman) else float("nan"),
        "best": {str(k): float(v) for k, v in pearson.head(n_listed).items()},
        "worst": {str(k): float(v) for k, v in pearson.tail(n_listed)[::-1].items()},
    }


def correlation_histogram_figure(table: pd.DataFrame, threshold: float = 0.5, title: str = "") -> Figure:
    """Histogram of the per-feature Pearson r (defined features), with the ``threshold`` marked."""
    values = table["pearson_r"].dropna().to_numpy()
    fig = Figure(figsize=(5, 3.4), layout="tight")
    ax = fig.subplots()
    ax.hist(values, bins=np.linspace(-1, 1, 41), color="0.35")
    ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
    share = float((values > threshold).mean()) if len(values) else float("nan")
    ax.set_xlabel("Pearson r, requested vs re-measured")
    ax.set_ylabel("features")
    ax.set_title(title or f"{len(values)} features; {share:.0%} with r > {threshold:g}", fontsize=9)
    return fig


def _spread_features(table: pd.DataFrame, n: int) -> list[str]:
    """``n`` features spread evenly over the ranking by Pearson r, best first."""
    ranked = table["pearson_r"].dropna().sort_values(ascending=False).index
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int))
    return [str(ranked[i]) for i in picks]


def correlation_scatter_figure(requested: pd.DataFrame, remeasured: pd.DataFrame, table: pd.DataFrame,
                               features: Sequence[str] | None = None) -> Figure:
    """Six scatter plots (2 x 3) of re-measured against requested values, one feature each: the
    ``features`` given, else six spread over the ranking of ``table`` (:func:`feature_correlations`)
    from best to worst; each panel titled with its feature and r."""
    features = list(features) if features is not None else _spread_features(table, 6)
    fig = Figure(figsize=(10, 6.4), layout="tight")
    axes = fig.subplots(2, 3, squeeze=False).ravel()
    for ax, feature in zip(axes, features):
        x, y = requested[feature].to_numpy(dtype=float), remeasured[feature].to_numpy(dtype=float)
        ax.scatter(x, y, s=5, alpha=0.5, color="tab:blue", linewidths=0)
        ax.set_title(f"{feature}\nr = {table.loc[feature, 'pearson_r']:.2f}", fontsize=7)
        ax.set_xlabel("requested", fontsize=7)
        ax.set_ylabel("re-measured", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(features):]:
        ax.set_axis_off()
    return fig


# ----------------------------------------------------------------------------- sweeps


def sweep_response(requested_values: Sequence[float] | np.ndarray, remeasured_values: Sequence[float] | np.ndarray,
                   period: float | None = None) -> float:
    """Spearman r between the values requested along a one-feature sweep and the values re-measured
    on the images generated for them (finite pairs only); NaN with fewer than 3 pairs or a constant
    side. Both are (steps,) or any equal shape, flattened (several cells swept alike). For an angle
    of ``period`` both are in the feature's own units and the r is the rank-based circular one of
    :func:`circular_correlation`.

    >>> round(sweep_response([-2, -1, 0, 1, 2], [10.0, 12.0, 11.0, 15.0, 20.0]), 6)
    0.9
    """
    requested, remeasured = np.ravel(requested_values), np.ravel(remeasured_values)
    if requested.shape != remeasured.shape:
        raise InputError(f"a sweep has {requested.size} requested and {remeasured.size} re-measured values")
    return _correlation(requested, remeasured, True, period)


def summarize_sweeps(responses: Mapping[str, float], threshold: float = 0.5) -> dict[str, Any]:
    """``per_feature`` Spearman r of every swept feature, their ``median`` and the ``share_above``
    ``threshold`` over the defined ones (NaN r: listed, not counted).

    >>> summarize_sweeps({"area": 0.9, "orientation": 0.1, "flat": float("nan")})["share_above"]
    0.5
    """
    defined = np.array([v for v in responses.values() if np.isfinite(v)])
    return {"per_feature": {str(k): float(v) for k, v in responses.items()}, "threshold": threshold,
            "median": float(np.median(defined)) if len(defined) else float("nan"),
            "share_above": float((defined > threshold).mean()) if len(defined) else float("nan")}


# ----------------------------------------------------------------------------- simulator truth

TRUTH_PAIRS = (
    ("Metadata_TruthNucleusArea", "Nuclei_AreaShape_Area"),
    ("Metadata_TruthDNALevel", "Nuclei_Intensity_MeanIntensity_DNA"),
    ("Metadata_TruthDNALevel", "Nuclei_Intensity_IntegratedIntensity_DNA"),
    ("Metadata_TruthCellArea", "Cells_AreaShape_Area"),
)
"""(truth column of a simulated screen's cell table, feature that measures it)."""


def truth_correlations(truth: pd.DataFrame, measured: Mapping[str, pd.DataFrame],
                       pairs: Sequence[tuple[str, str]] = TRUTH_PAIRS) -> dict[str, Any]:
    """Pearson and Spearman r between each truth column and its feature in every table of ``measured``.

    ``truth`` and each ``measured`` table hold the same cells in the same row order (index ignored);
    a cell without truth has NaN there and is left out. Returns ``pairs``: per feature, its ``truth``
    column and, per name of ``measured``, ``pearson_r``, ``spearman_r`` and ``n`` (finite pairs);
    ``skipped``: per feature missing from a table (or truth column missing), why.

    >>> truth = pd.DataFrame({"Metadata_TruthNucleusArea": [10, 20, 30, float("nan")]})
    >>> area = pd.DataFrame({"Nuclei_AreaShape_Area": [11.0, 19.0, 33.0, 5.0]})
    >>> result = truth_correlations(truth, {"generated": area}, [("Metadata_TruthNucleusArea", "Nuclei_AreaShape_Area")])
    >>> result["pairs"]["Nuclei_AreaShape_Area"]["generated"]["spearman_r"], result["pairs"]["Nuclei_AreaShape_Area"]["generated"]["n"]
    (1.0, 3)
    """
    for name, table in measured.items():
        if len(table) != len(truth):
            raise InputError(f"the truth table has {len(truth)} rows and the {name} features {len(table)}; they must "
                             "hold the same cells in the same order")
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for truth_column, feature in pairs:
        lacking = [name for name, table in measured.items() if feature not in table.columns]
        if truth_column not in truth.columns:
            skipped[feature] = f"the truth table has no {truth_column}"
            continue
        if lacking:
            skipped[feature] = f"not measured in {lacking}"
            continue
        x = truth[truth_column].to_numpy(dtype=float)
        results[feature] = {"truth": truth_column}
        for name, table in measured.items():
            y = table[feature].to_numpy(dtype=float)
            results[feature][name] = {"pearson_r": _correlation(x, y, False), "spearman_r": _correlation(x, y, True),
                                      "n": int(len(_finite_pairs(x, y)[0]))}
    return {"pairs": results, "skipped": skipped}


# ----------------------------------------------------------------------------- groups


def closer_to_own_group(generated: Mapping[str, np.ndarray | pd.DataFrame],
                        real_by_group: Mapping[str, np.ndarray | pd.DataFrame],
                        reference_group: str, offset_from_reference: bool = False) -> dict[str, Any]:
    """For each group (e.g. a dose), is the centroid of the cells generated for it nearer the
    centroid of that group's real cells than the centroid of the ``reference_group``'s real cells
    (e.g. DMSO)?

    Every array is (cells, features) with the same features in the same order. Distances are
    Euclidean in the feature space standardised on all real cells pooled (mean 0, SD 1 per
    feature); features that are constant or not finite in every real cell drop out, NaN values are
    left out of the centroids. ``generated`` needs no entry for the reference group.

    Returns ``groups``: ``{group: {"distance_to_own", "distance_to_reference", "closer"}}``,
    ``share_closer`` (share of the non-reference groups of ``generated`` that are closer to their
    own), ``n_features`` used, ``reference_group``.

    With ``offset_from_reference``, ``generated`` must hold the reference group too: the offset of
    its generated centroid from its real one (what the generator adds to every cell it draws, e.g.
    blur) is subtracted from every group's generated centroid first, so that only the generated
    shift from the reference is judged.

    >>> real = {"DMSO": np.array([[0.0, 0.0], [0.0, 2.0]]), "high": np.array([[4.0, 0.0], [4.0, 2.0]])}
    >>> result = closer_to_own_group({"high": np.array([[3.0, 1.0]])}, real, "DMSO")
    >>> result["share_closer"], result["groups"]["high"]["closer"]
    (1.0, True)
    """
    if reference_group not in real_by_group:
        raise InputError(f"no real cells of the reference group {reference_group!r}; groups: {list(real_by_group)}")
    groups = [g for g in generated if g != reference_group]
    missing = [g for g in groups if g not in real_by_group]
    if missing or not groups:
        raise InputError(f"generated groups {missing or list(generated)} have no real cells to compare with "
                         f"(real groups: {list(real_by_group)})")
    real = {g: np.asarray(v, dtype=float) for g, v in real_by_group.items()}
    pooled = np.concatenate(list(real.values()))
    with np.errstate(all="ignore"):
        mean, std = np.nanmean(pooled, axis=0), np.nanstd(pooled, axis=0)
    usable = np.isfinite(mean) & np.isfinite(std) & (std > 0)
    if not usable.any():
        raise InputError("no feature varies among the real cells; distances are undefined")

    def centroid(values: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.nan_to_num(np.nanmean((np.asarray(values, dtype=float)[:, usable] - mean[usable])
                                            / std[usable], axis=0))

    reference = centroid(real[reference_group])
    if offset_from_reference and reference_group not in generated:
        raise InputError(f"offset_from_reference needs generated cells of the reference group {reference_group!r}")
    offset = centroid(generated[reference_group]) - reference if offset_from_reference else 0.0
    result = {}
    for group in groups:
        fake = centroid(generated[group]) - offset
        own, other = float(np.linalg.norm(fake - centroid(real[group]))), float(np.linalg.norm(fake - reference))
        result[group] = {"distance_to_own": own, "distance_to_reference": other, "closer": own < other}
    return {"groups": result, "share_closer": float(np.mean([r["closer"] for r in result.values()])),
            "n_features": int(usable.sum()), "reference_group": reference_group,
            "offset_from_reference": offset_from_reference}


def _standardised_on_controls(table: pd.DataFrame, control: str) -> pd.DataFrame:
    """Features centred on the ``control`` compound's cells and scaled by their SD (all cells when
    the table has none), then without features left non-finite."""
    query = f"{COMPOUND} == {control!r}"
    has_controls = bool((table[COMPOUND] == control).any())
    normalised = normalize_profiles(table, "standardize_pooled", by=None, control=query if has_controls else None)
    return finite_features(normalised, source="profiles for NSC")


def nsc_generated_vs_real(real: pd.DataFrame, generated: pd.DataFrame, control: str = "DMSO") -> dict[str, Any]:
    """NSC (1-NN MoA accuracy, same compound excluded; :func:`~morphospace.evaluate.moa.nsc_accuracy`)
    of treatment profiles built from ``generated`` cells and from the same cells' ``real`` features.

    Both tables hold one row per cell with ``Metadata_Compound``, ``Metadata_Concentration``,
    ``Metadata_MoA`` and features; each is standardised against its own ``control`` cells (all cells
    without any), features non-finite in either are dropped, and both keep the same features.
    Treatment profile = mean of its cells.

    Returns ``nsc_generated``, ``nsc_real``, ``treatments``, ``compounds``, ``n_features``. Raises
    InputError when the cells hold fewer than two annotated compounds besides the control.
    """
    real_scaled, fake_scaled = _standardised_on_controls(real, control), _standardised_on_controls(generated, control)
    shared = set(feature_columns(fake_scaled))
    features = [c for c in feature_columns(real_scaled) if c in shared]
    if not features:
        raise InputError("no feature is finite in both the real and the generated profiles")
    scores = {}
    for name, table in (("real", real_scaled), ("generated", fake_scaled)):
        metadata = [c for c in table.columns if str(c).startswith("Metadata_")]
        scores[name] = evaluate_moa(treatment_profiles(table[[*metadata, *features]], operation="mean"),
                                    control=control)["nsc"]
    return {"nsc_generated": scores["generated"].accuracy, "nsc_real": scores["real"].accuracy,
            "treatments": scores["real"].n_treatments, "compounds": scores["real"].n_compounds,
            "n_features": len(features), "moa_column": MOA}


# ----------------------------------------------------------------------------- re-measurement


def to_feature_scale(images: np.ndarray, normalization: Mapping[str, Any], intensity_scale: Sequence[float]
                     ) -> tuple[np.ndarray, bool]:
    """Generated images (N, C, H, W) in [0, 1] mapped to the intensity scale a feature table was
    measured at, and whether that mapping was possible.

    ``normalization`` is the run's ``normalization.json`` content (``config`` and ``stats``); an image
    value x in [0, 1] is the fraction between its channel's fitted low and high, so the raw
    intensity is ``low + x * (high - low)``, then divided by ``intensity_scale`` (one per channel,
    from the feature table's ``OUT.json``) and clipped to [0, 1], as ``features`` scales crops.
    Z-scored or per-crop normalisations have no inverse: the images are returned unchanged, with
    False (shape features are unaffected; intensity features then correlate up to the lost scale).

    >>> norm = {"config": {"method": "percentile", "scope": "dataset"}, "stats": [[100.0, 300.0]]}
    >>> scaled, exact = to_feature_scale(np.array([[[[0.0, 0.5, 1.0]]]]), norm, [400.0])
    >>> scaled.ravel().tolist(), exact
    ([0.25, 0.5, 0.75], True)
    """
    images = np.asarray(images, dtype=np.float32)
    config, stats = normalization.get("config", {}), normalization.get("stats")
    invertible = config.get("method", "percentile") in ("percentile", "fixed") and config.get("scope") != "crop"
    if not invertible or stats is None:
        return images, False
    stats = np.asarray(stats, dtype=np.float32)
    scale = np.asarray(intensity_scale, dtype=np.float32)
    if len(stats) != images.shape[1] or len(scale) != images.shape[1]:
        raise InputError(f"images have {images.shape[1]} channels; the normalisation has {len(stats)} and the "
                         f"feature table's intensity scale {len(scale)}")
    low, high = stats[:, 0][None, :, None, None], stats[:, 1][None, :, None, None]
    return np.clip((low + images * (high - low)) / scale[None, :, None, None], 0, 1), True


def remeasure(images: np.ndarray, channels: Sequence[str], feature_set: str = "fast",
              objects: Sequence[str] = tuple(OBJECTS), nucleus_channel: str = "auto",
              cytoplasm_channels: Sequence[str] = ("Actin", "Tubulin"), source: str = "the generated images"
              ) -> pd.DataFrame:
    """CellProfiler features of images (N, C, H, W) in [0, 1] without masks: each is segmented
    (:func:`~morphospace.features.cellprofiler.masks_by_segmentation`, the nucleus nearest the centre
    and its cell) and measured for those ``objects`` its channels outline. One row per image; NaN
    where no nucleus is found, and for an image with non-finite pixels (counted in a warning).
    InputError naming ``source`` when the nucleus channel cannot be told."""
    images = np.asarray(images, dtype=np.float32)
    nucleus = resolve_nucleus_channel(channels, nucleus_channel, source)
    finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if not finite.all():
        logger.warning("%s: %d of %d images have non-finite pixels; their features are NaN", source,
                       int((~finite).sum()), len(images))
        images = np.where(finite[:, None, None, None], images, 0.0).astype(np.float32)
    masks = masks_by_segmentation(images, channels, nucleus, cytoplasm_channels)
    masks[~finite] = 0
    kept, _ = measurable_objects(objects, channels, cytoplasm_channels)
    return measure_crops(images, masks, channels, feature_set, kept)
