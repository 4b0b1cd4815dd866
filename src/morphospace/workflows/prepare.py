"""``prepare``: raw fields -> crop store (QC, illumination, background, denoising, segmentation, crops;
or whole-field tiles with ``tiles`` set).

Passes, each parallel over groups of fields (``fields_per_task``) and resumable; each field is
read twice, once per pass that needs its pixels:

1. **QC**: read and check every field, measure its size, focus, saturation, foreground contrast and
   intensity statistics, decide which fields fail (they are skipped and listed with the reason in
   ``qc.csv``: out of focus, saturated, ``no_foreground``, or an unreadable or missing file with
   ``on_error: skip``). The same read keeps a block-averaged copy of each illumination candidate
   (per plate, a seeded sample of twice ``illumination.max_fields``).
2. **Illumination**: per plate, field size and channel, a smoothed median of the block-averaged
   copies of up to ``max_fields`` passing candidates (no field is read again).
3. **Fields**: correct, segment nuclei and cells, cut crops; each field's result lands in
   ``STORE.partial/fields/<field_id>/`` atomically, and its label images in ``labels/``.
4. **Assembly**: stream the per-field results into the store, rename ``STORE.partial`` to
   ``STORE``, then remove the per-field results.

An interrupted run resumes from ``STORE.partial`` (same config required). Every cached result is
keyed by its field's id and files (path, size, modification time), not by its row in the manifest:
a reordered manifest reuses everything, a changed or added field is computed, a removed one is left
out, and an illumination estimate whose fields changed is estimated again along with the fields it
corrects. One ``prepare`` at a time writes a store: ``STORE.lock`` names the one running.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pydantic
from tqdm.auto import tqdm

from morphospace.atomic import atomic_file, refuse_existing, replace_directory, temporary_sibling
from morphospace.config import CountOrAuto
from morphospace.errors import InputError
from morphospace.io.images import read_image, write_tiff
from morphospace.io.manifest import FieldSpec, read_field, read_manifest
from morphospace.io.store import CropStoreWriter
from morphospace.io.tables import write_table
from morphospace.locks import output_lock
from morphospace.parallel import compute_context, run_parallel, worker_count
from morphospace.preprocess.illumination import IlluminationConfig, downsampled_field, illumination_from_downsampled
from morphospace.preprocess.normalize import NormalizeConfig, plate_scales
from morphospace.preprocess.qc import QCConfig, field_qc_metrics, qc_failures
from morphospace.runs import RunConflictError, log_to_file, open_run_directory
from morphospace.segment.crops import CropResult
from morphospace.segment.field import FieldConfig, process_field

__all__ = [
    "PrepareConfig",
    "PrepareSummary",
    "prepare",
    "illumination_candidates",
]

logger = logging.getLogger(__name__)


class PrepareConfig(FieldConfig):
    """Everything ``prepare`` does: the per-field steps plus reading, QC, illumination and plate
    scaling; every step can be switched."""

    channels: list[str] | None = pydantic.Field(None, description="channel order; None: manifest order")
    max_projection: bool = True
    short_stacks: bool = pydantic.Field(
        False, description="read files of 3 or 4 planes as z-stacks (they may be planar colour: an error otherwise)")
    pixel_size_um: float | None = pydantic.Field(None, gt=0)
    on_error: Literal["raise", "skip"] = "raise"
    qc: QCConfig = pydantic.Field(default_factory=QCConfig)
    illumination: IlluminationConfig = pydantic.Field(default_factory=IlluminationConfig)
    normalize: NormalizeConfig = pydantic.Field(default_factory=NormalizeConfig)
    fields_per_task: CountOrAuto = pydantic.Field(
        "auto", description="fields read and processed per task; auto: up to 8, keeping at least 4 tasks per worker")

    def resolve_channels(self, channels: Sequence[str], source: str) -> "PrepareConfig":
        """As :meth:`FieldConfig.resolve_channels`, and checks ``qc.focus_channel`` too."""
        if self.qc.focus_channel and self.qc.focus_channel not in channels:
            raise InputError(f"{source}: config key 'qc.focus_channel' names channel(s) {[self.qc.focus_channel]}; "
                             f"available: {list(channels)}")
        return super().resolve_channels(channels, source)


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
    unit: str = "cells"

    def line(self) -> str:
        return (f"prepared {self.n_cells} {self.unit} from {self.n_fields - self.n_qc_failed - self.n_errors} of "
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
    key: str


@dataclass(frozen=True)
class _SurveyTask:
    spec: FieldSpec
    config: PrepareConfig
    thumbnail: Path | None


def _survey_field(task: _SurveyTask) -> dict:
    """Read a field once for the first pass: its QC metrics and, for an illumination candidate,
    each channel block-averaged (``thumbnail``, all the illumination estimate needs of it)."""
    spec, config = task.spec, task.config
    row = {"Metadata_FieldId": spec.field_id, "Metadata_Plate": spec.plate}
    try:
        planes = read_field(spec, config.max_projection, config.short_stacks)
        row.update(field_qc_metrics(planes))
        row["error"] = ""
    except InputError as exc:
        if config.on_error == "raise":
            raise
        row["error"] = str(exc)
        return row
    if task.thumbnail is not None:
        small = {channel: downsampled_field(image, config.illumination.downsample) for channel, image in planes.items()}
        with atomic_file(task.thumbnail) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **small)
    return row


def _illumination_task(task: tuple[list[Path], str, tuple[int, int], IlluminationConfig, Path]) -> str:
    thumbnails, channel, shape, config, path = task
    stack = []
    for thumbnail in thumbnails:
        with np.load(thumbnail, allow_pickle=False) as data:
            stack.append(data[channel])
    write_tiff(path, illumination_from_downsampled(stack, shape, config.sigma, config.downsample))
    return str(path)


def _apply_each(function, items: list) -> list:
    """``function`` of each item of one task's group (several fields per task keep a cluster's cost
    per task small against the work)."""
    return [function(item) for item in items]


def _grouped(items: list, per_task: int | str, workers: int) -> list[list]:
    """``items`` in consecutive groups: ``per_task`` each, or (auto) up to 8 while every worker
    still gets at least 4 groups."""
    size = per_task if per_task != "auto" else max(1, min(8, len(items) // (4 * max(1, workers))))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _process_field_task(task: _FieldTask) -> dict:
    spec, config, work_dir = task.spec, task.config, task.work_dir
    try:
        planes = read_field(spec, config.max_projection, config.short_stacks)
        illumination = {c: read_image(p, ndim=(2,)) for c, p in task.illumination.items()}
        result = process_field(planes, config, illumination, task.scales)
    except InputError as exc:
        if config.on_error == "raise":
            raise
        return {"Metadata_FieldId": spec.field_id, "n_cells": 0, "error": str(exc)}
    if result.nuclei is not None:
        label_dtype = np.uint16 if max(result.nuclei.max(), result.cells.max()) < 2**16 else np.uint32
        write_tiff(work_dir / "labels" / f"{spec.field_id}_nuclei.tiff", result.nuclei.astype(label_dtype))
        write_tiff(work_dir / "labels" / f"{spec.field_id}_cells.tiff", result.cells.astype(label_dtype))
    _write_field_crops(work_dir / "fields" / spec.field_id, spec, result.crops, task.key)
    return {"Metadata_FieldId": spec.field_id, "n_cells": len(result.crops.table), "error": ""}


def _field_key(fingerprint: str, illumination: dict[str, Path], scales: dict[str, float]) -> str:
    """What a field's result depends on beside the (fixed) config: its files (``fingerprint``), the
    illumination estimates (whose names carry their own inputs) and the plate scales."""
    parts = [fingerprint, *sorted(p.name for p in illumination.values()), repr(sorted(scales.items()))]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def _write_field_crops(target: Path, spec: FieldSpec, crops: CropResult, key: str) -> None:
    metadata = {k: v for k, v in spec.metadata.items() if k.startswith("Metadata_")}
    table = crops.table.assign(**{k: [v] * len(crops.table) for k, v in metadata.items()})
    ordered = [*metadata, *[c for c in crops.table.columns if c not in metadata]]
    tmp = temporary_sibling(target)
    try:
        np.savez(tmp / "crops.npz", images=crops.images, masks=crops.masks)
        table[ordered].to_parquet(tmp / "cells.parquet", index=False)
        (tmp / "key.txt").write_text(key)
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
    LockedError
        Another process is preparing the same output (``<out>.lock`` names it).
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    start = time.perf_counter()
    config = config or PrepareConfig()
    manifest, out = Path(manifest), Path(out)
    with output_lock(out):
        return _prepare_locked(manifest, out, config, workers, scheduler, overwrite, restart, progress, start)


def _prepare_locked(manifest: Path, out: Path, config: PrepareConfig, workers: int, scheduler: str | None,
                    overwrite: bool, restart: bool, progress: bool, start: float) -> PrepareSummary:
    refuse_existing(out, overwrite)
    fields = read_manifest(manifest, config.channels, missing_files=config.on_error == "skip")
    channels = list(fields[0].files)
    config = config.resolve_channels(channels, str(manifest))
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
    fingerprints = {f.field_id: f.fingerprint() for f in fields}  # the files' state, taken once per session
    candidates = illumination_candidates(fields, config.illumination)
    qc = _qc_pass(fields, fingerprints, candidates, config, work_dir, client, progress)
    ok = set(qc.loc[qc["status"] == "ok", "Metadata_FieldId"])
    passing = [f for f in fields if f.field_id in ok]
    illumination = _illumination_pass(candidates, passing, fingerprints, qc, channels, config, work_dir, client,
                                      progress)
    scales = plate_scales(qc[qc["status"] == "ok"], channels, config.normalize)
    tasks = [_FieldTask(f, config, work_dir, illumination.get(f.field_id, {}), scales.get(f.plate, {}),
                        _field_key(fingerprints[f.field_id], illumination.get(f.field_id, {}), scales.get(f.plate, {})))
             for f in passing]
    done = {task.spec.field_id for task in tasks if _finished(work_dir / "fields" / task.spec.field_id, task.key)}
    if resumed and done:
        logger.info("resuming: %d of %d fields already processed", len(done), len(passing))
    todo = [task for task in tasks if task.spec.field_id not in done]
    outcomes = {r["Metadata_FieldId"]: r for r in _run_grouped(_process_field_task, todo, config, client, progress,
                                                                 "fields")}
    outcomes |= {field_id: {"Metadata_FieldId": field_id, "error": "",
                            "n_cells": pq.read_metadata(work_dir / "fields" / field_id / "cells.parquet").num_rows}
                 for field_id in done}
    qc = _record_outcomes(qc, outcomes)
    write_table(qc, work_dir / "qc.csv")
    n_cells = _assemble(passing, channels, config, manifest, out, work_dir, qc, progress)
    failed = qc[qc["status"] == "qc_failed"]
    summary = PrepareSummary(
        store=out, n_fields=len(fields), n_qc_failed=len(failed), n_errors=int((qc["status"] == "error").sum()),
        n_cells=n_cells, seconds=time.perf_counter() - start, resumed_fields=len(done),
        qc_failures=dict(zip(failed["Metadata_FieldId"], failed["reason"])), unit="tiles" if config.tiles else "cells",
    )
    logger.info(summary.line())
    return summary


def _run_grouped(function, items: list, config: PrepareConfig, client, progress: bool, desc: str) -> Iterator:
    """``function`` of every item, items grouped per task (``fields_per_task``); results in
    completion order, the progress bar counting tasks."""
    groups = _grouped(items, config.fields_per_task, worker_count(client))
    for _, results in run_parallel(partial(_apply_each, function), groups, client, progress, desc):
        yield from results


def _finished(field_dir: Path, key: str) -> bool:
    """Whether ``field_dir`` holds the result of a field with this key (same files and inputs)."""
    saved = field_dir / "key.txt"
    return saved.is_file() and saved.read_text() == key


def _thumbnail(work_dir: Path, field_id: str, fingerprint: str) -> Path:
    return work_dir / "thumbnails" / f"{field_id}_{fingerprint[:12]}.npz"


def illumination_candidates(fields: Sequence[FieldSpec], config: IlluminationConfig,
                            seed: int = 0) -> dict[str, list[str]]:
    """Per plate, the ids of the fields whose block-averaged planes the first pass keeps for the
    illumination estimate, in sample order: a seeded random sample of twice ``max_fields`` (all of
    a smaller plate), so that the disk they take does not grow with the screen. The estimate uses
    the first ``max_fields`` of them that pass QC. Empty when illumination correction is off."""
    if not config.enabled:
        return {}
    plates: dict[str, list[str]] = {}
    for spec in sorted(fields, key=lambda f: f.field_id):  # the manifest's row order does not matter
        plates.setdefault(spec.plate, []).append(spec.field_id)
    rng = np.random.default_rng(seed)
    return {plate: [plates[plate][i] for i in rng.permutation(len(plates[plate]))[:2 * config.max_fields]]
            for plate in sorted(plates)}


def _qc_metrics(fields, fingerprints, candidates, config, work_dir, client, progress) -> pd.DataFrame:
    """Per-field QC metrics in manifest order, measured in the first pass (with the illumination
    candidates' thumbnails); those of a field whose files did not change since a previous session
    are reused (by field id and fingerprint, and the thumbnail when it is a candidate)."""
    saved = work_dir / "qc_metrics.parquet"
    cached = pd.read_parquet(saved).set_index("Metadata_FieldId") if saved.is_file() else pd.DataFrame()
    sampled = {field_id for ids in candidates.values() for field_id in ids}
    thumbnails = {f.field_id: _thumbnail(work_dir, f.field_id, fingerprints[f.field_id]) for f in fields
                  if f.field_id in sampled}
    reusable = {field_id for field_id, fingerprint in fingerprints.items()
                if field_id in cached.index and cached.at[field_id, "fingerprint"] == fingerprint
                and (field_id not in thumbnails or thumbnails[field_id].is_file())}
    tasks = [_SurveyTask(f, config, thumbnails.get(f.field_id)) for f in fields if f.field_id not in reusable]
    measured = {row["Metadata_FieldId"]: row for row in _run_grouped(_survey_field, tasks, config, client, progress,
                                                                       "QC")}
    rows = [{**measured[f.field_id], "fingerprint": fingerprints[f.field_id]} if f.field_id in measured
            else {"Metadata_FieldId": f.field_id, **cached.loc[f.field_id].to_dict()} for f in fields]
    metrics = pd.DataFrame(rows)
    metrics["error"] = metrics["error"].fillna("")
    write_table(metrics, saved)
    return metrics


def _qc_pass(fields, fingerprints, candidates, config, work_dir, client, progress) -> pd.DataFrame:
    """QC metrics with each field's ``status`` (ok, qc_failed, error) and ``reason``."""
    qc = _qc_metrics(fields, fingerprints, candidates, config, work_dir, client, progress)
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
            min_contrast=config.nuclei.min_contrast, contrast_channel=config.nuclei.channel,
        )
        failed = reasons[reasons != ""]
        qc.loc[failed.index, "status"] = "qc_failed"
        qc.loc[failed.index, "reason"] = failed
        for field_id, reason in zip(qc.loc[failed.index, "Metadata_FieldId"], failed):
            logger.warning("field %s skipped: %s", field_id, reason)
    for field_id, reason in zip(qc.loc[errors, "Metadata_FieldId"], qc.loc[errors, "reason"]):
        logger.warning("field %s skipped: %s", field_id, reason)
    return qc.drop(columns=["error", "fingerprint"])


def _illumination_pass(candidates, passing, fingerprints, qc, channels, config, work_dir, client,
                       progress) -> dict[str, dict[str, Path]]:
    """The illumination estimate of each passing field, by field id: one per plate, field size and
    channel, from up to ``max_fields`` of that group's passing ``candidates`` (per plate, in sample
    order, see :func:`illumination_candidates`); a file name carries a digest of the
    fields it was estimated from, so a changed group is estimated again."""
    if not config.illumination.enabled:
        return {}
    sizes = qc.set_index("Metadata_FieldId").loc[[s.field_id for s in passing], ["height", "width"]].astype(int)
    groups: dict[tuple[str, int, int], list[FieldSpec]] = {}
    for spec in passing:
        height, width = sizes.loc[spec.field_id]
        groups.setdefault((spec.plate, height, width), []).append(spec)
    several_sizes = {plate for plate, *_ in groups if sum(key[0] == plate for key in groups) > 1}
    result: dict[str, dict[str, Path]] = {}
    tasks = []
    for (plate, height, width), specs in sorted(groups.items()):
        label = f"plate {plate or '<none>'}" + (f", {height} x {width} px fields" if plate in several_sizes else "")
        order = {field_id: i for i, field_id in enumerate(candidates.get(plate, []))}
        usable = sorted((s for s in specs if s.field_id in order), key=lambda s: order[s.field_id])
        if len(usable) < config.illumination.min_fields:
            logger.warning("%s: %d passing field(s) < %d, no illumination correction", label, len(usable),
                           config.illumination.min_fields)
            continue
        sample = usable[:config.illumination.max_fields]
        digest = hashlib.sha1("|".join(fingerprints[s.field_id] for s in sample).encode()).hexdigest()[:12]
        paths = {}
        for channel in channels:
            path = work_dir / "illumination" / f"{plate or 'all'}_{height}x{width}_{channel}_{digest}.tiff"
            paths[channel] = path
            if not path.is_file():
                thumbnails = [_thumbnail(work_dir, s.field_id, fingerprints[s.field_id]) for s in sample]
                tasks.append((thumbnails, channel, (height, width), config.illumination, path))
        result |= {spec.field_id: paths for spec in specs}
    for _ in run_parallel(_illumination_task, tasks, client, progress, "illumination"):
        pass
    return result


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
        out, channels, (config.stored_size, config.stored_size), dtype=config.crops.dtype, with_masks=True,
        pixel_size_um=config.pixel_size_um, provenance=provenance, overwrite=True, build_dir=work_dir,
    ) as writer:
        for field_dir in tqdm(field_dirs, desc="assemble", unit="field", disable=not progress):
            with np.load(field_dir / "crops.npz", allow_pickle=False) as data:
                images, masks = data["images"], data["masks"]
            writer.append(images, pd.read_parquet(field_dir / "cells.parquet"), masks)
            n_cells += len(images)
        if n_cells == 0:
            raise InputError(f"{manifest}: no cells found in any of {len(passing)} field(s); check the nuclei settings")
        used = {f.field_id for f in passing}
        for label in (work_dir / "labels").glob("*.tiff"):  # fields dropped from the manifest since
            if label.name.rsplit("_", 1)[0] not in used:
                label.unlink()
    shutil.rmtree(out / "fields")  # only now that the store is complete under its name
    shutil.rmtree(out / "thumbnails", ignore_errors=True)
    (out / "qc_metrics.parquet").unlink(missing_ok=True)
    return n_cells
