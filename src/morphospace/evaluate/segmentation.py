"""Segmentation accuracy: foreground IoU and instance matching (F1 at an IoU threshold).

Conventions: the IoU of two empty masks is 1; instances match one-to-one by maximal total IoU
among pairs with IoU >= threshold (Hungarian assignment).

Examples
--------
>>> import numpy as np
>>> truth = np.zeros((10, 10), int); truth[1:5, 1:5] = 1; truth[6:9, 6:9] = 2
>>> pred = np.zeros((10, 10), int); pred[1:5, 1:4] = 7           # IoU 12/16 with object 1
>>> m = match_instances(truth, pred)
>>> m.tp, m.fp, m.fn, round(m.f1, 3)
(1, 0, 1, 0.667)
>>> foreground_iou(np.zeros((4, 4)), np.zeros((4, 4)))
1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from morphospace.io.images import read_image

__all__ = ["InstanceMatch", "iou_matrix", "match_instances", "foreground_iou", "segmentation_scores", "pooled_scores",
           "score_label_files"]


@dataclass(frozen=True)
class InstanceMatch:
    """Counts of one image (or summed over images) and the IoUs of matched pairs."""

    tp: int
    fp: int
    fn: int
    matched_iou: tuple[float, ...] = ()

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1 when both images hold no objects."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0

    def __add__(self, other: "InstanceMatch") -> "InstanceMatch":
        return InstanceMatch(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                             self.matched_iou + other.matched_iou)


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (truth, predicted) object pair.

    Returns ``(iou, truth_ids, pred_ids)`` with ``iou`` of shape (n_truth, n_pred).
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {truth.shape} vs {pred.shape}")
    truth_ids, truth_index = np.unique(truth, return_inverse=True)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    flat = truth_index.ravel().astype(np.int64) * len(pred_ids) + pred_index.ravel()
    pairs = np.bincount(flat, minlength=len(truth_ids) * len(pred_ids)).reshape(len(truth_ids), len(pred_ids))
    t_fg, p_fg = truth_ids != 0, pred_ids != 0
    intersection = pairs[np.ix_(t_fg, p_fg)]
    areas_t = pairs.sum(1)[t_fg][:, None]
    areas_p = pairs.sum(0)[p_fg][None, :]
    union = areas_t + areas_p - intersection
    iou = np.where(union > 0, intersection / np.maximum(union, 1), 0.0)
    return iou, truth_ids[t_fg], pred_ids[p_fg]


def match_instances(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> InstanceMatch:
    """Match labelled objects of ``pred`` to ``truth`` one-to-one at IoU >= ``threshold``."""
    iou, truth_ids, pred_ids = iou_matrix(truth, pred)
    if iou.size == 0:
        return InstanceMatch(0, len(pred_ids), len(truth_ids))
    score = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(-score)
    matched = score[rows, cols] > 0
    tp = int(matched.sum())
    return InstanceMatch(tp, len(pred_ids) - tp, len(truth_ids) - tp, tuple(iou[rows, cols][matched].tolist()))


def foreground_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """IoU of the foregrounds (label > 0) of two masks; 1.0 when both are empty."""
    t, p = np.asarray(truth) > 0, np.asarray(pred) > 0
    union = np.count_nonzero(t | p)
    return 1.0 if union == 0 else float(np.count_nonzero(t & p) / union)


def segmentation_scores(truth: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Scores of one label image against the truth: counts, F1 at ``threshold``, foreground IoU
    and the mean IoU of matched objects."""
    match = match_instances(truth, pred, threshold)
    return {
        "n_truth": match.tp + match.fn, "n_pred": match.tp + match.fp, "tp": match.tp, "fp": match.fp,
        "fn": match.fn, "f1": match.f1, "foreground_iou": foreground_iou(truth, pred),
        "matched_iou": float(np.mean(match.matched_iou)) if match.matched_iou else float("nan"),
    }


def pooled_scores(per_image: pd.DataFrame) -> dict[str, float]:
    """Summary over images: F1 from pooled counts, and means of per-image F1 and foreground IoU."""
    tp, fp, fn = (int(per_image[c].sum()) for c in ("tp", "fp", "fn"))
    pooled = InstanceMatch(tp, fp, fn)
    return {"images": len(per_image), "tp": tp, "fp": fp, "fn": fn, "f1_pooled": pooled.f1,
            "precision_pooled": pooled.precision, "recall_pooled": pooled.recall,
            "f1_mean": float(per_image["f1"].mean()), "foreground_iou_mean": float(per_image["foreground_iou"].mean())}


def score_label_files(truth_dir: Path, labels_dir: Path, field_ids: Sequence[str], kind: str) -> pd.DataFrame:
    """Per-field :func:`segmentation_scores` of ``labels_dir/<id>_<kind>.tiff`` against
    ``truth_dir/<id>_<kind>.tiff``; fields without a predicted file (skipped ones) are left out."""
    rows = []
    for field_id in field_ids:
        predicted = Path(labels_dir) / f"{field_id}_{kind}.tiff"
        if not predicted.is_file():
            continue
        truth = read_image(Path(truth_dir) / f"{field_id}_{kind}.tiff", allow_constant=True)
        rows.append({"Metadata_FieldId": field_id,
                     **segmentation_scores(truth, read_image(predicted, allow_constant=True))})
    return pd.DataFrame(rows)
