"""A PyTorch ``Dataset`` and a Lightning ``DataModule`` over a crop store.

Batches are dicts: ``image`` (B, C, H, W) float32 normalised, ``index`` (B,) row of the store,
and ``label`` (B,) int64 when a label column is set. Reads are batched (``__getitems__``), so a
lazily read store touches each Zarr chunk once per batch; small stores can be held in memory.

Determinism: the split, the fitted normalisation, the shuffling and the augmentation follow
``seed`` (for a given ``num_workers``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pydantic
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from morphospace.config import Config
from morphospace.data.splits import group_split
from morphospace.data.transforms import AugmentConfig, augment_batch, center_crop_or_pad
from morphospace.errors import InputError
from morphospace.io.atomic import write_text_atomic
from morphospace.io.store import CropStore
from morphospace.io.tables import write_table
from morphospace.preprocess.normalize import ChannelNormalizer, NormalizationConfig

__all__ = ["SplitConfig", "DataConfig", "CropDataset", "ChunkShuffleSampler", "CropDataModule"]

_IN_MEMORY_AUTO_BYTES = 2 * 1024**3


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
    """Which crops feed a model and how."""

    store: str
    channels: list[str] | None = None
    crop_size: int | None = pydantic.Field(None, ge=4, description="centre crop / pad to this size")
    include: dict[str, list[Any]] = pydantic.Field(
        default_factory=dict, description="keep rows whose column value is listed, e.g. {Metadata_MoA: [DMSO]}"
    )
    label_column: str | None = None
    split: SplitConfig = SplitConfig()
    normalization: NormalizationConfig = NormalizationConfig()
    augment: AugmentConfig = AugmentConfig()
    batch_size: int = pydantic.Field(64, ge=1)
    num_workers: int = pydantic.Field(0, ge=0)
    in_memory: bool | Literal["auto"] = "auto"
    seed: int = 0


class CropDataset(Dataset):
    """Crops of a store at given rows, normalised, optionally cropped and augmented.

    Parameters
    ----------
    store
        The crop store (or its path).
    indices
        Store rows in this dataset.
    channels
        Channel names to load (all when None).
    normalizer
        Fitted :class:`ChannelNormalizer`, or None for raw float32 values.
    crop_size
        Centre crop / zero pad to (crop_size, crop_size).
    augment
        Augmentation, or None (evaluation).
    labels
        Integer label per row of ``indices``, or None.
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
        labels: Sequence[int] | np.ndarray | None = None,
        in_memory: bool = False,
        seed: int = 0,
    ) -> None:
        self.store = store if isinstance(store, CropStore) else CropStore(store)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.channels = list(channels) if channels is not None else self.store.channels
        self.store.channel_indices(self.channels)
        self.normalizer = normalizer
        self.crop_size = crop_size
        self.augment = augment
        self.labels = None if labels is None else torch.tensor(np.array(labels), dtype=torch.int64)
        if self.labels is not None and len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self.indices)} crops")
        self.seed = seed
        self.cached = self.store.read(self.indices, self.channels) if in_memory else None
        self._generator: torch.Generator | None = None
        self._generator_pid: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _rng(self) -> torch.Generator:
        if self._generator is None or self._generator_pid != os.getpid():
            worker = get_worker_info()
            self._generator = torch.Generator().manual_seed(worker.seed if worker else self.seed)
            self._generator_pid = os.getpid()
        return self._generator

    def load(self, positions: Sequence[int]) -> torch.Tensor:
        """Crops at dataset ``positions`` as a float32 batch (B, C, H, W), normalised and cropped,
        without augmentation."""
        positions = np.asarray(positions, dtype=np.int64)
        raw = self.cached[positions] if self.cached is not None else self.store.read(self.indices[positions], self.channels)
        x = torch.from_numpy(np.asarray(raw, dtype=np.float32))
        if self.crop_size is not None:  # before normalising, so padding is 0 in the stored units
            x = center_crop_or_pad(x, self.crop_size)
        if self.normalizer is not None:
            x = self.normalizer.transform(x)
        return x

    def __getitems__(self, positions: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        x = self.load(positions)
        if self.augment is not None:
            x = augment_batch(x, self.augment, self._rng())
        items = []
        for row, position in enumerate(positions):
            item = {"image": x[row], "index": torch.tensor(int(self.indices[position]))}
            if self.labels is not None:
                item["label"] = self.labels[position]
            items.append(item)
        return items

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([position])[0]


class ChunkShuffleSampler(Sampler[int]):
    """Random order that reads a lazily stored dataset chunk by chunk.

    Chunks are visited in random order; the cells of ``window`` consecutive chunks are shuffled
    together, so each batch decompresses a few chunks instead of one per cell.

    Parameters
    ----------
    store_rows
        Store row of every dataset position.
    chunk_cells
        Crops per Zarr chunk.
    window
        Chunks mixed together.
    generator
        Source of randomness (advances from epoch to epoch).
    """

    def __init__(self, store_rows: np.ndarray, chunk_cells: int, window: int = 8,
                 generator: torch.Generator | None = None) -> None:
        self.chunks = np.asarray(store_rows) // chunk_cells
        self.window = window
        self.generator = generator

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        unique = np.unique(self.chunks)
        order = unique[torch.randperm(len(unique), generator=self.generator).numpy()]
        for start in range(0, len(order), self.window):
            positions = np.flatnonzero(np.isin(self.chunks, order[start : start + self.window]))
            yield from positions[torch.randperm(len(positions), generator=self.generator).numpy()].tolist()


class CropDataModule(pl.LightningDataModule):
    """Splits a store by a metadata column, fits normalisation on the training split only, and
    serves train / val / test / predict loaders.

    ``state_dict`` (saved in Lightning checkpoints) and :meth:`save` (``normalization.json`` and
    ``splits.parquet`` in a run directory) record the split and the fitted statistics, so a
    resumed or evaluated run sees exactly the same data.
    """

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config
        self.store: CropStore | None = None
        self.table: pd.DataFrame | None = None
        self.splits: pd.Series | None = None
        self.normalizer: ChannelNormalizer | None = None
        self.label_names: list[str] | None = None
        self._state: dict[str, Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.store is not None:
            return
        self.store = CropStore(self.config.store)
        self.store.channel_indices(self.config.channels)
        self.table = self._selected_rows()
        if self._state is not None:
            self.splits = pd.Series(self._state["splits"], name="split").reindex(self.table.index)
            self.normalizer = ChannelNormalizer.from_dict(self._state["normalizer"])
        else:
            split = self.config.split
            fractions = {"train": split.train, "val": split.val, "test": split.test}
            self.splits = group_split(self.table, split.by, fractions, seed=self.config.seed)
            self.normalizer = self._fit_normalizer()
        if self.config.label_column:
            column = self.table[self.config.label_column].astype(str)
            self.label_names = sorted(column.unique())

    def _selected_rows(self) -> pd.DataFrame:
        table = self.store.cells
        keep = np.ones(len(table), dtype=bool)
        for column, values in self.config.include.items():
            if column not in table:
                raise InputError(f"{self.store.path}: data.include names column {column!r}, not in the cell table")
            keep &= table[column].isin(values).to_numpy()
        if self.config.label_column and self.config.label_column not in table:
            raise InputError(f"{self.store.path}: data.label_column {self.config.label_column!r} is not in the cell table")
        if not keep.any():
            raise InputError(f"{self.store.path}: no cells match data.include {self.config.include}")
        return table[keep]

    def _fit_normalizer(self) -> ChannelNormalizer:
        normalizer = ChannelNormalizer(self.config.normalization)
        if normalizer.needs_fit:
            train = self.indices("train")
            rng = np.random.default_rng(self.config.seed)
            sample = np.sort(rng.choice(train, min(len(train), self.config.normalization.max_fit_cells), replace=False))
            normalizer.fit(self.store.read(sample, self.config.channels))
        return normalizer

    def indices(self, split: str) -> np.ndarray:
        """Store rows of ``split`` (``train``, ``val``, ``test``) or all selected rows (``all``)."""
        if self.splits is None:
            raise RuntimeError("call setup() first")
        if split == "all":
            return self.table.index.to_numpy()
        return self.splits.index[self.splits == split].to_numpy()

    def dataset(self, split: str, augment: bool | None = None) -> CropDataset:
        """The :class:`CropDataset` of ``split``; augmentation defaults to on for ``train`` only."""
        self.setup()
        rows = self.indices(split)
        labels = None
        if self.config.label_column:
            names = self.table.loc[rows, self.config.label_column].astype(str)
            labels = names.map({n: i for i, n in enumerate(self.label_names)}).to_numpy()
        use_augment = (split == "train") if augment is None else augment
        return CropDataset(
            self.store, rows, self.config.channels, self.normalizer, self.config.crop_size,
            self.config.augment if use_augment else None, labels, self._in_memory(len(rows)), self.config.seed,
        )

    def _in_memory(self, n: int) -> bool:
        if self.config.in_memory != "auto":
            return bool(self.config.in_memory)
        channels = len(self.config.channels or self.store.channels)
        return n * channels * int(np.prod(self.store.crop_shape)) * 4 <= _IN_MEMORY_AUTO_BYTES

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        if len(dataset) == 0:
            raise InputError(f"{self.config.store}: the {split} split is empty; adjust data.split")
        generator = torch.Generator().manual_seed(self.config.seed)
        sampler = None
        if shuffle and dataset.cached is None:
            sampler = ChunkShuffleSampler(dataset.indices, self.store.images.chunks[0], generator=generator)
        return DataLoader(
            dataset, batch_size=self.config.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            num_workers=self.config.num_workers, generator=generator,
            drop_last=shuffle and len(dataset) > self.config.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches; an empty list (no validation) when the split's fraction is 0."""
        return self._loader("val", shuffle=False) if self.config.split.val > 0 else []

    def test_dataloader(self) -> DataLoader | list:
        """Test batches; an empty list when the split's fraction is 0."""
        return self._loader("test", shuffle=False) if self.config.split.test > 0 else []

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        dataset = self.dataset("all", augment=False)
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=False, num_workers=self.config.num_workers)

    def state_dict(self) -> dict[str, Any]:
        if self.splits is None:
            return {}
        return {"splits": {int(k): v for k, v in self.splits.items()}, "normalizer": self.normalizer.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._state = state_dict
            self.store = None

    def save(self, run_dir: str | os.PathLike) -> None:
        """Write ``normalization.json`` and ``splits.parquet`` into ``run_dir``."""
        self.setup()
        run_dir = Path(run_dir)
        write_text_atomic(run_dir / "normalization.json", json.dumps(self.normalizer.to_dict(), indent=2))
        frame = pd.DataFrame({"store_index": self.splits.index.to_numpy(), "split": self.splits.to_numpy()})
        if self.config.split.by:
            frame[self.config.split.by] = self.table[self.config.split.by].to_numpy()
        write_table(frame, run_dir / "splits.parquet")
