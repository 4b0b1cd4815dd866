"""``features`` and ``profiles``: CellProfiler measurements of a crop store, and profiles from any
feature or embedding table.

``features`` writes ``OUT`` (Parquet: the store's ``Metadata_*`` columns, ``Metadata_StoreIndex``,
then ``<Object>_<Measurement>_<Channel>`` features) and ``OUT.json`` beside it (config, intensity
scale, counts, and every feature with NaN values and how many). ``profiles`` writes the profile
table and ``OUT.json`` with its config.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from morphospace.errors import InputError
from morphospace.features.cellprofiler import FeaturesConfig, feature_columns, masks_by_segmentation, measure_crops
from morphospace.atomic import refuse_existing, write_text_atomic
from morphospace.io.store import CropStore
from morphospace.io.bbbc021 import annotate_bbbc021
from morphospace.io.tables import read_table, write_table
from morphospace.features.profiles import ProfilesConfig, build_profiles
from morphospace.parallel import compute_context, run_parallel

__all__ = ["FeaturesSummary", "extract_features", "intensity_scale", "make_profiles", "cellprofiler_metadata"]

logger = logging.getLogger(__name__)

_SCALE_SAMPLE = 1000


@dataclass
class FeaturesSummary:
    """What a ``features`` run produced."""

    out: Path
    n_cells: int
    n_features: int
    seconds: float
    nan_features: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (f"measured {self.n_features} features of {self.n_cells} cells in {self.seconds:.1f} s "
                f"({len(self.nan_features)} features have NaN values, listed in {self.out}.json) -> {self.out}")


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


def _measure_chunk(rows: np.ndarray, store_path: str, channels: list[str], scale: list[float],
                   config: FeaturesConfig) -> pd.DataFrame:
    store = CropStore(store_path)
    images = store.read(rows, channels).astype(np.float32)
    images = np.clip(images / np.asarray(scale, np.float32)[None, :, None, None], 0, 1)
    if store.masks is not None:
        masks = store.read_masks(rows)
    else:
        all_images = store.read(rows).astype(np.float32)
        masks = masks_by_segmentation(all_images, store.channels, config.nucleus_channel, config.cytoplasm_channels)
    table = measure_crops(images, masks, channels, config.feature_set, config.objects)
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

    Crops are measured in chunks of ``config.chunk_cells``, in parallel on ``workers`` processes
    (a local dask cluster) or an existing dask ``scheduler``. Stores without masks are segmented
    crop by crop (nucleus nearest the centre and its cell).

    Raises
    ------
    InputError
        A configured channel is not in the store, or the store lacks the nucleus channel needed
        to segment crops without masks.
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
    if store.masks is None and config.nucleus_channel not in store.channels:
        raise InputError(f"{store.path}: has no masks and no '{config.nucleus_channel}' channel to segment crops "
                         "(set nucleus_channel)")
    scale = config.intensity_scale or intensity_scale(store, channels)
    if len(scale) != len(channels):
        raise InputError(f"config key 'intensity_scale' has {len(scale)} values for {len(channels)} channels")
    chunks = [np.arange(s, min(s + config.chunk_cells, len(store))) for s in range(0, len(store), config.chunk_cells)]
    task = partial(_measure_chunk, store_path=str(store.path), channels=channels, scale=scale, config=config)
    parts: list[pd.DataFrame | None] = [None] * len(chunks)
    with compute_context(workers, scheduler) as client:
        for position, table in run_parallel(task, chunks, client, progress, "features"):
            parts[position] = table
    features = pd.concat(parts, ignore_index=True)
    table = pd.concat([store.cells.reset_index(drop=True), features], axis=1)
    nan_counts = features[feature_columns(features)].isna().sum()
    nan_features = {k: int(v) for k, v in nan_counts[nan_counts > 0].sort_values(ascending=False).items()}
    _write(table, out, {
        "store": str(store.path.resolve()), "config": config.to_dict(), "channels": channels,
        "intensity_scale": scale, "n_cells": len(table), "n_features": len(feature_columns(features)),
        "nan_features": nan_features,
    })
    if nan_features:
        logger.warning("%d feature(s) have NaN values (e.g. %s: %d of %d cells); kept, listed in %s.json",
                       len(nan_features), *next(iter(nan_features.items())), len(table), out)
    summary = FeaturesSummary(out, len(table), len(feature_columns(features)), time.perf_counter() - start,
                              nan_features)
    logger.info(summary.line())
    return summary


def _write(table: pd.DataFrame, out: Path, report: dict) -> None:
    write_table(table, out)
    write_text_atomic(out.with_name(out.name + ".json"), json.dumps(report, indent=2))


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
    official BBBC021 tables first.
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
    profiles = build_profiles(table, config, source or "the table")
    if out is not None:
        out = Path(out)
        write_table(profiles, out)
        report = {"source": source,
                  "config": config.to_dict(), "rows": len(profiles), "features": len(feature_columns(profiles)),
                  "bbbc021_tables": str(bbbc021_dir) if bbbc021_dir else None}
        write_text_atomic(out.with_name(out.name + ".json"), json.dumps(report, indent=2))
        logger.info("wrote %d profiles with %d features -> %s", len(profiles), len(feature_columns(profiles)), out)
    return profiles
