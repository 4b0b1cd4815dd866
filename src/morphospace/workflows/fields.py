"""``embed --manifest``: whole fields -> tiles -> tile embeddings, averaged per field and per sample.

The fields of a manifest go through ``prepare`` with the settings that made the run's training
tiles (read from its store's provenance: QC, illumination, background, denoising, tile size and
downscaling), then through the run's embedder. The output folder holds::

    tiles/            the tile store of the manifest's fields
    tiles.parquet     one row per tile: the manifest's Metadata_* columns, tile position, Embedding_*
    fields.parquet    one row per field: the mean over its tiles (Metadata_ObjectCount = tiles)
    samples.parquet   one row per sample (the ``by`` columns): the mean over its fields, so that
                      every field weighs the same (Metadata_ObjectCount = fields)

Metadata constant within a field or sample (donor, group...) is kept; ``evaluate clustering`` takes
``fields.parquet`` or ``samples.parquet`` as they are.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from morphospace.atomic import atomic_directory
from morphospace.errors import InputError
from morphospace.features.profiles import aggregate_profiles
from morphospace.io.manifest import read_manifest
from morphospace.io.store import CropStore
from morphospace.io.tables import read_table, require_columns, write_table
from morphospace.models.run import load_run
from morphospace.workflows.latent import embed_with
from morphospace.workflows.prepare import PrepareConfig, prepare

__all__ = ["FieldEmbedSummary", "tile_settings", "embed_fields"]

logger = logging.getLogger(__name__)

FIELD = "Metadata_FieldId"


@dataclass
class FieldEmbedSummary:
    """What :func:`embed_fields` wrote."""

    out: Path
    n_tiles: int
    n_fields: int
    n_samples: int
    dimensions: int
    seconds: float

    def line(self) -> str:
        return (f"embedded {self.n_tiles} tiles of {self.n_fields} fields ({self.n_samples} samples) into "
                f"{self.dimensions} dimensions in {self.seconds:.1f} s -> {self.out}")


def tile_settings(store: CropStore) -> PrepareConfig:
    """The ``prepare`` settings that cut ``store``'s tiles; InputError when it holds no tiles."""
    provenance = store.info.get("provenance") or {}
    config = provenance.get("config") or {}
    if provenance.get("pipeline") != "prepare" or not config.get("tiles"):
        raise InputError(f"{store.path}: the run's training store holds no whole-field tiles (made by prepare with "
                         "tiles set, e.g. --config prepare_fields); embed --manifest needs a run trained on tiles")
    return PrepareConfig.model_validate(config)


def _sample_columns(run, by: Sequence[str] | None) -> list[str]:
    if by:
        return list(by)
    if run.config.data.split.by:
        return [run.config.data.split.by]
    raise InputError(f"{run.path}: the run's split has no group column; give the sample column(s) with --by")


def embed_fields(run_dir: str | os.PathLike, manifest: str | os.PathLike, out: str | os.PathLike,
                 by: Sequence[str] | None = None, workers: int = 1, batch_size: int = 256, overwrite: bool = False,
                 progress: bool = True) -> FieldEmbedSummary:
    """Embed the fields of ``manifest`` with the run at ``run_dir`` into the folder ``out`` (see the
    module doc); samples are the ``by`` columns (default: the run's ``data.split.by``, the column
    that kept samples apart in training). The folder appears only when complete.

    Raises InputError when the run was not trained on tiles or the manifest lacks a ``by`` column;
    FileExistsError when ``out`` exists and ``overwrite`` is False.
    """
    start = time.perf_counter()
    run = load_run(run_dir, "embed")
    config = tile_settings(CropStore(run.config.data.store))
    samples_by = _sample_columns(run, by)
    metadata = pd.DataFrame([spec.metadata for spec in read_manifest(manifest)])
    require_columns(metadata, samples_by, f"{manifest} (the sample columns, --by)")
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as root:
        prepare(manifest, root / "tiles", config, workers=workers, progress=progress)
        embed_with(run, root / "tiles", root / "tiles.parquet", batch_size=batch_size, progress=progress)
        tiles = read_table(root / "tiles.parquet")
        fields = aggregate_profiles(tiles, [FIELD], "mean")
        samples = aggregate_profiles(fields.drop(columns="Metadata_ObjectCount"), samples_by, "mean")
        write_table(fields, root / "fields.parquet")
        write_table(samples, root / "samples.parquet")
    dimensions = len([c for c in tiles.columns if c.startswith("Embedding_")])
    summary = FieldEmbedSummary(out, len(tiles), len(fields), len(samples), dimensions, time.perf_counter() - start)
    logger.info(summary.line())
    return summary
