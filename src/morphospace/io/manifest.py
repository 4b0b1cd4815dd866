"""Field manifests: one CSV row per field, one ``FileName_<channel>`` column per channel file.

Example manifest::

    Metadata_Plate,Metadata_Well,Metadata_Site,FileName_DNA,FileName_Actin,FileName_Tubulin
    Plate01,B02,1,images/Plate01/B02_s1_DNA.tiff,images/Plate01/B02_s1_Actin.tiff,...

Relative paths are resolved against the manifest's folder. A file may hold several channels (an
OME-TIFF, OME-Zarr, ND2, CZI or LIF file, or a multi-channel TIFF): ``FileName_DNA`` then reads the
file's channel named ``DNA``, or the one after ``#`` (``B02_s1.nd2#DAPI`` by name, ``B02_s1.nd2#0``
by 0-based index), from the scene (position, series) numbered ``Metadata_Scene`` (from 0; 0 when
absent). :func:`manifest_from_folder` writes a manifest for a folder of such files.

Columns that do not start with
``FileName_`` are metadata; those not already named ``Metadata_*`` are renamed
(``plate`` -> ``Metadata_Plate``). ``Metadata_FieldId`` names each field; when absent it is built
from plate, well and site, or from the row number.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from morphospace.atomic import atomic_file, refuse_existing
from morphospace.errors import InputError
from morphospace.io.images import check_pixels, read_image
from morphospace.io.importers import metadata_column_name
from morphospace.io.microscopy import MICROSCOPY_SUFFIXES, describe_file, needs_microscopy_reader, read_channel_planes

__all__ = ["FieldSpec", "read_manifest", "read_field", "read_channel", "FILE_PREFIX", "DEFAULT_FIELD_PATTERN",
           "ManifestSummary", "manifest_from_folder"]

FILE_PREFIX = "FileName_"
DEFAULT_FIELD_PATTERN = (r"(?:(?P<plate>[^/_]+)[/_])?(?P<well>[A-Z]{1,2}\d{1,3})(?:_(?:s|site|f|field)(?P<site>\d+))?"
                         r"(?:_(?:w\d+)?(?P<channel>[A-Za-z][^/._]*))?\.")
"""Plate, well, site and channel from names such as ``Plate1_B02_s3.ome.tiff``,
``Plate1/B02_s3_DNA.tif`` or ``Plate1_B02_s3_w1DAPI.tif``, searched in the path below the folder."""


@dataclass(frozen=True)
class FieldSpec:
    """One field: its id, a file per channel (in channel order), its metadata and, for files that
    hold several channels, which channel of the file to read (name or index, from ``file#channel``)."""

    field_id: str
    files: dict[str, Path]
    metadata: dict[str, Any] = field(default_factory=dict)
    file_channels: dict[str, str] = field(default_factory=dict)

    @property
    def plate(self) -> str:
        return str(self.metadata.get("Metadata_Plate", ""))

    @property
    def scene(self) -> int:
        """Scene of multi-scene files (``Metadata_Scene``, from 0; 0 when absent)."""
        value = self.metadata.get("Metadata_Scene")
        if value is None:
            return 0
        try:
            if float(value) != int(float(value)) or int(float(value)) < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"field {self.field_id}: Metadata_Scene is {value!r}, not a scene number (0, 1, ...)") \
                from None
        return int(float(value))

    def fingerprint(self) -> str:
        """A digest of the field's id and of each channel's file (path, size, modification time),
        which changes when any file of the field is replaced, edited or goes missing."""
        digest = hashlib.sha1(self.field_id.encode())
        for channel, path in self.files.items():
            try:
                stat = path.stat()
                state = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                state = "missing"
            digest.update(f"|{channel}={path.resolve()}:{state}".encode())
            if channel in self.file_channels:
                digest.update(f"#{self.file_channels[channel]}@{self.metadata.get('Metadata_Scene')}".encode())
        return digest.hexdigest()


def _field_ids(table: pd.DataFrame) -> pd.Series:
    if "Metadata_FieldId" in table:
        return table["Metadata_FieldId"].astype(str)
    parts = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c in table]
    if parts:
        return table[parts].astype(str).agg("_".join, axis=1)
    return pd.Series([f"field{i:05d}" for i in range(len(table))], index=table.index)


def read_manifest(path: str | os.PathLike, channels: Sequence[str] | None = None,
                  missing_files: bool = False) -> list[FieldSpec]:
    """Read and check a manifest.

    Parameters
    ----------
    path
        The CSV file.
    channels
        Channels to use, in this order; all ``FileName_*`` columns in file order when None.
    missing_files
        Accept rows whose files do not exist (reading them raises InputError then), so that a
        caller can list them and go on.

    Raises
    ------
    InputError
        Unreadable CSV, no rows, no or unknown channel columns, duplicate field ids, empty file
        cells, or rows pointing to missing files (the message lists the first few).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc})") from None
    if table.empty:
        raise InputError(f"{path}: manifest has no rows")
    available = [c.removeprefix(FILE_PREFIX) for c in table.columns if c.startswith(FILE_PREFIX)]
    if not available:
        raise InputError(f"{path}: no channel columns (expected columns named {FILE_PREFIX}<channel>)")
    channels = list(channels) if channels else available
    unknown = [c for c in channels if c not in available]
    if unknown:
        raise InputError(f"{path}: no column(s) {[FILE_PREFIX + c for c in unknown]}; channels are {available}")
    metadata = table[[c for c in table.columns if not c.startswith(FILE_PREFIX)]]
    metadata = metadata.rename(columns=metadata_column_name)
    ids = _field_ids(metadata)
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise InputError(f"{path}: duplicate field id(s) {list(duplicated[:5])}")
    metadata = metadata.assign(Metadata_FieldId=ids)
    fields, missing = [], []
    for row_number, (index, row) in enumerate(table.iterrows(), start=2):
        files, file_channels = {}, {}
        for channel in channels:
            value = row[FILE_PREFIX + channel]
            if pd.isna(value) or not str(value).strip():
                raise InputError(f"{path}: line {row_number} has no file for channel {channel}")
            file, selection = _file_and_channel(str(value).strip(), path.parent)
            if not (file.is_file() or (file.is_dir() and needs_microscopy_reader(file))):
                missing.append(f"line {row_number} ({channel}): {file}")
            files[channel] = file
            if selection is not None:
                file_channels[channel] = selection
        record = {k: (None if pd.isna(v) else v) for k, v in metadata.loc[index].items()}
        fields.append(FieldSpec(str(ids[index]), files, record, file_channels))
    if missing and not missing_files:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{path}: {len(missing)} missing image file(s): " + "; ".join(missing[:5]) + more)
    return fields


def _file_and_channel(value: str, folder: Path) -> tuple[Path, str | None]:
    """``"a/B02.nd2#DAPI"`` -> (folder/a/B02.nd2, "DAPI"); a name that exists as it is keeps its ``#``."""
    file = Path(value) if Path(value).is_absolute() else folder / value
    if "#" not in value or file.exists():
        return file, None
    name, selection = value.rsplit("#", 1)
    file = Path(name) if Path(name).is_absolute() else folder / name
    return file, selection.strip()


def _is_plain_image(spec: FieldSpec, channel: str) -> bool:
    """Whether a channel's file is a plain image (read whole) rather than one channel of a microscope file."""
    return channel not in spec.file_channels and not needs_microscopy_reader(spec.files[channel])


def read_channel(spec: FieldSpec, channel: str, ndim: tuple[int, ...] = (2, 3),
                 allow_constant: bool = False) -> np.ndarray:
    """The image of one channel of a field, checked: a plane (H, W), or a stack (Z, H, W) when
    ``ndim`` allows it. Files that hold several channels (OME-TIFF, OME-Zarr, ND2, CZI, LIF, or a
    ``file#channel`` entry) give the planes of that channel in the field's scene.

    Raises InputError naming the file (see :func:`read_image` and
    :func:`morphospace.io.microscopy.read_channel_planes`).
    """
    path = spec.files[channel]
    if _is_plain_image(spec, channel):
        return read_image(path, ndim=ndim, allow_constant=allow_constant)
    planes = read_channel_planes(path, spec.file_channels.get(channel, channel), spec.scene,
                                 only_channel_fallback=channel not in spec.file_channels)
    image = planes[0] if len(planes) == 1 else planes
    if image.ndim not in ndim:
        raise InputError(f"{path}: channel {spec.file_channels.get(channel, channel)} holds {len(planes)} z-planes; "
                         "expected a single plane")
    check_pixels(image, f"{path} (channel {spec.file_channels.get(channel, channel)})", allow_constant)
    return image


def read_field(spec: FieldSpec, max_projection: bool = True, short_stacks: bool = False) -> dict[str, np.ndarray]:
    """Read and check every channel of a field: one 2-D plane (H, W) per channel, all of one shape.

    z-stacks (Z, H, W) are max-projected when ``max_projection`` is set. A file of 3 or 4 planes
    may as well be planar RGB(A) colour: it is read as a z-stack only with ``short_stacks``
    (files that name their axes, such as OME-TIFF or ND2, need no such guess).
    Raises InputError naming the file on unreadable data, NaN/inf, empty images, colour images,
    such ambiguous planes, or mismatched shapes.
    """
    planes: dict[str, np.ndarray] = {}
    for channel, path in spec.files.items():
        image = read_channel(spec, channel)
        if image.ndim == 3:
            if _is_plain_image(spec, channel) and image.shape[-1] <= 4 and image.shape[0] > 4:
                raise InputError(f"{path}: holds {image.shape[-1]} colour channels; give one channel per file")
            if _is_plain_image(spec, channel) and image.shape[0] in (3, 4) and not short_stacks:
                raise InputError(f"{path}: holds {image.shape[0]} planes of {image.shape[1:]}, which may be planar "
                                 "colour or a short z-stack; give one channel per file, or set short_stacks: true "
                                 "to max-project them as a z-stack")
            if not max_projection:
                raise InputError(f"{path}: is a z-stack of shape {image.shape}; enable max_projection")
            image = image.max(axis=0)
        planes[channel] = image
    shapes = {c: p.shape for c, p in planes.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{spec.files[c].name}: {s}" for c, s in shapes.items())
        raise InputError(f"field {spec.field_id}: channel images differ in shape ({detail})")
    return planes


@dataclass(frozen=True)
class ManifestSummary:
    """What :func:`manifest_from_folder` wrote: the manifest, files read, fields and channels,
    files whose path did not match the pattern (each its own field) and other files left out."""

    path: Path
    n_files: int
    n_fields: int
    channels: dict[str, str]
    n_unmatched: int
    n_other_files: int

    def line(self) -> str:
        renamed = ", ".join(f"{old}" if old == new else f"{old} as {new}" for old, new in self.channels.items())
        notes = [f"{self.n_unmatched} file(s) matched no pattern and are a field each"] if self.n_unmatched else []
        notes += [f"{self.n_other_files} other file(s) left out"] if self.n_other_files else []
        return (f"{self.n_fields} field(s) from {self.n_files} file(s), channels {renamed}"
                + "".join(f"; {note}" for note in notes) + f" -> {self.path}")


def _microscope_files(directory: Path) -> tuple[list[Path], int]:
    """Microscope files and OME-Zarr folders below ``directory`` (sorted; hidden ones left out), and
    how many other files there are."""
    found, others = [], 0
    for root, folders, names in os.walk(directory):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for folder in [f for f in folders if f.lower().endswith(MICROSCOPY_SUFFIXES)]:
            folders.remove(folder)
            found.append(Path(root) / folder)
        for name in (n for n in names if not n.startswith(".")):
            if name.lower().endswith(MICROSCOPY_SUFFIXES):
                found.append(Path(root) / name)
            else:
                others += 1
    return sorted(found), others


def _channel_names(found: list[str], requested: Sequence[str] | None, directory: Path) -> dict[str, str]:
    """Column name of each found channel: ``requested`` renames them in order (``DNA,Actin``) or by
    name (``DAPI=DNA,GFP=Actin``)."""
    if not requested:
        return {name: name for name in found}
    pairs = [item.split("=", 1) for item in requested]
    if all(len(pair) == 2 for pair in pairs):
        unknown = [old for old, _ in pairs if old not in found]
        if unknown:
            raise InputError(f"{directory}: no channel(s) {unknown} to rename; the files' channels are {found}")
        renames = dict(pairs)
        columns = {name: renames.get(name, name) for name in found}
    elif any(len(pair) == 2 for pair in pairs) or len(requested) != len(found):
        raise InputError(f"{directory}: the files hold channels {found}; give {len(found)} new names in this order, "
                         "or OLD=NEW pairs")
    else:
        columns = dict(zip(found, requested))
    if len(set(columns.values())) < len(columns):
        raise InputError(f"{directory}: channel names {list(columns.values())} repeat a name")
    return columns


def _field_id(groups: dict[str, str], relative: str, scene: int, n_scenes: int, matched: bool) -> str:
    parts = list(groups.values()) if matched and groups else [relative.rsplit(".", 1)[0]]
    parts += [f"scene{scene}"] if n_scenes > 1 else []
    return re.sub(r"[^0-9A-Za-z.-]+", "_", "_".join(parts)).strip("_")


def manifest_from_folder(
    directory: str | os.PathLike,
    out: str | os.PathLike,
    pattern: str | None = None,
    channels: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ManifestSummary:
    """Write a manifest for a folder of microscope files that :func:`read_manifest` and ``prepare``
    take as it is: one row per field (file and scene, or the files one per channel of a field).

    Parameters
    ----------
    directory
        Folder searched (sub-folders included) for TIFF, OME-TIFF, OME-Zarr, ND2, CZI and LIF.
    out
        CSV to write; file paths in it are relative to its folder.
    pattern
        Regular expression searched in each file's path below ``directory`` (``/`` separated);
        its named groups become metadata (``plate`` -> ``Metadata_Plate``), except ``channel``,
        which names the channel of a file holding one channel of a field. Files it does not
        match are a field each. Default :data:`DEFAULT_FIELD_PATTERN`.
    channels
        New channel names, in the order found (``DNA,Actin``) or as ``OLD=NEW`` pairs; otherwise the
        names in the files' metadata (``ch0, ch1, ...`` without any).
    overwrite
        Replace an existing ``out``.

    Raises
    ------
    InputError
        No microscope file, a bad pattern, an unreadable file or one with several time points, a
        channel given twice for one field, fields lacking a channel others have, or duplicate field ids.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    directory, out = Path(directory), Path(out)
    refuse_existing(out, overwrite)
    try:
        regex = re.compile(pattern or DEFAULT_FIELD_PATTERN)
    except re.error as exc:
        raise InputError(f"--pattern {pattern!r}: not a regular expression ({exc})") from None
    if not directory.is_dir():
        raise InputError(f"{directory}: folder not found")
    files, n_other = _microscope_files(directory)
    if not files:
        raise InputError(f"{directory}: no microscope files (name endings read: {', '.join(MICROSCOPY_SUFFIXES)})")
    fields: dict[str, dict[str, Any]] = {}
    found_channels: list[str] = []
    n_unmatched, any_scenes = 0, False
    for file in files:
        relative = file.relative_to(directory).as_posix()
        match = regex.search(relative)
        n_unmatched += match is None
        groups = {k: v for k, v in (match.groupdict() if match else {}).items() if v is not None}
        named_channel = groups.pop("channel", None)
        entry = os.path.relpath(file.resolve(), out.parent.resolve())
        scenes = describe_file(file)
        any_scenes |= len(scenes) > 1
        for scene, info in enumerate(scenes):
            if info.n_timepoints > 1:
                raise InputError(f"{file}: scene {scene} holds {info.n_timepoints} time points; a field is one time "
                                 "point: save each time point to its own file")
            if named_channel is not None and len(info.channels) > 1:
                raise InputError(f"{file}: the pattern names its channel {named_channel!r} but the file holds "
                                 f"{len(info.channels)} channels {info.channels}")
            field_id = _field_id(groups, relative, scene, len(scenes), match is not None)
            row = fields.setdefault(field_id, {"Metadata_FieldId": field_id,
                                               **{metadata_column_name(k): v for k, v in groups.items()},
                                               "Metadata_Scene": scene, "files": {}})
            if named_channel is not None or len(info.channels) == 1:
                entries = {named_channel or info.channels[0]: entry}
            else:
                entries = {name: f"{entry}#{name}" for name in info.channels}
            for name, value in entries.items():
                if name in row["files"]:
                    raise InputError(f"field {field_id}: channel {name!r} from both {row['files'][name]} and {value}; "
                                     "give a --pattern whose groups tell these files apart")
                row["files"][name] = value
                found_channels += [name] if name not in found_channels else []
    for field_id, row in fields.items():
        lacking = [name for name in found_channels if name not in row["files"]]
        if lacking:
            raise InputError(f"field {field_id} ({', '.join(row['files'].values())}) has no file for channel(s) "
                             f"{lacking}; every field needs every channel {found_channels}")
    columns = _channel_names(found_channels, channels, directory)
    table = pd.DataFrame([{**{k: v for k, v in row.items() if k != "files"},
                           **{FILE_PREFIX + columns[name]: row["files"][name] for name in found_channels}}
                          for row in fields.values()])
    if not any_scenes:
        table = table.drop(columns="Metadata_Scene")
    with atomic_file(out) as tmp:
        table.to_csv(tmp, index=False)
    return ManifestSummary(out, len(files), len(table), columns, n_unmatched, n_other)
