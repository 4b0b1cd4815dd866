"""A PyTorch ``Dataset`` and a Lightning ``DataModule`` over a crop store.

Batches are dicts: ``image`` (B, C, H, W) float32 normalised, ``index`` (B,) row of the store, and
one entry per condition of ``data.conditions`` (see :mod:`morphospace.data.conditions`):
categorical (B,) int64, numeric (B,) float32, features (B, F) float32, channels (B, Cr, H, W)
float32, controls (B, C, H, W) float32 (a control crop of the same split and plate, drawn anew
each time). Reads are batched (``__getitems__``), so a lazily read store touches each Zarr chunk once
per batch; small stores can be held in memory.

Determinism: the split, the fitted normalisation and conditions follow ``seed``; the shuffling and
the augmentation of each training epoch follow only ``seed`` and the epoch (for a given
``num_workers``; each process of a multi-process run augments with ``seed + rank``), so a run
resumed at an epoch continues as an uninterrupted run would.

Every problem with the config against the store (a missing channel, column or split group) is a
:class:`~morphospace.config.ConfigError` naming the key, raised by :meth:`CropDataModule.setup`
before a run writes anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pydantic
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from morphospace.atomic import write_json_atomic
from morphospace.config import PATH, Config, key_error
from morphospace.data.conditions import (
    RESERVED_KEYS, ChannelCondition, ConditionConfig, ControlCondition, Encoder, control_groups, encoder_from_dict,
    fit_condition,
)
from morphospace.data.normalize import ChannelNormalizer, NormalizationConfig
from morphospace.data.spec import BatchEntry, DataSpec
from morphospace.data.splits import group_split
from morphospace.data.transforms import AugmentConfig, augment_batch, center_crop_or_pad
from morphospace.errors import InputError, MorphospaceError
from morphospace.io.store import CropStore
from morphospace.io.tables import write_table

__all__ = ["SplitConfig", "DataConfig", "CropDataset", "ChunkShuffleSampler", "CropDataModule", "epoch_seed"]

_IN_MEMORY_AUTO_BYTES = 2 * 1024**3
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SplitConfig(Config):
    """Group-aware split of the store's cells."""

    by: str | None = pydantic.Field("Metadata_Plate", description="metadata column; None: split cells")
    train: float = pydantic.Field(0.8, ge=0, le=1)
    val: float = pydantic.Field(0.1, ge=0, le=1)
    test: float = pydantic.Field(0.1, ge=0, le=1)

    @pydantic.model_validator(mode="after")
    def _sum_to_one(self) -> "SplitConfig":
        if not np.isclose(self.train + self.val + self.test, 1.0):
            raise ValueError(f"train + val + test must be 1, got {self.train + self.val + self.test}")
        if self.train <= 0:
            raise ValueError("train fraction must be positive")
        return self


class DataConfig(Config):
    """Which crops feed a model, what each sample carries beside its image, and how."""

    store: Annotated[str, PATH]
    channels: list[str] | None = pydantic.Field(
        None, description="image channels; null: every store channel not given as a condition")
    crop_size: int | None = pydantic.Field(None, ge=4, description="centre crop / pad to this size")
    include: dict[str, list[Any]] = pydantic.Field(
        default_factory=dict, description="keep rows whose column value is listed, e.g. {Metadata_MoA: [DMSO]}"
    )
    conditions: dict[str, ConditionConfig] = pydantic.Field(
        default_factory=dict, description="batch entries beside the image, by name (see morphospace.data.conditions)")
    split: SplitConfig = SplitConfig()
    normalization: NormalizationConfig = NormalizationConfig()
    augment: AugmentConfig = AugmentConfig()
    batch_size: int = pydantic.Field(64, ge=1)
    num_workers: int = pydantic.Field(0, ge=0)
    in_memory: bool | Literal["auto"] = "auto"
    seed: int = 0

    @pydantic.field_validator("conditions")
    @classmethod
    def _condition_names(cls, value: dict[str, ConditionConfig]) -> dict[str, ConditionConfig]:
        bad = [name for name in value if not _NAME.match(name) or name in RESERVED_KEYS]
        if bad:
            raise ValueError(f"condition name(s) {bad} must be identifiers other than {list(RESERVED_KEYS)}")
        return value


class CropDataset(Dataset):
    """Crops of a store at given rows, normalised, optionally cropped and augmented, with their
    conditions.

    Parameters
    ----------
    store
        The crop store (or its path).
    indices
        Store rows in this dataset.
    channels
        Image channel names (all when None).
    normalizer
        Fitted :class:`ChannelNormalizer` of the image channels followed by every condition's
        channels, or None for raw float32 values.
    crop_size
        Centre crop / zero pad to (crop_size, crop_size).
    augment
        Augmentation (applied to image and condition channels alike), or None (evaluation).
    conditions
        Encoded metadata conditions by name, one value per row of ``indices`` (first axis).
    channel_conditions
        Condition name -> channel names of the same crop.
    control_pools
        Condition name -> for each dataset position, the store rows of the control crops it may
        be paired with (one is drawn per serving).
    in_memory
        Load the selected crops into memory once.
    seed
        Seeds the augmentation generator (worker processes derive theirs from PyTorch's
        per-worker seed).
    """

    def __init__(
        self,
        store: CropStore | str | os.PathLike,
        indices: Sequence[int] | np.ndarray,
        channels: Sequence[str] | None = None,
        normalizer: ChannelNormalizer | None = None,
        crop_size: int | None = None,
        augment: AugmentConfig | None = None,
        conditions: Mapping[str, np.ndarray] | None = None,
        channel_conditions: Mapping[str, Sequence[str]] | None = None,
        in_memory: bool = False,
        seed: int = 0,
        control_pools: Mapping[str, Sequence[np.ndarray]] | None = None,
    ) -> None:
        self.store = store if isinstance(store, CropStore) else CropStore(store)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.channels = list(channels) if channels is not None else self.store.channels
        self.channel_conditions = {name: list(names) for name, names in (channel_conditions or {}).items()}
        self.read_channels = self.channels + [c for names in self.channel_conditions.values() for c in names]
        self.store.channel_indices(self.read_channels)
        self.normalizer = normalizer
        self.crop_size = crop_size
        self.augment = augment
        self.conditions = {name: torch.from_numpy(np.require(values, requirements="W"))  # a copy only if read-only
                           for name, values in (conditions or {}).items()}
        for name, values in self.conditions.items():
            if len(values) != len(self.indices):
                raise ValueError(f"condition {name!r}: {len(values)} values for {len(self.indices)} crops")
        self.control_pools = {name: list(pools) for name, pools in (control_pools or {}).items()}
        self._positions = pd.Index(self.indices)
        for name, pools in self.control_pools.items():
            if len(pools) != len(self.indices):
                raise ValueError(f"condition {name!r}: {len(pools)} control pools for {len(self.indices)} crops")
        self.seed = seed
        self.epoch = 0
        self.cached = self.store.read(self.indices, self.read_channels) if in_memory else None
        self._generator: torch.Generator | None = None
        self._generator_pid: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``'s augmentation stream (it depends only on the seed and the epoch)."""
        self.epoch, self._generator = epoch, None

    def _rng(self) -> torch.Generator:
        if self._generator is None or self._generator_pid != os.getpid():
            worker = get_worker_info()
            seed = worker.seed if worker else epoch_seed(self.seed, self.epoch)
            self._generator = torch.Generator().manual_seed(seed % 2**63)
            self._generator_pid = os.getpid()
        return self._generator

    def _read(self, positions: np.ndarray) -> torch.Tensor:
        """Every read channel at ``positions`` as float32 (B, C + Cr, H, W), cropped and normalised."""
        if self.cached is not None:
            raw = self.cached[positions]
        else:
            raw = self.store.read(self.indices[positions], self.read_channels)
        return self._prepare(raw)

    def _read_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Like :meth:`_read` for store ``rows``, which may lie outside the dataset."""
        positions = self._positions.get_indexer(rows)
        if (positions >= 0).all():
            return self._read(positions)
        return self._prepare(self.store.read(rows, self.read_channels))

    def _prepare(self, raw: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(raw, dtype=np.float32))
        if self.crop_size is not None:  # before normalising, so padding is 0 in the stored units
            x = center_crop_or_pad(x, self.crop_size)
        if self.normalizer is not None:
            x = self.normalizer.transform(x)
        return x

    def load(self, positions: Sequence[int]) -> torch.Tensor:
        """Image channels at dataset ``positions`` as a float32 batch (B, C, H, W), normalised and
        cropped, without augmentation."""
        return self._read(np.asarray(positions, dtype=np.int64))[:, : len(self.channels)]

    def batch(self, positions: Sequence[int], augment: bool = False) -> dict[str, torch.Tensor]:
        """The batch dict of dataset ``positions`` (see the module docstring); augmented when
        ``augment`` and the dataset has an augmentation."""
        positions = np.asarray(positions, dtype=np.int64)
        x = self._read(positions)
        if augment and self.augment is not None:
            x = augment_batch(x, self.augment, self._rng())
        batch = {"image": x[:, : len(self.channels)], "index": torch.from_numpy(self.indices[positions])}
        start = len(self.channels)
        for name, names in self.channel_conditions.items():
            batch[name] = x[:, start : start + len(names)]
            start += len(names)
        for name, values in self.conditions.items():
            batch[name] = values[torch.from_numpy(positions)]
        for name in self.control_pools:
            batch[name] = self._controls(name, positions, augment)
        return batch

    def _controls(self, name: str, positions: np.ndarray, augment: bool) -> torch.Tensor:
        """Image channels (B, C, H, W) of one control crop drawn for each of ``positions``."""
        rng = self._rng()
        pools = self.control_pools[name]
        drawn = np.array([pools[p][int(torch.randint(len(pools[p]), (), generator=rng))] for p in positions])
        controls = self._read_rows(drawn)[:, : len(self.channels)]
        if augment and self.augment is not None:
            controls = augment_batch(controls, self.augment, rng)
        return controls

    def __getitems__(self, positions: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        batch = self.batch(positions, augment=True)
        return [{key: value[row] for key, value in batch.items()} for row in range(len(positions))]

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([position])[0]


def epoch_seed(*parts: int) -> int:
    """A seed for torch generators that depends only on ``parts`` (seed, epoch, rank...).

    >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
    True
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ChunkShuffleSampler(Sampler[int]):
    """Random order that reads a lazily stored dataset chunk by chunk.

    Chunks are visited in random order; the cells of ``window`` consecutive chunks are shuffled
    together, so each batch decompresses a few chunks instead of one per cell (``chunk_cells=1``
    gives a plain random permutation). The order depends only on ``seed`` and the epoch set by
    :meth:`set_epoch` (Lightning calls it every epoch), so a resumed run sees the orders an
    uninterrupted one would have.

    Parameters
    ----------
    store_rows
        Store row of every dataset position.
    chunk_cells
        Crops per Zarr chunk.
    window
        Chunks mixed together.
    seed
        Seed of every epoch's order.
    """

    def __init__(self, store_rows: np.ndarray, chunk_cells: int, window: int = 8, seed: int = 0) -> None:
        self.chunks = np.asarray(store_rows) // chunk_cells
        self.window = window
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        unique = np.unique(self.chunks)
        order = unique[torch.randperm(len(unique), generator=generator).numpy()]
        for start in range(0, len(order), self.window):
            positions = np.flatnonzero(np.isin(self.chunks, order[start : start + self.window]))
            yield from positions[torch.randperm(len(positions), generator=generator).numpy()].tolist()


class CropDataModule(pl.LightningDataModule):
    """Splits a store by a metadata column, fits normalisation and conditions on the training
    split only, and serves train / val / test / predict loaders.

    ``state_dict`` (saved in Lightning checkpoints) and :meth:`save` (``normalization.json``,
    ``splits.parquet`` and ``conditions.json`` in a run directory) record the split and the fitted
    statistics, so a resumed or evaluated run sees exactly the same data.
    """

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config
        self.store: CropStore | None = None
        self.table: pd.DataFrame | None = None
        self.splits: pd.Series | None = None
        self.normalizer: ChannelNormalizer | None = None
        self.encoders: dict[str, Encoder] = {}
        self.condition_values: dict[str, np.ndarray] = {}
        self._state: dict[str, Any] | None = None
        self._train_streams: tuple[CropDataset, torch.Generator, int] | None = None

    # ------------------------------------------------------------------------------ set-up and checks

    def setup(self, stage: str | None = None) -> None:
        """Open the store, check the config against it, split and fit (or restore the saved state).

        Raises ConfigError naming the key when the config does not fit the store.
        """
        if self.store is not None:
            return
        store = self._open_store()
        self._check_channels(store)
        self.table = self._selected_rows(store)
        if self._state is not None:
            self.splits = pd.Series(self._state["splits"], name="split").reindex(self.table.index)
            self.normalizer = ChannelNormalizer.from_dict(self._state["normalizer"])
            self.encoders = {name: encoder_from_dict(name, saved)
                             for name, saved in self._state.get("conditions", {}).items()}
        else:
            self.splits = self._split()
            self.normalizer = self._fit_normalizer(store)
            train = self.table.loc[self.indices("train")]
            self.encoders = {name: fit_condition(name, condition, train, self.table)
                             for name, condition in self.config.conditions.items()
                             if not isinstance(condition, (ChannelCondition, ControlCondition))}
        self.condition_values = self._encode_selected()
        self.store = store
        for split in ("train", "val", "test"):
            if len(self.indices(split)):
                self.control_pools(split)

    def _open_store(self) -> CropStore:
        try:
            return CropStore(self.config.store)
        except MorphospaceError as exc:
            raise key_error("data.store", str(exc)) from None

    @property
    def channel_conditions(self) -> dict[str, list[str]]:
        """Condition name -> channels of the same crop, for the channel conditions."""
        return {name: list(condition.channels) for name, condition in self.config.conditions.items()
                if isinstance(condition, ChannelCondition)}

    def _image_channels(self, store: CropStore) -> list[str]:
        if self.config.channels is not None:
            return list(self.config.channels)
        conditioned = {c for names in self.channel_conditions.values() for c in names}
        return [c for c in store.channels if c not in conditioned]

    def _check_channels(self, store: CropStore) -> None:
        named = {"data.channels": self._image_channels(store)}
        named |= {f"data.conditions.{name}.channels": names for name, names in self.channel_conditions.items()}
        for key, names in named.items():
            missing = [c for c in names if c not in store.channels]
            if missing:
                raise key_error(key, f"the store {store.path} has no channel(s) {missing}; it has {store.channels}")
        if not named["data.channels"]:
            raise key_error("data.channels", "no image channel is left beside the condition channels")
        used = [c for names in named.values() for c in names]
        repeated = sorted({c for c in used if used.count(c) > 1})
        if repeated:
            raise key_error("data.conditions", f"channel(s) {repeated} are both image and condition, or in two "
                                               "conditions")
        ranges = self.config.normalization.fixed_ranges
        if self.config.normalization.method == "fixed" and len(ranges) != len(used):
            raise key_error("data.normalization.fixed_ranges", f"{len(ranges)} range(s) for the {len(used)} channels "
                                                               f"read ({used}, image channels first)")

    def _selected_rows(self, store: CropStore) -> pd.DataFrame:
        table = store.cells
        keep = np.ones(len(table), dtype=bool)
        for column, values in self.config.include.items():
            if column not in table:
                raise key_error("data.include", f"column {column!r} is not in the cell table of {store.path}")
            keep &= table[column].isin(values).to_numpy()
        if not keep.any():
            raise key_error("data.include", f"no cells of {store.path} match {self.config.include}")
        return table[keep]

    def _split(self) -> pd.Series:
        split = self.config.split
        fractions = {"train": split.train, "val": split.val, "test": split.test}
        try:
            return group_split(self.table, split.by, fractions, seed=self.config.seed)
        except InputError as exc:
            raise key_error("data.split.by", f"{self.config.store}: {exc}") from None

    def _fit_normalizer(self, store: CropStore) -> ChannelNormalizer:
        normalizer = ChannelNormalizer(self.config.normalization)
        if normalizer.needs_fit:
            train = self.indices("train")
            rng = np.random.default_rng(self.config.seed)
            sample = np.sort(rng.choice(train, min(len(train), self.config.normalization.max_fit_cells), replace=False))
            normalizer.fit(store.read(sample, self._read_channels(store)))
        return normalizer

    def _read_channels(self, store: CropStore) -> list[str]:
        return self._image_channels(store) + [c for names in self.channel_conditions.values() for c in names]

    def _encode_selected(self) -> dict[str, np.ndarray]:
        """Every selected row's encoded metadata conditions; ConfigError when a value of the
        validation or test split is outside what the training split taught."""
        values = {}
        for name, encoder in self.encoders.items():
            try:
                values[name] = encoder.encode(self.table)
            except InputError as exc:
                unseen = encoder.kind == "categorical"
                reason = "; the split (data.split) leaves these values out of training" if unseen else ""
                raise key_error(f"data.conditions.{name}", f"{exc}{reason}") from None
        return values

    # ------------------------------------------------------------------------------ what it serves

    def _require_setup(self) -> None:
        if self.splits is None:
            raise RuntimeError("call setup() first")

    @property
    def image_channels(self) -> list[str]:
        self._require_setup()
        return self._image_channels(self.store)

    @property
    def crop_shape(self) -> tuple[int, ...]:
        """Spatial shape of a served crop: the store's, with the last two sides set by ``crop_size``."""
        self._require_setup()
        shape = tuple(self.store.crop_shape)
        size = self.config.crop_size
        return shape if size is None else (*shape[:-2], size, size)

    @property
    def spec(self) -> DataSpec:
        """The batch entries (see :mod:`morphospace.data.spec`)."""
        self._require_setup()
        image = self.image_channels
        entries = {"image": BatchEntry("image", (len(image), *self.crop_shape), tuple(image)),
                   "index": BatchEntry("index", ())}
        for name, condition in self.config.conditions.items():
            if isinstance(condition, ChannelCondition):
                entries[name] = BatchEntry("channels", (len(condition.channels), *self.crop_shape),
                                           tuple(condition.channels))
            elif isinstance(condition, ControlCondition):
                entries[name] = BatchEntry("controls", (len(image), *self.crop_shape), tuple(image))
            else:
                encoder = self.encoders[name]
                entries[name] = BatchEntry(encoder.kind, encoder.shape, tuple(encoder.names))
        return DataSpec("crops", entries)

    @property
    def has_validation(self) -> bool:
        return self.config.split.val > 0

    @property
    def trainer_options(self) -> dict[str, Any]:
        """Trainer arguments this data module needs."""
        return {}

    def indices(self, split: str) -> np.ndarray:
        """Store rows of ``split`` (``train``, ``val``, ``test``) or all selected rows (``all``)."""
        self._require_setup()
        if split == "all":
            return self.table.index.to_numpy()
        return self.splits.index[self.splits == split].to_numpy()

    def dataset(self, split: str, augment: bool | None = None, seed: int | None = None) -> CropDataset:
        """The :class:`CropDataset` of ``split``; augmentation defaults to on for ``train`` only."""
        self.setup()
        rows = self.indices(split)
        positions = self.table.index.get_indexer(rows)
        use_augment = (split == "train") if augment is None else augment
        return CropDataset(
            self.store, rows, self.image_channels, self.normalizer, self.config.crop_size,
            self.config.augment if use_augment else None,
            {name: values[positions] for name, values in self.condition_values.items()},
            self.channel_conditions, self._in_memory(len(rows)), self.config.seed if seed is None else seed,
            self.control_pools(split),
        )

    def control_pools(self, split: str) -> dict[str, list[np.ndarray]]:
        """For each controls condition, the store rows of the control crops each crop of
        ``split`` may be paired with (see :func:`~morphospace.data.conditions.control_groups`)."""
        return {name: control_groups(name, condition, self.table, self.splits.to_numpy() == split,
                                     str(self.config.store))
                for name, condition in self.config.conditions.items() if isinstance(condition, ControlCondition)}

    def dataset_for(self, store: CropStore, indices: Sequence[int] | np.ndarray | None = None,
                    conditions: Sequence[str] | None = None) -> CropDataset:
        """Crops of another ``store`` (all, or its rows ``indices``) prepared exactly as this
        module's (channels, fitted normalisation, crop size), without augmentation, carrying the
        metadata ``conditions`` named (all when None; a model that reads none needs none encoded).

        Raises InputError when the store lacks a channel or holds condition values the training
        split never had.
        """
        self._require_setup()
        rows = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
        missing = [c for c in self._read_channels(self.store) if c not in store.channels]
        if missing:
            raise InputError(f"{store.path}: lacks channel(s) {missing} the model was trained on; "
                             f"the store has {store.channels}")
        encoders = {name: encoder for name, encoder in self.encoders.items()
                    if conditions is None or name in conditions}
        foreign = Path(store.path).resolve() != Path(self.store.path).resolve()
        joined = [name for name, encoder in encoders.items() if encoder.kind == "features"]
        if foreign and joined:
            raise InputError(f"{store.path}: condition(s) {joined} join a feature table on the store rows of "
                             f"{self.store.path}; they cannot describe the crops of another store")
        cells = store.cells.iloc[rows].set_axis(rows)
        return CropDataset(store, rows, self.image_channels, self.normalizer, self.config.crop_size,
                           conditions={name: encoder.encode(cells) for name, encoder in encoders.items()},
                           channel_conditions=self.channel_conditions)

    def _in_memory(self, n: int) -> bool:
        if self.config.in_memory != "auto":
            return bool(self.config.in_memory)
        channels = len(self._read_channels(self.store))
        return n * channels * int(np.prod(self.store.crop_shape)) * 4 <= _IN_MEMORY_AUTO_BYTES

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_rank) if trainer is not None else 0

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        seed = self.config.seed + (self._rank() if shuffle else 0)  # augmentation: each process its own draws
        dataset = self.dataset(split, seed=seed)
        if len(dataset) == 0:
            raise InputError(f"{self.config.store}: the {split} split is empty; adjust data.split")
        sampler = None
        generator = torch.Generator().manual_seed(seed)  # seeds of worker processes
        if shuffle:  # the same order in every process, which then takes its share
            chunk_cells = self.store.images.chunks[0] if dataset.cached is None else 1
            sampler = ChunkShuffleSampler(dataset.indices, chunk_cells, seed=self.config.seed)
            self._train_streams = (dataset, generator, seed)
        return DataLoader(
            dataset, batch_size=self.config.batch_size, sampler=sampler, num_workers=self.config.num_workers,
            generator=generator, drop_last=shuffle and len(dataset) > self.config.batch_size,
        )

    def set_epoch(self, epoch: int) -> None:
        """Start training epoch ``epoch``'s augmentation and worker streams, which depend only on
        the seed, the process rank and the epoch (the sampler's order follows Lightning's own
        ``set_epoch``), so that a run resumed at an epoch continues as an uninterrupted one."""
        if self._train_streams is not None:
            dataset, generator, seed = self._train_streams
            dataset.set_epoch(epoch)
            generator.manual_seed(epoch_seed(seed, epoch))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches; an empty list (no validation) when the split's fraction is 0."""
        return self._loader("val", shuffle=False) if self.has_validation else []

    def test_dataloader(self) -> DataLoader | list:
        """Test batches; an empty list when the split's fraction is 0."""
        return self._loader("test", shuffle=False) if self.config.split.test > 0 else []

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        dataset = self.dataset("all", augment=False)
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False,
                          num_workers=self.config.num_workers)

    # ------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        if self.splits is None:
            return {}
        return {"splits": {int(k): v for k, v in self.splits.items()}, "normalizer": self.normalizer.to_dict(),
                "conditions": {name: encoder.to_dict() for name, encoder in self.encoders.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._state = state_dict
            self.store = None

    def save(self, run_dir: str | os.PathLike) -> None:
        """Write ``normalization.json``, ``splits.parquet`` and ``conditions.json`` into ``run_dir``."""
        self.setup()
        run_dir = Path(run_dir)
        normalization = {**self.normalizer.to_dict(), "channels": self._read_channels(self.store)}
        write_json_atomic(run_dir / "normalization.json", normalization)
        frame = pd.DataFrame({"store_index": self.splits.index.to_numpy(), "split": self.splits.to_numpy()})
        if self.config.split.by:
            frame[self.config.split.by] = self.table[self.config.split.by].to_numpy()
        write_table(frame, run_dir / "splits.parquet")
        conditions = {name: encoder.to_dict() for name, encoder in self.encoders.items()}
        conditions |= {name: {"kind": "channels", "channels": names} for name, names in self.channel_conditions.items()}
        write_json_atomic(run_dir / "conditions.json", conditions)
