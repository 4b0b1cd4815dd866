"""In-silico-labeling accuracy: predicted against real fluorescence, crop by crop.

Conventions: Pearson correlation (PCC) over the pixels of one crop and one target channel, reported
separately for empty and non-empty crops (a crop is empty when less than ``min_fraction`` of its
target pixels exceed ``threshold``, in the target's normalised units), because a near-constant
empty crop has an almost arbitrary PCC; SSIM and PSNR (torchmetrics) with ``data_range`` = the
target crop's range; Jaccard index between nuclei segmented on the predicted and on the real
fluorescence (1 when both are empty).

Examples
--------
>>> import numpy as np
>>> truth = np.random.default_rng(0).normal(size=(3, 16, 16))
>>> pearson_per_crop(truth, 2 * truth + 1).round(6).tolist()
[1.0, 1.0, 1.0]
>>> empty_crops(np.zeros((2, 8, 8)), threshold=0.5).tolist()
[True, True]
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from morphospace.evaluate.segmentation import foreground_iou

__all__ = ["pearson_per_crop", "empty_crops", "ssim_per_crop", "psnr_per_crop", "nuclei_jaccard", "isl_scores"]


def _crops(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"{name}: expected crops of one channel (N, H, W), got shape {values.shape}")
    return values


def _pair(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, target = _crops(prediction, "prediction"), _crops(target, "target")
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    return prediction, target


def pearson_per_crop(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """PCC of each crop (N,) between ``prediction`` and ``target``, both (N, H, W); NaN where either
    crop is constant."""
    prediction, target = _pair(prediction, target)
    p = prediction.reshape(len(prediction), -1)
    t = target.reshape(len(target), -1)
    p = p - p.mean(1, keepdims=True)
    t = t - t.mean(1, keepdims=True)
    denominator = np.sqrt((p**2).sum(1) * (t**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (p * t).sum(1) / denominator, np.nan)


def empty_crops(target: np.ndarray, threshold: float, min_fraction: float = 0.005) -> np.ndarray:
    """Boolean (N,): crops of ``target`` (N, H, W) where under ``min_fraction`` of the pixels exceed
    ``threshold`` (same units as the target)."""
    target = _crops(target, "target")
    if not 0 <= min_fraction < 1:
        raise ValueError(f"min_fraction must be in [0, 1), got {min_fraction}")
    return (target > threshold).reshape(len(target), -1).mean(1) < min_fraction


def _torch_metric(metric: Callable, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    prediction, target = _pair(prediction, target)
    values = []
    for p, t in zip(prediction, target):
        data_range = float(t.max() - t.min()) or 1.0
        pt = torch.from_numpy(p)[None, None].float()
        tt = torch.from_numpy(t)[None, None].float()
        values.append(float(metric(pt, tt, data_range=data_range)))
    return np.asarray(values)


def ssim_per_crop(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """SSIM (torchmetrics, Gaussian window 11, sigma 1.5) of each crop (N,), data range from the target crop."""
    return _torch_metric(structural_similarity_index_measure, prediction, target)


def psnr_per_crop(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """PSNR in dB of each crop (N,), data range from the target crop."""
    return _torch_metric(peak_signal_noise_ratio, prediction, target)


def nuclei_jaccard(prediction: np.ndarray, target: np.ndarray,
                   segment: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Jaccard index (N,) of the nuclei foregrounds that ``segment`` ((H, W) image -> labels) finds
    on each predicted and real crop; 1 where both are empty."""
    prediction, target = _pair(prediction, target)
    return np.array([foreground_iou(segment(t), segment(p)) for p, t in zip(prediction, target)])


def _summary(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "median": float("nan")}
    return {"n": int(finite.size), "mean": float(finite.mean()), "std": float(finite.std()),
            "median": float(np.median(finite))}


def isl_scores(prediction: np.ndarray, target: np.ndarray, threshold: float, min_fraction: float = 0.005,
               segment: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, object]:
    """Every ISL metric of one target channel over crops (N, H, W).

    Returns a dict with ``pcc`` split into ``all``, ``non_empty`` and ``empty`` (each n, mean, std,
    median over crops with a defined PCC), ``ssim`` and ``psnr`` over non-empty crops, the counts,
    and ``nuclei_jaccard`` over all crops when ``segment`` is given.
    """
    pcc = pearson_per_crop(prediction, target)
    empty = empty_crops(target, threshold, min_fraction)
    full = ~empty
    scores: dict[str, object] = {
        "crops": int(len(pcc)), "empty_crops": int(empty.sum()),
        "pcc": {"all": _summary(pcc), "non_empty": _summary(pcc[full]), "empty": _summary(pcc[empty])},
        "ssim": _summary(ssim_per_crop(prediction[full], target[full])),
        "psnr": _summary(psnr_per_crop(prediction[full], target[full])),
    }
    if segment is not None:
        scores["nuclei_jaccard"] = _summary(nuclei_jaccard(prediction, target, segment))
    return scores
