"""Use a trained CP2Image run: images from feature tables, single-feature sweeps and trajectories
between groups of cells in feature space.

Feature vectors travel in the run's standardised units: each feature minus its centre (the
training-split mean, or the control mean of the cell's plate), divided by its SD, exactly as the
run's feature condition encodes them
(:func:`encode_table`, :func:`decode_to_table`). Images come back as (N, C, H, W) float32 in
[0, 1]: the model's [-1, 1] output mapped linearly, i.e. the run's normalisation undone only as far
as its output range goes (not back to raw intensities).

- :func:`generate_from_table` / :func:`generate_images`: one image (or ``n_per_row``) per row of a
  feature table, or per group centroid; a grid PNG and an optional npz.
- :func:`explore_sweep`: one feature varied with the others held at real cells' values ->
  ``figures/sweep_<feature>.png`` and ``.npz`` (``images`` (R, S, C, H, W), ``values`` (S,)
  standardised, ``values_raw``, ``cells``).
- :func:`explore_trajectory`: a real cell moved between group centroids (or the centroids
  themselves) -> ``figures/trajectory_<slug>.png`` and ``.npz`` (``images`` (R, S, C, H, W),
  ``path`` (R, S, F) standardised, ``waypoints`` (R + 1, F), ``labels``, ``start_cell``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from morphospace.atomic import write_npz_atomic
from morphospace.data.conditions import STORE_INDEX, FeatureEncoder, encoder_from_dict
from morphospace.errors import InputError
from morphospace.explore.figures import crop_montage_figure, save_figure
from morphospace.explore.latent import image_rows_figure
from morphospace.io.store import CropStore
from morphospace.io.tables import read_table, require_columns
from morphospace.models.base import to_unit_range
from morphospace.models.cp2image import CP2Image
from morphospace.models.registry import read_run_config
from morphospace.workflows.latent import figures_dir
from morphospace.models.run import load_module
from morphospace.models.training import RunConfig

__all__ = ["feature_names", "encode_table", "decode_to_table", "generate_from_table", "generate_images",
           "explore_sweep", "explore_trajectory"]

_SHOWN_ROWS = 64
"""Most generated rows drawn in a grid figure (the npz holds them all)."""


@dataclass
class _Generator:
    """A loaded CP2Image run: its module, feature encoder and image channel names."""

    path: Path
    config: RunConfig
    module: CP2Image
    encoder: FeatureEncoder
    channels: list[str]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: missing; the run folder is incomplete")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: unreadable JSON ({exc})") from None


def _encoder_of(run_dir: Path, config: RunConfig) -> FeatureEncoder:
    if config.model.family != "cp2image":
        raise InputError(f"{run_dir}: a {config.model.family} run; feature-driven generation needs a cp2image run")
    name = config.model.condition
    saved = _read_json(run_dir / "conditions.json")
    if name not in saved:
        raise InputError(f"{run_dir / 'conditions.json'}: no fitted condition {name!r}")
    return encoder_from_dict(name, saved[name])


def _encoder(run_dir: str | os.PathLike) -> FeatureEncoder:
    run_dir = Path(run_dir)
    return _encoder_of(run_dir, read_run_config(run_dir))


def _load(run_dir: str | os.PathLike, verb: str) -> _Generator:
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    encoder = _encoder_of(run_dir, config)
    _, module = load_module(run_dir, verb)
    channels = _read_json(run_dir / "data.json")["batch"]["image"]["names"]
    return _Generator(run_dir, config, module, encoder, list(channels))


def feature_names(run_dir: str | os.PathLike) -> list[str]:
    """The feature columns the run was trained on, in the model's order."""
    return list(_encoder(run_dir).columns)


def encode_table(run_dir: str | os.PathLike, table: pd.DataFrame) -> np.ndarray:
    """Standardised features (N, F) float32 of a table holding the run's feature columns (NaN: the
    training mean); InputError naming the columns it lacks."""
    return _encoder(run_dir).standardize(table)


def decode_to_table(run_dir: str | os.PathLike, standardised: np.ndarray) -> pd.DataFrame:
    """Standardised features (N, F) back in the feature table's units, as a table of its columns."""
    encoder = _encoder(run_dir)
    standardised = np.atleast_2d(np.asarray(standardised))
    if standardised.shape[1] != len(encoder.columns):
        raise InputError(f"{standardised.shape[1]} values per row; the run has {len(encoder.columns)} features")
    return encoder.unstandardize(standardised)


def _generate(loaded: _Generator, standardised: np.ndarray, seed: int, batch_size: int = 256) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] of standardised features (N, F); the noise of all rows is drawn
    at once from ``seed``, so each row gets the same noise whatever ``batch_size``."""
    features = torch.as_tensor(np.asarray(standardised, np.float32))
    noise = torch.randn(len(features), loaded.module.cfg.noise_dim, generator=torch.Generator().manual_seed(seed))
    chunks = [to_unit_range(loaded.module.generate_from_features(features[i:i + batch_size],
                                                                 noise=noise[i:i + batch_size]))
              for i in range(0, len(features), batch_size)]
    shape = (0, *loaded.module.image_shape)
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(shape, np.float32)


def generate_from_table(run_dir: str | os.PathLike, table: pd.DataFrame, seed: int = 0,
                        batch_size: int = 256) -> np.ndarray:
    """One image per row of ``table`` (a feature table with the run's feature columns; missing
    columns: InputError naming them; NaN: the training mean), as (N, C, H, W) float32 in [0, 1]:
    the model's [-1, 1] output mapped linearly, the run's normalisation undone only that far. With
    noise (``model.noise_dim`` > 0) the noise of all rows comes from ``seed``."""
    loaded = _load(run_dir, "generate")
    return _generate(loaded, loaded.encoder.standardize(table), seed, batch_size)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+-]+", "_", text).strip("_")[:80] or "run"


def _group_centroids(table: pd.DataFrame, per: Sequence[str], standardised: np.ndarray
                     ) -> tuple[pd.DataFrame, np.ndarray]:
    """The groups of the ``per`` columns of ``table`` (a table of those columns, sorted) and the mean
    of each group's standardised features (G, F)."""
    require_columns(table, per, "the feature table (--per)")
    keys = table[list(per)].reset_index(drop=True)
    means = pd.DataFrame(standardised).groupby([keys[c] for c in per], sort=True).mean()
    return means.index.to_frame(index=False), means.to_numpy(np.float32)


def generate_images(run_dir: str | os.PathLike, features: str | os.PathLike, per: Sequence[str] | None = None,
                    n_per_row: int = 1, seed: int = 0, out: str | os.PathLike | None = None,
                    npz: str | os.PathLike | None = None) -> tuple[np.ndarray, Path]:
    """Images of the rows of the feature table ``features`` (or of the mean standardised features of each
    group of the ``per`` columns), ``n_per_row`` each (different noise when the model has some):
    returns (rows x n_per_row, C, H, W) in [0, 1] and the grid PNG (default
    ``figures/from_features_<table>.png``, at most 64 rows drawn). ``npz`` gets ``images``, ``row``
    (the table or group row of each image) and the rows' ``Metadata_*`` / ``per`` columns."""
    if n_per_row < 1:
        raise InputError(f"n_per_row must be at least 1, got {n_per_row}")
    loaded = _load(run_dir, "generate")
    table = read_table(features)
    standardised = loaded.encoder.standardize(table)
    if per:
        table, standardised = _group_centroids(table, per, standardised)
        labels = table[list(per)].astype(str).agg(", ".join, axis=1).tolist()
    else:
        index = table[STORE_INDEX] if STORE_INDEX in table else pd.Series(np.arange(len(table)))
        labels = [f"cell {i}" for i in index]
    if table.empty:
        raise InputError(f"{features}: no rows to generate from")
    rows = np.repeat(np.arange(len(table)), n_per_row)
    images = _generate(loaded, standardised[rows], seed)
    if n_per_row > 1:
        groups = {labels[r]: images[r * n_per_row:(r + 1) * n_per_row] for r in range(min(len(table), _SHOWN_ROWS))}
        columns = n_per_row
    else:
        groups, columns = {"generated": images[:_SHOWN_ROWS]}, 8
    title = f"Generated from {Path(features).name}" + (f", centroids per {', '.join(per)}" if per else "")
    path = Path(out) if out is not None else figures_dir(loaded.path) / f"from_features_{_slug(Path(features).stem)}.png"
    save_figure(crop_montage_figure(groups, loaded.channels, columns, title), path)
    if npz is not None:
        metadata = [c for c in table.columns if str(c).startswith("Metadata_") or c in (per or ())]
        write_npz_atomic(Path(npz), images=images, row=rows, **{c: table[c].to_numpy()[rows] for c in metadata})
    return images, path


def _feature_index(encoder: FeatureEncoder, feature: str) -> int:
    if feature not in encoder.columns:
        close = difflib.get_close_matches(feature, encoder.columns, n=5, cutoff=0.5)
        hint = f"; close names: {close}" if close else f"; the run has {len(encoder.columns)} features"
        raise InputError(f"feature {feature!r} is not one the run was trained on{hint}")
    return encoder.columns.index(feature)


def explore_sweep(run_dir: str | os.PathLike, feature: str, value_range: tuple[float, float] = (-2.0, 2.0),
                  steps: int = 7, cells: Sequence[int] | None = None, seed: int = 0, n_cells: int = 4,
                  others: Literal["held", "follow"] = "held") -> Path:
    """Set one feature to ``steps`` values from ``value_range`` (standardised units: SDs from the
    run's centre) at each cell's other values: the store rows ``cells`` of the run's feature table,
    or by default the ``n_cells`` measured cells nearest the centre (real cells keep the
    generator on the cells it learnt from; an all-zero vector does not). ``others="held"`` keeps
    the other features at the cell's values (the paper's sweep); ``"follow"`` moves each by its
    least-squares slope on the swept feature over the run's feature table (standardised), so that
    features measuring the same property (area, perimeter, axes) change with it. Writes
    ``figures/sweep_<feature>.png`` (``sweep_<feature>_follow`` for ``"follow"``; a row per cell)
    and ``.npz`` (``images`` (R, S, C, H, W) in [0, 1], ``values`` (S,), ``values_raw`` (S,) in
    the table's units, ``cells`` (R,), ``feature``, ``others``)."""
    if steps < 2:
        raise InputError(f"a sweep needs at least 2 steps, got {steps}")
    if others not in ("held", "follow"):
        raise InputError(f"others must be 'held' or 'follow', got {others!r}")
    loaded = _load(run_dir, "explore")
    encoder = loaded.encoder
    column = _feature_index(encoder, feature)
    table = _cells_with_features(loaded)
    rows = _store_rows(table, cells) if cells else _nearest_to_centre(table, encoder, n_cells)
    bases = encoder.standardize(table.loc[rows])
    values = np.linspace(value_range[0], value_range[1], steps).astype(np.float32)
    slopes = _slopes_on(encoder.standardize(table), column) if others == "follow" else \
        np.eye(len(encoder.columns))[column]
    grid = bases[:, None, :] + (values[None, :, None] - bases[:, None, column, None]) * slopes.astype(np.float32)
    images = _generate(loaded, grid.reshape(-1, grid.shape[-1]), seed).reshape(len(bases), steps,
                                                                              *loaded.module.image_shape)
    raw = values * encoder.std[column] + encoder.mean[column]
    store_rows = table.loc[rows, STORE_INDEX].to_numpy(np.int64)
    chosen = "" if cells else f" (the {len(rows)} cells nearest the centre)"
    rest = "other features held" if others == "held" else "other features following their slope on it"
    fig = image_rows_figure(images, loaded.channels, row_labels=[f"cell {c}" for c in store_rows],
                            column_labels=[f"{v:+.1f} sd\n{r:.3g}" for v, r in zip(values, raw)],
                            title=textwrap.fill(f"Sweep of {feature} (standardised units), {rest}{chosen}", 90))
    stem = figures_dir(loaded.path) / f"sweep_{_slug(feature)}{'_follow' if others == 'follow' else ''}"
    write_npz_atomic(stem.with_suffix(".npz"), images=images, values=values, values_raw=raw, cells=store_rows,
                     feature=np.asarray(feature), others=np.asarray(others))
    return save_figure(fig, stem.with_suffix(".png"))


def _slopes_on(standardised: np.ndarray, column: int) -> np.ndarray:
    """(F,) least-squares slope of every column of ``standardised`` (N, F) on column ``column``
    (1 for itself; 0 when the column does not vary)."""
    centred = standardised - standardised.mean(axis=0)
    variance = float(centred[:, column] @ centred[:, column])
    if variance == 0:
        return np.eye(standardised.shape[1])[column]
    slopes = centred.T @ centred[:, column] / variance
    slopes[column] = 1.0
    return slopes


def _store_rows(table: pd.DataFrame, cells: Sequence[int]) -> np.ndarray:
    """Positions in ``table`` of the store rows ``cells``; InputError naming those it lacks."""
    positions = pd.Index(table[STORE_INDEX]).get_indexer(np.asarray(cells, dtype=np.int64))
    if (positions < 0).any():
        absent = np.asarray(cells)[positions < 0]
        raise InputError(f"no features for store row(s) {absent[:5].tolist()} in the run's feature table")
    return table.index[positions]


def _nearest_to_centre(table: pd.DataFrame, encoder: FeatureEncoder, n: int,
                       centre: np.ndarray | None = None) -> np.ndarray:
    """Index labels of the ``n`` rows of ``table`` whose standardised features are nearest
    (Euclidean) ``centre`` (F,) (default the origin: the run's centre), among the rows with every
    commonly measured feature (finite in at least half of the rows) finite: a missing value
    standardises to the centre and would pull a cell towards it."""
    if n < 1:
        raise InputError(f"the number of cells must be at least 1, got {n}")
    finite = np.isfinite(table[encoder.columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64))
    common = finite.mean(axis=0) >= 0.5
    measured = table[finite[:, common].all(axis=1)]
    if measured.empty:
        raise InputError(f"{encoder.table}: no cell has every commonly measured feature to start from")
    offsets = encoder.standardize(measured) - (0.0 if centre is None else centre)
    order = np.argsort(np.linalg.norm(offsets, axis=1), kind="stable")[:n]
    return measured.index[order].to_numpy()


def _cells_with_features(loaded: _Generator) -> pd.DataFrame:
    """The run's feature table with the store's metadata columns it lacks, joined on the store row."""
    table = read_table(loaded.encoder.table)
    store = CropStore(loaded.config.data.store)
    cells = store.cells.reset_index(drop=True).assign(**{STORE_INDEX: np.arange(len(store))})
    extra = [c for c in cells.columns if c not in table.columns]
    return table.merge(cells[[STORE_INDEX, *extra]], on=STORE_INDEX, how="left") if extra else table


def _query(table: pd.DataFrame, query: str) -> pd.DataFrame:
    try:
        selected = table[table.eval(query).to_numpy(bool)]
    except Exception as exc:  # pandas raises many types for a bad query
        raise InputError(f"bad group query {query!r}: {exc}") from None
    if selected.empty:
        raise InputError(f"no cell matches {query!r}")
    return selected


def _waypoints(encoder: FeatureEncoder, start: pd.DataFrame, end: pd.DataFrame, start_label: str, end_label: str,
               by: str | None) -> tuple[np.ndarray, list[str]]:
    """Standardised centroids (K, F) along the path and their labels."""
    points, labels = [encoder.standardize(start).mean(0)], [start_label]
    if by is None:
        return np.stack([*points, encoder.standardize(end).mean(0)]), [*labels, end_label]
    if by not in end.columns:
        raise InputError(f"--by {by!r} is not a column of the cells")
    levels = pd.to_numeric(end[by], errors="coerce")
    if levels.isna().all():
        raise InputError(f"column {by!r} holds no numeric value in the group {end_label!r}")
    for level in np.sort(levels.dropna().unique()):
        points.append(encoder.standardize(end[levels.to_numpy() == level]).mean(0))
        labels.append(f"{by}={float(level)!r}")
    return np.stack(points), labels


def explore_trajectory(run_dir: str | os.PathLike, start: str, end: str, by: str | None = None, steps: int = 7,
                       seed: int = 0, from_centroid: bool = False) -> Path:
    """Walk in standardised feature space from the cells matching the pandas query ``start`` to
    those of ``end`` (queries on the run's feature table joined with its store's cell table), or
    with ``by`` (a numeric column, e.g. a dose) through each value of ``by`` within ``end`` in
    increasing order; ``steps`` images per leg (ends included). The waypoints are the groups'
    centroids; the walk moves the ``start`` cell nearest its centroid by the centroids' differences
    (a real cell keeps the generator on the cells it learnt from), or with ``from_centroid`` walks
    between the centroids themselves. Writes ``figures/trajectory_<slug>.png`` (a row per leg; the
    slug ends in ``_centroids`` with ``from_centroid``, so the two walks keep their own files) and
    ``.npz`` (``images`` (R, S, C, H, W) in [0, 1], ``path`` (R, S, F) generated from,
    ``waypoints`` (R + 1, F) centroids, standardised, ``labels`` (R + 1,), ``start_cell``: its store
    row, -1 with ``from_centroid``)."""
    if steps < 2:
        raise InputError(f"a trajectory needs at least 2 steps per leg, got {steps}")
    loaded = _load(run_dir, "explore")
    cells = _cells_with_features(loaded)
    first = _query(cells, start)
    points, labels = _waypoints(loaded.encoder, first, _query(cells, end), start, end, by)
    offset, start_cell = np.zeros_like(points[0]), -1
    if not from_centroid:
        row = _nearest_to_centre(first, loaded.encoder, 1, points[0])
        offset = loaded.encoder.standardize(first.loc[row])[0] - points[0]
        start_cell = int(first.loc[row[0], STORE_INDEX])
    fractions = np.linspace(0.0, 1.0, steps, dtype=np.float32)[None, :, None]
    path = offset + points[:-1, None, :] + fractions * (points[1:] - points[:-1])[:, None, :]
    images = _generate(loaded, path.reshape(-1, path.shape[-1]), seed).reshape(*path.shape[:2],
                                                                              *loaded.module.image_shape)
    stops = ["from", *([label.split("=", 1)[1] for label in labels[1:]] if by else ["to"])]
    moved = "between the centroids" if from_centroid else f"cell {start_cell} moved by the centroids' differences"
    title = f"Trajectory in feature space from {start} to {end}" + (f", through each {by}" if by else "") + \
        f" ({moved})"
    fig = image_rows_figure(images, loaded.channels, row_labels=[f"{a} -> {b}" for a, b in zip(stops, stops[1:])],
                            column_labels=[f"{f:.2f}" for f in fractions.ravel()], title=textwrap.fill(title, 90))
    name = f"{start}_to_{end}" + (f"_by_{by}" if by else "") + ("_centroids" if from_centroid else "")
    stem = figures_dir(loaded.path) / f"trajectory_{_slug(name)}"
    write_npz_atomic(stem.with_suffix(".npz"), images=images, path=path.astype(np.float32),
                     waypoints=points.astype(np.float32), labels=np.asarray(labels),
                     start_cell=np.asarray(start_cell, dtype=np.int64))
    return save_figure(fig, stem.with_suffix(".png"))
