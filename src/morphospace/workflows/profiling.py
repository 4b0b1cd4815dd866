"""``features`` and ``profiles``: CellProfiler measurements of a crop store, and profiles from any
feature or embedding table.

``features`` writes ``OUT`` (Parquet: the store's ``Metadata_*`` columns, ``Metadata_StoreIndex``,
then ``<Object>_<Measurement>_<Channel>`` features) and ``OUT.json`` beside it (config, nucleus
channel, the objects measured and why others were not, intensity scale, counts, every feature with
NaN values and how many, and the features dropped for being NaN in every cell). ``profiles`` writes
the profile table and ``OUT.json`` with its config (as applied to the table) and what it adapted.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from morphospace.errors import InputError
from morphospace.features.cellprofiler import (
    MOSAIC_CELLS, FeaturesConfig, feature_columns, masks_by_segmentation, measurable_objects, measure_crops,
    resolve_nucleus_channel,
)
from morphospace.atomic import refuse_existing, write_json_atomic
from morphospace.io.store import CropStore
from morphospace.io.bbbc021 import annotate_bbbc021
from morphospace.io.tables import read_table, write_table
from morphospace.features.profiles import ProfilesConfig, adapt_profiles_config, build_profiles, non_finite_fraction
from morphospace.parallel import compute_context, run_parallel, worker_count

__all__ = ["FeaturesSummary", "extract_features", "intensity_scale", "make_profiles", "cellprofiler_metadata"]

logger = logging.getLogger(__name__)

_SCALE_SAMPLE = 1000
WARM_UP_CELLS = 4
"""Crops measured untimed in this process first (imports and first-call costs), then measured again
with the first block; that block (:data:`~morphospace.features.cellprofiler.MOSAIC_CELLS` crops)
times a crop before the work is cut into tasks."""


@dataclass
class FeaturesSummary:
    """What a ``features`` run produced: the objects measured, those not measured (with why) and
    the features dropped for being NaN in every cell."""

    out: Path
    n_cells: int
    n_features: int
    seconds: float
    nan_features: dict[str, int] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)
    not_measured: dict[str, str] = field(default_factory=dict)
    dropped_features: list[str] = field(default_factory=list)

    def line(self) -> str:
        skipped = "".join(f"; {' and '.join(o for o, r in self.not_measured.items() if r == reason)} not measured: "
                          f"{reason}" for reason in dict.fromkeys(self.not_measured.values()))
        dropped = f", {len(self.dropped_features)} NaN in every cell dropped" if self.dropped_features else ""
        return (f"measured {self.n_features} {'/'.join(self.objects)} features of {self.n_cells} cells in "
                f"{self.seconds:.1f} s{skipped} ({len(self.nan_features)} features have NaN values{dropped}; "
                f"listed in {self.out}.json) -> {self.out}")


def intensity_scale(store: CropStore, channels: list[str], seed: int = 0) -> list[float]:
    """Per-channel divisor mapping intensities to [0, 1]: the dtype maximum for integer stores, else
    the 99.9th percentile of up to 1,000 crops sampled with ``seed``."""
    dtype = store.images.dtype
    if dtype.kind == "u":
        return [float(np.iinfo(dtype).max)] * len(channels)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(store), min(len(store), _SCALE_SAMPLE), replace=False))
    crops = store.read(sample, channels)
    return [max(float(np.percentile(crops[:, c], 99.9)), 1e-12) for c in range(len(channels))]


def _mask_kind(store: CropStore, seed: int = 0) -> str | None:
    """None for a store without masks; ``"cells"`` when the masks of up to 1,000 crops sampled with
    ``seed`` mark the rest of a cell (value 2) anywhere, else ``"nuclei"``."""
    if store.masks is None:
        return None
    sample = np.sort(np.random.default_rng(seed).choice(len(store), min(len(store), _SCALE_SAMPLE), replace=False))
    return "cells" if (store.read_masks(sample) == 2).any() else "nuclei"


def task_cells(seconds_per_cell: float, cells: int, workers: int, store_chunk: int, task_seconds: float = 5.0,
               tasks_per_worker: int = 4) -> int:
    """Crops per task: about ``task_seconds`` of work (long against a cluster's cost per task), but
    small enough for ``tasks_per_worker`` tasks on each worker (so that none waits idle at the
    end), a whole number of the store's chunks of ``store_chunk`` crops when at least one (so
    that no chunk is read by two tasks), and always whole blocks of
    :data:`~morphospace.features.cellprofiler.MOSAIC_CELLS` (so that the features do not depend on
    the task size, which comes from timing).

    >>> task_cells(0.01, 10_000, 2, 64)  # 500 crops make 5 s; 10,000 / 8 = 1,250 allow it
    512
    >>> task_cells(0.2, 10_000, 2, 64)  # 25 crops make 5 s: less than a chunk, one block of 32
    32
    >>> task_cells(0.001, 1_000, 2, 64)  # 5,000 crops would make 5 s, but 4 tasks per worker need 125
    128
    """
    by_time = task_seconds / max(seconds_per_cell, 1e-9)
    by_balance = cells / max(1, workers * tasks_per_worker)
    size = max(1.0, min(by_time, by_balance))
    unit = store_chunk if size >= store_chunk else MOSAIC_CELLS
    return whole_blocks(max(1, round(size / unit)) * unit)


def task_edges(start: int, stop: int, size: int, workers: int, store_chunk: int) -> list[int]:
    """Edges of the tasks that measure crops ``start`` to ``stop``: tasks of ``size`` crops while
    many are left, then shorter ones, each at most 1 / (2 ``workers``) of the crops left (whole
    chunks of ``store_chunk`` while at least one, then whole blocks of
    :data:`~morphospace.features.cellprofiler.MOSAIC_CELLS`), so that the workers finish together
    instead of one waiting for the other's last long task. One worker gets tasks of ``size``
    throughout. Edges after the first fall on whole chunks where the task is at least one.

    >>> task_edges(32, 2048, 512, 2, 64)
    [32, 512, 896, 1152, 1344, 1472, 1600, 1664, 1728, 1792, 1856, 1888, 1920, 1952, 1984, 2016, 2048]
    >>> task_edges(32, 1000, 512, 1, 64)
    [32, 512, 1000]
    """
    edges = [start]
    while edges[-1] < stop:
        left = stop - edges[-1]
        share = left if workers <= 1 else left // (2 * workers)
        step = max(MOSAIC_CELLS, min(size, share))
        unit = store_chunk if step >= store_chunk else MOSAIC_CELLS
        end = stop if step >= left else max((edges[-1] + step) // unit * unit, edges[-1] + MOSAIC_CELLS)
        edges.append(min(stop, end))
    return edges


def whole_blocks(cells: int) -> int:
    """``cells`` rounded up to whole blocks of :data:`~morphospace.features.cellprofiler.MOSAIC_CELLS`.

    >>> whole_blocks(1), whole_blocks(32), whole_blocks(100)
    (32, 32, 128)
    """
    return -(-max(1, int(cells)) // MOSAIC_CELLS) * MOSAIC_CELLS


def _measure_chunk(rows: np.ndarray, store_path: str, channels: list[str], scale: list[float],
                   config: FeaturesConfig, nucleus_channel: str | None, objects: list[str]) -> pd.DataFrame:
    store = CropStore(store_path)
    images = store.read(rows, channels).astype(np.float32)
    images = np.clip(images / np.asarray(scale, np.float32)[None, :, None, None], 0, 1)
    if store.masks is not None:
        masks = store.read_masks(rows)
    else:
        all_images = store.read(rows).astype(np.float32)
        masks = masks_by_segmentation(all_images, store.channels, nucleus_channel, config.cytoplasm_channels)
    table = measure_crops(images, masks, channels, config.feature_set, objects)
    table.insert(0, "Metadata_StoreIndex", rows)
    return table


def extract_features(
    store_path: str | os.PathLike,
    out: str | os.PathLike,
    config: FeaturesConfig | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> FeaturesSummary:
    """Measure every crop of the store at ``store_path`` and write the feature table ``out``.

    The first block of crops (:data:`~morphospace.features.cellprofiler.MOSAIC_CELLS`) is measured
    here to time a crop (after an untimed warm-up on its first 4); the rest in tasks of
    ``config.chunk_cells`` crops (auto: about ``config.task_seconds`` of work, at least 4 tasks per
    worker, whole chunks of the store, see :func:`task_cells`), always in whole blocks, so that the
    numbers do not depend on the task size, the workers or the machine's load, in parallel on
    ``workers`` processes (a local dask cluster) or an existing dask ``scheduler``. Each task reads
    its crops from the store and writes its features to ``OUT.parts/`` (gathered in order, then
    removed), so a task run again after its worker died neither loses nor repeats a crop. Stores
    without masks are segmented crop by crop (nucleus nearest the centre and its cell) in the nucleus channel
    (``config.nucleus_channel``, ``auto``: see
    :func:`~morphospace.features.cellprofiler.resolve_nucleus_channel`). Cells and cytoplasm are
    measured only with cell masks or a cytoplasm channel (see
    :func:`~morphospace.features.cellprofiler.measurable_objects`); features NaN in every cell are
    dropped. The summary and ``out.json`` name what was measured and what was not, and why.

    Raises
    ------
    InputError
        A configured channel is not in the store, the nucleus channel of a store without masks is
        missing or cannot be told, or no feature could be measured in any crop.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    start = time.perf_counter()
    config = config or FeaturesConfig()
    store, out = CropStore(store_path), Path(out)
    refuse_existing(out, overwrite)
    channels = config.channels or store.channels
    missing = [c for c in channels if c not in store.channels]
    if missing:
        raise InputError(f"{store.path}: config key 'channels' names {missing}; the store has {store.channels}")
    masks = _mask_kind(store)
    nucleus_channel = None if masks else resolve_nucleus_channel(store.channels, config.nucleus_channel,
                                                                 str(store.path))
    objects, not_measured = measurable_objects(config.objects, store.channels, config.cytoplasm_channels, masks)
    scale = config.intensity_scale or intensity_scale(store, channels)
    if len(scale) != len(channels):
        raise InputError(f"config key 'intensity_scale' has {len(scale)} values for {len(channels)} channels")
    measure = partial(_measure_chunk, store_path=str(store.path), channels=channels, scale=scale, config=config,
                      nucleus_channel=nucleus_channel, objects=objects)
    features = _measure_in_parts(measure, len(store), store.images.chunks[0], config, out, workers, scheduler,
                                 progress)
    share = non_finite_fraction(features)
    dropped = list(share.index[share == 1])
    features = features.drop(columns=dropped)
    if not feature_columns(features):
        raise InputError(f"{store.path}: no feature could be measured: no {'/'.join(objects)} object in any crop"
                         + (f" (nuclei segmented in channel {nucleus_channel!r})" if nucleus_channel else ""))
    table = pd.concat([store.cells.reset_index(drop=True), features], axis=1)
    nan_counts = features[feature_columns(features)].isna().sum()
    nan_features = {k: int(v) for k, v in nan_counts[nan_counts > 0].sort_values(ascending=False).items()}
    summary = FeaturesSummary(out, len(table), len(feature_columns(features)), time.perf_counter() - start,
                              nan_features, objects, not_measured, dropped)
    _write(table, out, {
        "store": str(store.path.resolve()), "config": config.to_dict(), "channels": channels,
        "nucleus_channel": nucleus_channel, "objects": objects, "objects_not_measured": not_measured,
        "intensity_scale": scale, "n_cells": len(table), "n_features": summary.n_features,
        "nan_features": nan_features, "dropped_features": dropped,
        "dropped_features_reason": "NaN in every cell (the object or measurement is undefined in every crop)",
    })
    if nan_features:
        logger.warning("%d feature(s) have NaN values (e.g. %s: %d of %d cells); kept, listed in %s.json",
                       len(nan_features), *next(iter(nan_features.items())), len(table), out)
    if dropped:
        logger.warning("dropped %d feature(s) that are NaN in every cell: %s", len(dropped),
                       ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
    logger.info(summary.line())
    return summary


def _measure_part(task: tuple[int, np.ndarray], measure: Callable[[np.ndarray], pd.DataFrame], parts: str) -> int:
    """Measure one task's crops and write them as ``parts/part-<index>.parquet`` (atomically: a task
    run again after its worker died replaces, never duplicates); returns the row count."""
    index, rows = task
    table = measure(rows)
    write_table(table, Path(parts) / f"part-{index:06d}.parquet")
    return len(table)


def _probe(measure: Callable[[np.ndarray], pd.DataFrame], n_cells: int, part: Path) -> tuple[np.ndarray, float]:
    """Measure the first block of crops here into ``part``, after an untimed warm-up on its first
    few; return the block's rows and the seconds per crop."""
    probe = np.arange(min(MOSAIC_CELLS, n_cells))
    measure(probe[:WARM_UP_CELLS])
    start = time.perf_counter()
    table = measure(probe)
    seconds_per_cell = (time.perf_counter() - start) / max(1, len(probe))
    write_table(table, part)
    return probe, seconds_per_cell


def _measure_in_parts(measure: Callable[[np.ndarray], pd.DataFrame], n_cells: int, store_chunk: int,
                      config: FeaturesConfig, out: Path, workers: int, scheduler: str | None,
                      progress: bool) -> pd.DataFrame:
    """Every crop's features, in order: the first crops measured here to time them, the rest in tasks
    whose workers read the store and write Parquet parts beside ``out``, gathered at the end."""
    parts = out.with_name(out.name + ".parts")
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    try:
        with compute_context(workers, scheduler) as client:
            probe, seconds_per_cell = _probe(measure, n_cells, parts / f"part-{0:06d}.parquet")
            size = whole_blocks(config.chunk_cells) if config.chunk_cells != "auto" else task_cells(
                seconds_per_cell, n_cells - len(probe), worker_count(client), store_chunk, config.task_seconds)
            edges = task_edges(len(probe), n_cells, size, worker_count(client), store_chunk)
            tasks = [(i + 1, np.arange(a, b)) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
            logger.info("features: %d crops in %d task(s) of %d (%.3f s per crop, timed on the first %d after a "
                        "warm-up)", n_cells, len(tasks) + 1, size, seconds_per_cell, len(probe))
            task = partial(_measure_part, measure=measure, parts=str(parts))
            for _ in run_parallel(task, tasks, client, progress, "features"):
                pass
        features = pd.concat([pd.read_parquet(p) for p in sorted(parts.glob("part-*.parquet"))], ignore_index=True)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    if not np.array_equal(features["Metadata_StoreIndex"].to_numpy(), np.arange(n_cells)):
        raise RuntimeError(f"{parts}: the measured parts do not cover the {n_cells} crops once each, in order")
    return features


def _write(table: pd.DataFrame, out: Path, report: dict) -> None:
    write_table(table, out)
    write_json_atomic(out.with_name(out.name + ".json"), report)


def cellprofiler_metadata(table: pd.DataFrame) -> pd.DataFrame:
    """Rename CellProfiler's ``Image_Metadata_<Name>`` columns to ``Metadata_<Name>`` (unless taken)."""
    renames = {c: c.removeprefix("Image_") for c in table.columns
               if c.startswith("Image_Metadata_") and c.removeprefix("Image_") not in table.columns}
    return table.rename(columns=renames)


def make_profiles(
    features: str | os.PathLike | pd.DataFrame,
    out: str | os.PathLike | None = None,
    config: ProfilesConfig | None = None,
    bbbc021_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Build profiles from a feature or embedding table (a path or a DataFrame) and write them to ``out``.

    ``bbbc021_dir`` annotates compound, concentration, batch and MoA by plate + well from the
    official BBBC021 tables first. ``out.json`` holds the config as applied to the table and a note
    for each setting adapted to it (see :func:`~morphospace.features.profiles.adapt_profiles_config`).
    """
    config = config or ProfilesConfig()
    if out is not None:
        refuse_existing(out, overwrite)
    source = None if isinstance(features, pd.DataFrame) else str(features)
    table = features if source is None else read_table(features)
    table = cellprofiler_metadata(table)
    if bbbc021_dir is not None:
        table.attrs["source"] = source or "table"
        table = annotate_bbbc021(table, bbbc021_dir)
    applied, notes = adapt_profiles_config(table, config, source or "the table")
    profiles = build_profiles(table, config, source or "the table")
    if out is not None:
        out = Path(out)
        write_table(profiles, out)
        report = {"source": source,
                  "config": applied.to_dict(), "adapted": notes, "rows": len(profiles),
                  "features": len(feature_columns(profiles)), "bbbc021_tables": str(bbbc021_dir) if bbbc021_dir else None}
        write_json_atomic(out.with_name(out.name + ".json"), report)
        logger.info("wrote %d profiles with %d features -> %s", len(profiles), len(feature_columns(profiles)), out)
    return profiles
