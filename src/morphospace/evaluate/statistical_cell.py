"""Statistics of the Statistical Cell's analyses: structure coupling by channel swaps, drug shifts.

**Coupling** (the paper's Eq 4). For a cell i of structure s, reference channel r (membrane or
DNA) and the target model's per-cell ELBO (a log-likelihood bound, negative in practice):

    c_i(r) = 1 - ELBO(x_s | x_r, x_r') / mean_j ELBO(x_s | x_r of cell j, x_r')

the numerator with the cell's own reference, the denominator averaged over R swaps of channel r
for another cell j's (:func:`draw_swap_partners`). c is 0 when the structure ignores r, near 1 when
swapping r destroys the likelihood, negative when a stranger's r fits better. The coupling of a
structure is the mean of c_i over its cells (per cell, then averaged, as the paper's Fig 5 and
the simulator's truth do), or a trimmed mean (:func:`trimmed_mean`: a share of the cells cut at
each end, so that a few cells cannot carry a structure's figure), with a percentile bootstrap
interval over cells (:func:`coupling_table`). Eq 5 condenses two channels into the differential coupling
(:func:`differential_coupling`).

**Agreement with a truth** (:func:`coupling_agreement`): Spearman r between estimated and true
coupling, per channel and pooled over (structure, channel) pairs, with the truth's ties at 0
resolved (:func:`tie_resolved_spearman`).

**Drug shifts** (:func:`drug_shift_table`): per (drug, structure) and latent space, the Euclidean
distance between the centroids of treated and control cells in the active dimensions, a
permutation p-value (:func:`permutation_test`) and p-values adjusted for the number of tests
(:func:`call_shifts`): Benjamini-Hochberg q-values (:func:`benjamini_hochberg`, false discovery rate) or Holm's
(:func:`holm`, family-wise error rate); :func:`shift_recall` scores the calls against the truth.

Examples
--------
>>> elbo_true = np.array([-10.0, -10.0, -20.0])
>>> elbo_swapped = np.array([[-20.0, -20.0], [-40.0, -10.0], [-20.0, -20.0]])
>>> coupling_per_cell(elbo_true, elbo_swapped).tolist()
[0.5, 0.6, 0.0]
>>> round(tie_resolved_spearman([0.01, -0.02, 0.4, 0.8], [0.0, 0.0, 0.3, 0.9]), 6)
1.0
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from scipy.stats import false_discovery_control, rankdata, spearmanr, trim_mean

from morphospace.errors import InputError
from morphospace.io.tables import require_columns

__all__ = [
    "draw_swap_partners",
    "coupling_per_cell",
    "trimmed_mean",
    "summary_name",
    "bootstrap_mean_ci",
    "coupling_table",
    "differential_coupling",
    "truth_long",
    "tie_resolved_spearman",
    "coupling_agreement",
    "centroid_distance",
    "permutation_test",
    "reference_adjusted",
    "benjamini_hochberg",
    "holm",
    "CORRECTIONS",
    "drug_shift_table",
    "call_shifts",
    "shift_recall",
    "coupling_figure",
]

COUPLING_COLUMNS = ["structure", "channel", "coupling", "ci_low", "ci_high", "n_cells"]
SHIFT_COLUMNS = ["drug", "structure", "latent", "distance", "p_value", "q_value", "significant",
                 "n_control", "n_treated"]


def _vector(values: ArrayLike, name: str, length: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {array.shape}")
    if length is not None and len(array) != length:
        raise InputError(f"{name} must hold {length} values (one per cell), got {len(array)}")
    return array


# ----------------------------------------------------------------------------- coupling


def draw_swap_partners(n_cells: int, n_repeats: int, groups: ArrayLike | None = None, seed: int = 0) -> np.ndarray:
    """For each cell, ``n_repeats`` other cells whose reference channel replaces its own.

    Each partner is drawn uniformly among the other cells (never the cell itself) of the same
    group when ``groups`` (N,) is given (e.g. the structure, as the paper swaps within the cells
    of one tagged structure), else among all cells; repeats are independent draws, so a partner
    may recur.

    Returns
    -------
    numpy.ndarray
        int64 (N, R) row indices into the cells.

    Raises
    ------
    InputError
        ``n_repeats`` < 1, or a group (or the whole set) with fewer than 2 cells.

    >>> partners = draw_swap_partners(4, 3, groups=["a", "a", "b", "b"], seed=0)
    >>> partners.shape, partners[:2].ravel().tolist(), partners[2:].ravel().tolist()
    ((4, 3), [1, 1, 1, 0, 0, 0], [3, 3, 3, 2, 2, 2])
    """
    if n_repeats < 1:
        raise InputError(f"n_repeats must be at least 1, got {n_repeats}")
    labels = np.zeros(n_cells, dtype=int) if groups is None else _vector(groups, "groups", n_cells)
    rng = np.random.default_rng(seed)
    partners = np.empty((n_cells, n_repeats), dtype=np.int64)
    for group in pd.unique(labels):
        members = np.flatnonzero(labels == group)
        if len(members) < 2:
            raise InputError(f"group {str(group)!r} holds {len(members)} cell; swapping needs at least 2 cells per group")
        offsets = rng.integers(1, len(members), size=(len(members), n_repeats))
        positions = (np.arange(len(members))[:, None] + offsets) % len(members)
        partners[members] = members[positions]
    return partners


def coupling_per_cell(elbo_true: ArrayLike, elbo_swapped: ArrayLike) -> np.ndarray:
    """Eq 4 per cell: ``1 - elbo_true / elbo_swapped.mean(axis=1)``.

    ``elbo_true`` (N,): each cell's target ELBO with its own reference; ``elbo_swapped`` (N, R):
    the same with one reference channel swapped, R repeats. ELBOs of one sign (the ratio is the
    same for ELBOs and for losses = -ELBO); returns (N,) floats, unitless.

    Raises
    ------
    InputError
        Shapes that do not match, or a mean swapped ELBO of 0.
    """
    true = _vector(elbo_true, "elbo_true").astype(float)
    swapped = np.asarray(elbo_swapped, dtype=float)
    if swapped.ndim != 2 or len(swapped) != len(true) or swapped.shape[1] < 1:
        raise InputError(f"elbo_swapped must be (N, R) with N = {len(true)} cells (the length of elbo_true) "
                         f"and R >= 1, got shape {swapped.shape}")
    denominator = swapped.mean(axis=1)
    if np.any(denominator == 0):
        raise InputError("elbo_swapped averages to 0 for some cell; the coupling ratio is undefined")
    return 1.0 - true / denominator


def trimmed_mean(values: ArrayLike, trim: float = 0.0, axis: int = -1) -> np.ndarray | float:
    """Mean of ``values`` along ``axis`` after cutting ``trim`` of them at each end: the
    ``int(trim * n)`` smallest and as many largest of n values (scipy's ``trim_mean``). ``trim``
    in [0, 0.5]: 0 is the plain mean, 0.5 the median.

    >>> float(trimmed_mean([0.0, 1.0, 2.0, 3.0, 100.0], 0.2))
    2.0
    >>> float(trimmed_mean([0.0, 1.0, 2.0, 100.0], 0.5))
    1.5

    Raises
    ------
    InputError
        ``trim`` outside [0, 0.5].
    """
    if not 0.0 <= trim <= 0.5:
        raise InputError(f"trim must be in [0, 0.5] (the share cut at each end), got {trim}")
    values = np.asarray(values, dtype=float)
    if trim == 0.5:
        return np.median(values, axis=axis)
    return trim_mean(values, trim, axis=axis)


def summary_name(trim: float) -> str:
    """How :func:`trimmed_mean` with ``trim`` summarises values, in words.

    >>> [summary_name(t) for t in (0.0, 0.1, 0.5)]
    ['mean', 'mean trimmed by 0.1 at each end', 'median']
    """
    return "mean" if trim == 0 else "median" if trim == 0.5 else f"mean trimmed by {trim:g} at each end"


def bootstrap_mean_ci(values: ArrayLike, n_boot: int = 1000, confidence: float = 0.95,
                      rng: np.random.Generator | int = 0, trim: float = 0.0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (with ``trim``, the :func:`trimmed_mean`) of
    ``values`` (n,): ``n_boot`` resamples of the n values with replacement; returns the
    (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of their means. ``rng``: a generator
    or a seed.

    >>> bootstrap_mean_ci([2.0, 2.0, 2.0], n_boot=50)
    (2.0, 2.0)
    """
    values = _vector(values, "values").astype(float)
    if len(values) == 0:
        raise InputError("values is empty; a bootstrap interval needs at least one value")
    if n_boot < 1 or not 0 < confidence < 1:
        raise InputError(f"n_boot must be >= 1 and confidence in (0, 1), got {n_boot} and {confidence}")
    rng = np.random.default_rng(rng)
    means = trimmed_mean(values[rng.integers(0, len(values), size=(n_boot, len(values)))], trim, axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def coupling_table(elbo_true: ArrayLike, elbo_swapped: Mapping[str, ArrayLike], structures: ArrayLike,
                   n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, trim: float = 0.0) -> pd.DataFrame:
    """Coupling of every structure to every swapped channel, with bootstrap intervals over cells.

    Parameters
    ----------
    elbo_true
        (N,) target ELBO of each cell with its own reference.
    elbo_swapped
        Reference channel name -> (N, R) ELBOs with that channel swapped (:func:`draw_swap_partners`).
    structures
        (N,) structure label of each cell.
    n_boot, confidence, seed
        Bootstrap resamples, interval level, and the seed of the resampling.
    trim
        Share of a structure's cells cut at each end of its per-cell couplings before averaging
        (:func:`trimmed_mean`; 0: the mean, as the paper; 0.5: the median).

    Returns
    -------
    pandas.DataFrame
        One row per (structure, channel), structures in order of first appearance, channels in
        ``elbo_swapped``'s order: ``structure``, ``channel``, ``coupling`` (mean, or trimmed
        mean, of :func:`coupling_per_cell` over the structure's cells), ``ci_low``, ``ci_high``
        (:func:`bootstrap_mean_ci` of the same statistic), ``n_cells``.

    >>> table = coupling_table([-10.0, -10.0], {"DNA": [[-20.0], [-20.0]]}, ["Nucleoli"] * 2, n_boot=20)
    >>> table[["coupling", "ci_low", "ci_high", "n_cells"]].values.tolist()
    [[0.5, 0.5, 0.5, 2.0]]
    """
    if not elbo_swapped:
        raise InputError("elbo_swapped names no channel")
    true = _vector(elbo_true, "elbo_true")
    labels = _vector(structures, "structures", len(true))
    per_channel = {channel: coupling_per_cell(true, swapped) for channel, swapped in elbo_swapped.items()}
    rng = np.random.default_rng(seed)
    rows = []
    for structure in pd.unique(labels):
        members = labels == structure
        for channel, coupling in per_channel.items():
            low, high = bootstrap_mean_ci(coupling[members], n_boot, confidence, rng, trim)
            rows.append([structure, channel, float(trimmed_mean(coupling[members], trim)), low, high,
                         int(members.sum())])
    return pd.DataFrame(rows, columns=COUPLING_COLUMNS)


def differential_coupling(coupling_a: ArrayLike, coupling_b: ArrayLike, structures: ArrayLike) -> pd.Series:
    """Eq 5: per structure, the mean over its cells of ``(c_a - c_b) / (c_a + c_b)``, the per-cell
    couplings (N,) to channel a (the paper: membrane) and b (DNA) from :func:`coupling_per_cell`.
    +1: coupled to a only, -1: to b only. Cells with c_a + c_b = 0 are left out (NaN for a structure
    with none left); the ratio is noisy for structures coupled to neither channel.

    >>> differential_coupling([0.8, 0.6, 0.0], [0.0, 0.2, 0.5], ["Cortex", "Cortex", "Nucleoli"]).tolist()
    [0.75, -1.0]
    """
    a = _vector(coupling_a, "coupling_a").astype(float)
    b = _vector(coupling_b, "coupling_b", len(a)).astype(float)
    labels = _vector(structures, "structures", len(a))
    total = a + b
    ratio = np.divide(a - b, total, out=np.full(len(a), np.nan), where=total != 0)
    return pd.Series(ratio).groupby(labels, sort=False).mean().rename("differential_coupling")


# ----------------------------------------------------------------------------- agreement with the truth


def truth_long(truth: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """A truth table with one coupling column per channel (one row per structure) as ``structure``,
    ``channel``, ``coupling`` rows; ``columns`` maps each channel name to its truth column, e.g.
    ``{"Membrane": "coupling_membrane", "DNA": "coupling_dna"}``.

    >>> wide = pd.DataFrame({"structure": ["Cortex"], "coupling_membrane": [0.7], "coupling_dna": [0.0]})
    >>> truth_long(wide, {"Membrane": "coupling_membrane", "DNA": "coupling_dna"}).values.tolist()
    [['Cortex', 'Membrane', 0.7], ['Cortex', 'DNA', 0.0]]
    """
    require_columns(truth, ["structure", *columns.values()], "the truth table")
    parts = [pd.DataFrame({"structure": truth["structure"].to_numpy(), "channel": channel,
                           "coupling": truth[column].to_numpy(dtype=float)}) for channel, column in columns.items()]
    long = pd.concat(parts, ignore_index=True)
    order = {s: i for i, s in enumerate(pd.unique(truth["structure"]))}
    return long.sort_values("structure", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def tie_resolved_spearman(estimated: ArrayLike, truth: ArrayLike) -> float:
    """Spearman r of ``estimated`` against ``truth`` (n,) with the truth's ties broken in the
    estimates' order: truth ranks by (truth, estimate), average ranks where both tie; estimates by
    average ranks; then Pearson r of the ranks.

    The truth ties exactly where structures ignore a channel (true coupling 0): it does not order
    them, and the estimates of such structures are noise around 0. Plain Spearman (average ranks)
    counts that noise against the estimate, so even a perfect estimator stays below 1; resolved, r
    is 1 when the estimates order the truth's distinct levels, whether they scatter or tie exactly
    (as a closed reference gate makes them) within the truth's ties, and a tied structure ranked
    among other levels costs what the same misplacement costs without ties. Equals plain Spearman
    without ties. NaN with fewer than 3 values or a constant side.

    >>> round(tie_resolved_spearman([0.0, 0.0, 0.0, 0.3, 0.8], [0.0, 0.0, 0.0, 0.2, 0.9]), 6)
    1.0
    """
    x = _vector(estimated, "estimated").astype(float)
    y = _vector(truth, "truth", len(x)).astype(float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    truth_then_estimate = rankdata(y, method="dense") * (len(x) + 1) + rankdata(x, method="dense")
    return float(np.corrcoef(rankdata(x), rankdata(truth_then_estimate))[0, 1])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y)[0])


def coupling_agreement(estimated: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """How well the estimated couplings rank the structures as the truth does.

    ``estimated``: :func:`coupling_table`'s table; ``truth``: ``structure``, ``channel``,
    ``coupling`` rows (:func:`truth_long`). Rows are matched on (structure, channel).

    Returns
    -------
    pandas.DataFrame
        Index ``channel`` (each channel, then ``pooled``: all (structure, channel) pairs ranked
        together); ``spearman`` (plain, over all structures), ``spearman_ties_resolved``
        (:func:`tie_resolved_spearman`), ``spearman_nonzero`` (plain, over the pairs with non-zero
        truth), ``n`` and ``n_nonzero`` (pairs).

    The number a benchmark should report is the pooled tie-resolved r: one figure over both
    channels (it also asks whether a strong membrane coupling is told apart from a strong DNA
    coupling), not capped below 1 by the structures the truth leaves unordered at 0, yet lowered
    when a structure that ignores a channel scores above one that uses it. The per-channel rows
    show which channel is at fault; ``spearman_nonzero`` tells ordering errors among coupled
    structures from noise at 0.

    Raises
    ------
    InputError
        A (structure, channel) of ``estimated`` missing from the truth, or repeated in either table.
    """
    keys = ["structure", "channel"]
    for name, frame in [("estimated", estimated), ("truth", truth)]:
        if frame.duplicated(keys).any():
            raise InputError(f"the {name} table repeats (structure, channel) pairs: "
                             f"{frame.loc[frame.duplicated(keys), keys].values.tolist()}")
    merged = estimated[keys + ["coupling"]].merge(truth[keys + ["coupling"]], on=keys, how="left",
                                                  suffixes=("_estimated", "_true"), validate="one_to_one")
    missing = merged[merged["coupling_true"].isna()]
    if len(missing):
        raise InputError(f"the truth has no coupling for {missing[keys].values.tolist()}")
    subsets = [(channel, merged[merged["channel"] == channel]) for channel in pd.unique(merged["channel"])]
    rows = {}
    for name, part in [*subsets, ("pooled", merged)]:
        x, y = part["coupling_estimated"].to_numpy(float), part["coupling_true"].to_numpy(float)
        nonzero = y != 0
        rows[name] = {"spearman": _spearman(x, y), "spearman_ties_resolved": tie_resolved_spearman(x, y),
                      "spearman_nonzero": _spearman(x[nonzero], y[nonzero]), "n": len(x),
                      "n_nonzero": int(nonzero.sum())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("channel")


# ----------------------------------------------------------------------------- drug shifts


def _group_inputs(embeddings: ArrayLike, treated: ArrayLike, active: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, dtype=float)
    if x.ndim != 2:
        raise InputError(f"embeddings must be (N, K), got shape {x.shape}")
    is_treated = _vector(treated, "treated", len(x)).astype(bool)
    if is_treated.all() or not is_treated.any():
        raise InputError("treated must mark at least one treated and one control cell")
    if active is not None:
        mask = _vector(active, "active", x.shape[1]).astype(bool)
        if not mask.any():
            raise InputError("active marks no latent dimension")
        x = x[:, mask]
    return x, is_treated


def centroid_distance(embeddings: ArrayLike, treated: ArrayLike, active: ArrayLike | None = None) -> float:
    """Euclidean distance (latent units) between the centroids of the treated and the control
    cells: ``embeddings`` (N, K) posterior means, ``treated`` (N,) bool, ``active`` (K,) bool
    (default: every dimension).

    >>> centroid_distance([[0.0, 5.0], [0.0, 1.0], [3.0, 9.0], [5.0, 0.0]], [False, False, True, True], [True, False])
    4.0
    """
    x, is_treated = _group_inputs(embeddings, treated, active)
    return float(np.linalg.norm(x[is_treated].mean(axis=0) - x[~is_treated].mean(axis=0)))


def permutation_test(embeddings: ArrayLike, treated: ArrayLike, active: ArrayLike | None = None,
                     n_permutations: int = 1000, seed: int = 0) -> tuple[float, float]:
    """:func:`centroid_distance` and its permutation p-value.

    The group labels are shuffled ``n_permutations`` times (seeded); the p-value is
    ``(1 + #{shuffled distance >= observed}) / (1 + n_permutations)``, never 0, at least
    ``1 / (1 + n_permutations)``.

    Returns
    -------
    tuple of float
        (distance, p_value).
    """
    if n_permutations < 1:
        raise InputError(f"n_permutations must be at least 1, got {n_permutations}")
    x, is_treated = _group_inputs(embeddings, treated, active)
    n, n_treated = len(x), int(is_treated.sum())
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.tile(is_treated, (n_permutations, 1)), axis=1).astype(float)
    treated_sums = shuffled @ x
    treated_means = treated_sums / n_treated
    control_means = (x.sum(axis=0) - treated_sums) / (n - n_treated)
    null = np.linalg.norm(treated_means - control_means, axis=1)
    observed = float(np.linalg.norm(x[is_treated].mean(axis=0) - x[~is_treated].mean(axis=0)))
    exceed = int(np.sum(null >= observed * (1 - 1e-12)))
    return observed, (1 + exceed) / (1 + n_permutations)


def reference_adjusted(target: ArrayLike, reference: ArrayLike, groups: ArrayLike) -> np.ndarray:
    """The target latents (N, K) less their least-squares fit, with an intercept, on the reference
    latents (N, R), fitted within each group of ``groups`` (N,) (e.g. each structure's cells): the
    part of the structure's code that the cell's shape does not predict linearly.

    Two groups of cells that differ only in shape (by chance of sampling, or because a drug moved
    the shape) differ in a target code that carries the shape; after the adjustment they differ only
    where the structure differs given the shape. InputError for mismatched lengths or a group with
    no more cells than R + 1 (its fit would leave nothing).

    >>> adjusted = reference_adjusted([[1.0], [3.0], [5.0], [4.0]], [[0.0], [1.0], [2.0], [1.0]], [0, 0, 0, 0])
    >>> adjusted.round(6).ravel().tolist()
    [-0.25, -0.25, -0.25, 0.75]
    """
    y = np.asarray(target, dtype=float)
    x = np.asarray(reference, dtype=float)
    if y.ndim != 2 or x.ndim != 2 or len(x) != len(y):
        raise InputError(f"target and reference must be (N, K) and (N, R) of the same N, got {y.shape} and {x.shape}")
    labels = _vector(groups, "groups", len(y))
    adjusted = np.empty_like(y)
    for group in pd.unique(labels):
        rows = labels == group
        if rows.sum() <= x.shape[1] + 1:
            raise InputError(f"group {str(group)!r} has {int(rows.sum())} cells; the fit on {x.shape[1]} reference "
                             f"dimensions needs more than {x.shape[1] + 1}")
        design = np.column_stack([np.ones(rows.sum()), x[rows]])
        coefficients = np.linalg.lstsq(design, y[rows], rcond=None)[0]
        adjusted[rows] = y[rows] - design @ coefficients
    return adjusted


def _checked_p_values(p_values: ArrayLike) -> np.ndarray:
    p = _vector(p_values, "p_values").astype(float)
    if np.any((p < 0) | (p > 1) | ~np.isfinite(p)):
        raise InputError("p_values must lie in [0, 1]")
    return p


def benjamini_hochberg(p_values: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg q-values (m,) of the p-values (m,) (scipy's ``false_discovery_control``):
    reject at FDR alpha the tests with q <= alpha.

    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.5]).round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.5]
    """
    p = _checked_p_values(p_values)
    return false_discovery_control(p, method="bh") if len(p) else p


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (m,) of the p-values (m,): reject at family-wise error
    rate alpha the tests with adjusted p <= alpha. The k-th smallest p (k = 1..m) is multiplied by
    m - k + 1, made non-decreasing in that order and capped at 1.

    >>> holm([0.01, 0.04, 0.03, 0.5]).round(4).tolist()
    [0.04, 0.09, 0.09, 0.5]
    """
    p = _checked_p_values(p_values)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


CORRECTIONS = {"bh": benjamini_hochberg, "holm": holm}
"""Multiple-test corrections by name: ``bh`` bounds the false discovery rate, ``holm`` the
family-wise error rate (the chance of any false call)."""


def drug_shift_table(latents: Mapping[str, ArrayLike], compounds: ArrayLike, structures: ArrayLike,
                     control: str = "DMSO", active: Mapping[str, ArrayLike] | None = None,
                     n_permutations: int = 1000, alpha: float = 0.05, seed: int = 0,
                     correction: str = "bh") -> pd.DataFrame:
    """Permutation tests of every drug against the control, per structure and latent space.

    Parameters
    ----------
    latents
        Latent space name (``reference``, ``target``) -> (N, K) posterior means of the N cells.
    compounds, structures
        (N,) each cell's condition and structure label.
    control
        The condition every drug is compared with (cells of the same structure).
    active
        Latent space name -> (K,) bool mask of its active dimensions; a space not named uses all.
    n_permutations, alpha, seed
        Shuffles per test, the level of ``significant``, the seed (test t uses ``seed + t``).
    correction
        A key of :data:`CORRECTIONS`: ``bh`` (false discovery rate at alpha) or ``holm``
        (family-wise error rate at alpha), applied within each latent space.

    Returns
    -------
    pandas.DataFrame
        One row per (drug, structure, latent) with cells in both groups: ``drug``, ``structure``,
        ``latent``, ``distance`` (:func:`centroid_distance`), ``p_value``
        (:func:`permutation_test`), ``q_value`` (the p-value adjusted by ``correction`` over the
        tests of the same latent space: each space asks its own question, whether the drug moves
        the cell's shape or the structure given the shape), ``significant`` (q <= alpha),
        ``n_control``, ``n_treated``.

    Raises
    ------
    InputError
        No cell of ``control``, no latent space, an unknown correction, or arrays whose lengths differ.
    """
    if not latents:
        raise InputError("latents names no latent space")
    if correction not in CORRECTIONS:  # before the permutations
        raise InputError(f"unknown correction {correction!r}; choose from {sorted(CORRECTIONS)}")
    spaces = {name: np.asarray(x, dtype=float) for name, x in latents.items()}
    n = len(next(iter(spaces.values())))
    for name, x in spaces.items():
        if x.ndim != 2 or len(x) != n:
            raise InputError(f"latents[{name!r}] must be (N, K) with N = {n} cells, got shape {x.shape}")
    drug = _vector(compounds, "compounds", n).astype(str)
    label = _vector(structures, "structures", n)
    if not np.any(drug == control):
        raise InputError(f"no cell has the control condition {control!r}; conditions: {sorted(set(drug))}")
    active = active or {}
    unknown = sorted(set(active) - set(spaces))
    if unknown:
        raise InputError(f"active names latent space(s) {unknown} not in latents {list(spaces)}")
    rows, test = [], 0
    for name, x in spaces.items():
        for compound in [d for d in pd.unique(drug) if d != control]:
            for structure in pd.unique(label):
                in_pair = (label == structure) & ((drug == compound) | (drug == control))
                is_treated = drug[in_pair] == compound
                if is_treated.all() or not is_treated.any():
                    continue
                distance, p = permutation_test(x[in_pair], is_treated, active.get(name), n_permutations, seed + test)
                test += 1
                rows.append([compound, structure, name, distance, p, int((~is_treated).sum()), int(is_treated.sum())])
    table = pd.DataFrame(rows, columns=["drug", "structure", "latent", "distance", "p_value", "n_control", "n_treated"])
    return call_shifts(table, correction, alpha)[SHIFT_COLUMNS]


def call_shifts(tests: pd.DataFrame, correction: str = "bh", alpha: float = 0.05) -> pd.DataFrame:
    """A copy of ``tests`` (rows with ``latent`` and ``p_value``) with ``q_value``, the p-values
    adjusted by ``correction`` (a key of :data:`CORRECTIONS`) within each latent space, and
    ``significant`` (q <= alpha). InputError for an unknown correction."""
    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r}; choose from {sorted(CORRECTIONS)}")
    called = tests.copy()
    called["q_value"] = np.nan
    for _, part in called.groupby("latent", sort=False):
        called.loc[part.index, "q_value"] = CORRECTIONS[correction](part["p_value"].to_numpy())
    called["significant"] = called["q_value"] <= alpha
    return called


def shift_recall(table: pd.DataFrame, truth: pd.DataFrame, latent: str = "target",
                 drug_column: str = "Metadata_Compound") -> dict:
    """Scores :func:`drug_shift_table`'s calls in one latent space against the truth.

    ``truth``: one row per (drug, structure) with ``drug_column``, ``structure`` and bool
    ``shifted``; truth rows of conditions not tested (the control) are ignored.

    Returns ``recall`` (share of the truly shifted pairs called significant; NaN with none),
    ``n_shifted``, ``found``, ``missed`` and ``false_positive_pairs`` (lists of [drug, structure]),
    ``false_positives`` (pairs called significant that the truth does not shift; a pair absent from
    the truth counts as not shifted).

    >>> calls = pd.DataFrame({"drug": ["A", "A", "B"], "structure": ["x", "y", "x"],
    ...                       "latent": "target", "significant": [True, True, False]})
    >>> truth = pd.DataFrame({"Metadata_Compound": ["A", "A", "B"], "structure": ["x", "y", "x"],
    ...                       "shifted": [True, False, True]})
    >>> score = shift_recall(calls, truth)
    >>> score["recall"], score["false_positives"], score["missed"]
    (0.5, 1, [['B', 'x']])
    """
    require_columns(truth, [drug_column, "structure", "shifted"], "the drug truth table")
    calls = table[table["latent"] == latent]
    if calls.empty:
        raise InputError(f"the shift table holds no test in latent space {latent!r}")
    shifted = {(str(d), str(s)) for d, s, flag in truth[[drug_column, "structure", "shifted"]].itertuples(index=False)
               if flag}
    tested = {(str(d), str(s)) for d, s in calls[["drug", "structure"]].itertuples(index=False)}
    called = {(str(d), str(s)) for d, s in calls.loc[calls["significant"], ["drug", "structure"]].itertuples(index=False)}
    tested_drugs = {d for d, _ in tested}
    truly = {pair for pair in shifted if pair[0] in tested_drugs}
    false_pairs = sorted(called - truly)
    return {
        "recall": len(truly & called) / len(truly) if truly else float("nan"),
        "n_shifted": len(truly),
        "found": [list(p) for p in sorted(truly & called)],
        "missed": [list(p) for p in sorted(truly - called)],
        "false_positives": len(false_pairs),
        "false_positive_pairs": [list(p) for p in false_pairs],
    }


# ----------------------------------------------------------------------------- figure


def coupling_figure(table: pd.DataFrame, truth: pd.DataFrame | None = None,
                    channels: Sequence[str] | None = None, title: str = "", score: str = "ELBO") -> Figure:
    """Bar chart of :func:`coupling_table` (the paper's Fig 5): one group of bars per structure, one
    bar per channel with its bootstrap interval as error bar; structures ordered from most coupled
    to the first channel relative to the second (left) to most coupled to the second (right).
    ``truth`` (:func:`truth_long`) adds the true couplings as open diamonds; ``score`` names the
    per-cell score the coupling compares on the axis label (the paper's ELBO by default)."""
    channels = list(channels) if channels is not None else list(pd.unique(table["channel"]))
    wide = table.pivot(index="structure", columns="channel", values="coupling")
    order = (wide[channels[0]] - wide[channels[-1]]).sort_values(ascending=False).index.tolist()
    fig = Figure(figsize=(max(5.0, 0.9 * len(order) + 1.5), 3.6), layout="tight")
    ax = fig.subplots()
    width = 0.8 / len(channels)
    positions = np.arange(len(order))
    for k, channel in enumerate(channels):
        part = table[table["channel"] == channel].set_index("structure").reindex(order)
        offset = positions + (k - (len(channels) - 1) / 2) * width
        errors = np.vstack([part["coupling"] - part["ci_low"], part["ci_high"] - part["coupling"]])
        ax.bar(offset, part["coupling"], width, yerr=errors, capsize=2, label=channel,
               color=f"C{k}", error_kw={"linewidth": 0.8})
        if truth is not None:
            true = truth[truth["channel"] == channel].set_index("structure")["coupling"].reindex(order)
            ax.scatter(offset, true, marker="D", s=22, facecolors="white", edgecolors="black", zorder=3,
                       label="truth" if k == 0 else None)
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_xticks(positions, order, rotation=30, ha="right")
    ax.set_ylabel(f"coupling (1 - {score} / swapped {score})")
    ax.legend(title="channel swapped", fontsize=8, title_fontsize=8)
    ax.set_title(title or f"coupling of each structure, at least {int(table['n_cells'].min())} cells each",
                 fontsize=9)
    return fig
