"""``prepare``: raw fields -> crop store (QC, illumination, background, denoising, segmentation, crops).

Passes, each parallel over fields (or plates) and resumable:

1. **QC**: read and check every field, measure focus, saturation and intensity statistics, decide
   which fields fail (they are skipped and listed with the reason in ``qc.csv``).
2. **Illumination**: per plate and channel, a smoothed median of up to ``max_fields`` passing
   fields.
3. **Fields**: correct, segment nuclei and cells, cut crops; each field's result lands in
   ``STORE.partial/fields/<field_id>/`` atomically, and its label images in ``labels/``.
4. **Assembly**: stream the per-field results into the store, then rename ``STORE.partial`` to
   ``STORE``.

An interrupted run resumes from ``STORE.partial`` (same config required) and skips fields already
done; the final store appears only when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import pydantic
from tqdm.auto import tqdm

from morphospace.config import Config
from morphospace.errors import InputError
from morphospace.io.atomic import replace_directory, temporary_sibling
from morphospace.io.images import read_image, write_tiff
from morphospace.io.manifest import FieldSpec, read_manifest
from morphospace.io.store import CropStoreWriter
from morphospace.parallel import compute_context, run_parallel
from morphospace.preprocess.background import subtract_background
from morphospace.preprocess.denoise import denoise, remove_outliers
from morphospace.preprocess.illumination import correct_illumination, estimate_illumination
from morphospace.preprocess.qc import field_qc_metrics, qc_failures
from morphospace.runs import RunConflictError, log_to_file, open_run_directory
from morphospace.segment.cells import segment_cells
from morphospace.segment.crops import CropResult, crop_cells
from morphospace.segment.nuclei import segment_nuclei

__all__ = [
    "PrepareConfig",
    "PrepareSummary",
    "FieldResult",
    "prepare",
    "read_field",
    "process_field",
]

logger = logging.getLogger(__name__)


class QCConfig(Config):
    """Field quality control; failing fields are skipped and listed with the reason."""

    enabled: bool = True
    focus_channel: str | None = pydantic.Field(None, description="default: the nuclei channel")
    focus_min_slope: float | None = None
    focus_mad_k: float | None = pydantic.Field(4.0, gt=0)
    min_fields_for_outliers: int = pydantic.Field(8, ge=3)
    saturation_max_fraction: float | None = pydantic.Field(0.01, ge=0, le=1)


class IlluminationConfig(Config):
    """Per plate and channel flat-field correction."""

    enabled: bool = True
    sigma: float = pydantic.Field(50.0, gt=0, description="smoothing, pixels")
    downsample: int = pydantic.Field(4, ge=1)
    max_fields: int = pydantic.Field(64, ge=1, description="fields sampled per plate")
    min_fields: int = pydantic.Field(3, ge=1, description="plates with fewer passing fields are not corrected")


class BackgroundConfig(Config):
    """Rolling-ball background subtraction."""

    enabled: bool = True
    radius: float = pydantic.Field(25.0, gt=0, description="ball radius, pixels")
    shrink: int | None = pydantic.Field(None, ge=1, description="None: radius // 10")


class DenoiseConfig(Config):
    """Optional outlier removal and denoising."""

    method: Literal["none", "median", "tv"] = "none"
    median_radius: int = pydantic.Field(1, ge=1)
    tv_weight: float = pydantic.Field(0.05, gt=0)
    outlier_radius: int | None = pydantic.Field(None, ge=1, description="selective median; None: off")
    outlier_threshold: float = pydantic.Field(50.0, gt=0)


class NormalizeConfig(Config):
    """Field intensity scaling before cropping.

    ``plate`` divides each channel by its plate's median over fields of (percentile - median) of
    the raw field, which evens out plate and batch intensity shifts.
    """

    method: Literal["none", "plate"] = "none"
    percentile: float = pydantic.Field(99.0, gt=50, lt=100)


class NucleiConfig(Config):
    """Nuclei segmentation (see :func:`morphospace.segment.nuclei.segment_nuclei`)."""

    channel: str = "DNA"
    sigma: float = pydantic.Field(1.0, ge=0)
    threshold_factor: float = pydantic.Field(1.0, gt=0)
    min_area: int = pydantic.Field(30, ge=0)
    max_area: int | None = pydantic.Field(5000, ge=1)
    min_distance: int = pydantic.Field(5, ge=1)
    h: float = pydantic.Field(1.0, ge=0)
    remove_border: bool = False


class CellsConfig(Config):
    """Cell segmentation (see :func:`morphospace.segment.cells.segment_cells`)."""

    method: Literal["watershed", "voronoi"] = "watershed"
    elevation: Literal["gradient", "intensity"] = "gradient"
    channels: list[str] = ["Actin", "Tubulin"]
    sigma: float = pydantic.Field(1.5, ge=0)
    threshold_factor: float = pydantic.Field(1.0, gt=0)
    max_distance: float | None = pydantic.Field(40.0, gt=0)
    compactness: float = pydantic.Field(0.0, ge=0)


class CropsConfig(Config):
    """Nucleus-centred crops."""

    size: int = pydantic.Field(64, ge=4)
    border: Literal["pad", "drop"] = "pad"
    pad_mode: Literal["constant", "reflect"] = "constant"
    mask_outside_cell: bool = False
    align: bool = False
    dtype: Literal["float32", "uint16"] = "float32"


class PrepareConfig(Config):
    """Everything ``prepare`` does; every step can be switched."""

    channels: list[str] | None = pydantic.Field(None, description="channel order; None: manifest order")
    max_projection: bool = True
    pixel_size_um: float | None = pydantic.Field(None, gt=0)
    on_error: Literal["raise", "skip"] = "raise"
    qc: QCConfig = QCConfig()
    illumination: IlluminationConfig = IlluminationConfig()
    background: BackgroundConfig = BackgroundConfig()
    denoise: DenoiseConfig = DenoiseConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    nuclei: NucleiConfig = NucleiConfig()
    cells: CellsConfig = CellsConfig()
    crops: CropsConfig = CropsConfig()

    def check_channels(self, channels: Sequence[str], source: str) -> None:
        """Raise InputError naming the config key when a configured channel is not in ``channels``."""
        named = {"nuclei.channel": [self.nuclei.channel], "cells.channels": self.cells.channels}
        if self.qc.focus_channel:
            named["qc.focus_channel"] = [self.qc.focus_channel]
        for key, names in named.items():
            unknown = [n for n in names if n not in channels]
            if unknown:
                raise InputError(f"{source}: config key '{key}' names channel(s) {unknown}; available: {list(channels)}")


@dataclass
class FieldResult:
    """One processed field: ``corrected`` (C, H, W) float32, label images (H, W), and its crops."""

    corrected: np.ndarray
    nuclei: np.ndarray
    cells: np.ndarray
    crops: CropResult


@dataclass
class PrepareSummary:
    """What a ``prepare`` run did."""

    store: Path
    n_fields: int
    n_qc_failed: int
    n_errors: int
    n_cells: int
    seconds: float
    resumed_fields: int = 0
    qc_failures: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return (f"prepared {self.n_cells} cells from {self.n_fields - self.n_qc_failed - self.n_errors} of "
                f"{self.n_fields} fields ({self.n_qc_failed} failed QC, {self.n_errors} errors) "
                f"in {self.seconds:.1f} s -> {self.store}")


def read_field(spec: FieldSpec, max_projection: bool = True) -> dict[str, np.ndarray]:
    """Read and check every channel of a field: one 2-D plane per channel, all of one shape.

    z-stacks (Z, H, W) are max-projected when ``max_projection`` is set. Raises InputError naming
    the file on unreadable data, NaN/inf, empty images, colour images or mismatched shapes.
    """
    planes: dict[str, np.ndarray] = {}
    for channel, path in spec.files.items():
        image = read_image(path, ndim=(2, 3))
        if image.ndim == 3:
            if image.shape[-1] <= 4 and image.shape[0] > 4:
                raise InputError(f"{path}: holds {image.shape[-1]} colour channels; give one channel per file")
            if not max_projection:
                raise InputError(f"{path}: is a z-stack of shape {image.shape}; enable max_projection")
            image = image.max(axis=0)
        planes[channel] = image
    shapes = {c: p.shape for c, p in planes.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{spec.files[c].name}: {s}" for c, s in shapes.items())
        raise InputError(f"field {spec.field_id}: channel images differ in shape ({detail})")
    return planes


def process_field(
    planes: dict[str, np.ndarray],
    config: PrepareConfig,
    illumination: dict[str, np.ndarray] | None = None,
    scales: dict[str, float] | None = None,
) -> FieldResult:
    """Correct, segment and crop one field held in memory (the notebook entry point).

    Parameters
    ----------
    planes
        Channel name -> (H, W) image, in channel order.
    config
        The prepare configuration.
    illumination
        Channel name -> illumination function (H, W), for the channels to correct.
    scales
        Channel name -> divisor from plate normalisation.
    """
    corrected = {name: _correct_channel(image, name, config, illumination, scales) for name, image in planes.items()}
    nuclei = segment_nuclei(
        corrected[config.nuclei.channel], sigma=config.nuclei.sigma,
        threshold_factor=config.nuclei.threshold_factor, min_area=config.nuclei.min_area,
        max_area=config.nuclei.max_area, min_distance=config.nuclei.min_distance, h=config.nuclei.h,
        remove_border=config.nuclei.remove_border,
    )
    cells = segment_cells(
        nuclei, _cytoplasm_image(corrected, config.cells.channels), method=config.cells.method,
        elevation=config.cells.elevation, sigma=config.cells.sigma, threshold_factor=config.cells.threshold_factor,
        max_distance=config.cells.max_distance, compactness=config.cells.compactness,
    )
    stack = np.stack(list(corrected.values()))
    crops = crop_cells(
        stack, nuclei, cells, size=config.crops.size, border=config.crops.border, pad_mode=config.crops.pad_mode,
        mask_outside_cell=config.crops.mask_outside_cell, align=config.crops.align,
    )
    return FieldResult(stack, nuclei, cells, crops)


def _correct_channel(
    image: np.ndarray, name: str, config: PrepareConfig,
    illumination: dict[str, np.ndarray] | None, scales: dict[str, float] | None,
) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if illumination and name in illumination:
        image = correct_illumination(image, illumination[name])
    if config.background.enabled:
        shrink = config.background.shrink or max(1, int(config.background.radius // 10))
        image = subtract_background(image, config.background.radius, shrink)
    if config.denoise.outlier_radius:
        image = remove_outliers(image, config.denoise.outlier_radius, config.denoise.outlier_threshold)
    image = denoise(image, config.denoise.method, config.denoise.median_radius, config.denoise.tv_weight)
    if scales and name in scales:
        image = image / np.float32(scales[name])
    return image


def _cytoplasm_image(corrected: dict[str, np.ndarray], channels: Sequence[str]) -> np.ndarray | None:
    """Sum of the cytoplasm channels, each scaled by its 99th percentile so they weigh alike."""
    if not channels:
        return None
    total = np.zeros_like(next(iter(corrected.values())), dtype=np.float32)
    for name in channels:
        image = corrected[name]
        total += image / max(float(np.percentile(image, 99)), 1e-6)
    return total


# --- the resumable, parallel pipeline ---------------------------------------------------------


@dataclass(frozen=True)
class _FieldTask:
    spec: FieldSpec
    config: PrepareConfig
    work_dir: Path
    illumination: dict[str, Path]
    scales: dict[str, float]


def _qc_field(task: tuple[FieldSpec, bool, str]) -> dict:
    spec, max_projection, on_error = task
    row = {"Metadata_FieldId": spec.field_id, "Metadata_Plate": spec.plate}
    try:
        row.update(field_qc_metrics(read_field(spec, max_projection)))
        row["error"] = ""
    except InputError as exc:
        if on_error == "raise":
            raise
        row["error"] = str(exc)
    return row


def _illumination_task(task: tuple[list[FieldSpec], str, IlluminationConfig, bool, Path]) -> str:
    specs, channel, config, max_projection, path = task
    images = (read_field(spec, max_projection)[channel] for spec in specs)
    write_tiff(path, estimate_illumination(images, sigma=config.sigma, downsample=config.downsample))
    return str(path)


def _process_field_task(task: _FieldTask) -> dict:
    spec, config, work_dir = task.spec, task.config, task.work_dir
    try:
        planes = read_field(spec, config.max_projection)
        illumination = {c: read_image(p, ndim=(2,)) for c, p in task.illumination.items()}
        result = process_field(planes, config, illumination, task.scales)
    except InputError as exc:
        if config.on_error == "raise":
            raise
        return {"Metadata_FieldId": spec.field_id, "n_cells": 0, "error": str(exc)}
    label_dtype = np.uint16 if max(result.nuclei.max(), result.cells.max()) < 2**16 else np.uint32
    write_tiff(work_dir / "labels" / f"{spec.field_id}_nuclei.tiff", result.nuclei.astype(label_dtype))
    write_tiff(work_dir / "labels" / f"{spec.field_id}_cells.tiff", result.cells.astype(label_dtype))
    _write_field_crops(work_dir / "fields" / spec.field_id, spec, result.crops)
    return {"Metadata_FieldId": spec.field_id, "n_cells": len(result.crops.table), "error": ""}


def _write_field_crops(target: Path, spec: FieldSpec, crops: CropResult) -> None:
    metadata = {k: v for k, v in spec.metadata.items() if k.startswith("Metadata_")}
    table = crops.table.assign(**{k: [v] * len(crops.table) for k, v in metadata.items()})
    ordered = [*metadata, *[c for c in crops.table.columns if c not in metadata]]
    tmp = temporary_sibling(target)
    try:
        np.savez(tmp / "crops.npz", images=crops.images, masks=crops.masks)
        table[ordered].to_parquet(tmp / "cells.parquet", index=False)
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _plate_scales(qc: pd.DataFrame, channels: Sequence[str], config: NormalizeConfig) -> dict[str, dict[str, float]]:
    if config.method == "none":
        return {}
    scales = {}
    for plate, group in qc.groupby("Metadata_Plate"):
        scales[str(plate)] = {
            c: max(float((group[f"q99_{c}"] - group[f"median_{c}"]).median()), 1e-6) for c in channels
        }
    return scales


def prepare(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    config: PrepareConfig | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Turn the fields listed in ``manifest`` into a crop store at ``out``.

    Parameters
    ----------
    manifest
        CSV manifest (see :mod:`morphospace.io.manifest`).
    out
        Store directory to create; work in progress lives in ``<out>.partial``.
    config
        Steps and parameters (defaults when None).
    workers, scheduler
        Parallelism (see :func:`morphospace.parallel.compute_context`).
    overwrite
        Replace an existing store at ``out``.
    restart
        Discard ``<out>.partial`` instead of resuming from it.
    progress
        Progress bars.

    Raises
    ------
    InputError
        Bad manifest or images (named in the message), a config naming a missing channel, or no
        cells found at all.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    start = time.perf_counter()
    config = config or PrepareConfig()
    manifest, out = Path(manifest), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (choose another output or overwrite it)")
    fields = read_manifest(manifest, config.channels)
    channels = list(fields[0].files)
    config.check_channels(channels, str(manifest))
    partial = out.with_name(out.name + ".partial")
    if restart and partial.exists():
        shutil.rmtree(partial)
    had_partial = partial.exists()
    try:
        work_dir, resumed = open_run_directory(partial, config, config_name="prepare_config.yaml")
    except RunConflictError as exc:
        raise RunConflictError(f"{exc}; or discard the unfinished run with --restart") from None
    try:
        with log_to_file(work_dir / "prepare.log"), compute_context(workers, scheduler) as client:
            return _run(fields, channels, config, manifest, out, work_dir, resumed, client, progress, start)
    except BaseException:
        if not had_partial and not (work_dir / "fields").exists():
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def _run(fields, channels, config, manifest, out, work_dir, resumed, client, progress, start) -> PrepareSummary:
    qc = _qc_pass(fields, config, work_dir, client, progress)
    passing = [f for f, ok in zip(fields, (qc["status"] == "ok").to_numpy()) if ok]
    illumination = _illumination_pass(passing, channels, config, work_dir, client, progress)
    scales = _plate_scales(qc[qc["status"] == "ok"], channels, config.normalize)
    done = {p.name for p in (work_dir / "fields").glob("*") if p.is_dir() and not p.name.startswith(".")}
    tasks = [
        _FieldTask(f, config, work_dir, illumination.get(f.plate, {}), scales.get(f.plate, {}))
        for f in passing if f.field_id not in done
    ]
    if resumed and done:
        logger.info("resuming: %d of %d fields already processed", len(done), len(passing))
    outcomes = {r["Metadata_FieldId"]: r for _, r in run_parallel(_process_field_task, tasks, client, progress, "fields")}
    qc = _record_outcomes(qc, outcomes)
    qc.to_csv(work_dir / "qc.csv", index=False)
    n_cells = _assemble(passing, channels, config, manifest, out, work_dir, qc, progress)
    failed = qc[qc["status"] == "qc_failed"]
    summary = PrepareSummary(
        store=out, n_fields=len(fields), n_qc_failed=len(failed), n_errors=int((qc["status"] == "error").sum()),
        n_cells=n_cells, seconds=time.perf_counter() - start, resumed_fields=len(done),
        qc_failures=dict(zip(failed["Metadata_FieldId"], failed["reason"])),
    )
    logger.info(summary.line())
    return summary


def _qc_pass(fields, config, work_dir, client, progress) -> pd.DataFrame:
    saved = work_dir / "qc_metrics.parquet"
    if saved.is_file():
        return pd.read_parquet(saved)
    tasks = [(f, config.max_projection, config.on_error) for f in fields]
    rows = dict(run_parallel(_qc_field, tasks, client, progress, "QC"))
    qc = pd.DataFrame([rows[i] for i in range(len(fields))])
    qc["status"], qc["reason"] = "ok", ""
    errors = qc["error"] != ""
    qc.loc[errors, "status"] = "error"
    qc.loc[errors, "reason"] = qc.loc[errors, "error"]
    if config.qc.enabled and (~errors).any():
        focus_channel = config.qc.focus_channel or config.nuclei.channel
        reasons = qc_failures(
            qc[~errors], focus_channel, focus_min_slope=config.qc.focus_min_slope, focus_mad_k=config.qc.focus_mad_k,
            min_fields_for_outliers=config.qc.min_fields_for_outliers,
            saturation_max_fraction=config.qc.saturation_max_fraction,
        )
        failed = reasons[reasons != ""]
        qc.loc[failed.index, "status"] = "qc_failed"
        qc.loc[failed.index, "reason"] = failed
        for field_id, reason in zip(qc.loc[failed.index, "Metadata_FieldId"], failed):
            logger.warning("field %s skipped: %s", field_id, reason)
    qc = qc.drop(columns="error")
    qc.to_parquet(saved, index=False)
    return qc


def _illumination_pass(passing, channels, config, work_dir, client, progress) -> dict[str, dict[str, Path]]:
    if not config.illumination.enabled:
        return {}
    by_plate: dict[str, list[FieldSpec]] = {}
    for spec in passing:
        by_plate.setdefault(spec.plate, []).append(spec)
    paths: dict[str, dict[str, Path]] = {}
    tasks = []
    rng = np.random.default_rng(0)
    for plate, specs in sorted(by_plate.items()):
        if len(specs) < config.illumination.min_fields:
            logger.warning("plate %s: %d passing field(s) < %d, no illumination correction",
                           plate or "<none>", len(specs), config.illumination.min_fields)
            continue
        if len(specs) > config.illumination.max_fields:
            keep = np.sort(rng.choice(len(specs), config.illumination.max_fields, replace=False))
            specs = [specs[i] for i in keep]
        for channel in channels:
            path = work_dir / "illumination" / f"{plate or 'all'}_{channel}.tiff"
            paths.setdefault(plate, {})[channel] = path
            if not path.is_file():
                tasks.append((specs, channel, config.illumination, config.max_projection, path))
    for _ in run_parallel(_illumination_task, tasks, client, progress, "illumination"):
        pass
    return paths


def _record_outcomes(qc: pd.DataFrame, outcomes: dict[str, dict]) -> pd.DataFrame:
    qc = qc.copy()
    qc["n_cells"] = 0
    for field_id, outcome in outcomes.items():
        row = qc.index[qc["Metadata_FieldId"] == field_id]
        qc.loc[row, "n_cells"] = outcome["n_cells"]
        if outcome["error"]:
            qc.loc[row, "status"] = "error"
            qc.loc[row, "reason"] = outcome["error"]
    return qc


def _assemble(passing, channels, config, manifest, out, work_dir, qc, progress) -> int:
    field_dirs = [work_dir / "fields" / f.field_id for f in passing if (work_dir / "fields" / f.field_id).is_dir()]
    provenance = {
        "source": str(manifest.resolve()), "pipeline": "prepare", "config": config.to_dict(),
        "n_fields": int(len(qc)), "n_fields_used": len(field_dirs),
    }
    n_cells = 0
    with CropStoreWriter(
        out, channels, (config.crops.size, config.crops.size), dtype=config.crops.dtype, with_masks=True,
        pixel_size_um=config.pixel_size_um, provenance=provenance, overwrite=True, build_dir=work_dir,
    ) as writer:
        for field_dir in tqdm(field_dirs, desc="assemble", unit="field", disable=not progress):
            with np.load(field_dir / "crops.npz", allow_pickle=False) as data:
                images, masks = data["images"], data["masks"]
            writer.append(images, pd.read_parquet(field_dir / "cells.parquet"), masks)
            n_cells += len(images)
        if n_cells == 0:
            raise InputError(f"{manifest}: no cells found in any of {len(passing)} field(s); check the nuclei settings")
        shutil.rmtree(work_dir / "fields")
        (work_dir / "qc_metrics.parquet").unlink(missing_ok=True)
    return n_cells
