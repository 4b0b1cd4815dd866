"""Retrieval by mean average precision (copairs): same-MoA retrieval across compounds, and
replicate retrieval against controls (phenotypic activity).

Conventions:

- **MoA retrieval**: each annotated, non-control profile is a query; positives are profiles of the
  same MoA and another compound, negatives profiles of other MoAs. mAP per MoA.
- **Replicate retrieval**: each well of a treatment is a query; positives are the other wells of
  the same treatment (compound + concentration), negatives are the control wells only. mAP per
  treatment.

Similarity is cosine; p-values come from copairs' permutation null (``null_size`` draws), corrected
by Benjamini-Hochberg; "retrieved" means corrected p < ``threshold``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from morphospace.errors import InputError
from morphospace.features.cellprofiler import feature_columns
from morphospace.io.tables import require_columns

__all__ = ["RetrievalResult", "moa_retrieval", "replicate_retrieval"]

logger = logging.getLogger(__name__)

COMPOUND, CONCENTRATION, MOA = "Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"
_TREATMENT, _REFERENCE = "Metadata_Treatment", "Metadata_Reference_Index"


@dataclass
class RetrievalResult:
    """Per-profile average precision, per-group mAP with p-values, and the summary."""

    convention: str
    average_precision: pd.DataFrame
    per_group: pd.DataFrame

    @property
    def mean_average_precision(self) -> float:
        """Mean over groups of their mAP."""
        return float(self.per_group["mean_average_precision"].mean())

    @property
    def fraction_retrieved(self) -> float:
        """Share of groups whose mAP beats the null at corrected p < threshold."""
        return float(self.per_group["below_corrected_p"].mean())

    def summary(self) -> dict:
        return {"convention": self.convention, "mean_average_precision": self.mean_average_precision,
                "fraction_retrieved": self.fraction_retrieved, "groups": len(self.per_group)}


def _check(table: pd.DataFrame, columns: list[str]) -> list[str]:
    require_columns(table, columns, "retrieval's table")
    features = feature_columns(table)
    if not features:
        raise InputError("retrieval needs numeric feature columns")
    return features


def _map(rows: pd.DataFrame, features: list[str], pos_sameby, pos_diffby, neg_sameby, neg_diffby, group,
         null_size: int, threshold: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from copairs.map import average_precision, mean_average_precision

    meta = rows[[c for c in rows.columns if c.startswith("Metadata_")]].reset_index(drop=True)
    feats = rows[features].to_numpy(dtype=float)
    ap = average_precision(meta, feats, pos_sameby=pos_sameby, pos_diffby=pos_diffby, neg_sameby=neg_sameby,
                           neg_diffby=neg_diffby, progress_bar=False)
    ap = ap.dropna(subset=["average_precision"])
    per_group = mean_average_precision(ap, sameby=group, null_size=null_size, threshold=threshold, seed=seed,
                                       progress_bar=False)
    return ap, per_group


def moa_retrieval(
    profiles: pd.DataFrame, control: str = "DMSO", null_size: int = 10000, threshold: float = 0.05, seed: int = 0
) -> RetrievalResult:
    """mAP of retrieving same-MoA profiles of other compounds (profiles: treatments or wells).

    Examples
    --------
    >>> import pandas as pd
    >>> p = pd.DataFrame({"Metadata_Compound": list("abcdef"), "Metadata_MoA": list("XXXYYY"),
    ...                   "f1": [1, .9, .8, 0, .1, .2], "f2": [0, .1, .2, 1, .9, .8]})
    >>> round(moa_retrieval(p, null_size=100).mean_average_precision, 3)
    1.0
    """
    features = _check(profiles, [COMPOUND, MOA])
    rows = profiles[profiles[MOA].notna() & (profiles[COMPOUND] != control)]
    ap, per_group = _map(rows, features, [MOA], [COMPOUND], [], [MOA], [MOA], null_size, threshold, seed)
    return RetrievalResult("same MoA, other compound; negatives: other MoAs", ap, per_group)


def replicate_retrieval(
    wells: pd.DataFrame,
    treatment: tuple[str, ...] = (COMPOUND, CONCENTRATION),
    control: str = "DMSO",
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
) -> RetrievalResult:
    """mAP of retrieving a treatment's replicate wells against control wells (phenotypic activity)."""
    from copairs.matching import assign_reference_index

    features = _check(wells, [*treatment, COMPOUND])
    rows = wells.copy()
    rows[_TREATMENT] = rows[list(treatment)].astype(str).agg(" @ ".join, axis=1)
    is_control = rows[COMPOUND] == control
    if not is_control.any():
        raise InputError(f"replicate retrieval needs control wells ({COMPOUND} == {control!r})")
    rows = assign_reference_index(rows.reset_index(drop=True), f"{COMPOUND} == {control!r}",
                                  reference_col=_REFERENCE, default_value=-1)
    ap, per_group = _map(rows, features, [_TREATMENT, _REFERENCE], [], [], [_TREATMENT, _REFERENCE], [_TREATMENT],
                         null_size, threshold, seed)
    controls = set(rows.loc[rows[COMPOUND] == control, _TREATMENT])
    per_group = per_group[~per_group[_TREATMENT].isin(controls)].reset_index(drop=True)
    ap = ap[~ap[_TREATMENT].isin(controls)].reset_index(drop=True)
    return RetrievalResult("replicate wells of a treatment; negatives: control wells", ap, per_group)
