"""In-silico-labeling accuracy: predicted against real fluorescence, crop by crop.

Whole runs are scored by :func:`score_labeling` and :func:`score_segmentation` on the regular crops
of their held-out regions (:func:`evaluation_crops`), from whole-field predictions.

Conventions: Pearson correlation (PCC) over the pixels of one crop and one target channel, reported
separately for empty and non-empty crops (a crop is empty when less than ``min_fraction`` of its
target pixels exceed ``threshold``, in the target's normalised units), because a near-constant
empty crop has an almost arbitrary PCC; SSIM and PSNR (torchmetrics) with ``data_range`` = the
target crop's range; Jaccard index between nuclei segmented on the predicted and on the real
fluorescence (1 when both are empty).

Position against content, for nuclear stains (DNA, DAPI, Hoechst, ...): PCC rewards a prediction
that puts bright blobs where the nuclei are, whatever their brightness. Two more numbers tell the
two apart: the Pearson r of the mean intensity of every nucleus (or its part inside a crop) between
prediction and truth (content: does the model know which nucleus is brighter?), and the PCC of the
truth nuclei mask, Gaussian-blurred, against the truth (``mask_reference_pcc``: what a model that
places every nucleus perfectly but knows nothing of brightness would score). Nuclei are the run's
label images when it has them, else those segmented on the true stain.

Examples
--------
>>> import numpy as np
>>> truth = np.random.default_rng(0).normal(size=(3, 16, 16))
>>> pearson_per_crop(truth, 2 * truth + 1).round(6).tolist()
[1.0, 1.0, 1.0]
>>> empty_crops(np.zeros((2, 8, 8)), threshold=0.5).tolist()
[True, True]
>>> labels = np.array([[[1, 1, 0, 2, 2]]])
>>> nucleus_means(np.array([[[1.0, 3.0, 9.0, 4.0, 6.0]]]), labels).tolist()
[2.0, 5.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pydantic
import torch
from scipy import ndimage
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from morphospace.data.tiles import Region, grid_tiles
from morphospace.errors import InputError
from morphospace.evaluate.segmentation import InstanceMatch, foreground_iou, segmentation_scores
from morphospace.features.cellprofiler import NUCLEAR_STAINS
from morphospace.io.paired import PairedField
from morphospace.models.tiled import TiledInferenceConfig
from morphospace.segment.nuclei import instances_from_probability, segment_nuclei

__all__ = ["pearson_per_crop", "empty_crops", "ssim_per_crop", "psnr_per_crop", "nuclei_jaccard", "nucleus_means",
           "per_nucleus_intensity", "mask_reference_pcc", "is_nuclear_stain", "isl_scores", "InferenceConfig", "ISLEvaluation", "evaluation_crops", "score_labeling", "score_segmentation"]

Boxes = list[tuple[int, Region]]


class InferenceConfig(TiledInferenceConfig):
    """Whole-field inference and the evaluation conventions."""

    crop_size: int | None = pydantic.Field(None, ge=8, description="evaluation crop side (default: training tile)")
    empty_threshold: float = pydantic.Field(
        2.0, description="a crop is empty when under empty_min_fraction of its target pixels exceed this "
                         "(target units: per-image z-scores by default)")
    empty_min_fraction: float = pydantic.Field(0.005, ge=0, lt=1)
    probability_threshold: float = pydantic.Field(0.5, gt=0, lt=1, description="segmentation: foreground cut")
    reference_sigma: float = pydantic.Field(
        1.0, ge=0, description="Gaussian blur (px) of the truth nuclei mask scored as mask_reference_pcc")


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


def nucleus_means(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of ``image`` over each labelled nucleus of crops (N, H, W) with instance labels (N, H, W):
    (K,) for the K (crop, label) pairs present, ordered by crop then label; a nucleus cut by crop
    borders counts once per crop, with its pixels inside it."""
    image, labels = _pair(image, np.asarray(labels))
    labels = labels.astype(np.int64)
    stride = int(labels.max()) + 1
    keys = np.where(labels > 0, labels + stride * np.arange(len(labels))[:, None, None], 0).ravel()
    counts = np.bincount(keys, minlength=1)
    sums = np.bincount(keys, weights=image.ravel(), minlength=1)
    present = counts > 0
    present[0] = False
    return sums[present] / counts[present]


def per_nucleus_intensity(prediction: np.ndarray, target: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """Pearson r between the per-nucleus mean intensities (:func:`nucleus_means`) of ``prediction``
    and ``target`` (N, H, W) over the nuclei of ``labels`` (N, H, W): ``{"r", "n_nuclei"}``; r is
    None with fewer than 3 nuclei or constant means."""
    predicted, true = nucleus_means(prediction, labels), nucleus_means(target, labels)
    defined = len(true) >= 3 and predicted.std() > 0 and true.std() > 0
    r = float(np.corrcoef(predicted, true)[0, 1]) if defined else None
    return {"r": r, "n_nuclei": int(len(true))}


def mask_reference_pcc(target: np.ndarray, labels: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """PCC (N,) of each crop of ``target`` (N, H, W) with its nuclei mask (``labels`` > 0, (N, H, W))
    blurred by a Gaussian of ``sigma`` px: the score of a prediction that places every nucleus
    exactly but gives all the same brightness. NaN where either crop is constant."""
    target, labels = _pair(target, np.asarray(labels))
    masks = (labels > 0).astype(np.float64)
    blurred = np.stack([ndimage.gaussian_filter(mask, sigma) if sigma > 0 else mask for mask in masks])
    return pearson_per_crop(blurred, target)


def is_nuclear_stain(name: str) -> bool:
    """Whether a channel name holds a nuclear stain's name (DNA, DAPI, Hoechst, ..., any case)."""
    return any(stain.lower() in name.lower() for stain in NUCLEAR_STAINS)


def _summary(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "median": float("nan")}
    return {"n": int(finite.size), "mean": float(finite.mean()), "std": float(finite.std()),
            "median": float(np.median(finite))}


def isl_scores(prediction: np.ndarray, target: np.ndarray, threshold: float, min_fraction: float = 0.005,
               segment: Callable[[np.ndarray], np.ndarray] | None = None, labels: np.ndarray | None = None,
               reference_sigma: float = 1.0) -> dict[str, object]:
    """Every ISL metric of one target channel over crops (N, H, W).

    Returns a dict with ``pcc`` split into ``all``, ``non_empty`` and ``empty`` (each n, mean, std,
    median over crops with a defined PCC), ``ssim`` and ``psnr`` over non-empty crops, the counts,
    ``nuclei_jaccard`` over all crops when ``segment`` is given, and with nuclei ``labels`` (N, H, W)
    ``per_nucleus_intensity`` (r, n_nuclei; all crops) and ``mask_reference_pcc`` (non-empty crops,
    mask blurred by ``reference_sigma`` px).
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
    if labels is not None:
        scores["per_nucleus_intensity"] = per_nucleus_intensity(prediction, target, labels)
        scores["mask_reference_pcc"] = _summary(mask_reference_pcc(target[full], labels[full], reference_sigma))
    return scores


@dataclass
class ISLEvaluation:
    """Scores of a run on one split: the summary dict and the per-crop table."""

    scores: dict
    crops: pd.DataFrame

    def line(self) -> str:
        if "targets" in self.scores:
            return "; ".join(_target_line(name, scores) for name, scores in self.scores["targets"].items())
        return (f"mean IoU {self.scores['mean_iou']:.3f}, F1@0.5 {self.scores['f1_pooled']:.3f} "
                f"over {self.scores['crops']} crops")


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _target_line(name: str, scores: dict) -> str:
    """Every metric of one target, in one line."""
    pcc = scores["pcc"]
    parts = [f"PCC non-empty {_number(pcc['non_empty']['mean'])} (n={pcc['non_empty']['n']}), "
             f"empty {_number(pcc['empty']['mean'])} (n={pcc['empty']['n']})",
             f"SSIM {_number(scores['ssim']['mean'])}", f"PSNR {_number(scores['psnr']['mean'], 1)} dB"]
    if "nuclei_jaccard" in scores:
        parts.append(f"nuclei Jaccard {_number(scores['nuclei_jaccard']['mean'])}")
    if "per_nucleus_intensity" in scores:
        nuclei = scores["per_nucleus_intensity"]
        parts.append(f"per-nucleus intensity r {_number(nuclei['r'])} (n={nuclei['n_nuclei']})")
        parts.append(f"mask reference PCC {_number(scores['mask_reference_pcc']['mean'])}")
    return f"{name}: " + ", ".join(parts)


def evaluation_crops(fields: Sequence[PairedField], regions: list[dict], size: int) -> Boxes:
    """``(field index, box)`` of the regular ``size`` px crops of saved split regions
    (``[{"field": id, "region": [y0, y1, x0, x1]}, ...]``); InputError when none fits."""
    index = {field.field_id: i for i, field in enumerate(fields)}
    boxes = []
    for entry in regions:
        if entry["field"] not in index:
            raise InputError(f"field {entry['field']} of regions.json is not in the manifest")
        boxes += [(index[entry["field"]], box) for box in grid_tiles(tuple(entry["region"]), size)]
    if not boxes:
        raise InputError(f"no {size} x {size} px crop fits the evaluation regions; set a smaller crop_size")
    return boxes


def _stack(arrays: Sequence[np.ndarray] | dict[int, np.ndarray], boxes: Boxes, channel: int) -> np.ndarray:
    return np.stack([arrays[i][channel, y0:y1, x0:x1] for i, (y0, y1, x0, x1) in boxes])


def _nuclei_labels(fields: Sequence[PairedField], boxes: Boxes, channel: int) -> tuple[np.ndarray, str]:
    """Nuclei labels of the crops (N, H, W): each field's label image, or nuclei segmented on the
    whole true plane ``channel`` of a field without one; and where they came from."""
    wanted = sorted({i for i, _ in boxes})
    labels = {i: fields[i].mask if fields[i].mask is not None
              else segment_nuclei(fields[i].targets[channel], min_area=10) for i in wanted}
    given = all(fields[i].mask is not None for i in wanted)
    return _stack({i: plane[None] for i, plane in labels.items()}, boxes, 0), (
        "the run's nuclei label images" if given else "nuclei segmented (Otsu-watershed) on the true stain")


def score_labeling(targets: Sequence[str], fields: Sequence[PairedField], predictions: dict[int, np.ndarray],
                   boxes: Boxes, settings: InferenceConfig) -> ISLEvaluation:
    """Per-crop scores of predicted fluorescence (C, H, W) of the fields in ``predictions`` (by field
    index) against the fields' targets named ``targets``, over ``boxes``; nuclear-stain targets
    (:func:`is_nuclear_stain`) also get the nuclei scores of :func:`isl_scores`."""
    truths = [field.targets for field in fields]
    scores, table = {}, pd.DataFrame({"field": [fields[i].field_id for i, _ in boxes],
                                      "box": [list(b) for _, b in boxes]})
    sources = {}
    for channel, name in enumerate(targets):
        predicted, truth = _stack(predictions, boxes, channel), _stack(truths, boxes, channel)
        nuclear = is_nuclear_stain(name)
        labels, sources[name] = _nuclei_labels(fields, boxes, channel) if nuclear else (None, None)
        scores[name] = isl_scores(predicted, truth, settings.empty_threshold, settings.empty_min_fraction,
                                  partial(segment_nuclei, min_area=10) if nuclear else None, labels,
                                  settings.reference_sigma)
        table[f"pcc_{name}"] = pearson_per_crop(predicted, truth)
        table[f"empty_{name}"] = empty_crops(truth, settings.empty_threshold, settings.empty_min_fraction)
        if nuclear:
            table[f"mask_reference_pcc_{name}"] = mask_reference_pcc(truth, labels, settings.reference_sigma)
    summary = {"convention": (
        "per-crop Pearson correlation over the crops of the held-out regions, split by empty (under "
        f"{settings.empty_min_fraction:.3%} of target pixels above {settings.empty_threshold} in per-image z-score "
        "units) and non-empty; SSIM/PSNR on non-empty crops with each target crop's range; for nuclear-stain "
        "targets: nuclei Jaccard between Otsu-watershed nuclei of predicted and real crops (1 when both empty), "
        "per_nucleus_intensity: Pearson r of the mean intensity of each nucleus (its part inside each crop) "
        "between prediction and truth, and mask_reference_pcc: PCC of the truth nuclei mask blurred by "
        f"{settings.reference_sigma} px against the truth on non-empty crops (a model that places nuclei "
        "perfectly but knows nothing of their brightness)"),
        "pcc": {name: target["pcc"] for name, target in scores.items()},
        "nuclei_labels": {name: source for name, source in sources.items() if source},
        "targets": scores}
    return ISLEvaluation(summary, table)


def score_segmentation(fields: Sequence[PairedField], predictions: dict[int, np.ndarray], boxes: Boxes,
                       settings: InferenceConfig) -> ISLEvaluation:
    """Per-crop foreground IoU and instance F1 of predicted nuclei probabilities (1, H, W) of the
    fields in ``predictions`` against the fields' label images, over ``boxes``."""
    rows = []
    labels = {i: instances_from_probability(p[0], settings.probability_threshold) for i, p in predictions.items()}
    for i, (y0, y1, x0, x1) in boxes:
        truth = fields[i].mask[y0:y1, x0:x1]
        scores = segmentation_scores(truth, labels[i][y0:y1, x0:x1], 0.5)
        rows.append({"field": fields[i].field_id, "box": [y0, y1, x0, x1], "has_nuclei": bool(truth.any()),
                     "iou": scores["foreground_iou"], **{k: scores[k] for k in ("tp", "fp", "fn", "f1")}})
    table = pd.DataFrame(rows)
    tp, fp, fn = (int(table[c].sum()) for c in ("tp", "fp", "fn"))
    scores = {"convention": ("per-crop foreground IoU (1 when both masks are empty), mean over all crops and over crops with "
                             "nuclei in the truth; instances by "
                             f"probability > {settings.probability_threshold} and distance-transform watershed; "
                             "F1 at IoU 0.5 from pooled one-to-one matches (Hungarian) and as a per-crop mean"),
              "crops": len(table), "mean_iou": float(table["iou"].mean()),
              "crops_with_nuclei": int(table["has_nuclei"].sum()),
              "mean_iou_non_empty": float(table.loc[table["has_nuclei"], "iou"].mean()) if table["has_nuclei"].any()
              else None,
              "f1_pooled": InstanceMatch(tp, fp, fn).f1,
              "f1_mean": float(table["f1"].mean()), "tp": tp, "fp": fp, "fn": fn}
    return ISLEvaluation(scores, table)
