import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from morphospace.errors import InputError
from morphospace.evaluate.clustering import dendrogram_figure, evaluate_clustering, scatter_figure


def _table(seed=0, groups=3, per_group=20, spread=6.0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(g * spread, 1, (per_group, 5)) for g in range(groups)])
    labels = np.repeat([f"g{g}" for g in range(groups)], per_group)
    return pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(Metadata_Label=labels)


def test_separated_groups_score_perfectly():
    result = evaluate_clustering(_table(), "Metadata_Label")
    assert result.svm_accuracy == 1.0 and result.svm_folds == 5
    kmeans = result.metrics["K-means (k=3)"]
    assert kmeans["Homogeneity"] == pytest.approx(1) and kmeans["V-measure"] == pytest.approx(1)
    assert kmeans[["Cluster 1 size", "Cluster 2 size", "Cluster 3 size"]].sum() == 60
    assert result.metrics["Agglomerative cosine (k=3)"]["Completeness"] > 0.5
    assert kmeans["Silhouette"] > 0.7 and kmeans["Davies-Bouldin"] < 0.5


def test_shuffled_labels_fall_to_chance():
    table = _table(groups=3, per_group=40)
    shuffled = table.assign(Metadata_Label=np.random.default_rng(0).permutation(table["Metadata_Label"]))
    result = evaluate_clustering(shuffled, "Metadata_Label")
    assert abs(result.svm_accuracy - 1 / 3) < 0.15
    assert result.metrics["K-means (k=3)"]["Homogeneity"] < 0.1


def test_errors_and_figures():
    table = _table()
    with pytest.raises(InputError, match="at least two distinct"):
        evaluate_clustering(table.assign(Metadata_Label="same"), "Metadata_Label")
    with pytest.raises(InputError, match="NaN"):
        evaluate_clustering(table.assign(f0=np.nan), "Metadata_Label")
    with pytest.raises(InputError, match="not in the table"):
        evaluate_clustering(table, "Metadata_Nope")
    assert isinstance(dendrogram_figure(table, "Metadata_Label"), Figure)
    fig = scatter_figure(table, "Metadata_Label")
    assert len(fig.axes[0].collections) == 3
