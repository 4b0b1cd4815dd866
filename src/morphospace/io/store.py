"""The crop store: single-cell crops on disk, written atomically and read lazily.

Layout of a store directory::

    STORE/
      images.zarr     (N, C, H, W) or (N, C, D, H, W), chunked along N
      masks.zarr      optional (N, H, W) or (N, D, H, W) integer labels
      cells.parquet   one row per crop, metadata in ``Metadata_*`` columns, row i <-> crop i
      store.json      channel names, dtype, shapes, pixel size, provenance, format version

Examples
--------
>>> import numpy as np, pandas as pd, tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp()) / "store"
>>> with CropStoreWriter(root, channels=["DNA", "Actin"], crop_shape=(8, 8), dtype="uint16") as w:
...     w.append(np.ones((3, 2, 8, 8), "uint16"), pd.DataFrame({"Metadata_Plate": ["P1"] * 3}))
>>> store = CropStore(root)
>>> len(store), store.channels, store.read([0, 2]).shape
(3, ['DNA', 'Actin'], (2, 2, 8, 8))
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import zarr

from morphospace.errors import StoreError
from morphospace.atomic import refuse_existing, replace_directory, temporary_sibling, write_json_atomic

__all__ = ["CropStore", "CropStoreWriter", "STORE_FORMAT", "STORE_FORMAT_VERSION", "MASK_ENCODING"]

STORE_FORMAT = "morphospace-crop-store"
STORE_FORMAT_VERSION = 2
"""1: zarr arrays may omit chunks equal to the fill value; 2: every chunk is written."""
MASK_ENCODING = "0 = background or other cells, 1 = own nucleus, 2 = own cell outside the nucleus"
_SUPPORTED_DTYPES = {"uint8", "uint16", "float32"}


def _morphospace_version() -> str:
    from morphospace import __version__

    return __version__


class CropStoreWriter:
    """Append crops to a new store; it appears under its final name only when complete.

    Parameters
    ----------
    path
        Store directory to create.
    channels
        Channel names, one per image channel (C).
    crop_shape
        Spatial shape of one crop: (H, W) or (D, H, W), pixels.
    dtype
        Stored pixel type: ``uint8``, ``uint16`` or ``float32``.
    with_masks
        Whether every append carries label masks of shape (n, *crop_shape).
    pixel_size_um
        Pixel size in micrometres, when known.
    provenance
        Free-form JSON-serialisable description of where the crops came from.
    chunk_cells
        Crops per Zarr chunk along N; appends are buffered to whole chunks.
    overwrite
        Replace an existing store at ``path`` (only once the new one is complete).
    build_dir
        An existing directory to build the store in (renamed to ``path`` on success), for callers
        that keep side files there (e.g. ``labels/``); by default a fresh temporary directory.

    Use it as a context manager: on an exception ``path`` is untouched and the store files are
    removed (with a default build directory, the whole directory). ``work_dir`` is the directory
    being built.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        channels: Sequence[str],
        crop_shape: Sequence[int],
        dtype: str = "float32",
        with_masks: bool = False,
        pixel_size_um: float | None = None,
        provenance: Mapping[str, Any] | None = None,
        chunk_cells: int = 64,
        overwrite: bool = False,
        build_dir: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.channels = [str(c) for c in channels]
        self.crop_shape = tuple(int(s) for s in crop_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in _SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_SUPPORTED_DTYPES)}, got {self.dtype}")
        if len(self.crop_shape) not in (2, 3) or min(self.crop_shape) < 1:
            raise ValueError(f"crop_shape must be (H, W) or (D, H, W), got {crop_shape}")
        if len(set(self.channels)) != len(self.channels) or not self.channels:
            raise ValueError(f"channel names must be unique and non-empty, got {self.channels}")
        refuse_existing(self.path, overwrite)
        self.with_masks = with_masks
        self.pixel_size_um = pixel_size_um
        self.provenance = dict(provenance or {})
        self.chunk_cells = int(chunk_cells)
        self.build_dir = Path(build_dir) if build_dir is not None else None
        self.work_dir: Path | None = None
        self._images: zarr.Array | None = None
        self._masks: zarr.Array | None = None
        self._tables: list[pd.DataFrame] = []
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._pending_count = 0
        self._written = 0

    def __enter__(self) -> "CropStoreWriter":
        if self.build_dir is not None:
            self.work_dir = self.build_dir
            self._remove_store_files()
        else:
            self.work_dir = temporary_sibling(self.path)
        image_shape = (0, len(self.channels), *self.crop_shape)
        self._images = zarr.create_array(
            self.work_dir / "images.zarr",
            shape=image_shape,
            chunks=(self.chunk_cells, *image_shape[1:]),
            dtype=self.dtype,
            config={"write_empty_chunks": True},  # every chunk on disk, so that a missing one is detected
        )
        if self.with_masks:
            self._masks = zarr.create_array(
                self.work_dir / "masks.zarr",
                shape=(0, *self.crop_shape),
                chunks=(self.chunk_cells, *self.crop_shape),
                dtype="uint8",
                config={"write_empty_chunks": True},
            )
        return self

    def append(self, images: np.ndarray, cells: pd.DataFrame, masks: np.ndarray | None = None) -> None:
        """Add ``n`` crops: ``images`` (n, C, *crop_shape), ``cells`` n rows, ``masks`` (n, *crop_shape)."""
        if self.work_dir is None:
            raise RuntimeError("CropStoreWriter must be used as a context manager")
        images = np.asarray(images)
        expected = (len(self.channels), *self.crop_shape)
        if images.ndim != len(expected) + 1 or images.shape[1:] != expected:
            raise ValueError(f"images must have shape (n, {', '.join(map(str, expected))}), got {images.shape}")
        if len(cells) != len(images):
            raise ValueError(f"{len(images)} crops but {len(cells)} table rows")
        if len(cells.columns) == 0:
            raise ValueError("the cell table needs at least one Metadata_ column")
        bad = [c for c in cells.columns if not str(c).startswith("Metadata_")]
        if bad:
            raise ValueError(f"cell table columns must start with 'Metadata_': {bad}")
        if self.with_masks != (masks is not None):
            raise ValueError("masks must be given on every append exactly when with_masks=True")
        if masks is not None:
            masks = np.asarray(masks)
            if masks.shape != (len(images), *self.crop_shape):
                raise ValueError(f"masks must have shape {(len(images), *self.crop_shape)}, got {masks.shape}")
            masks = masks.astype(np.uint8)
        if len(images) == 0:
            return
        self._pending.append((self._cast(images), masks))
        self._pending_count += len(images)
        self._tables.append(cells.reset_index(drop=True))
        if self._pending_count >= self.chunk_cells:
            self._flush(whole_chunks_only=True)

    def _cast(self, images: np.ndarray) -> np.ndarray:
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        if self.dtype.kind == "u" and images.dtype.kind == "f":
            info = np.iinfo(self.dtype)
            images = np.clip(np.rint(images), info.min, info.max)
        return images.astype(self.dtype, copy=False)

    def _flush(self, whole_chunks_only: bool) -> None:
        if not self._pending:
            return
        images = np.concatenate([p[0] for p in self._pending])
        masks = np.concatenate([p[1] for p in self._pending]) if self.with_masks else None
        n_write = len(images)
        if whole_chunks_only:
            n_write -= n_write % self.chunk_cells
        start, stop = self._written, self._written + n_write
        self._images.resize((stop, *self._images.shape[1:]))
        self._images[start:stop] = images[:n_write]
        if masks is not None:
            self._masks.resize((stop, *self._masks.shape[1:]))
            self._masks[start:stop] = masks[:n_write]
        self._written = stop
        rest = images[n_write:]
        self._pending = [(rest, masks[n_write:] if masks is not None else None)] if len(rest) else []
        self._pending_count = len(rest)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self.work_dir is not None and self.work_dir.exists():
                if self.build_dir is None:
                    shutil.rmtree(self.work_dir, ignore_errors=True)
                else:
                    self._remove_store_files()

    def _remove_store_files(self) -> None:
        for name in ("images.zarr", "masks.zarr"):
            shutil.rmtree(self.work_dir / name, ignore_errors=True)
        for name in ("cells.parquet", "store.json"):
            (self.work_dir / name).unlink(missing_ok=True)

    def _finish(self) -> None:
        self._flush(whole_chunks_only=False)
        table = pd.concat(self._tables, ignore_index=True) if self._tables else pd.DataFrame()
        table.to_parquet(self.work_dir / "cells.parquet", index=False)
        info = {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "channels": self.channels,
            "dtype": self.dtype.name,
            "n_cells": int(self._written),
            "crop_shape": list(self.crop_shape),
            "pixel_size_um": self.pixel_size_um,
            "masks": MASK_ENCODING if self.with_masks else None,
            "provenance": self.provenance,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "morphospace_version": _morphospace_version(),
        }
        write_json_atomic(self.work_dir / "store.json", info)
        replace_directory(self.work_dir, self.path)


class CropStore:
    """Lazy read access to a crop store.

    Attributes
    ----------
    images : zarr.Array
        (N, C, *crop_shape); indexing reads only the chunks it touches.
    masks : zarr.Array or None
        (N, *crop_shape) labels, see :data:`MASK_ENCODING`.
    cells : pandas.DataFrame
        One row per crop, ``Metadata_*`` columns (read on first access).
    info : dict
        The content of ``store.json``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        info_path = self.path / "store.json"
        if not self.path.exists():
            raise StoreError(f"{self.path}: crop store not found")
        if not info_path.is_file():
            raise StoreError(f"{self.path}: not a crop store (no store.json)")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{info_path}: unreadable store description ({exc})") from None
        if self.info.get("format") != STORE_FORMAT:
            raise StoreError(f"{info_path}: not a morphospace crop store")
        if self.info.get("format_version", 0) > STORE_FORMAT_VERSION:
            raise StoreError(
                f"{self.path}: store format version {self.info['format_version']} is newer than this "
                f"morphospace supports ({STORE_FORMAT_VERSION}); upgrade morphospace"
            )
        self.images = self._open_array("images.zarr")
        self.masks = self._open_array("masks.zarr") if (self.path / "masks.zarr").exists() else None
        self._cells: pd.DataFrame | None = None
        try:
            self._n_rows = pq.read_metadata(self.path / "cells.parquet").num_rows
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.path / 'cells.parquet'}: unreadable cell table ({exc})") from None
        self._check_consistency()

    @property
    def cells(self) -> pd.DataFrame:
        """The cell table, read on first use."""
        if self._cells is None:
            try:
                self._cells = pd.read_parquet(self.path / "cells.parquet")
            except (OSError, ValueError) as exc:
                raise StoreError(f"{self.path / 'cells.parquet'}: unreadable cell table ({exc})") from None
        return self._cells

    def _open_array(self, name: str) -> zarr.Array:
        try:
            return zarr.open_array(self.path / name, mode="r")
        except Exception as exc:  # zarr raises several types for missing/corrupt arrays
            raise StoreError(f"{self.path / name}: cannot open ({type(exc).__name__}: {exc})") from None

    def _check_consistency(self) -> None:
        n = self.images.shape[0]
        if self._n_rows != n or self.info.get("n_cells") != n:
            raise StoreError(
                f"{self.path}: inconsistent store: {n} crops, {self._n_rows} table rows, "
                f"store.json says {self.info.get('n_cells')}"
            )
        if self.images.shape[1] != len(self.channels):
            raise StoreError(f"{self.path}: {self.images.shape[1]} image channels but names {self.channels}")
        if self.masks is not None and self.masks.shape != (n, *self.images.shape[2:]):
            raise StoreError(f"{self.path}: masks shape {self.masks.shape} does not match images")
        complete = [("images.zarr", self.images)]  # version 1 left empty mask chunks out: only images are sure
        if self.info.get("format_version", 0) >= 2:
            complete.append(("masks.zarr", self.masks))
        for name, array in complete:
            if array is not None and array.nchunks_initialized < array.nchunks:  # zarr would read zeros there
                raise StoreError(f"{self.path / name}: {array.nchunks - array.nchunks_initialized} of {array.nchunks} "
                                 "chunk(s) are missing; the store is damaged (import or prepare it again)")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"CropStore({str(self.path)!r}, n={len(self)}, channels={self.channels}, crop={self.crop_shape})"

    @property
    def channels(self) -> list[str]:
        return list(self.info["channels"])

    @property
    def crop_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    def channel_indices(self, names: Sequence[str] | None) -> list[int]:
        """Positions of channel ``names`` (all channels when None); unknown names raise StoreError."""
        if names is None:
            return list(range(len(self.channels)))
        missing = [n for n in names if n not in self.channels]
        if missing:
            raise StoreError(f"{self.path}: no channel(s) {missing}; the store has {self.channels}")
        return [self.channels.index(n) for n in names]

    def read(self, indices: Sequence[int] | np.ndarray | slice, channels: Sequence[str] | None = None) -> np.ndarray:
        """Crops at ``indices`` (any order, repeats allowed) as (n, C', *crop_shape) in the stored dtype."""
        return self._read_rows(self.images, indices, self.channel_indices(channels))

    def read_masks(self, indices: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        """Masks at ``indices`` as (n, *crop_shape); raises StoreError when the store has none."""
        if self.masks is None:
            raise StoreError(f"{self.path}: store has no masks")
        return self._read_rows(self.masks, indices, None)

    @staticmethod
    def _read_rows(array: zarr.Array, indices, channel_idx: list[int] | None) -> np.ndarray:
        if isinstance(indices, slice):
            data = array[indices]
            return data[:, channel_idx] if channel_idx is not None else data
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            shape = (0, len(channel_idx), *array.shape[2:]) if channel_idx is not None else (0, *array.shape[1:])
            return np.empty(shape, dtype=array.dtype)
        unique, inverse = np.unique(indices, return_inverse=True)
        selection = (unique,) + ((channel_idx,) if channel_idx is not None else ())
        data = array.get_orthogonal_selection(selection)
        return data[inverse]
