"""Scores of condition-aware generation: does the condition come through, and does the generated
shift between conditions follow the real one.

Small functions on arrays and tables:

- :func:`condition_accuracy`: a classifier trained on real crops' embeddings predicts the
  condition of held-out real crops and of generated crops;
- :func:`group_profiles`: the median feature vector of each group of cells (the median, as in
  profiles, so that a few cells whose segmentation failed cannot carry a group);
- :func:`shift_cosines`: per treated group, the cosine between the generated and the real shift of
  the group's profile from the control group's;
- :func:`nearest_groups`: for each generated group, the distances of its profile to the real
  groups' profiles, and which real group is nearest.

Feature vectors are compared after standardising every feature by the real cells' mean and SD
(features constant in the real cells, or missing in any group's profile, are left out and counted).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from morphospace.errors import InputError

__all__ = ["condition_accuracy", "standardise_on_real", "group_profiles", "shift_cosines", "nearest_groups"]


def condition_accuracy(train: np.ndarray, train_labels: Sequence[str], held_out: np.ndarray,
                       held_out_labels: Sequence[str], generated: np.ndarray, generated_labels: Sequence[str],
                       seed: int = 0) -> dict:
    """Accuracy of a logistic regression trained on real embeddings ``train`` (N, D) with their
    condition labels, on held-out real embeddings and on generated ones (their intended labels).

    Returns ``accuracy_real``, ``accuracy_generated``, ``ratio_to_real`` (generated / real),
    ``balanced_accuracy_real`` and ``balanced_accuracy_generated`` (mean recall over labels), and
    ``recall_generated`` per label.

    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, (50, 2)), rng.normal(4, 1, (50, 2))]
    >>> y = ["a"] * 50 + ["b"] * 50
    >>> scores = condition_accuracy(x, y, x[::5], y[::5], np.array([[0.0, 0.0], [4.0, 4.0]]), ["b", "b"])
    >>> scores["accuracy_real"], scores["accuracy_generated"], scores["recall_generated"]
    (1.0, 0.5, {'b': 0.5})
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = {str(v) for v in train_labels}
    if len(labels) < 2:
        raise InputError(f"the condition classifier needs 2 or more conditions among the real crops, got {labels}")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    classifier.fit(np.asarray(train, float), np.asarray(train_labels, str))
    real_truth, fake_truth = np.asarray(held_out_labels, str), np.asarray(generated_labels, str)
    real_pred, fake_pred = classifier.predict(np.asarray(held_out, float)), classifier.predict(np.asarray(generated,
                                                                                                          float))
    real = float(np.mean(real_pred == real_truth))
    fake = float(np.mean(fake_pred == fake_truth))
    recall = {str(label): float(np.mean(fake_pred[fake_truth == label] == label)) for label in sorted(set(fake_truth))}
    return {"accuracy_real": real, "accuracy_generated": fake, "ratio_to_real": fake / real if real > 0 else None,
            "balanced_accuracy_real": _mean_recall(real_truth, real_pred),
            "balanced_accuracy_generated": _mean_recall(fake_truth, fake_pred),
            "recall_generated": recall}


def _mean_recall(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over the labels present in ``truth`` of the share of their cells predicted right."""
    return float(np.mean([np.mean(predicted[truth == label] == label) for label in np.unique(truth)]))


def standardise_on_real(real: pd.DataFrame, *others: pd.DataFrame) -> tuple[list[pd.DataFrame], list[str]]:
    """``real`` and ``others`` (cells x the same numeric features) with each feature centred and
    scaled by the real cells' mean and SD; features that are constant in ``real`` (SD not finite or
    at most 1e-6 x max(1, |mean|), rounding noise) are dropped (returned second)."""
    columns = [c for c in real.columns if c in set.intersection(*(set(o.columns) for o in others))] if others \
        else list(real.columns)
    values = real[columns].astype(float).replace([np.inf, -np.inf], np.nan)
    mean, std = values.mean(), values.std()
    keep = [c for c in columns if np.isfinite(std[c]) and std[c] > 1e-6 * max(1.0, abs(float(mean[c])))]
    dropped = [c for c in columns if c not in keep]
    scaled = [(t[keep].astype(float).replace([np.inf, -np.inf], np.nan) - mean[keep]) / std[keep]
              for t in (real, *others)]
    return scaled, dropped


def group_profiles(features: pd.DataFrame, groups: Sequence[str]) -> pd.DataFrame:
    """Median feature vector per group (groups x features), missing values skipped.

    >>> cells = pd.DataFrame({"f": [1.0, 2.0, 1000.0, 5.0, 7.0]})
    >>> group_profiles(cells, ["a", "a", "a", "b", "b"])["f"].to_dict()
    {'a': 2.0, 'b': 6.0}
    """
    return features.groupby(np.asarray(groups, str)).median()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float("nan")


def shift_cosines(real_profiles: pd.DataFrame, generated_profiles: pd.DataFrame, control: str) -> pd.DataFrame:
    """One row per treated group held by both tables of group profiles (groups x features):
    ``cosine`` between the generated shift (group profile - control profile of the generated
    cells) and the real one, the shifts' norms and the features used (those finite in all four
    profiles).

    >>> real = pd.DataFrame({"f": [0.0, 1.0, -1.0], "g": [0.0, 1.0, 0.0]}, index=["DMSO", "a", "b"])
    >>> fake = pd.DataFrame({"f": [0.0, 2.0, 1.0], "g": [0.0, 2.0, 0.0]}, index=["DMSO", "a", "b"])
    >>> shift_cosines(real, fake, "DMSO")[["group", "cosine"]].round(6).to_dict("records")
    [{'group': 'a', 'cosine': 1.0}, {'group': 'b', 'cosine': -1.0}]
    """
    for name, table in (("real", real_profiles), ("generated", generated_profiles)):
        if control not in table.index:
            raise InputError(f"no {name} cells of the control group {control!r}; groups: {list(table.index)}")
    rows = []
    for group in [g for g in real_profiles.index if g != control and g in generated_profiles.index]:
        real_shift = (real_profiles.loc[group] - real_profiles.loc[control]).to_numpy(float)
        fake_shift = (generated_profiles.loc[group] - generated_profiles.loc[control]).to_numpy(float)
        finite = np.isfinite(real_shift) & np.isfinite(fake_shift)
        rows.append({"group": str(group), "cosine": _cosine(real_shift[finite], fake_shift[finite]),
                     "real_shift_norm": float(np.linalg.norm(real_shift[finite])),
                     "generated_shift_norm": float(np.linalg.norm(fake_shift[finite])),
                     "n_features": int(finite.sum())})
    return pd.DataFrame(rows, columns=["group", "cosine", "real_shift_norm", "generated_shift_norm", "n_features"])


def nearest_groups(real_profiles: pd.DataFrame, generated_profiles: pd.DataFrame) -> pd.DataFrame:
    """Euclidean distance from each generated group's profile to every real group's profile
    (features finite in all of them), one row per generated group, a column per real group, plus ``nearest``
    (the closest real group) and ``nearest_is_own``.

    >>> real = pd.DataFrame({"f": [0.0, 1.0, 3.0]}, index=["0", "5", "50"])
    >>> fake = pd.DataFrame({"f": [0.9, 1.9]}, index=["5", "50"])
    >>> nearest_groups(real, fake)[["nearest", "nearest_is_own"]].to_dict("index")
    {'5': {'nearest': '5', 'nearest_is_own': True}, '50': {'nearest': '5', 'nearest_is_own': False}}
    """
    columns = [c for c in real_profiles.columns
               if c in generated_profiles.columns and np.isfinite(real_profiles[c]).all()
               and np.isfinite(generated_profiles[c]).all()]
    real, fake = real_profiles[columns].to_numpy(float), generated_profiles[columns].to_numpy(float)
    distances = np.linalg.norm(fake[:, None, :] - real[None, :, :], axis=2)
    table = pd.DataFrame(distances, index=[str(g) for g in generated_profiles.index],
                         columns=[str(g) for g in real_profiles.index])
    table["nearest"] = table.idxmin(axis=1)
    table["nearest_is_own"] = table["nearest"] == table.index
    return table
