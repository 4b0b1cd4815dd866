from pathlib import Path

import numpy as np
import pytest
import torch

from morphospace.config import ConfigError, resolve_config
from morphospace.data.dataset import ChunkShuffleSampler, CropDataModule, DataConfig


def _module(store: Path, **overrides) -> CropDataModule:
    data = {"store": str(store), "batch_size": 8, "split": {"by": "Metadata_Plate", "train": 0.34, "val": 0.33,
                                                             "test": 0.33}}
    data.update(overrides)
    return CropDataModule(resolve_config(DataConfig, data))


def _first_values(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch["index"]]


def test_batches_shapes_and_ranges(small_store: Path):
    module = _module(small_store, crop_size=8)
    module.setup()
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (8, 2, 8, 8) and batch["image"].dtype == torch.float32
    assert 0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1


def test_split_by_plate_and_normalisation_fitted_on_train_only(small_store: Path):
    module = _module(small_store, normalization={"low": 0, "high": 100})
    module.setup()
    table = module.table
    assert module.splits.groupby(table["Metadata_Plate"]).nunique().max() == 1
    (train_plate,) = table.loc[module.indices("train"), "Metadata_Plate"].unique()
    train = module.store.read(module.indices("train"))
    assert module.normalizer.stats[1] == [float(train[:, 1].min()), float(train[:, 1].max())]
    assert train_plate in {"P0", "P1", "P2"}


def test_same_seed_same_batches(small_store: Path):
    def epoch(seed: int):
        module = _module(small_store, seed=seed)
        return _first_values(module.train_dataloader()), next(iter(module.train_dataloader()))["image"]

    (order_a, images_a), (order_b, images_b), (order_c, _) = epoch(0), epoch(0), epoch(1)
    assert order_a == order_b and torch.equal(images_a, images_b)
    assert order_a != order_c or not torch.equal(images_a, epoch(1)[1])


def test_lazy_and_in_memory_agree(small_store: Path):
    lazy = _module(small_store, in_memory=False, augment={"flips": False, "rot90": False})
    memory = _module(small_store, in_memory=True, augment={"flips": False, "rot90": False})
    for module in (lazy, memory):
        module.setup()
    a = lazy.dataset("all").load(np.arange(60))
    b = memory.dataset("all").load(np.arange(60))
    assert torch.equal(a, b)
    seen = _first_values(lazy.train_dataloader())  # chunk-wise shuffling; the last partial batch is dropped
    assert len(seen) == len(set(seen)) == 16 and set(seen) <= set(lazy.indices("train").tolist())


def test_include_and_errors_name_the_key(small_store: Path):
    module = _module(small_store, include={"Metadata_Well": ["W0", "W1"]},
                     split={"by": None, "train": 0.5, "val": 0.25, "test": 0.25})
    module.setup()
    assert len(module.table) == 24
    with pytest.raises(ConfigError, match="key 'data.include': column 'Metadata_Nope'"):
        _module(small_store, include={"Metadata_Nope": [1]}).setup()
    with pytest.raises(ConfigError, match="key 'data.include': no cells"):
        _module(small_store, include={"Metadata_Well": ["W9"]}).setup()
    with pytest.raises(ConfigError, match="key 'data.split.by': .*'Metadata_Batch' is not in the cell table"):
        _module(small_store, split={"by": "Metadata_Batch"}).setup()
    with pytest.raises(ConfigError, match="key 'data.channels': .*no channel\\(s\\) \\['Hoechst'\\]"):
        _module(small_store, channels=["Hoechst"]).setup()
    with pytest.raises(ConfigError, match="key 'data.store'"):
        _module(small_store.parent / "nowhere").setup()
    with pytest.raises(ConfigError, match="split"):
        resolve_config(DataConfig, {"store": "x", "split": {"train": 0.9, "val": 0.9, "test": 0.0}})


def test_state_round_trip_and_saved_files(small_store: Path, tmp_path: Path):
    module = _module(small_store)
    module.setup()
    restored = _module(small_store, seed=99)
    restored.load_state_dict(module.state_dict())
    restored.setup()
    assert restored.splits.equals(module.splits) and restored.normalizer.stats == module.normalizer.stats
    module.save(tmp_path)
    assert (tmp_path / "normalization.json").is_file() and (tmp_path / "splits.parquet").is_file()


def test_chunk_sampler_is_a_permutation_reading_chunk_runs():
    rows = np.arange(100)
    sampler = ChunkShuffleSampler(rows, chunk_cells=10, window=2, seed=0)
    order = list(sampler)
    assert list(sampler) == order  # the same epoch, the same order
    sampler.set_epoch(1)
    assert list(sampler) != order and sorted(sampler) == list(range(100))
    assert sorted(order) == list(range(100)) and order != list(range(100))
    first_twenty_chunks = {r // 10 for r in order[:20]}
    assert len(first_twenty_chunks) == 2
