"""Import existing single-cell crops into a crop store: npz arrays, image files listed in a metadata CSV,
or a folder with one sub-folder of images per class.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> np.savez(tmp / "crops.npz", images=np.ones((4, 16, 16, 3), "uint16"),
...          plate=np.array(["P1", "P1", "P2", "P2"]), moa=np.array(["DMSO"] * 4))
>>> store = import_npz(tmp / "crops.npz", tmp / "store", channels=["DNA", "Actin", "Tubulin"], progress=False)
>>> store.crop_shape, list(store.cells.columns)
((16, 16), ['Metadata_Plate', 'Metadata_MoA', 'Metadata_SourceIndex'])
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from morphospace.errors import InputError
from morphospace.io.bbbc021 import annotate_bbbc021
from morphospace.io.images import IMAGE_SUFFIXES, read_image
from morphospace.io.store import CropStore, CropStoreWriter

__all__ = ["import_npz", "import_images", "import_folders", "to_channels_first", "metadata_column_name"]

logger = logging.getLogger(__name__)

Layout = Literal["auto", "NHWC", "NCHW", "NHW"]
_SPECIAL_NAMES = {"moa": "MoA", "id": "ID"}


def metadata_column_name(key: str) -> str:
    """``"source_dapi_file"`` -> ``"Metadata_SourceDapiFile"``; ``"moa"`` -> ``"Metadata_MoA"``.

    Names that already start with ``Metadata_`` are kept.
    """
    if key.startswith("Metadata_"):
        return key
    words = [w for w in re.split(r"[^0-9A-Za-z]+", key) if w]
    camel = "".join(_SPECIAL_NAMES.get(w.lower(), w[:1].upper() + w[1:]) for w in words)
    return f"Metadata_{camel or 'Unnamed'}"


def to_channels_first(images: np.ndarray, layout: Layout, source: str) -> np.ndarray:
    """Return a batch of crops as (N, C, H, W).

    ``layout="auto"`` takes a 3-D array as (N, H, W) and a 4-D one as channels-last when its last
    axis is shorter than both others, channels-first when axis 1 is.

    Raises
    ------
    InputError
        On another number of dimensions, or an ambiguous shape with ``layout="auto"``.
    """
    if images.ndim == 3 and layout in ("auto", "NHW"):
        return images[:, None]
    if images.ndim != 4 or layout == "NHW":
        raise InputError(f"{source}: expected crops as (N, H, W, C), (N, C, H, W) or (N, H, W); got shape {images.shape}")
    if layout == "auto":
        last_small = images.shape[3] < min(images.shape[1], images.shape[2])
        second_small = images.shape[1] < min(images.shape[2], images.shape[3])
        if last_small == second_small:
            raise InputError(
                f"{source}: cannot tell channels from the shape {images.shape}; pass layout NHWC or NCHW"
            )
        layout = "NHWC" if last_small else "NCHW"
    return np.moveaxis(images, 3, 1) if layout == "NHWC" else images


def _storage_dtype(dtype: np.dtype, source: str) -> str:
    if dtype == np.uint8 or dtype == bool:
        return "uint8"
    if dtype == np.uint16:
        return "uint16"
    if dtype.kind in "fiu":
        return "float32"
    raise InputError(f"{source}: unsupported pixel type {dtype}")


def _check_finite(images: np.ndarray, source: str) -> None:
    if images.dtype.kind == "f":
        bad = ~np.isfinite(images)
        if bad.any():
            cells = np.unique(np.nonzero(bad)[0])
            raise InputError(f"{source}: NaN or infinite pixels in {len(cells)} crop(s), first at index {cells[0]}")


def _channel_names(channels: Sequence[str] | None, n_channels: int, source: str) -> list[str]:
    if channels is None:
        return [f"ch{i}" for i in range(n_channels)]
    channels = list(channels)
    if len(channels) != n_channels:
        raise InputError(f"{source}: {n_channels} image channel(s) but {len(channels)} name(s) given: {channels}")
    return channels


def _npz_metadata(archive: np.lib.npyio.NpzFile, images_key: str, n: int, source: str) -> pd.DataFrame:
    columns = {}
    for key in archive.files:
        if key == images_key:
            continue
        values = archive[key]
        if values.ndim != 1 or len(values) != n:
            raise InputError(f"{source}: array {key!r} of shape {values.shape} is not per-crop metadata: it needs "
                             f"one value per crop ({n}, like {images_key!r}); remove it or fix its length")
        columns[metadata_column_name(key)] = values.astype(str) if values.dtype.kind in "US" else values
    columns["Metadata_SourceIndex"] = np.arange(n)
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def _read_npz(path: Path, images_key: str, layout: Layout, bbbc021_dir) -> tuple[np.ndarray, pd.DataFrame]:
    """Crops (N, C, H, W) and their metadata from one npz file, checked."""
    if path.is_file():
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # every npz is a zip archive
                raise InputError(f"{path}: not an npz file (save crops with numpy.savez)")
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: unreadable or truncated npz file ({exc})") from None
    with archive:
        if images_key not in archive.files:
            raise InputError(f"{path}: no array named {images_key!r} (found {archive.files})")
        try:
            raw = archive[images_key]
            metadata = _npz_metadata(archive, images_key, len(raw), str(path))
        except InputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"{path}: unreadable or truncated npz file ({exc})") from None
    images = to_channels_first(raw, layout, str(path))
    if images.shape[0] == 0:
        raise InputError(f"{path}: no crops (image array of shape {raw.shape})")
    if bbbc021_dir is not None:
        metadata.attrs["source"] = str(path)
        metadata = annotate_bbbc021(metadata, bbbc021_dir)
    return images, metadata


def import_npz(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    channels: Sequence[str] | None = None,
    layout: Layout = "auto",
    images_key: str = "images",
    bbbc021_dir: str | os.PathLike | None = None,
    pixel_size_um: float | None = None,
    overwrite: bool = False,
    chunk_cells: int = 64,
    progress: bool = True,
) -> CropStore:
    """Import crop arrays from one or several ``.npz`` files into a new crop store.

    Parameters
    ----------
    path
        ``.npz`` file(s), each with an image array under ``images_key`` — (N, H, W, C),
        (N, C, H, W) or (N, H, W); uint8, uint16 or float — and optionally 1-D per-crop arrays of
        length N, which become ``Metadata_*`` columns (``plate`` -> ``Metadata_Plate``);
        ``Metadata_SourceIndex`` keeps each crop's position in its file and, with several files,
        ``Metadata_SourceFile`` the file name. Files are read one at a time; their crops must
        share shape and type.
    out
        Store directory to create.
    channels
        Channel names in the array's channel order; ``ch0, ch1, ...`` when None.
    layout
        Axis order of the image array, or ``"auto"`` to infer it.
    bbbc021_dir
        Folder with the official BBBC021 tables: when given, compound, concentration, replicate,
        batch and MoA are set from them by plate + well.
    pixel_size_um
        Pixel size recorded in ``store.json``.
    overwrite
        Replace an existing store.
    chunk_cells
        Crops written per step.
    progress
        Show a progress bar.

    Raises
    ------
    InputError
        Unreadable file, no image array, bad shape, crops differing between files, NaN/inf
        pixels, wrong number of channel names, or rows that match no BBBC021 image.
    """
    paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
    if not paths:
        raise InputError("no npz file given")

    def blocks():
        for file in paths:
            images, metadata = _read_npz(file, images_key, layout, bbbc021_dir)
            if len(paths) > 1:
                metadata["Metadata_SourceFile"] = file.name
            yield images, metadata, str(file)

    provenance = {"source": [str(p.resolve()) for p in paths], "importer": "npz", "layout": layout}
    if bbbc021_dir is not None:
        provenance["bbbc021_tables"] = str(Path(bbbc021_dir).resolve())
    return _write_store(blocks(), out, channels, pixel_size_um, provenance, overwrite, chunk_cells, progress)


def _write_store(
    blocks: Iterable[tuple[np.ndarray, pd.DataFrame, str]],
    out: str | os.PathLike,
    channels: Sequence[str] | None,
    pixel_size_um: float | None,
    provenance: dict,
    overwrite: bool,
    chunk_cells: int,
    progress: bool,
) -> CropStore:
    """Stream blocks of crops (N, C, H, W) with their metadata into a new store."""
    total = 0
    with contextlib.ExitStack() as stack:
        writer, first = None, None
        for images, metadata, source in blocks:
            if writer is None:
                names = _channel_names(channels, images.shape[1], source)
                writer = stack.enter_context(CropStoreWriter(
                    out, names, images.shape[2:], dtype=_storage_dtype(images.dtype, source),
                    pixel_size_um=pixel_size_um, provenance=provenance, chunk_cells=chunk_cells, overwrite=overwrite))
                first = (images.shape[1:], images.dtype)
            elif (images.shape[1:], images.dtype) != first:
                raise InputError(f"{source}: crops {images.shape[1:]} {images.dtype} differ from the first file's "
                                 f"{first[0]} {first[1]}")
            with tqdm(total=len(images), desc=f"import {Path(source).name}", unit="crop", disable=not progress) as bar:
                for start in range(0, len(images), chunk_cells):
                    block = images[start : start + chunk_cells]
                    _check_finite(block, source)
                    writer.append(block, metadata.iloc[start : start + chunk_cells])
                    bar.update(len(block))
            total += len(images)
    logger.info("imported %d crops into %s", total, out)
    return CropStore(out)


def import_images(
    directory: str | os.PathLike,
    metadata_csv: str | os.PathLike,
    out: str | os.PathLike,
    channels: Sequence[str] | None = None,
    file_column: str = "file",
    frame_column: str = "frame",
    layout: Layout = "auto",
    bbbc021_dir: str | os.PathLike | None = None,
    pixel_size_um: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CropStore:
    """Import crops stored as image files (TIFF, PNG, JPEG, ...: see :data:`IMAGE_SUFFIXES`), one
    metadata CSV row per crop.

    Parameters
    ----------
    directory
        Folder the CSV's file names are relative to.
    metadata_csv
        CSV with a ``file_column`` naming each crop's image file and, for files holding a stack of
        crops (multi-page TIFF), a ``frame_column`` with the crop's index in that stack. Every other column becomes
        a ``Metadata_*`` column.
    out, channels, layout, bbbc021_dir, pixel_size_um, overwrite, progress
        As for :func:`import_npz`. A single-crop file is (H, W), (H, W, C) or (C, H, W); a stack
        is (N, H, W), (N, H, W, C) or (N, C, H, W).

    Raises
    ------
    InputError
        Missing CSV column, a row naming a missing or unreadable file or an out-of-range frame,
        crops of different shapes, NaN/inf pixels.
    """
    directory, metadata_csv = Path(directory), Path(metadata_csv)
    try:
        table = pd.read_csv(metadata_csv)
    except (OSError, ValueError) as exc:
        raise InputError(f"{metadata_csv}: unreadable CSV ({exc})") from None
    if file_column not in table.columns:
        raise InputError(f"{metadata_csv}: no column {file_column!r} naming each crop's image file")
    if table.empty:
        raise InputError(f"{metadata_csv}: no rows")
    last_file: dict[Path, np.ndarray] = {}
    crops = []
    for row in tqdm(table.to_dict("records"), desc="read images", unit="crop", disable=not progress):
        crops.append(_listed_crop(directory, row, file_column, frame_column, layout, metadata_csv, last_file))
    shapes = {c.shape for c in crops}
    if len(shapes) > 1:
        raise InputError(f"{metadata_csv}: crops have different shapes {sorted(shapes)}")
    _warn_unlisted(directory, table[file_column])
    metadata = table.drop(columns=[c for c in (file_column, frame_column) if c in table.columns])
    metadata = metadata.rename(columns=metadata_column_name)
    metadata[metadata_column_name(file_column)] = table[file_column].astype(str)
    metadata["Metadata_SourceIndex"] = np.arange(len(table))
    if bbbc021_dir is not None:
        metadata.attrs["source"] = str(metadata_csv)
        metadata = annotate_bbbc021(metadata, bbbc021_dir)
    images = np.stack(crops)
    provenance = {"source": str(directory.resolve()), "metadata": str(metadata_csv.resolve()), "importer": "images"}
    return _write_store([(images, metadata, str(metadata_csv))], out, channels, pixel_size_um, provenance, overwrite,
                        64, progress)


def import_folders(
    directory: str | os.PathLike,
    out: str | os.PathLike,
    label_column: str = "Metadata_Label",
    channels: Sequence[str] | None = None,
    layout: Layout = "auto",
    pixel_size_um: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CropStore:
    """Import a folder with one sub-folder per class: each sub-folder's name is the label of every
    image file in it (sub-folders included), one crop per file.

    Parameters
    ----------
    directory
        The folder of class sub-folders, e.g. ``crops/<phenotype>/<image>.png``.
    out
        Store directory to create.
    label_column
        Column for the sub-folder names; ``Metadata_`` is prefixed when missing
        (``phenotype`` -> ``Metadata_Phenotype``). ``Metadata_FileName`` holds each file's path
        relative to ``directory``.
    channels, layout, pixel_size_um, overwrite, progress
        As for :func:`import_npz`. Each file is one crop (H, W), (H, W, C) or (C, H, W) in any
        format of :data:`IMAGE_SUFFIXES`; all crops share one shape and pixel type.

    Raises
    ------
    InputError
        No class sub-folder or no image, images directly in ``directory``, an unreadable file,
        or a crop whose shape or pixel type differs from the first one's (both files named).
    """
    directory = Path(directory)
    label_column = metadata_column_name(label_column)
    files = _class_files(directory)
    first: list[tuple[tuple[int, ...], np.dtype, Path]] = []  # shape, type and file of the first crop

    def read(file: Path) -> np.ndarray:
        crop = to_channels_first(read_image(file, ndim=(2, 3))[None], layout, str(file))[0]
        if not first:
            first.append((crop.shape, crop.dtype, file))
        shape, dtype, first_file = first[0]
        if (crop.shape, crop.dtype) != (shape, dtype):
            raise InputError(f"{file}: crop {crop.shape} {crop.dtype} differs from {first_file}: {shape} {dtype}; "
                             "every crop needs one shape and pixel type")
        return crop

    def blocks():
        for label, paths in files.items():
            names = [path.relative_to(directory).as_posix() for path in paths]
            metadata = pd.DataFrame({label_column: label, "Metadata_FileName": names})
            yield np.stack([read(path) for path in paths]), metadata, str(directory / label)

    provenance = {"source": str(directory.resolve()), "importer": "folders", "label_column": label_column}
    return _write_store(blocks(), out, channels, pixel_size_um, provenance, overwrite, 64, progress)


def _class_files(directory: Path) -> dict[str, list[Path]]:
    """Image files of each class sub-folder (sorted, hidden files and folders left out)."""
    if not directory.is_dir():
        raise InputError(f"{directory}: folder not found")
    entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    loose = [p.name for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise InputError(f"{directory}: {len(loose)} image(s) lie directly in the folder (e.g. {loose[0]}) and have "
                         "no class: put each class's images in a sub-folder named after the class")
    files: dict[str, list[Path]] = {}
    skipped: list[Path] = []
    for folder in (p for p in entries if p.is_dir()):
        found = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(directory).parts))
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
        if images:
            files[folder.name] = images
        else:
            logger.warning("%s: no image files; class %r left out", folder, folder.name)
    if skipped:
        logger.warning("%s: skipped %d file(s) that are not images (e.g. %s); image files end in %s", directory,
                       len(skipped), skipped[0].relative_to(directory), ", ".join(sorted(IMAGE_SUFFIXES)))
    if not files:
        raise InputError(f"{directory}: no class sub-folder with image files (expected "
                         f"{directory}/<class>/<image>.png, ...)")
    return files


def _listed_crop(
    directory: Path, row: dict, file_column: str, frame_column: str, layout: Layout, csv: Path,
    last_file: dict[Path, np.ndarray],
) -> np.ndarray:
    """One crop (C, H, W) for a CSV row; ``last_file`` keeps the most recent file so stacks are read once."""
    name = str(row[file_column])
    path = directory / name
    if not path.is_file():
        raise InputError(f"{csv}: row for {name!r} points to a missing file {path}")
    if path not in last_file:
        last_file.clear()
        last_file[path] = read_image(path, ndim=(2, 3, 4))
    data = last_file[path]
    frame = row.get(frame_column)
    if frame is not None and not pd.isna(frame):
        try:
            if float(frame) != int(float(frame)):
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"{csv}: {frame_column!r} of the row for {name!r} is {frame!r}, not a whole number "
                             "(the crop's index in its stack, from 0)") from None
        frame = int(float(frame))
        if data.ndim == 2 or not 0 <= frame < data.shape[0]:
            raise InputError(f"{path}: frame {frame} out of range for an image of shape {data.shape}")
        stack = to_channels_first(data, layout, str(path))
        return stack[int(frame)]
    if data.ndim == 4:
        raise InputError(f"{path}: holds a stack of shape {data.shape}; give the crop's '{frame_column}'")
    return to_channels_first(data[None], layout, str(path))[0]


def _warn_unlisted(directory: Path, listed: pd.Series) -> None:
    listed_paths = {(directory / str(name)).resolve() for name in listed}
    present = {p.resolve() for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    unlisted = present - listed_paths
    if unlisted:
        logger.warning("%s: %d image file(s) have no metadata row and were not imported, e.g. %s",
                       directory, len(unlisted), sorted(unlisted)[0].name)
