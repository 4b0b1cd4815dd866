"""Microscope files: OME-TIFF and multi-channel TIFF through tifffile; OME-Zarr, ND2, CZI and LIF
through bioio and its reader plugins, which are optional extras (``pip install 'morphospace[nd2]'``).

A file holds one or more scenes (positions, series); each scene has channels, optional z-planes
and time points. Fields are read one channel of one scene at a time, as (Z, H, W).

Examples
--------
>>> import numpy as np, tempfile, pathlib, tifffile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "B02_s1.ome.tiff"
>>> planes = np.arange(2 * 8 * 8, dtype="uint16").reshape(2, 8, 8)
>>> tifffile.imwrite(path, planes, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"]}})
>>> [scene.channels for scene in describe_file(path)]
[['DAPI', 'GFP']]
>>> read_channel_planes(path, "GFP").shape
(1, 8, 8)
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile

from morphospace.errors import InputError

__all__ = ["SceneInfo", "MICROSCOPY_SUFFIXES", "needs_microscopy_reader", "describe_file", "read_channel_planes",
           "channel_index"]

_TIFF_SUFFIXES = (".tif", ".tiff")
_OME_TIFF_SUFFIXES = (".ome.tif", ".ome.tiff")
_BIOIO_PLUGINS = {  # name ending -> (reader plugin module, morphospace extra that installs it)
    ".zarr": ("bioio_ome_zarr", "ome-zarr"),
    ".nd2": ("bioio_nd2", "nd2"),
    ".czi": ("bioio_czi", "czi"),
    ".lif": ("bioio_lif", "lif"),
}
MICROSCOPY_SUFFIXES = _TIFF_SUFFIXES + tuple(_BIOIO_PLUGINS)
"""Name endings (any case) of the files, and of the OME-Zarr folders, that fields are read from."""


@dataclass(frozen=True)
class SceneInfo:
    """One scene of a file: its channel names (from the file's metadata, else ``ch0, ch1, ...``),
    time points, z-planes and plane shape (H, W) in pixels."""

    channels: list[str]
    n_timepoints: int
    n_planes: int
    shape: tuple[int, int]


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def needs_microscopy_reader(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an OME-TIFF or a bioio format rather than a plain image file."""
    name = Path(path).name.lower()
    return name.endswith(_OME_TIFF_SUFFIXES) or _suffix(Path(path)) in _BIOIO_PLUGINS


class _TiffReader:
    """Scenes of a TIFF file: its tifffile series, with channel names from the OME-XML if any."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = tifffile.TiffFile(path)
        self._names = self._ome_channel_names() if self._file.is_ome else []

    def close(self) -> None:
        self._file.close()

    def _ome_channel_names(self) -> list[list[str | None]]:
        images = tifffile.xml2dict(self._file.ome_metadata).get("OME", {}).get("Image", [])
        names = []
        for image in images if isinstance(images, list) else [images]:
            channels = image.get("Pixels", {}).get("Channel", [])
            channels = channels if isinstance(channels, list) else [channels]
            names.append([channel.get("Name") for channel in channels])
        return names

    def _axes(self, scene: int) -> str:
        """The scene's axes as tifffile names them, samples (S) counted as channels and unnamed
        page axes (I, Q) as z-planes."""
        axes = self._file.series[scene].axes
        if "S" in axes and "C" not in axes:
            axes = axes.replace("S", "C")
        axes = axes.replace("I", "Z").replace("Q", "Z")
        unknown = sorted(set(axes) - set("TCZYX"))
        if unknown or len(set(axes)) != len(axes):
            raise InputError(f"{self.path}: unsupported axes {self._file.series[scene].axes} in scene {scene} "
                             "(expected time, channel, z, y, x)")
        return axes

    def scenes(self) -> list[SceneInfo]:
        infos = []
        for index, series in enumerate(self._file.series):
            sizes = dict(zip(self._axes(index), series.shape))
            n_channels = sizes.get("C", 1)
            names = self._names[index] if index < len(self._names) else []
            if len(names) != n_channels or not all(names):
                names = [f"ch{c}" for c in range(n_channels)]
            infos.append(SceneInfo([str(n) for n in names], sizes.get("T", 1), sizes.get("Z", 1),
                                   (sizes["Y"], sizes["X"])))
        return infos

    def read(self, scene: int, channel: int) -> np.ndarray:
        axes = self._axes(scene)
        data = self._file.series[scene].asarray()
        for axis in "TCZ":
            if axis not in axes:
                data, axes = data[None], axis + axes
        order = [axes.index(a) for a in "TCZYX"]
        return np.transpose(data, order)[:, channel]


class _BioioReader:
    """Scenes of a file that a bioio reader plugin opens."""

    def __init__(self, path: Path) -> None:
        self.path = path
        module, extra = _BIOIO_PLUGINS[_suffix(path)]
        try:
            bioio = importlib.import_module("bioio")
            plugin = importlib.import_module(module)
        except ImportError:
            raise InputError(f"{path}: reading {_suffix(path)} files needs bioio and its {module.replace('_', '-')} "
                             f"plugin: pip install 'morphospace[{extra}]'") from None
        self._image = bioio.BioImage(path, reader=plugin.Reader)

    def close(self) -> None:
        """Nothing to release: bioio opens the file for each read."""

    def scenes(self) -> list[SceneInfo]:
        infos = []
        for index in range(len(self._image.scenes)):
            self._image.set_scene(index)
            dims = self._image.dims
            infos.append(SceneInfo([str(name) for name in self._image.channel_names], dims.T, dims.Z,
                                   (dims.Y, dims.X)))
        return infos

    def read(self, scene: int, channel: int) -> np.ndarray:
        self._image.set_scene(scene)
        return np.asarray(self._image.get_image_data("TZYX", C=channel))


def _open(path: Path) -> Any:
    """A reader for ``path``; InputError naming the file when it is missing or unreadable."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        if _suffix(path) in _TIFF_SUFFIXES:
            return _TiffReader(path)
        if _suffix(path) in _BIOIO_PLUGINS:
            return _BioioReader(path)
    except InputError:
        raise
    except Exception as exc:  # readers raise many types for corrupt files
        raise InputError(f"{path}: unreadable microscope file ({type(exc).__name__}: {exc})") from None
    raise InputError(f"{path}: not a microscope file (name endings read: {', '.join(MICROSCOPY_SUFFIXES)})")


def _with_reader(path: str | os.PathLike, action):
    reader = _open(Path(path))
    try:
        return action(reader)
    except InputError:
        raise
    except Exception as exc:  # readers raise many types for corrupt files
        raise InputError(f"{path}: unreadable microscope file ({type(exc).__name__}: {exc})") from None
    finally:
        reader.close()


def _scenes(reader) -> list[SceneInfo]:
    scenes = reader.scenes()
    if not scenes:
        raise InputError(f"{reader.path}: unreadable microscope file (no image in it)")
    return scenes


def describe_file(path: str | os.PathLike) -> list[SceneInfo]:
    """The scenes of a microscope file, in file order.

    Raises InputError naming the file when it is missing, unreadable, of an unsupported kind, or
    needs a reader plugin that is not installed (the message names the extra to install).
    """
    return _with_reader(path, _scenes)


def channel_index(channels: Sequence[str], wanted: str | int, source: str | os.PathLike) -> int:
    """Position of channel ``wanted`` (a name, else a 0-based index) among ``channels``.

    >>> channel_index(["DAPI", "GFP"], "GFP", "f.nd2"), channel_index(["DAPI", "GFP"], "0", "f.nd2")
    (1, 0)
    """
    names = list(channels)
    if str(wanted) in names:
        return names.index(str(wanted))
    if str(wanted).isdigit() and int(wanted) < len(names):
        return int(wanted)
    raise InputError(f"{source}: no channel {wanted!r}; the file's channels are {names} (name or 0-based index)")


def read_channel_planes(path: str | os.PathLike, channel: str | int, scene: int = 0,
                        only_channel_fallback: bool = False) -> np.ndarray:
    """The planes (Z, H, W) of one channel (name or 0-based index) of one scene, in the stored type.

    With ``only_channel_fallback``, a file that holds a single channel gives it whatever its name.

    Raises
    ------
    InputError
        Naming the file: missing or unreadable, no such scene or channel (the message lists the
        file's channels), several time points, or a reader plugin that is not installed.
    """

    def read(reader) -> np.ndarray:
        scenes = _scenes(reader)
        if not 0 <= scene < len(scenes):
            raise InputError(f"{path}: no scene {scene}; the file holds {len(scenes)} scene(s), numbered from 0")
        info = scenes[scene]
        if info.n_timepoints > 1:
            raise InputError(f"{path}: scene {scene} holds {info.n_timepoints} time points; a field is one time "
                             "point: save each time point to its own file")
        if only_channel_fallback and len(info.channels) == 1:
            return reader.read(scene, 0)[0]
        return reader.read(scene, channel_index(info.channels, channel, path))[0]

    return _with_reader(path, read)
