"""Whole-field prediction and evaluation of in-silico-labeling and segmentation runs
(``morphospace predict`` and ``morphospace evaluate isl|segmentation``).

Predictions are made on whole fields by overlapping tiles (:func:`morphospace.models.tiled.predict_field`)
and written as float32 TIFFs in the run's normalised units (``<field>_<target>.tiff``), or for
segmentation as a probability map and watershed instances (``<field>_nuclei_probability.tiff``,
``<field>_nuclei_labels.tiff``). Evaluation predicts each field once, then scores the regular crops
of the held-out split's regions saved in ``regions.json``, so no crop overlaps training pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pydantic
import torch

from morphospace.config import Config
from morphospace.data.tiles import grid_tiles
from morphospace.errors import InputError
from morphospace.evaluate.isl import empty_crops, isl_scores, pearson_per_crop
from morphospace.evaluate.segmentation import InstanceMatch, segmentation_scores
from morphospace.io.atomic import write_text_atomic
from morphospace.io.images import write_tiff
from morphospace.io.paired import PairedChannels, PairedField, load_paired_field, read_paired_manifest
from morphospace.models.isl import ImageToImage
from morphospace.segment.nuclei import instances_from_probability, segment_nuclei
from morphospace.workflows.isl import ISLTrainConfig, load_fields, load_isl_run
from morphospace.workflows.train import resolve_precision

__all__ = ["InferenceConfig", "predict_fields", "evaluate_isl_run", "ISLEvaluation"]


class InferenceConfig(Config):
    """Whole-field inference and the evaluation conventions."""

    tile: int = pydantic.Field(256, ge=16, description="inference tile side, px")
    overlap: float = pydantic.Field(0.5, ge=0, lt=1)
    batch_size: int = pydantic.Field(4, ge=1)
    crop_size: int | None = pydantic.Field(None, ge=8, description="evaluation crop side (default: training tile)")
    empty_threshold: float = pydantic.Field(
        2.0, description="a crop is empty when under empty_min_fraction of its target pixels exceed this "
                         "(target units: per-image z-scores by default)")
    empty_min_fraction: float = pydantic.Field(0.005, ge=0, lt=1)
    probability_threshold: float = pydantic.Field(0.5, gt=0, lt=1, description="segmentation: foreground cut")
    precision: Literal["32-true", "bf16-mixed", "auto"] = pydantic.Field(
        "32-true", description="bf16-mixed: bf16 autocast; auto: bf16 where the hardware has bf16 units")


def _predict(model: ImageToImage, field: PairedField, settings: InferenceConfig) -> np.ndarray:
    inputs = torch.from_numpy(field.inputs)
    bf16 = resolve_precision(settings.precision) == "bf16-mixed"
    return model.predict_field(inputs, settings.tile, settings.overlap, settings.batch_size, bf16).numpy()


def _prediction_fields(config: ISLTrainConfig, manifest: str | os.PathLike | None) -> list[PairedField]:
    if manifest is None:
        return load_fields(config.data)
    inputs_only = PairedChannels(inputs=config.data.channels.inputs)
    return [load_paired_field(spec, inputs_only, config.data.normalization)
            for spec in read_paired_manifest(manifest, inputs_only)]


def predict_fields(run_dir: str | os.PathLike, out: str | os.PathLike, manifest: str | os.PathLike | None = None,
                   settings: InferenceConfig | None = None) -> list[Path]:
    """Predict every field of ``manifest`` (default: the run's own) into the folder ``out``; returns the files."""
    settings = settings or InferenceConfig()
    config, model = load_isl_run(run_dir)
    out = Path(out)
    written = []
    for field in _prediction_fields(config, manifest):
        prediction = _predict(model, field, settings)
        if config.model.task == "segmentation":
            probability = prediction[0]
            written.append(write_tiff(out / f"{field.field_id}_nuclei_probability.tiff", probability.astype(np.float32)))
            labels = instances_from_probability(probability, settings.probability_threshold)
            written.append(write_tiff(out / f"{field.field_id}_nuclei_labels.tiff", labels.astype(np.uint16)))
            continue
        for name, plane in zip(config.data.channels.targets, prediction):
            written.append(write_tiff(out / f"{field.field_id}_{name}.tiff", plane.astype(np.float32)))
    return written


@dataclass
class ISLEvaluation:
    """Scores of a run on one split: the summary dict and the per-crop table."""

    scores: dict
    crops: pd.DataFrame

    def line(self) -> str:
        if "pcc" in self.scores:
            parts = [f"{name}: PCC non-empty {s['non_empty']['mean']:.3f} (n={s['non_empty']['n']}), "
                     f"empty {s['empty']['mean']:.3f} (n={s['empty']['n']})" for name, s in self.scores["pcc"].items()]
            return "; ".join(parts)
        return (f"mean IoU {self.scores['mean_iou']:.3f}, F1@0.5 {self.scores['f1_pooled']:.3f} "
                f"over {self.scores['crops']} crops")


def _crops(fields: list[PairedField], regions: list[dict], size: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    index = {field.field_id: i for i, field in enumerate(fields)}
    boxes = []
    for entry in regions:
        if entry["field"] not in index:
            raise InputError(f"field {entry['field']} of regions.json is not in the manifest")
        boxes += [(index[entry["field"]], box) for box in grid_tiles(tuple(entry["region"]), size)]
    if not boxes:
        raise InputError(f"no {size} x {size} px crop fits the evaluation regions; set a smaller crop_size")
    return boxes


def evaluate_isl_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, split: str = "test",
                     settings: InferenceConfig | None = None) -> ISLEvaluation:
    """Score a run on its held-out ``split``; writes ``isl.json`` (or ``segmentation.json``) and
    ``crops.csv`` into ``out`` (default ``RUN/evaluation``)."""
    settings = settings or InferenceConfig()
    run_dir = Path(run_dir)
    config, model = load_isl_run(run_dir)
    regions = json.loads((run_dir / "regions.json").read_text())
    if split not in regions:
        raise InputError(f"{run_dir}: no {split!r} split in regions.json (has {list(regions)})")
    fields = load_fields(config.data)
    boxes = _crops(fields, regions[split], settings.crop_size or config.data.tiles.size)
    predictions = {i: _predict(model, fields[i], settings) for i in sorted({i for i, _ in boxes})}
    if config.model.task == "segmentation":
        evaluation = _score_segmentation(fields, predictions, boxes, settings)
    else:
        evaluation = _score_labeling(config, fields, predictions, boxes, settings)
    evaluation.scores |= {"split": split, "run": str(run_dir), "crop_size": settings.crop_size or config.data.tiles.size}
    out = Path(out) if out else run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    name = "segmentation.json" if config.model.task == "segmentation" else "isl.json"
    write_text_atomic(out / name, json.dumps(evaluation.scores, indent=2, default=float))
    evaluation.crops.to_csv(out / "crops.csv", index=False)
    return evaluation


def _stack(arrays: list[np.ndarray] | dict[int, np.ndarray], boxes, channel: int) -> np.ndarray:
    return np.stack([arrays[i][channel, y0:y1, x0:x1] for i, (y0, y1, x0, x1) in boxes])


def _score_labeling(config: ISLTrainConfig, fields: list[PairedField], predictions: dict[int, np.ndarray], boxes,
                    settings: InferenceConfig) -> ISLEvaluation:
    targets = [field.targets for field in fields]
    scores, table = {}, pd.DataFrame({"field": [fields[i].field_id for i, _ in boxes],
                                      "box": [list(b) for _, b in boxes]})
    for channel, name in enumerate(config.data.channels.targets):
        predicted, truth = _stack(predictions, boxes, channel), _stack(targets, boxes, channel)
        segment = partial(segment_nuclei, min_area=10) if name.upper() in ("DNA", "DAPI", "HOECHST") else None
        scores[name] = isl_scores(predicted, truth, settings.empty_threshold, settings.empty_min_fraction, segment)
        table[f"pcc_{name}"] = pearson_per_crop(predicted, truth)
        table[f"empty_{name}"] = empty_crops(truth, settings.empty_threshold, settings.empty_min_fraction)
    summary = {"convention": (
        "per-crop Pearson correlation over the crops of the held-out regions, split by empty (under "
        f"{settings.empty_min_fraction:.3%} of target pixels above {settings.empty_threshold} in per-image z-score "
        "units) and non-empty; SSIM/PSNR on non-empty crops with each target crop's range; nuclei Jaccard "
        "(DNA-like targets) between Otsu-watershed nuclei of predicted and real crops, 1 when both empty"),
        "pcc": {name: target["pcc"] for name, target in scores.items()},
        "targets": scores}
    return ISLEvaluation(summary, table)


def _score_segmentation(fields: list[PairedField], predictions: dict[int, np.ndarray], boxes,
                        settings: InferenceConfig) -> ISLEvaluation:
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
