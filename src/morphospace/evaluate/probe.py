"""Phenotype probes: how much of a label a frozen embedding (or any feature table) holds, read by a
linear probe and by k-nearest neighbours, the two readouts of self-supervised representation
learning.

Conventions: features are standardised on each training fold; the linear probe is an L2-regularised
multinomial logistic regression (``C``); kNN votes among the ``k`` nearest training rows by cosine
distance, weighted by similarity (1 - distance). Both are scored by the same stratified k-fold
split; with ``group_column`` the folds keep every group (e.g. a compound) on one side
(``StratifiedGroupKFold``), which is the stricter estimate when rows of a group share more than the
label. ``chance`` is the share of the most common label.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> x = np.concatenate([rng.normal(0, 1, (30, 4)), rng.normal(5, 1, (30, 4))])
>>> table = pd.DataFrame(x, columns=list("abcd")).assign(Metadata_Phenotype=["flat"] * 30 + ["round"] * 30)
>>> result = probe_accuracy(table, "Metadata_Phenotype")
>>> result.linear_accuracy, result.knn_accuracy, result.chance
(1.0, 1.0, 0.5)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from morphospace.errors import InputError
from morphospace.evaluate.clustering import labelled_features

__all__ = ["ProbeResult", "probe_accuracy", "cosine_similarity_weights"]


@dataclass
class ProbeResult:
    """Mean and SD over folds of the linear-probe and kNN accuracies (fractions)."""

    label_column: str
    group_column: str | None
    labels: int
    rows: int
    folds: int
    k: int
    linear_accuracy: float
    linear_accuracy_std: float
    knn_accuracy: float
    knn_accuracy_std: float
    chance: float

    def summary(self) -> dict:
        return asdict(self)


def cosine_similarity_weights(distances: np.ndarray) -> np.ndarray:
    """kNN vote weights from cosine distances (any shape): the similarity 1 - d, floored at 1e-6.

    >>> cosine_similarity_weights(np.array([[0.0, 1.0, 2.0]])).round(6).tolist()
    [[1.0, 1e-06, 1e-06]]
    """
    return np.maximum(1.0 - distances, 1e-6)


def _splitter(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int):
    counts = np.unique(labels, return_counts=True)[1]
    if groups is None:
        n_folds = int(min(folds, counts.min()))
        if n_folds < 2:
            raise InputError(f"a label has {counts.min()} row(s); stratified folds need at least 2 per label")
        return StratifiedKFold(n_folds, shuffle=True, random_state=seed), n_folds
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError("the group column has a single value; folds that keep groups apart need at least 2")
    n_folds = int(min(folds, n_groups))
    return StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed), n_folds


def probe_accuracy(table: pd.DataFrame, label_column: str, folds: int = 5, group_column: str | None = None,
                   k: int = 10, C: float = 1.0, seed: int = 0) -> ProbeResult:
    """Cross-validated linear-probe and kNN accuracy of the numeric features of ``table`` (rows with
    a missing label ignored) predicting ``label_column``; see the module docstring.

    Raises InputError for a missing column, fewer than two labels, too few rows per label for
    stratified folds, or non-finite features.
    """
    if group_column is not None and group_column not in table.columns:
        raise InputError(f"group column {group_column!r} is not in the table")
    rows = table[table[label_column].notna()] if label_column in table.columns else table
    x, labels = labelled_features(rows, label_column)
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        raise InputError(f"{label_column!r} needs at least two distinct values, found {list(names)}")
    groups = rows[group_column].astype(str).to_numpy() if group_column else None
    splitter, n_folds = _splitter(labels, groups, folds, seed)
    k = int(min(k, len(labels) - len(labels) // n_folds - 1))
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(k, metric="cosine", weights=cosine_similarity_weights))
    scores = {name: cross_val_score(model, x, labels, groups=groups, cv=splitter)
              for name, model in (("linear", linear), ("knn", knn))}
    return ProbeResult(label_column, group_column, len(names), len(labels), n_folds, k,
                       float(scores["linear"].mean()), float(scores["linear"].std()),
                       float(scores["knn"].mean()), float(scores["knn"].std()), float(counts.max() / counts.sum()))
