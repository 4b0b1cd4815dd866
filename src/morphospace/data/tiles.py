"""Tiles of paired fields for image-to-image training: spatial splits, random augmented tiles,
regular evaluation tiles, and a Lightning data module.

A split is a set of regions, one rectangle ``(y0, y1, x0, x1)`` per field. With ``by: region``
every field is cut into bands along one axis (e.g. the left three quarters train, the right quarter
test) and a tile is always drawn wholly inside one band, so no pixel of a test region ever reaches
training. A validation or test band that its fraction makes narrower than one tile is widened to one
tile, the width taken from the training band; a field too small for a band of at least one tile per
split is an error that gives the band widths and the smallest field that works. With ``by: field``
whole fields go to one split each.

Examples
--------
>>> spatial_regions((100, 200), {"train": 0.75, "test": 0.25}, axis="x")
{'train': (0, 100, 0, 150), 'test': (0, 100, 150, 200)}
>>> band_widths(512, {"train": 0.7, "val": 0.1, "test": 0.2}, minimum=128)
{'train': 256, 'val': 128, 'test': 128}
>>> grid_tiles((0, 100, 150, 200), 32)
[(0, 32, 150, 182), (32, 64, 150, 182), (64, 96, 150, 182)]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning.pytorch as pl
import numpy as np
import pydantic
import torch
from torch.utils.data import DataLoader, Dataset

from morphospace.atomic import write_json_atomic
from morphospace.config import PATH, Config, ConfigError, key_error
from morphospace.data.spec import BatchEntry, DataSpec
from morphospace.io.paired import (
    PairedChannels, PairedField, PairedNormalization, load_paired_field, read_paired_manifest,
)

__all__ = ["TileSplitConfig", "TileConfig", "PairedDataConfig", "Region", "band_widths", "spatial_regions",
           "split_regions", "grid_tiles", "dihedral", "TileDataset", "PairedDataModule", "load_fields"]

Region = tuple[int, int, int, int]
SPLITS = ("train", "val", "test")


class TileSplitConfig(Config):
    """How fields are divided into train / val / test."""

    by: Literal["region", "field"] = "region"
    fractions: dict[str, float] = pydantic.Field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    axis: Literal["x", "y"] = pydantic.Field("x", description="by region: bands are cut along this axis")
    seed: int = pydantic.Field(0, description="by field: shuffles the fields before assigning them")

    @pydantic.field_validator("fractions")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split name(s) {unknown}; use {list(SPLITS)}")
        if "train" not in value or any(v <= 0 for v in value.values()):
            raise ValueError("fractions need a positive 'train' and only positive values")
        if abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, got {sum(value.values()):.4g}")
        return {name: value[name] for name in SPLITS if name in value}


class TileConfig(Config):
    """Training tiles: size, how many per epoch, augmentation, batch."""

    size: int = pydantic.Field(128, ge=16, description="tile side, px (a multiple of the network's)")
    tiles_per_epoch: int = pydantic.Field(512, ge=1)
    flips_and_rotations: bool = True
    batch_size: int = pydantic.Field(8, ge=1)
    eval_tiles_per_field: int | None = pydantic.Field(
        None, ge=1, description="cap on the regular validation tiles per field (all when null)")
    num_workers: int = pydantic.Field(0, ge=0)
    fixed_tiles: int | None = pydantic.Field(
        None, ge=1, description="few-shot: train on only this many tile positions, drawn once from the training "
                                "regions (each holding a labelled nucleus when the fields carry masks) and "
                                "augmented anew every epoch; null = new random tiles every epoch")


class PairedDataConfig(Config):
    """Paired fields from a manifest, and how they are tiled and split."""

    manifest: Annotated[str, PATH]
    channels: PairedChannels
    normalization: PairedNormalization = PairedNormalization()
    split: TileSplitConfig = TileSplitConfig()
    tiles: TileConfig = TileConfig()


def load_fields(config: PairedDataConfig) -> list[PairedField]:
    """Every field of the manifest, read and normalised (InputError names a bad file)."""
    return [load_paired_field(spec, config.channels, config.normalization)
            for spec in read_paired_manifest(config.manifest, config.channels)]


def _proportional_widths(length: int, fractions: dict[str, float], minimum: int) -> dict[str, int]:
    """Band widths proportional to ``fractions``, every band but ``train`` widened to ``minimum``
    at the expense of ``train`` (which may end up narrower than ``minimum``, or negative)."""
    edges = np.rint(np.cumsum([0.0, *fractions.values()]) / sum(fractions.values()) * length).astype(int)
    widths = {name: int(stop - start) for name, start, stop in zip(fractions, edges[:-1], edges[1:])}
    for name in widths:
        if name != "train":
            widths[name] = max(widths[name], minimum)
    if "train" in widths:
        widths["train"] = length - sum(w for name, w in widths.items() if name != "train")
    return widths


def band_widths(length: int, fractions: dict[str, float], minimum: int = 0) -> dict[str, int]:
    """Widths (px) of consecutive bands, one per split in the order of ``fractions``, along a field
    side of ``length`` px: proportional to the fractions, with a validation or test band narrower
    than ``minimum`` (a tile) widened to it, the width taken from ``train``.

    Raises ConfigError (key ``data.split``) giving the widths and the smallest side that works when
    the side cannot hold a band of at least ``minimum`` px per split.
    """
    widths = _proportional_widths(length, fractions, minimum)
    if min(widths.values()) >= max(minimum, 1):
        return widths
    smallest = max(minimum, 1) * len(fractions)
    while min(_proportional_widths(smallest, fractions, minimum).values()) < max(minimum, 1):
        smallest += 1
    proportional = _proportional_widths(length, fractions, 0)
    described = ", ".join(f"{name} {width} px" for name, width in proportional.items())
    raise key_error("data.split", f"a {length} px field side gives bands of {described}, but every split needs a "
                                  f"band of at least one {minimum} px tile: the smallest field side that works is "
                                  f"{smallest} px; use smaller tiles (data.tiles.size), fewer splits, or "
                                  "split.by: field")


def spatial_regions(shape: tuple[int, int], fractions: dict[str, float], axis: str = "x",
                    minimum: int = 0) -> dict[str, Region]:
    """Cut a field of ``shape`` (H, W) into consecutive bands along ``axis``, one per split, with
    the widths of :func:`band_widths` (``minimum``: the tile side, px)."""
    height, width = shape
    regions, start = {}, 0
    for name, size in band_widths(width if axis == "x" else height, fractions, minimum).items():
        stop = start + size
        regions[name] = (0, height, start, stop) if axis == "x" else (start, stop, 0, width)
        start = stop
    return regions


def split_regions(fields: list[PairedField], config: TileSplitConfig,
                  tile: int = 0) -> dict[str, list[tuple[int, Region]]]:
    """The regions of every split: ``{split: [(field index, region), ...]}``; with ``by: region``
    every band is at least ``tile`` px wide (see :func:`band_widths`)."""
    result: dict[str, list[tuple[int, Region]]] = {name: [] for name in config.fractions}
    if config.by == "region":
        for index, item in enumerate(fields):
            try:
                regions = spatial_regions(item.shape, config.fractions, config.axis, tile)
            except ConfigError as exc:
                raise key_error(exc.key, f"field {item.field_id} ({item.shape[0]} x {item.shape[1]} px, bands "
                                         f"along {config.axis}): {exc.problem}") from None
            for name, region in regions.items():
                result[name].append((index, region))
        return result
    if len(fields) < len(config.fractions):
        raise key_error("data.split.by", f"{len(fields)} field(s) cannot fill {len(config.fractions)} splits by field; "
                         "use split.by: region")
    order = np.random.default_rng(config.seed).permutation(len(fields))
    counts = np.maximum(1, np.rint(np.array(list(config.fractions.values())) * len(fields)).astype(int))
    counts[0] = len(fields) - counts[1:].sum()
    start = 0
    for name, count in zip(config.fractions, counts):
        for index in order[start:start + count]:
            height, width = fields[index].shape
            result[name].append((int(index), (0, height, 0, width)))
        start += count
    return result


def grid_tiles(region: Region, size: int) -> list[Region]:
    """Non-overlapping ``size`` x ``size`` tiles covering ``region`` from its top-left corner
    (a remainder narrower than ``size`` at the far edges is left out)."""
    y0, y1, x0, x1 = region
    return [(y, y + size, x, x + size) for x in range(x0, x1 - size + 1, size) for y in range(y0, y1 - size + 1, size)]


def dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip and 90-degree rotation applied to each array (..., H, W)."""
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for array in arrays:
        array = np.rot90(array, turns, axes=(-2, -1))
        out.append(np.ascontiguousarray(array[..., ::-1] if flip else array))
    return out


class TileDataset(Dataset):
    """Tiles of ``size`` px from the regions of a split.

    ``random=True``: ``length`` random tiles per epoch, each drawn from a region picked in
    proportion to its usable area, augmented with flips and rotations when ``augment``; the tile of
    index ``i`` in epoch ``e`` depends only on ``(seed, e, i)``. ``random=False``: the regular
    grid of :func:`grid_tiles` over every region (evaluation). ``fixed=N`` (with ``random``): only
    N positions, drawn once from ``seed`` (holding mask foreground when the fields carry masks),
    are used, item ``i`` taking position ``i % N`` with a fresh flip and rotation (few-shot training).

    Items are dicts: ``input`` (Ci, s, s), ``target`` (Ct, s, s) float32 tensors, ``mask`` (1, s, s)
    float32 foreground when the fields carry labels, ``field`` index and ``box`` (y0, y1, x0, x1).
    """

    def __init__(self, fields: list[PairedField], regions: list[tuple[int, Region]], size: int,
                 random: bool = True, length: int = 512, augment: bool = True, seed: int = 0,
                 max_tiles_per_region: int | None = None, fixed: int | None = None) -> None:
        usable = [(i, r) for i, r in regions if r[1] - r[0] >= size and r[3] - r[2] >= size]
        if not usable:
            raise key_error("data.tiles.size", f"no region is at least {size} x {size} px; use smaller tiles")
        self.fields, self.size, self.random, self.augment, self.seed = fields, size, random, augment, seed
        self.regions = usable
        self.epoch = 0
        if random:
            self.length = length
            area = np.array([(r[1] - r[0] - size + 1) * (r[3] - r[2] - size + 1) for _, r in usable], float)
            self.weights = area / area.sum()
            self.fixed_boxes = self._draw_fixed(fixed) if fixed else None
        else:
            self.boxes = [(i, box) for i, r in usable for box in grid_tiles(r, size)[:max_tiles_per_region]]
            self.length = len(self.boxes)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's random tiles."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _random_box(self, rng: np.random.Generator) -> tuple[int, Region]:
        index, (y0, y1, x0, x1) = self.regions[int(rng.choice(len(self.regions), p=self.weights))]
        y = int(rng.integers(y0, y1 - self.size + 1))
        x = int(rng.integers(x0, x1 - self.size + 1))
        return index, (y, y + self.size, x, x + self.size)

    def _draw_fixed(self, count: int, tries: int = 1000) -> list[tuple[int, Region]]:
        rng = np.random.default_rng([self.seed, 0xF1])
        boxes = []
        for _ in range(count):
            for _ in range(tries):
                index, (y0, y1, x0, x1) = self._random_box(rng)
                mask = self.fields[index].mask
                if mask is None or mask[y0:y1, x0:x1].any():
                    boxes.append((index, (y0, y1, x0, x1)))
                    break
            else:
                raise key_error("data.tiles.fixed_tiles", f"no {self.size} px training tile holds a labelled nucleus "
                                                          f"in {tries} draws")
        return boxes

    def _box(self, item: int, rng: np.random.Generator | None) -> tuple[int, Region]:
        if not self.random:
            return self.boxes[item]
        if self.fixed_boxes:
            return self.fixed_boxes[item % len(self.fixed_boxes)]
        return self._random_box(rng)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        if not 0 <= item < self.length:
            raise IndexError(f"tile {item} out of range for {self.length} tiles")
        rng = np.random.default_rng([self.seed, self.epoch, item]) if self.random else None
        index, box = self._box(item, rng)
        field = self.fields[index]
        y0, y1, x0, x1 = box
        arrays = [field.inputs[:, y0:y1, x0:x1], field.targets[:, y0:y1, x0:x1]]
        if field.mask is not None:
            arrays.append((field.mask[None, y0:y1, x0:x1] > 0).astype(np.float32))
        if self.random and self.augment:
            arrays = dihedral(arrays, rng)
        sample = {"input": torch.from_numpy(np.ascontiguousarray(arrays[0])),
                  "target": torch.from_numpy(np.ascontiguousarray(arrays[1])),
                  "field": torch.tensor(index), "box": torch.tensor(box)}
        if field.mask is not None:
            sample["mask"] = torch.from_numpy(arrays[2])
        return sample


class PairedDataModule(pl.LightningDataModule):
    """Train / val / test tiles of in-memory paired fields.

    Training tiles are random and augmented, a new draw each epoch when the Trainer reloads the
    training loader every epoch (``reload_dataloaders_every_n_epochs=1``); validation and test tiles
    are the regular grid of their regions.
    """

    def __init__(self, fields: list[PairedField], split: TileSplitConfig, tiles: TileConfig, seed: int = 0) -> None:
        super().__init__()
        if not fields:
            raise ValueError("no fields to tile")
        self.fields, self.split, self.tiles, self.seed = fields, split, tiles, seed
        self.channel_names: dict[str, list[str]] = {}
        self.regions = split_regions(fields, split, tiles.size)
        self.train_set = TileDataset(fields, self.regions["train"], tiles.size, True, tiles.tiles_per_epoch,
                                     tiles.flips_and_rotations, seed, fixed=tiles.fixed_tiles)
        self._evaluation_sets = {}
        for name in self.regions:
            if name != "train":
                try:
                    self._evaluation_sets[name] = TileDataset(fields, self.regions[name], tiles.size, random=False,
                                                              max_tiles_per_region=tiles.eval_tiles_per_field)
                except ConfigError as exc:
                    raise key_error(exc.key, f"{name} split: {exc.problem}") from None

    @classmethod
    def from_config(cls, config: PairedDataConfig, seed: int = 0) -> "PairedDataModule":
        """Read the manifest's fields and tile them; ConfigError names the key (``data.tiles.size``,
        ``data.tiles.fixed_tiles``, ``data.split.by``) when the tiles do not fit the fields' splits."""
        fields = load_fields(config)
        try:
            module = cls(fields, config.split, config.tiles, seed)
        except ConfigError as exc:
            raise key_error(exc.key, f"{config.manifest}: {exc.problem}") from None
        module.channel_names = {"input": list(config.channels.inputs), "target": list(config.channels.targets)}
        return module

    @property
    def spec(self) -> DataSpec:
        """Batch entries: ``input`` and ``target`` (C, s, s) and, with labels, ``mask`` (1, s, s)."""
        first, size = self.fields[0], self.tiles.size
        entries = {key: BatchEntry(key, (planes, size, size), tuple(self._names(key, planes)))
                   for key, planes in (("input", first.inputs.shape[0]), ("target", first.targets.shape[0]))}
        if first.mask is not None:
            entries["mask"] = BatchEntry("mask", (1, size, size))
        return DataSpec("paired", entries)

    def _names(self, key: str, planes: int) -> list[str]:
        """The channel names of ``key`` when each file gave one plane (a stack file gives several)."""
        names = self.channel_names.get(key, [])
        return names if len(names) == planes else []

    @property
    def has_validation(self) -> bool:
        return "val" in self.regions

    @property
    def trainer_options(self) -> dict[str, Any]:
        """Trainer arguments this module needs: a new draw of random tiles every epoch."""
        return {"reload_dataloaders_every_n_epochs": 1, "num_sanity_val_steps": 0}

    def regions_record(self) -> dict[str, list[dict]]:
        """The split rectangles of every field and, for few-shot runs, the fixed training tiles."""
        record = {name: [{"field": self.fields[i].field_id, "region": list(r)} for i, r in regions]
                  for name, regions in self.regions.items()}
        if self.train_set.fixed_boxes:
            record["fixed_train_tiles"] = [{"field": self.fields[i].field_id, "region": list(r)}
                                           for i, r in self.train_set.fixed_boxes]
        return record

    def save(self, run_dir: str | os.PathLike) -> None:
        """Write ``regions.json`` (the rectangles evaluation scores) into ``run_dir``."""
        write_json_atomic(Path(run_dir) / "regions.json", self.regions_record())

    def dataset(self, split: str) -> TileDataset:
        """Regular (un-augmented) tiles of ``split``."""
        if split not in self._evaluation_sets:
            raise ValueError(f"no evaluation split {split!r}; evaluation splits are {list(self._evaluation_sets)}")
        return self._evaluation_sets[split]

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        self.train_set.set_epoch(trainer.current_epoch if trainer is not None else 0)
        return DataLoader(self.train_set, batch_size=self.tiles.batch_size, shuffle=False,
                          num_workers=self.tiles.num_workers, drop_last=False)

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.regions:
            return []
        return DataLoader(self.dataset("val"), batch_size=self.tiles.batch_size, num_workers=self.tiles.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), batch_size=self.tiles.batch_size, num_workers=self.tiles.num_workers)
