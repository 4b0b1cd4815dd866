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

from morphospace.atomic import replace_directory, temporary_sibling
from morphospace.errors import InputError
from morphospace.io.images import read_image, write_tiff
from morphospace.io.manifest import FieldSpec, read_field, read_manifest
from morphospace.io.store import CropStoreWriter
from morphospace.io.tables import write_table
from morphospace.parallel import compute_context, run_parallel
from morphospace.preprocess.illumination import IlluminationConfig, estimate_illumination
from morphospace.preprocess.normalize import NormalizeConfig, plate_scales
from morphospace.preprocess.qc import QCConfig, field_qc_metrics, qc_failures
from morphospace.runs import RunConflictError, log_to_file, open_run_directory
from morphospace.segment.crops import CropResult
from morphospace.segment.field import FieldConfig, process_field

__all__ = [
    "PrepareConfig",
    "PrepareSummary",
    "prepare",
]

logger = logging.getLogger(__name__)


class PrepareConfig(FieldConfig):
    """Everything ``prepare`` does: the per-field steps plus reading, QC, illumination and plate
    scaling; every step can be switched."""

    channels: list[str] | None = pydantic.Field(None, description="channel order; None: manifest order")
    max_projection: bool = True
    pixel_size_um: float | None = pydantic.Field(None, gt=0)
    on_error: Literal["raise", "skip"] = "raise"
    qc: QCConfig = pydantic.Field(default_factory=QCConfig)
    illumination: IlluminationConfig = pydantic.Field(default_factory=IlluminationConfig)
    normalize: NormalizeConfig = pydantic.Field(default_factory=NormalizeConfig)

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
    scales = plate_scales(qc[qc["status"] == "ok"], channels, config.normalize)
    done = {p.name for p in (work_dir / "fields").glob("*") if p.is_dir() and not p.name.startswith(".")}
    tasks = [
        _FieldTask(f, config, work_dir, illumination.get(f.plate, {}), scales.get(f.plate, {}))
        for f in passing if f.field_id not in done
    ]
    if resumed and done:
        logger.info("resuming: %d of %d fields already processed", len(done), len(passing))
    outcomes = {r["Metadata_FieldId"]: r for _, r in run_parallel(_process_field_task, tasks, client, progress, "fields")}
    qc = _record_outcomes(qc, outcomes)
    write_table(qc, work_dir / "qc.csv")
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
    write_table(qc, saved)
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
