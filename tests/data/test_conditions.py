"""Conditions in batches: categorical, numeric, feature-table and channel conditions, fitted on the
training split, carried by every batch, saved and restored with the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from morphospace.config import ConfigError, resolve_config
from morphospace.data.conditions import (
    CategoricalCondition, FeatureCondition, NumericCondition, encoder_from_dict, fit_condition,
)
from morphospace.data.dataset import CropDataModule, DataConfig
from morphospace.errors import InputError
from morphospace.io.store import CropStore, CropStoreWriter
from morphospace.io.tables import write_table


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """40 crops (3 channels, 8 x 8) on plates P0..P3; crop i has value i in DNA, 100 + i in Actin,
    -i in Tubulin; compound c{i % 3} (c3 on plate P3 only), dose i / 10."""
    n = 40
    images = np.stack([np.full((8, 8), i, np.float32) for i in range(n)])
    images = np.stack([images, images + 100, -images], axis=1)
    images[:, :, 0, 0] += 0.5  # a corner marker to follow flips
    plates = np.repeat(["P0", "P1", "P2", "P3"], 10)
    compounds = [f"c{i % 3}" if plate != "P3" else "c3" for i, plate in enumerate(plates)]
    table = pd.DataFrame({"Metadata_Plate": plates, "Metadata_Compound": compounds,
                          "Metadata_Concentration": np.arange(n) / 10})
    path = tmp_path / "store"
    with CropStoreWriter(path, ["DNA", "Actin", "Tubulin"], (8, 8), "float32", chunk_cells=8) as writer:
        writer.append(images, table)
    features = pd.DataFrame({"Metadata_StoreIndex": np.arange(n), "Nuclei_Area": 2.0 * np.arange(n),
                             "Cells_Area": np.where(np.arange(n) == 5, np.nan, 1.0)})
    write_table(features, tmp_path / "features.parquet")
    return path


def _module(store: Path, conditions: dict, **data) -> CropDataModule:
    config = {"store": str(store), "batch_size": 8, "conditions": conditions,
              "split": {"by": "Metadata_Plate", "train": 0.5, "val": 0.25, "test": 0.25},
              "normalization": {"method": "fixed", "fixed_ranges": [[0, 100], [0, 200], [-50, 0]]},
              "augment": {"flips": False, "rot90": False}, **data}
    module = CropDataModule(resolve_config(DataConfig, config))
    module.setup()
    return module


def test_categorical_vocabulary_comes_from_the_training_split():
    cells = pd.DataFrame({"Metadata_Compound": ["b", "a", "b", "c"]}, index=[10, 11, 12, 13])
    encoder = fit_condition("compound", CategoricalCondition(column="Metadata_Compound"), cells.iloc[:3])
    assert encoder.vocabulary == ["a", "b"] and encoder.encode(cells.iloc[:3]).tolist() == [1, 0, 1]
    with pytest.raises(InputError, match=r"value\(s\) \['c'\] of Metadata_Compound were not in the training split"):
        encoder.encode(cells)
    restored = encoder_from_dict("compound", json.loads(json.dumps(encoder.to_dict())))
    assert restored.encode(cells.iloc[:3]).tolist() == [1, 0, 1]


def test_several_columns_make_one_class_per_combination_and_name_the_bad_key():
    cells = pd.DataFrame({"Metadata_Compound": ["taxol", "taxol", "DMSO", "taxol"],
                          "Metadata_Concentration": [0.3, 1.0, 0.0, 0.3]})
    treatment = CategoricalCondition(column=["Metadata_Compound", "Metadata_Concentration"])
    encoder = fit_condition("treatment", treatment, cells)
    assert encoder.vocabulary == ["DMSO | 0.0", "taxol | 0.3", "taxol | 1.0"]
    assert encoder.encode(cells).tolist() == [1, 2, 0, 1]
    restored = encoder_from_dict("treatment", json.loads(json.dumps(encoder.to_dict())))
    assert restored.encode(cells).tolist() == [1, 2, 0, 1]
    with pytest.raises(ConfigError, match=r"data\.conditions\.treatment\.column.*'Metadata_Dose'"):
        fit_condition("treatment", CategoricalCondition(column=["Metadata_Compound", "Metadata_Dose"]), cells)
    with pytest.raises(ValueError, match="distinct names"):
        CategoricalCondition(column=["Metadata_Compound", "Metadata_Compound"])


def test_numeric_log_and_standardisation_by_hand():
    train = pd.DataFrame({"dose": [0.0, 1.0, 9.0]})
    encoder = fit_condition("dose", NumericCondition(column="dose", log=True), train)
    logs = np.log10(np.array([0.5, 1.5, 9.5]))  # offset = half the smallest positive dose
    assert encoder.offset == 0.5
    np.testing.assert_allclose(encoder.encode(train), (logs - logs.mean()) / logs.std(), rtol=1e-6)
    plain = fit_condition("dose", NumericCondition(column="dose"), train)
    np.testing.assert_allclose(plain.encode(pd.DataFrame({"dose": [4.0]})), [(4 - 10 / 3) / np.std([0, 1, 9])],
                               rtol=1e-6)
    with pytest.raises(ConfigError, match="key 'data.conditions.dose.offset'"):
        fit_condition("dose", NumericCondition(column="dose", log=True, offset=0.0), train)


def test_features_are_joined_on_the_store_row_and_standardised_on_training(store: Path, tmp_path: Path):
    table = str(tmp_path / "features.parquet")  # written beside the store by its fixture
    train = pd.DataFrame(index=[3, 4, 5, 6])
    encoder = fit_condition("features", FeatureCondition(table=table), train)
    assert encoder.columns == ["Nuclei_Area", "Cells_Area"]
    values = encoder.encode(pd.DataFrame(index=[4, 5, 30]))
    area_mean, area_sd = 9.0, np.std([6.0, 8.0, 10.0, 12.0])
    np.testing.assert_allclose(values[:, 0], (np.array([8.0, 10.0, 60.0]) - area_mean) / area_sd, rtol=1e-6)
    assert values[1, 1] == 0.0  # a missing value becomes the training mean
    with pytest.raises(InputError, match="no features for 1 crop"):
        encoder.encode(pd.DataFrame(index=[99]))
    with pytest.raises(ConfigError, match="key 'data.conditions.features.columns'"):
        fit_condition("features", FeatureCondition(table=table, columns=["Nope"]), train)


def test_infinite_feature_values_count_as_missing(tmp_path: Path):
    table = tmp_path / "features.parquet"
    pd.DataFrame({"Metadata_StoreIndex": [0, 1, 2], "Cytoplasm_FormFactor": [1.0, 3.0, np.inf]}).to_parquet(table)
    encoder = fit_condition("features", FeatureCondition(table=str(table)), pd.DataFrame(index=[0, 1, 2]))
    assert encoder.mean.tolist() == [2.0] and encoder.std.tolist() == [1.0]
    np.testing.assert_array_equal(encoder.encode(pd.DataFrame(index=[0, 1, 2]))[:, 0], [-1.0, 1.0, 0.0])


def _plate_table(tmp_path: Path) -> tuple[str, pd.DataFrame]:
    """Six cells on plates A (rows 0-2) and B (rows 3-5); DMSO controls 0, 1 (A) and 3, 4 (B)."""
    table = tmp_path / "plates.parquet"
    pd.DataFrame({"Metadata_StoreIndex": range(6), "Area": [10.0, 14.0, 30.0, 100.0, 104.0, 50.0]}).to_parquet(table)
    cells = pd.DataFrame({"Metadata_Plate": list("AAABBB"),
                          "Metadata_Compound": ["DMSO", "DMSO", "x", "DMSO", "DMSO", "x"]})
    return str(table), cells


def test_features_standardised_against_each_plates_controls_by_hand(tmp_path: Path):
    table, cells = _plate_table(tmp_path)
    condition = FeatureCondition(table=table, standardize="controls_per_plate")
    # plate A is the training split; B is held out but centred on its own controls (mean 102)
    encoder = fit_condition("features", condition, cells.iloc[:3], cells)
    assert encoder.plate_means["A"].tolist() == [12.0] and encoder.plate_means["B"].tolist() == [102.0]
    assert encoder.std.tolist() == [2.0]  # SD of the training controls 10, 14 around 12
    np.testing.assert_allclose(encoder.encode(cells)[:, 0], [-1, 1, 9, -1, 1, -26])
    restored = encoder_from_dict("features", json.loads(json.dumps(encoder.to_dict())))
    np.testing.assert_array_equal(restored.encode(cells), encoder.encode(cells))
    new_plate = pd.DataFrame({"Area": [0.0, 4.0, 20.0], "Metadata_Plate": "C", "Metadata_Compound": ["DMSO", "DMSO", "y"]})
    np.testing.assert_allclose(encoder.standardize(new_plate)[:, 0], [-1, 1, 9])
    with pytest.raises(InputError, match=r"plate\(s\) \['C'\].*no control cell"):
        encoder.standardize(new_plate.iloc[2:])
    with pytest.raises(InputError, match="lacks the plate column 'Metadata_Plate'"):
        encoder.standardize(new_plate.drop(columns="Metadata_Plate"))


def test_per_plate_standardisation_names_the_bad_key(tmp_path: Path):
    table, cells = _plate_table(tmp_path)
    with pytest.raises(ConfigError, match="data.conditions.features.controls.*selects 0 training cell"):
        fit_condition("features", FeatureCondition(table=table, standardize="controls_per_plate",
                                                   controls="Metadata_Compound == 'none'"), cells, cells)
    with pytest.raises(ConfigError, match="data.conditions.features.plate_column"):
        fit_condition("features", FeatureCondition(table=table, standardize="controls_per_plate",
                                                   plate_column="Metadata_Batch"), cells, cells)


def test_data_module_centres_every_plate_on_its_own_controls(store: Path, tmp_path: Path):
    features = {"kind": "features", "table": str(tmp_path / "features.parquet"), "columns": ["Nuclei_Area"],
                "standardize": "controls_per_plate", "controls": "Metadata_Compound == 'c0'"}
    module = _module(store, {"features": features}, include={"Metadata_Plate": ["P0", "P1", "P2"]})
    encoded = module.condition_values["features"][:, 0]
    cells = module.table
    for plate in ["P0", "P1", "P2"]:  # held-out plates too: each centred on its own controls
        controls = ((cells["Metadata_Plate"] == plate) & (cells["Metadata_Compound"] == "c0")).to_numpy()
        assert encoded[controls].mean() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match=r"data.conditions.features.*plate\(s\) \['P3'\]"):
        _module(store, {"features": features})  # P3 holds no c0 cell


def test_batches_carry_every_condition(store: Path, tmp_path: Path):
    conditions = {"compound": {"kind": "categorical", "column": "Metadata_Compound"},
                  "dose": {"kind": "numeric", "column": "Metadata_Concentration"},
                  "features": {"kind": "features", "table": str(tmp_path / "features.parquet")},
                  "reference": {"kind": "channels", "channels": ["Actin"]}}
    module = _module(store, conditions, channels=["DNA"], include={"Metadata_Plate": ["P0", "P1", "P2"]},
                     split={"by": "Metadata_Plate", "train": 0.34, "val": 0.33, "test": 0.33},
                     normalization={"method": "fixed", "fixed_ranges": [[0, 100], [0, 200]]})
    spec = module.spec
    assert {key: spec.entry(key).kind for key in spec.entries} == {
        "image": "image", "index": "index", "compound": "categorical", "dose": "numeric", "features": "features",
        "reference": "channels"}
    assert spec.shape("image") == (1, 8, 8) and spec.shape("reference") == (1, 8, 8) and spec.shape("features") == (2,)
    batch = next(iter(module.train_dataloader()))
    rows = batch["index"].numpy()
    np.testing.assert_allclose(batch["image"][:, 0, 4, 4].numpy(), rows / 100)
    np.testing.assert_allclose(batch["reference"][:, 0, 4, 4].numpy(), (rows + 100) / 200)
    assert batch["compound"].dtype == torch.int64 and batch["dose"].dtype == torch.float32
    vocabulary = spec.names("compound")
    assert [vocabulary[i] for i in batch["compound"]] == [f"c{r % 3}" for r in rows]
    assert batch["features"].shape == (len(rows), 2)


def test_reference_channels_are_augmented_with_the_image(store: Path):
    module = _module(store, {"reference": {"kind": "channels", "channels": ["Tubulin"]}},
                     augment={"flips": True, "rot90": True})
    assert module.image_channels == ["DNA", "Actin"]
    batch = module.dataset("train").batch(np.arange(8), augment=True)
    image_corner = batch["image"][:, 0] == batch["image"][:, 0].amax((1, 2), keepdim=True)
    reference_corner = batch["reference"][:, 0] == batch["reference"][:, 0].amax((1, 2), keepdim=True)
    assert torch.equal(image_corner, reference_corner)  # the marked corner moved the same way in both
    assert (~image_corner[:, 0, 0]).any()  # and it did move


def test_values_outside_the_training_split_and_bad_columns_name_the_key(store: Path):
    compound = {"compound": {"kind": "categorical", "column": "Metadata_Compound"}}
    split = {"by": "Metadata_Plate", "train": 0.25, "val": 0.5, "test": 0.25}  # seed 0: P3 (all c3) validates
    with pytest.raises(ConfigError, match="key 'data.conditions.compound': .*'c3'.*out of training"):
        _module(store, compound, split=split, seed=0)
    with pytest.raises(ConfigError, match="key 'data.conditions.compound.column': no column 'Metadata_MoA'"):
        _module(store, {"compound": {"kind": "categorical", "column": "Metadata_MoA"}})
    with pytest.raises(ConfigError, match="key 'data.conditions.reference.channels': .*\\['GFP'\\]"):
        _module(store, {"reference": {"kind": "channels", "channels": ["GFP"]}})
    with pytest.raises(ConfigError, match="key 'data.conditions': channel\\(s\\) \\['DNA'\\] are both"):
        _module(store, {"reference": {"kind": "channels", "channels": ["DNA"]}}, channels=["DNA"])
    with pytest.raises(ConfigError, match="key 'data.normalization.fixed_ranges': 3 range\\(s\\) for the 2 channels"):
        _module(store, {}, channels=["DNA", "Actin"])
    with pytest.raises(ConfigError, match="condition name"):
        resolve_config(DataConfig, {"store": "s", "conditions": {"image": {"kind": "channels", "channels": ["A"]}}})


def test_conditions_are_saved_restored_and_refused_for_unseen_values(store: Path, tmp_path: Path):
    conditions = {"compound": {"kind": "categorical", "column": "Metadata_Compound"},
                  "dose": {"kind": "numeric", "column": "Metadata_Concentration", "log": True}}
    module = _module(store, conditions, include={"Metadata_Plate": ["P0", "P1", "P2"]},
                     split={"by": "Metadata_Plate", "train": 0.34, "val": 0.33, "test": 0.33})
    module.save(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "conditions.json").read_text())
    assert saved["compound"]["vocabulary"] == ["c0", "c1", "c2"] and saved["dose"]["log"] is True
    restored = CropDataModule(module.config)
    restored.load_state_dict(module.state_dict())
    restored.setup()
    for key in ("compound", "dose"):
        np.testing.assert_array_equal(restored.condition_values[key], module.condition_values[key])
    whole = CropStore(store)
    with pytest.raises(InputError, match=r"\['c3'\]"):
        restored.dataset_for(whole)
    batch = restored.dataset_for(whole, np.arange(5)).batch(np.arange(5))
    assert batch["compound"].tolist() == [0, 1, 2, 0, 1]


def test_control_crops_come_from_the_same_plate_and_split(store: Path):
    controls = "Metadata_Compound in ('c0', 'c3')"
    module = _module(store, {"controls": {"kind": "controls", "query": controls}}, channels=["DNA"],
                     split={"by": None, "train": 0.8, "val": 0.2, "test": 0.0},
                     normalization={"method": "fixed", "fixed_ranges": [[0, 100]]})
    assert module.spec.entry("controls").kind == "controls"
    assert module.spec.shape("controls") == (1, 8, 8)
    table = module.table
    for split in ("train", "val"):
        dataset = module.dataset(split, augment=False)
        batch = dataset.batch(np.arange(len(dataset)))
        assert batch["controls"].shape == (len(dataset), 1, 8, 8)
        # DNA of crop i is i (scaled by the fixed range 0..100): recover the control's store row
        control_rows = np.rint(batch["controls"][:, 0, 4, 4].numpy() * 100).astype(int)
        cells = table.loc[batch["index"].numpy()]
        assert table.loc[control_rows, "Metadata_Compound"].isin(["c0", "c3"]).all()
        assert (table.loc[control_rows, "Metadata_Plate"].to_numpy() == cells["Metadata_Plate"].to_numpy()).all()
        own = table.loc[control_rows].index.isin(module.indices(split))
        plates_with_own = set(table.loc[module.indices(split)].query(controls)["Metadata_Plate"])
        assert own[cells["Metadata_Plate"].isin(plates_with_own).to_numpy()].all()
    first = module.dataset("train", augment=False)
    assert not torch.equal(first.batch(np.arange(16))["controls"], first.batch(np.arange(16))["controls"])


def test_a_plate_without_any_control_is_refused_naming_the_condition(store: Path):
    with pytest.raises(ConfigError, match=r"data.conditions.controls.by': 1 group\(s\) of Metadata_Plate without a "
                                          r"control cell.*\['P3'\]"):
        _module(store, {"controls": {"kind": "controls", "query": "Metadata_Compound == 'c0'"}},
                split={"by": None, "train": 0.8, "val": 0.2, "test": 0.0})
    with pytest.raises(ConfigError, match="data.conditions.controls.query"):
        _module(store, {"controls": {"kind": "controls", "query": "Metadata_Compound == 'taxol'"}})
