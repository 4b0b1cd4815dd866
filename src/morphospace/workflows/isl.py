"""``predict`` and ``evaluate isl|segmentation``: use a trained run of a family that predicts
whole fields (in silico labeling and nuclei segmentation).

Predictions are made on whole fields by overlapping tiles (:func:`morphospace.models.tiled.predict_field`)
and written as float32 TIFFs in the run's normalised units (``<field>_<target>.tiff``), or for
segmentation as a probability map and watershed instances (``<field>_nuclei_probability.tiff``,
``<field>_nuclei_labels.tiff``). Evaluation predicts each field holding a scored crop once, then
scores the regular crops of the held-out split's regions saved in ``regions.json``
(:mod:`morphospace.evaluate.isl`), so no crop overlaps training pixels; it writes the scores, the
per-crop table and, for labeling, an input / truth / prediction figure of the first scored field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from morphospace.atomic import refuse_existing, write_json_atomic
from morphospace.data.tiles import load_fields
from morphospace.errors import InputError
from morphospace.evaluate.isl import (
    InferenceConfig, ISLEvaluation, evaluation_crops, score_labeling, score_segmentation,
)
from morphospace.explore.figures import prediction_figure, save_figure
from morphospace.io.images import write_tiff
from morphospace.io.paired import PairedChannels, PairedField
from morphospace.io.tables import write_table
from morphospace.models.registry import read_run_config
from morphospace.models.run import load_module
from morphospace.models.training import RunConfig, resolve_precision
from morphospace.segment.nuclei import instances_from_probability

__all__ = ["predict_fields", "evaluate_isl_run"]


def _predict(model, field: PairedField, settings: InferenceConfig) -> np.ndarray:
    inputs = torch.from_numpy(field.inputs)
    bf16 = resolve_precision(settings.precision) == "bf16-mixed"
    return model.predict_field(inputs, settings.tile, settings.overlap, settings.batch_size, bf16).numpy()


def _prediction_fields(config: RunConfig, manifest: str | os.PathLike | None) -> list[PairedField]:
    if manifest is None:
        return load_fields(config.data)
    inputs_only = PairedChannels(inputs=config.data.channels.inputs)
    return load_fields(config.data.model_copy(update={"manifest": str(manifest), "channels": inputs_only}))


def _outputs(config: RunConfig, out: Path, field_id: str) -> list[Path]:
    """The files ``predict`` writes for one field, in the order of :func:`_planes`."""
    if config.model.task == "segmentation":
        return [out / f"{field_id}_nuclei_probability.tiff", out / f"{field_id}_nuclei_labels.tiff"]
    return [out / f"{field_id}_{name}.tiff" for name in config.data.channels.targets]


def _planes(config: RunConfig, prediction: np.ndarray, settings: InferenceConfig) -> list[np.ndarray]:
    """What ``predict`` writes of a prediction (C, H, W): each target, or the nuclei probability and
    its instance labels."""
    if config.model.task == "segmentation":
        probability = prediction[0]
        labels = instances_from_probability(probability, settings.probability_threshold)
        return [probability.astype(np.float32), labels.astype(np.uint16)]
    return [plane.astype(np.float32) for plane in prediction]


def predict_fields(run_dir: str | os.PathLike, out: str | os.PathLike, manifest: str | os.PathLike | None = None,
                   settings: InferenceConfig | None = None, overwrite: bool = False) -> list[Path]:
    """Predict every field of ``manifest`` (default: the run's own) into the folder ``out``; returns
    the files. FileExistsError when a file it would write exists, unless ``overwrite``."""
    settings = settings or InferenceConfig()
    config, model = load_module(run_dir, "predict")
    out = Path(out)
    fields = _prediction_fields(config, manifest)
    for field in fields:
        for path in _outputs(config, out, field.field_id):
            refuse_existing(path, overwrite)
    written = []
    for field in fields:
        planes = _planes(config, _predict(model, field, settings), settings)
        written += [write_tiff(path, plane) for path, plane in zip(_outputs(config, out, field.field_id), planes)]
    return written


def evaluate_isl_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, split: str = "test",
                     settings: InferenceConfig | None = None, kind: str | None = None,
                     overwrite: bool = False) -> ISLEvaluation:
    """Score a run on its held-out ``split``; writes ``isl.json`` (or ``segmentation.json``),
    ``crops.csv`` and figures into ``out`` (default ``RUN/evaluation``); FileExistsError when the
    JSON exists, unless ``overwrite``. ``kind`` (``isl`` or ``segmentation``), when given, must be
    the run's."""
    settings = settings or InferenceConfig()
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    kind = kind or ("segmentation" if getattr(config.model, "task", None) == "segmentation" else "isl")
    _, model = load_module(run_dir, "evaluate", kind)
    out = Path(out) if out else run_dir / "evaluation"
    refuse_existing(out / f"{kind}.json", overwrite)
    regions = json.loads((run_dir / "regions.json").read_text())
    if split not in regions:
        raise InputError(f"{run_dir}: no {split!r} split in regions.json (has {list(regions)})")
    fields = load_fields(config.data)
    crop_size = settings.crop_size or config.data.tiles.size
    boxes = evaluation_crops(fields, regions[split], crop_size)
    predictions = {i: _predict(model, fields[i], settings) for i in sorted({i for i, _ in boxes})}
    if kind == "segmentation":
        evaluation = score_segmentation(fields, predictions, boxes, settings)
    else:
        evaluation = score_labeling(config.data.channels.targets, fields, predictions, boxes, settings)
    evaluation.scores |= {"split": split, "run": str(run_dir), "crop_size": crop_size}
    write_json_atomic(out / f"{kind}.json", evaluation.scores)
    write_table(evaluation.crops, out / "crops.csv")
    if kind == "isl":
        first = boxes[0][0]
        field, predicted = fields[first], predictions[first]
        figure = prediction_figure(field.inputs[0], field.targets[0], predicted[0], config.data.channels.inputs[0],
                                   config.data.channels.targets[0])
        save_figure(figure, out / "figures" / f"prediction_{field.field_id}.png")
    return evaluation
