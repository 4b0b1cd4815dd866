"""How well embeddings or profiles group by a label: SVM cross-validation, K-means and
agglomerative clustering scored with homogeneity, completeness, V-measure, Davies-Bouldin and
silhouette (the whole-image thesis, Table 6.1), plus dendrogram and 2-D scatter figures.

Conventions: features are standardised (z-score per feature) before everything; the SVM (RBF
kernel) is scored by stratified k-fold accuracy; K-means uses Euclidean distance with k = number of
labels and k = 2; agglomerative clustering uses cosine distance with average linkage and k =
number of labels. Davies-Bouldin and silhouette are computed in the space the clustering used
(Euclidean for K-means, cosine silhouette for agglomerative).

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> x = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(8, 1, (20, 3))])
>>> table = pd.DataFrame(x, columns=["a", "b", "c"]).assign(Metadata_Group=["g1"] * 20 + ["g2"] * 20)
>>> result = evaluate_clustering(table, "Metadata_Group")
>>> result.svm_accuracy, round(float(result.metrics.loc["V-measure", "K-means (k=2)"]), 3)
(1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import dendrogram, linkage
from sklearn import metrics
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from morphospace.errors import InputError
from morphospace.features.cellprofiler import feature_columns

__all__ = ["ClusteringResult", "evaluate_clustering", "compare_embeddings", "dendrogram_figure", "scatter_figure",
           "project_2d", "labelled_features"]


@dataclass
class ClusteringResult:
    """SVM accuracy and the metric table (rows: metrics, columns: clusterings)."""

    label_column: str
    n_labels: int
    svm_accuracy: float
    svm_accuracy_std: float
    svm_folds: int
    metrics: pd.DataFrame
    assignments: pd.DataFrame

    def summary(self) -> dict:
        return {"label": self.label_column, "labels": self.n_labels, "svm_accuracy": self.svm_accuracy,
                "svm_accuracy_std": self.svm_accuracy_std, "svm_folds": self.svm_folds,
                "metrics": {c: self.metrics[c].to_dict() for c in self.metrics.columns}}


def labelled_features(table: pd.DataFrame, label_column: str, pca_components: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Standardised numeric features (N, F) of the rows with a label, and those labels as text (N,);
    ``pca_components`` reduces the features. InputError for a missing column or non-finite values."""
    if label_column not in table.columns:
        metadata = [c for c in table.columns if str(c).startswith("Metadata_")]
        raise InputError(f"label column {label_column!r} is not in the table (its metadata columns: {metadata})")
    rows = table[table[label_column].notna()]
    features = feature_columns(rows)
    if not features:
        raise InputError("the table has no numeric feature columns")
    x = rows[features].to_numpy(dtype=float)
    finite = np.isfinite(x).all(axis=0)
    if not finite.all():
        bad = [f for f, ok in zip(features, finite) if not ok]
        raise InputError(f"{len(bad)} feature(s) contain NaN or infinite values: {', '.join(bad[:10])}"
                         f"{' ...' if len(bad) > 10 else ''}; drop or impute them first")
    x = StandardScaler().fit_transform(x)
    if pca_components:
        x = PCA(min(pca_components, *x.shape), random_state=0).fit_transform(x)
    return x, rows[label_column].astype(str).to_numpy()


def _scores(x: np.ndarray, labels: np.ndarray, clusters: np.ndarray, metric: str) -> dict[str, float]:
    sizes = np.bincount(clusters)
    scores = {f"Cluster {i + 1} size": float(s) for i, s in enumerate(sizes)}
    valid = 1 < len(sizes) < len(x)
    scores |= {
        "Homogeneity": metrics.homogeneity_score(labels, clusters),
        "Completeness": metrics.completeness_score(labels, clusters),
        "V-measure": metrics.v_measure_score(labels, clusters),
        "Davies-Bouldin": metrics.davies_bouldin_score(x, clusters) if valid else np.nan,
        "Silhouette": metrics.silhouette_score(x, clusters, metric=metric) if valid else np.nan,
    }
    return scores


def evaluate_clustering(
    table: pd.DataFrame, label_column: str, folds: int = 5, seed: int = 0, pca_components: int | None = None
) -> ClusteringResult:
    """Score how well the numeric features of ``table`` separate the values of ``label_column``.

    Rows with a missing label are ignored. ``pca_components`` reduces the standardised features
    first (the thesis clusters on 2 principal components). Raises InputError for fewer than two
    labels, NaN features or a missing column.
    """
    x, labels = labelled_features(table, label_column, pca_components)
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        raise InputError(f"{label_column!r} needs at least two distinct values, found {list(names)}")
    n_folds = int(min(folds, counts.min()))
    if n_folds >= 2:
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        accuracy = cross_val_score(make_pipeline(StandardScaler(), SVC()), x, labels, cv=splitter)
    else:
        accuracy = np.array([np.nan])
    clusterings = {
        f"K-means (k={len(names)})": (KMeans(len(names), n_init=10, random_state=seed).fit_predict(x), "euclidean"),
        "K-means (k=2)": (KMeans(2, n_init=10, random_state=seed).fit_predict(x), "euclidean"),
        f"Agglomerative cosine (k={len(names)})": (
            AgglomerativeClustering(len(names), metric="cosine", linkage="average").fit_predict(x), "cosine"),
    }
    table_rows = {name: _scores(x, labels, clusters, metric) for name, (clusters, metric) in clusterings.items()}
    metric_table = pd.DataFrame(table_rows)
    order = [*[r for r in metric_table.index if r.startswith("Cluster")],
             "Homogeneity", "Completeness", "V-measure", "Davies-Bouldin", "Silhouette"]
    assignments = pd.DataFrame({"label": labels, **{name: c for name, (c, _) in clusterings.items()}})
    return ClusteringResult(label_column, len(names), float(np.mean(accuracy)), float(np.std(accuracy)), n_folds,
                            metric_table.loc[order], assignments)


COMPARED_METRICS = ("Homogeneity", "Completeness", "V-measure", "Davies-Bouldin", "Silhouette")


def compare_embeddings(tables: Mapping[str, pd.DataFrame], label_column: str, clustering: str = "K-means (k=2)",
                       folds: int = 5, seed: int = 0, pca_components: int | None = None) -> pd.DataFrame:
    """Table 6.1 of the whole-image thesis for several embeddings of the same samples: one column per
    entry of ``tables`` (name -> table), rows ``SVM accuracy`` (mean stratified k-fold accuracy) and
    the ``clustering``'s homogeneity, completeness, V-measure, Davies-Bouldin and silhouette.

    >>> rng = np.random.default_rng(0)
    >>> labels = ["a"] * 10 + ["b"] * 10
    >>> apart = pd.DataFrame(np.r_[rng.normal(0, 1, (10, 2)), rng.normal(9, 1, (10, 2))], columns=["x", "y"])
    >>> mixed = pd.DataFrame(rng.normal(0, 1, (20, 2)), columns=["x", "y"])
    >>> table = compare_embeddings({"apart": apart.assign(Metadata_G=labels), "mixed": mixed.assign(Metadata_G=labels)},
    ...                            "Metadata_G")
    >>> float(table.loc["V-measure", "apart"]), bool(table.loc["V-measure", "mixed"] < 0.5)
    (1.0, True)
    """
    columns = {}
    for name, table in tables.items():
        result = evaluate_clustering(table, label_column, folds=folds, seed=seed, pca_components=pca_components)
        if clustering not in result.metrics.columns:
            raise InputError(f"no clustering {clustering!r}; choose from {list(result.metrics.columns)}")
        columns[name] = {"SVM accuracy": result.svm_accuracy,
                         **result.metrics.loc[list(COMPARED_METRICS), clustering].to_dict()}
    return pd.DataFrame(columns)


def dendrogram_figure(table: pd.DataFrame, label_column: str, max_leaves: int = 150, seed: int = 0) -> Figure:
    """Average-linkage cosine dendrogram of (up to ``max_leaves`` sampled) rows, leaves coloured by label."""
    rows = table[table[label_column].notna()]
    if len(rows) > max_leaves:
        rows = rows.sample(max_leaves, random_state=seed)
    x, labels = labelled_features(rows, label_column, None)
    tree = linkage(x, method="average", metric="cosine")
    fig = Figure(figsize=(max(6, len(rows) * 0.14), 5), layout="tight")  # a vertical label of 6 pt per 0.14 in
    ax = fig.subplots()
    dendrogram(tree, ax=ax, labels=labels, leaf_font_size=6, leaf_rotation=90, color_threshold=0,
               above_threshold_color="0.4")
    palette = _palette(sorted(set(labels)))
    for tick in ax.get_xticklabels():
        tick.set_color(palette[tick.get_text()])
    ax.set_ylabel("cosine distance")
    ax.set_title(f"Agglomerative clustering (average linkage), leaves coloured by {label_column}", fontsize=9)
    return fig


def project_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, tuple[str, str]]:
    """Coordinates (n, 2) of the rows of ``x`` (n, d), already standardised, by PCA or UMAP
    (``method="umap"``, needs the optional ``umap-learn``; on the first 50 principal components
    when ``d`` is larger), and the two axis labels (PCA: with the share of variance explained).

    >>> xy, labels = project_2d(np.random.default_rng(0).normal(size=(20, 5)) * [5, 1, 1, 1, 1])
    >>> xy.shape, labels[0].startswith("PC1")
    ((20, 2), True)
    """
    if method not in ("pca", "umap"):
        raise InputError(f"projection method {method!r}: expected pca or umap")
    if x.ndim != 2 or x.shape[1] < 2:
        raise InputError(f"a 2-D layout needs at least 2 feature columns; got {x.shape[-1] if x.ndim else 0}")
    if method == "umap":
        try:
            from umap import UMAP
        except ImportError:
            raise InputError("UMAP needs the optional package umap-learn (pip install umap-learn, or the "
                             "morphospace[umap] extra)") from None
        if x.shape[1] > 50:
            x = PCA(50, random_state=seed).fit_transform(x)
        return UMAP(random_state=seed, n_jobs=1).fit_transform(x), ("UMAP 1", "UMAP 2")
    pca = PCA(2, random_state=seed).fit(x)
    shares = pca.explained_variance_ratio_
    return pca.transform(x), (f"PC1 ({shares[0]:.0%} of variance)", f"PC2 ({shares[1]:.0%})")


def scatter_figure(table: pd.DataFrame, label_column: str, method: str = "pca", seed: int = 0) -> Figure:
    """2-D scatter of the standardised features by :func:`project_2d` (PCA, or UMAP with
    ``method="umap"``), coloured by label."""
    x, labels = labelled_features(table, label_column, None)
    xy, (x_label, y_label) = project_2d(x, method, seed)
    palette = _palette(sorted(set(labels)))
    fig = Figure(figsize=(6.5, 5), layout="tight")
    ax = fig.subplots()
    for name in sorted(set(labels)):
        chosen = labels == name
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=12, color=palette[name], label=name, alpha=0.8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(fontsize=6, markerscale=0.8, loc="best", ncols=2)
    return fig


def _palette(names: list[str]) -> dict[str, tuple]:
    colors = matplotlib.colormaps["tab20"](np.linspace(0, 1, max(len(names), 2)))
    return {name: tuple(colors[i]) for i, name in enumerate(names)}
