"""``embed``, ``generate`` and ``explore``: use a trained run of a family that supports them.

- :func:`embed_store`: the module's vectors for every crop of a store -> ``embeddings.parquet``
  (the store's ``Metadata_*`` columns, ``Metadata_StoreIndex``, then ``Embedding_000`` ...); the
  module's ``embed_batch`` sees the whole batch (image and conditions) when it has one, else
  ``embed`` sees the image.
- :func:`generate`: sample images and a grid figure.
- :func:`explore_interpolate`, :func:`explore_algebra`, :func:`explore_traverse`: figures in the
  run's ``figures/`` folder.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from morphospace.atomic import refuse_existing, write_npz_atomic
from morphospace.data.dataset import CropDataModule
from morphospace.errors import InputError
from morphospace.explore.figures import save_figure
from morphospace.explore.latent import (
    apply_attribute, attribute_vector, image_rows_figure, interpolate, quick_measures, traverse,
)
from morphospace.explore.samples import write_sample_grid
from morphospace.io.store import CropStore
from morphospace.io.tables import write_table
from morphospace.models.base import GenerativeModel, to_unit_range
from morphospace.models.run import Run, load_run

__all__ = [
    "EmbedSummary", "embed_store", "embed_with", "generate", "explore_interpolate", "explore_algebra",
    "explore_traverse",
]

logger = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    """What an embedding pass produced."""

    out: Path
    n_cells: int
    dimensions: int
    seconds: float

    def line(self) -> str:
        return (f"embedded {self.n_cells} cells into {self.dimensions} dimensions in {self.seconds:.1f} s "
                f"({self.n_cells / max(self.seconds, 1e-9):.0f} cells/s) -> {self.out}")


def _check_crop_size(run_dir: Path, data: CropDataModule, store: CropStore) -> None:
    trained = tuple(data.crop_shape)
    if data.config.crop_size is None and tuple(store.crop_shape) != trained:
        raise InputError(f"{store.path}: crops are {store.crop_shape}, the run {run_dir.name} was trained on "
                         f"{trained}; set data.crop_size when training to accept other sizes")


def _embed(module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return module.embed_batch(batch) if hasattr(module, "embed_batch") else module.embed(batch["image"])


def embed_store(run_dir: str | os.PathLike, store_path: str | os.PathLike | None = None,
                out: str | os.PathLike | None = None, batch_size: int = 256, overwrite: bool = False,
                progress: bool = True) -> EmbedSummary:
    """Embed every crop of ``store_path`` (default: the run's training store) with the run's module."""
    run = load_run(run_dir, "embed")
    out = Path(out) if out is not None else Path(run_dir) / "embeddings.parquet"
    refuse_existing(out, overwrite)
    return embed_with(run, store_path, out, batch_size, progress)


def embed_with(run: Run, store_path: str | os.PathLike | None, out: Path, batch_size: int = 256,
               progress: bool = True) -> EmbedSummary:
    """:func:`embed_store` with a run already loaded, writing ``out`` (over anything there)."""
    store = CropStore(store_path or run.config.data.store)
    dataset = run.data.dataset_for(store, conditions=list(run.family.batch_requirements(run.config.model)))
    _check_crop_size(run.path, run.data, store)
    start = time.perf_counter()
    vectors = []
    with torch.no_grad():
        for first in tqdm(range(0, len(dataset), batch_size), desc="embed", unit="batch", disable=not progress):
            batch = dataset.batch(np.arange(first, min(first + batch_size, len(dataset))))
            vectors.append(_embed(run.module, batch).float().cpu().numpy())
    matrix = np.concatenate(vectors)
    seconds = time.perf_counter() - start
    columns = [f"Embedding_{i:03d}" for i in range(matrix.shape[1])]
    table = pd.concat([store.cells.reset_index(drop=True).assign(Metadata_StoreIndex=np.arange(len(store))),
                       pd.DataFrame(matrix, columns=columns)], axis=1)
    write_table(table, out)
    summary = EmbedSummary(out, len(table), matrix.shape[1], seconds)
    logger.info(summary.line())
    return summary


def figures_dir(run_dir: str | os.PathLike) -> Path:
    """The run's ``figures/`` folder, created when missing."""
    path = Path(run_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _channels(data: CropDataModule) -> list[str]:
    return data.image_channels


def generate(run_dir: str | os.PathLike, n: int = 64, seed: int = 0, columns: int = 8,
             out: str | os.PathLike | None = None, npz: str | os.PathLike | None = None) -> tuple[np.ndarray, Path]:
    """``n`` samples from the prior (seeded) as (n, C, H, W) in [0, 1], and their grid PNG
    (default ``figures/generated_seed<seed>.png``); with ``npz`` the samples are also saved there
    (array ``images``)."""
    run = load_run(run_dir, "generate")
    images = run.module.sample(n, torch.Generator().manual_seed(seed))
    path = Path(out) if out is not None else figures_dir(run_dir) / f"generated_seed{seed}.png"
    write_sample_grid(path, images, _channels(run.data), columns)
    unit = to_unit_range(images)
    if npz is not None:
        write_npz_atomic(npz, images=unit)
    return unit, path


def _real_latents(model: GenerativeModel, data: CropDataModule, indices: Sequence[int]) -> torch.Tensor:
    images = data.dataset_for(data.store, np.asarray(indices), conditions=()).load(np.arange(len(indices)))
    return model.encode_latent(images).float().cpu()


def explore_interpolate(run_dir: str | os.PathLike, seeds: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 7),
                        cells: Sequence[int] | None = None, steps: int = 8, spherical: bool = True) -> Path:
    """Rows of transitions between pairs of noise vectors (from ``seeds``, consecutive pairs) or,
    with ``cells``, between pairs of real cells of the run's store (their latents: the encoder's
    mean for VAEs, z projection for GANs). Writes ``figures/interpolation_<kind>.png``."""
    run = load_run(run_dir, "explore")
    model, data = run.module, run.data
    if cells is not None:
        if len(cells) < 2 or len(cells) % 2:
            raise InputError("interpolation between cells needs an even number of store indices")
        latents = _real_latents(model, data, cells)
        kind = "cells"
    else:
        if len(seeds) < 2 or len(seeds) % 2:
            raise InputError("interpolation between noise vectors needs an even number of seeds")
        latents = torch.stack([torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(s))
                               for s in seeds])
        kind = "noise"
    rows = []
    with torch.no_grad():
        for a, b in zip(latents[0::2], latents[1::2]):
            rows.append(to_unit_range(model.decode(interpolate(a, b, steps, spherical))))
    fig = image_rows_figure(np.stack(rows), _channels(data), title=f"Interpolation between {kind} (left to right)")
    return save_figure(fig, figures_dir(run_dir) / f"interpolation_{kind}.png")


def explore_algebra(run_dir: str | os.PathLike, attribute: str, quantile: float = 0.2, n_cells: int = 400,
                    n_base: int = 4, scales: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0), seed: int = 0,
                    query_with: str | None = None, query_without: str | None = None) -> Path:
    """Vector algebra on real cells of the run's store: the latent direction from cells without an
    attribute to cells with it, added to other cells.

    The groups are the top and bottom ``quantile`` of ``attribute`` — a cell-table column or a
    quick measure (``NucleusArea``, ``Mean_<Channel>``) — among ``n_cells`` sampled cells, or two
    pandas queries on the cell table (``query_with``, ``query_without``, e.g. compound == taxol vs
    DMSO). ``n_base`` cells from the middle are shifted by ``scales`` times the vector. Writes
    ``figures/algebra_<attribute>.png``.
    """
    run = load_run(run_dir, "explore")
    model, data = run.module, run.data
    store = data.store
    rng = np.random.default_rng(seed)
    candidates = data.indices("all")
    picks = np.sort(rng.choice(candidates, min(n_cells, len(candidates)), replace=False))
    table = store.cells.iloc[picks].reset_index(drop=True)
    unit = to_unit_range(data.dataset_for(store, picks, conditions=()).load(np.arange(len(picks))))
    masks = store.read_masks(picks) if store.masks is not None else None
    table = pd.concat([table, quick_measures(unit, _channels(data), masks)], axis=1)
    with_attribute, without_attribute = _groups(table, attribute, quantile, query_with, query_without)
    latents = _real_latents(model, data, picks)
    vector = attribute_vector(latents, with_attribute, without_attribute)
    middle = np.flatnonzero(~with_attribute & ~without_attribute)
    base = rng.choice(middle if len(middle) >= n_base else np.arange(len(picks)), n_base, replace=False)
    images = to_unit_range(apply_attribute(model, latents[torch.as_tensor(base)], vector, scales))
    groups = (f"({query_with}) - ({query_without})" if query_with
              else f"top {quantile:.0%} - bottom {quantile:.0%} of {attribute}")
    fig = image_rows_figure(images, _channels(data), column_labels=[f"+{s:g} v" for s in scales],
                            title=f"Vector algebra: v = mean latent of {groups}")
    return save_figure(fig, figures_dir(run_dir) / f"algebra_{attribute.replace(' ', '_')}.png")


def _groups(table: pd.DataFrame, attribute: str, quantile: float, query_with: str | None,
            query_without: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the cells with and without the attribute (disjoint)."""
    if query_with or query_without:
        if not (query_with and query_without):
            raise InputError("vector algebra by queries needs both groups (--with and --without)")
        try:
            with_mask, without_mask = table.eval(query_with).to_numpy(bool), table.eval(query_without).to_numpy(bool)
        except Exception as exc:  # pandas raises many types for a bad query
            raise InputError(f"bad group query: {exc}") from None
        return with_mask, without_mask & ~with_mask
    if attribute not in table.columns:
        raise InputError(f"attribute {attribute!r} is neither a cell-table column nor a quick measure "
                         f"({[c for c in table.columns if not c.startswith('Metadata_')]})")
    if not 0 < quantile <= 0.5:
        raise InputError(f"quantile must lie in (0, 0.5], got {quantile}")
    values = pd.to_numeric(table[attribute], errors="coerce").to_numpy(dtype=float)
    known = np.flatnonzero(np.isfinite(values))
    order = known[np.argsort(values[known], kind="stable")]
    k = max(1, int(len(order) * quantile))
    with_mask, without_mask = np.zeros(len(table), bool), np.zeros(len(table), bool)
    with_mask[order[-k:]], without_mask[order[:k]] = True, True
    return with_mask, without_mask & ~with_mask


def explore_traverse(run_dir: str | os.PathLike, n_dims: int = 8, extent: float = 3.0, steps: int = 7) -> Path:
    """Latent traversals: each of the ``n_dims`` most informative dimensions (highest mean KL for a
    VAE, else the first) from -extent to +extent with the others at 0. Writes
    ``figures/traversal.png``."""
    run = load_run(run_dir, "explore")
    model, data = run.module, run.data
    kl = getattr(model, "kl_per_dimension", None)
    order = torch.argsort(kl, descending=True).tolist() if kl is not None else list(range(model.latent_dim))
    dims = order[: min(n_dims, model.latent_dim)]
    values = np.linspace(-extent, extent, steps)
    images = to_unit_range(traverse(model, dims, values))
    labels = [f"z{d}" + (f" ({float(kl[d]):.2f} nats)" if kl is not None else "") for d in dims]
    fig = image_rows_figure(images, _channels(data), row_labels=labels, column_labels=[f"{v:+.1f}" for v in values],
                            title="Latent traversals")
    return save_figure(fig, figures_dir(run_dir) / "traversal.png")
