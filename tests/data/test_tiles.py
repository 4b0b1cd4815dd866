"""Spatial splits and tiles of paired fields."""

import numpy as np
import pytest
import torch

from morphospace.config import ConfigError
from morphospace.data.tiles import (
    PairedDataModule, TileConfig, TileDataset, TileSplitConfig, band_widths, dihedral, grid_tiles, spatial_regions,
    split_regions,
)
from morphospace.io.paired import PairedField


def _field(name: str, height: int = 64, width: int = 96) -> PairedField:
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    mask = (xx > width / 2).astype(np.int32)
    return PairedField(name, np.stack([xx, yy]), (xx * 10)[None], mask)


def test_regions_tile_the_field_without_overlap():
    regions = spatial_regions((64, 96), {"train": 0.5, "val": 0.25, "test": 0.25}, axis="x")
    assert regions == {"train": (0, 64, 0, 48), "val": (0, 64, 48, 72), "test": (0, 64, 72, 96)}
    assert spatial_regions((64, 96), {"train": 0.75, "test": 0.25}, axis="y")["test"] == (48, 64, 0, 96)


def test_bands_narrower_than_a_tile_are_widened_from_the_training_band():
    fractions = {"train": 0.7, "val": 0.1, "test": 0.2}
    # 512 px: 358 / 51 / 102 px -> val and test take one 128 px tile each, train the rest
    assert band_widths(512, fractions, 128) == {"train": 256, "val": 128, "test": 128}
    assert band_widths(1024, fractions, 128) == {"train": 691, "val": 128, "test": 205}  # only val was short
    regions = spatial_regions((512, 512), {"train": 0.65, "val": 0.15, "test": 0.2}, minimum=128)
    assert regions == {"train": (0, 512, 0, 256), "val": (0, 512, 256, 384), "test": (0, 512, 384, 512)}


def test_a_field_too_small_for_the_bands_states_widths_and_the_smallest_field():
    with pytest.raises(ConfigError, match=r"key 'data.split': a 256 px field side gives bands of train 179 px, "
                                          r"val 26 px, test 51 px, .* the smallest field side that works is 384 px"):
        band_widths(256, {"train": 0.7, "val": 0.1, "test": 0.2}, 128)
    with pytest.raises(ConfigError, match=r"field a \(64 x 96 px, bands along x\): .* works is 120 px"):
        split_regions([_field("a")], TileSplitConfig(fractions={"train": 0.5, "val": 0.25, "test": 0.25}), tile=40)


def test_the_shipped_simulated_configs_fit_the_default_simulated_field():
    from morphospace.models.registry import load_run_config

    for name in ("isl_simulated", "nuclei_simulated"):
        data = load_run_config(name).data
        widths = band_widths(256, data.split.fractions, data.tiles.size)  # simulate's default field_size
        assert min(widths.values()) >= data.tiles.size


def test_random_training_tiles_never_touch_test_columns():
    field = _field("a")
    split = split_regions([field], TileSplitConfig(fractions={"train": 0.75, "test": 0.25}))
    data = TileDataset([field], split["train"], size=16, length=200, augment=False, seed=1)
    for item in data:
        y0, y1, x0, x1 = item["box"].tolist()
        assert x1 <= 72 and y1 - y0 == 16 == x1 - x0
        np.testing.assert_array_equal(item["input"][0].numpy(), field.inputs[0, y0:y1, x0:x1])
    assert {tuple(b) for b in (data[i]["box"].tolist() for i in range(5))} == \
           {tuple(b) for b in (TileDataset([field], split["train"], 16, length=200, seed=1)[i]["box"].tolist()
                               for i in range(5))}


def test_augmentation_transforms_input_target_and_mask_together():
    field = _field("a")
    data = TileDataset([field], [(0, (0, 64, 0, 96))], size=16, length=50, augment=True, seed=0)
    for index in range(50):
        item = data[index]
        np.testing.assert_allclose(item["target"][0].numpy(), item["input"][0].numpy() * 10)
        assert item["mask"].shape == (1, 16, 16)


def test_epochs_draw_new_tiles():
    data = TileDataset([_field("a")], [(0, (0, 64, 0, 96))], size=16, length=4, seed=0)
    first = [data[i]["box"].tolist() for i in range(4)]
    data.set_epoch(1)
    assert [data[i]["box"].tolist() for i in range(4)] != first


def test_grid_tiles_and_dihedral():
    assert len(grid_tiles((0, 64, 72, 96), 16)) == 4 * 1
    a = np.arange(16).reshape(4, 4)
    out = dihedral([a, a * 2], np.random.default_rng(3))
    np.testing.assert_array_equal(out[1], out[0] * 2)
    assert sorted(out[0].ravel()) == list(range(16))


def test_split_by_field_keeps_fields_whole():
    fields = [_field(str(i)) for i in range(10)]
    split = split_regions(fields, TileSplitConfig(by="field", fractions={"train": 0.6, "val": 0.2, "test": 0.2}))
    assigned = [i for regions in split.values() for i, _ in regions]
    assert sorted(assigned) == list(range(10)) and len(split["test"]) == 2
    with pytest.raises(ValueError, match="by field"):
        split_regions(fields[:2], TileSplitConfig(by="field"))


def test_data_module_loaders():
    data = PairedDataModule([_field("a")], TileSplitConfig(fractions={"train": 0.8, "test": 0.2}),
                            TileConfig(size=16, tiles_per_epoch=10, batch_size=4))
    batch = next(iter(data.train_dataloader()))
    assert batch["input"].shape == (4, 2, 16, 16) and batch["target"].dtype == torch.float32
    test_boxes = torch.cat([b["box"] for b in data.test_dataloader()])
    assert (test_boxes[:, 2] >= 77).all()  # test band starts at round(0.8 * 96)


def test_bad_split_config_names_the_problem():
    with pytest.raises(ValueError, match="sum to 1"):
        TileSplitConfig(fractions={"train": 0.5, "test": 0.2})
    with pytest.raises(ValueError, match="unknown split"):
        TileSplitConfig(fractions={"train": 0.5, "holdout": 0.5})
    with pytest.raises(ValueError, match="at least 32"):
        TileDataset([_field("a", 20, 20)], [(0, (0, 20, 0, 20))], size=32)


def test_fixed_tiles_repeat_the_same_positions_and_hold_nuclei():
    field = _field("a")  # mask foreground only right of x = 48
    data = TileDataset([field], [(0, (0, 64, 0, 96))], size=16, length=12, augment=True, seed=3, fixed=2)
    boxes = set()
    for epoch in range(3):
        data.set_epoch(epoch)
        boxes |= {tuple(data[i]["box"].tolist()) for i in range(len(data))}
    assert boxes == {tuple(region) for _, region in data.fixed_boxes} and len(boxes) == 2
    assert all(x1 > 49 for _, (_, _, _, x1) in data.fixed_boxes)
    again = TileDataset([field], [(0, (0, 64, 0, 96))], size=16, length=12, seed=3, fixed=1)
    assert again.fixed_boxes == data.fixed_boxes[:1]  # smaller sets are nested in larger ones


def test_fixed_tiles_without_any_nucleus_are_an_error():
    field = _field("a")
    with pytest.raises(ValueError, match="holds a labelled nucleus"):
        TileDataset([field], [(0, (0, 64, 0, 40))], size=16, fixed=1)
