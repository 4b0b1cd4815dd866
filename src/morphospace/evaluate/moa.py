"""Mechanism-of-action accuracy by 1-nearest-neighbour over treatment profiles (NSC and NSCB).

Protocol (Ljosa et al. 2013; CytoGAN section 5):

- a treatment profile aggregates (median or mean) the wells or cells of one compound at one
  concentration;
- every annotated non-control treatment is a query; its MoA is predicted as the MoA of the most
  cosine-similar other treatment, excluding every treatment of the same compound (**NSC**), and
  also every treatment sharing a batch with it (**NSCB**);
- accuracy is reported pooled over treatments and as the mean over compounds of each compound's
  accuracy; NSCB in two conventions: all treatments ("103" on BBBC021), and without MoAs whose
  treatments all lie in one batch ("92" on BBBC021: cholesterol-lowering and kinase inhibitors).

Examples
--------
>>> import pandas as pd
>>> profiles = pd.DataFrame({
...     "Metadata_Compound": ["a", "b", "c", "d"], "Metadata_Concentration": [1.0, 1.0, 1.0, 1.0],
...     "Metadata_MoA": ["X", "X", "Y", "Y"], "Metadata_Batch": ["w1", "w2", "w1", "w2"],
...     "f1": [1.0, 0.9, 0.0, 0.1], "f2": [0.0, 0.1, 1.0, 0.9]})
>>> result = nsc_accuracy(profiles)
>>> result.accuracy, result.predictions["Metadata_Neighbor_Compound"].tolist()
(1.0, ['b', 'a', 'd', 'c'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from morphospace.errors import InputError
from morphospace.features.cellprofiler import feature_columns
from morphospace.io.tables import require_columns

__all__ = ["MoAResult", "treatment_profiles", "nsc_accuracy", "evaluate_moa", "confusion_table"]

COMPOUND, CONCENTRATION, MOA, BATCH = "Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", "Metadata_Batch"


@dataclass
class MoAResult:
    """Accuracy of one convention, with the per-query predictions behind it."""

    convention: str
    accuracy: float
    compound_accuracy: float
    n_treatments: int
    n_compounds: int
    predictions: pd.DataFrame = field(repr=False)

    def per_moa(self) -> pd.DataFrame:
        """Treatments, correct predictions and accuracy per true MoA."""
        grouped = self.predictions.groupby(MOA)["correct"]
        return pd.DataFrame({"treatments": grouped.size(), "correct": grouped.sum(),
                             "accuracy": grouped.mean()}).reset_index()

    def summary(self) -> dict:
        return {"convention": self.convention, "accuracy": self.accuracy,
                "compound_accuracy": self.compound_accuracy, "treatments": self.n_treatments,
                "compounds": self.n_compounds}


def treatment_profiles(
    table: pd.DataFrame,
    by: Sequence[str] = (COMPOUND, CONCENTRATION),
    operation: Literal["median", "mean"] = "mean",
) -> pd.DataFrame:
    """Aggregate rows (cells or wells) to one profile per treatment.

    The MoA is carried over (it must be constant within a treatment); ``Metadata_Batch`` becomes
    the sorted, ``|``-joined set of the treatment's batches.
    """
    require_columns(table, [*by, MOA], "the treatment profiles")
    features = feature_columns(table)
    groups = table.groupby(list(by), sort=True, dropna=False)
    if (groups[MOA].nunique(dropna=False) > 1).any():
        bad = groups[MOA].nunique(dropna=False)
        raise InputError(f"treatments with more than one MoA: {list(bad[bad > 1].index[:3])}")
    profiles = getattr(groups[features], operation)()
    meta = pd.DataFrame({MOA: groups[MOA].first()})
    if BATCH in table.columns:
        meta[BATCH] = groups[BATCH].agg(lambda b: "|".join(sorted(set(map(str, b.dropna())))))
    meta["Metadata_Count"] = groups.size()
    return meta.join(profiles).reset_index()


def _cosine_similarity(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    return unit @ unit.T


def nsc_accuracy(
    profiles: pd.DataFrame,
    exclude_batch: bool = False,
    control: str | None = "DMSO",
    drop_single_batch_moas: bool = False,
) -> MoAResult:
    """1-NN MoA accuracy over treatment profiles (one row per treatment, see :func:`treatment_profiles`).

    Parameters
    ----------
    profiles
        Columns ``Metadata_Compound``, ``Metadata_MoA`` (NA rows are ignored), numeric features,
        and ``Metadata_Batch`` when ``exclude_batch``.
    exclude_batch
        NSCB: neighbours must share no batch with the query.
    control
        Compound excluded as query and as neighbour.
    drop_single_batch_moas
        Remove MoAs whose treatments all lie in a single batch (NSCB's 92-treatment convention).

    A query without any admissible neighbour counts as wrong.
    """
    require_columns(profiles, [COMPOUND, MOA] + ([BATCH] if exclude_batch else []), "the MoA evaluation's profiles")
    rows = profiles[profiles[MOA].notna() & (profiles[COMPOUND] != control)].reset_index(drop=True)
    if drop_single_batch_moas:
        batches = rows.groupby(MOA)[BATCH].agg(lambda b: len(set("|".join(b).split("|"))))
        rows = rows[rows[MOA].map(batches) > 1].reset_index(drop=True)
    features = feature_columns(rows)
    if len(rows) < 2 or not features:
        raise InputError(f"MoA evaluation needs at least 2 annotated treatments and features; got {len(rows)}")
    if rows[COMPOUND].nunique() < 2:
        raise InputError(f"{'NSCB' if exclude_batch else 'NSC'} not computed: it needs at least two compounds "
                         f"(a neighbour of another compound), the table has {rows[COMPOUND].nunique()}")
    similarity = _cosine_similarity(rows[features].to_numpy(dtype=float))
    compounds = rows[COMPOUND].to_numpy()
    admissible = compounds[:, None] != compounds[None, :]
    if exclude_batch:
        batch_sets = [set(str(b).split("|")) for b in rows[BATCH]]
        admissible &= np.array([[not (a & b) for b in batch_sets] for a in batch_sets])
    scores = np.where(admissible, similarity, -np.inf)
    has_neighbor = admissible.any(axis=1)
    nearest = np.argmax(scores, axis=1)
    predictions = rows[[c for c in rows.columns if c.startswith("Metadata_")]].copy()
    predictions["Metadata_Predicted_MoA"] = np.where(has_neighbor, rows[MOA].to_numpy()[nearest], None)
    predictions["Metadata_Neighbor_Compound"] = np.where(has_neighbor, compounds[nearest], None)
    predictions["similarity"] = np.where(has_neighbor, scores[np.arange(len(rows)), nearest], np.nan)
    predictions["correct"] = predictions["Metadata_Predicted_MoA"] == predictions[MOA]
    per_compound = predictions.groupby(COMPOUND)["correct"].mean()
    name = ("NSCB" if exclude_batch else "NSC") + (" without single-batch MoAs" if drop_single_batch_moas else "")
    return MoAResult(name, float(predictions["correct"].mean()), float(per_compound.mean()), len(predictions),
                     len(per_compound), predictions)


def evaluate_moa(profiles: pd.DataFrame, control: str | None = "DMSO") -> dict[str, MoAResult]:
    """NSC, and NSCB in both conventions, keyed ``nsc``, ``nscb``, ``nscb_multi_batch_moas``.

    NSCB is left out when batches are unknown or when no treatment has a neighbour outside its
    batches (e.g. a screen where every plate holds every treatment).
    """
    results = {"nsc": nsc_accuracy(profiles, control=control)}
    if BATCH not in profiles.columns:
        return results
    nscb = nsc_accuracy(profiles, exclude_batch=True, control=control)
    if nscb.predictions["Metadata_Predicted_MoA"].notna().any():
        results["nscb"] = nscb
        results["nscb_multi_batch_moas"] = nsc_accuracy(profiles, exclude_batch=True, control=control,
                                                        drop_single_batch_moas=True)
    return results


def confusion_table(result: MoAResult) -> pd.DataFrame:
    """Counts of true (rows) vs predicted (columns) MoA over the queries of ``result``."""
    predicted = result.predictions["Metadata_Predicted_MoA"].fillna("(no neighbour)")
    labels = sorted(set(result.predictions[MOA]) | set(predicted))
    table = pd.crosstab(result.predictions[MOA], predicted).reindex(index=labels, columns=labels, fill_value=0)
    return table.rename_axis(index="true MoA", columns="predicted MoA")
