"""SimulateConfig: defaults, validation and YAML round trip."""

from __future__ import annotations

import pydantic
import pytest

from morphospace.config import ConfigError, load_config, resolve_config, save_config
from morphospace.simulate import MOAS, SimulateConfig


def test_defaults_describe_the_documented_screen():
    config = SimulateConfig()
    assert (config.seed, config.plates, config.plates_per_batch, config.field_size) == (0, 2, 1, 256)
    assert (config.fields_per_well, config.dmso_wells_per_plate) == (1, 4)
    assert (config.compounds_per_moa, config.concentrations, config.cells_per_field) == (2, 3, 22.0)
    assert config.moas == list(MOAS)
    assert config.wells_per_plate == 4 + 12 * 2 * 3


def test_unknown_key_is_rejected_and_named():
    with pytest.raises(ConfigError, match="colour"):
        resolve_config(SimulateConfig, {"colour": "red"})
    with pytest.raises(ConfigError, match="optics.gain_typo"):
        resolve_config(SimulateConfig, {}, ["optics.gain_typo=2"])


def test_bad_moa_name_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="unknown MoA"):
        SimulateConfig(moas=["Actin disruptors", "Actin disrupters"])
    with pytest.raises(pydantic.ValidationError, match="twice"):
        SimulateConfig(moas=["DNA damage", "DNA damage"])


@pytest.mark.parametrize(
    "override",
    [
        {"plates": 0},
        {"field_size": 32},
        {"compounds_per_moa": 4},
        {"compounds_per_moa": 0},
        {"cells_per_field": -1},
        {"concentrations": 8, "compounds_per_moa": 3, "dmso_wells_per_plate": 100},
        {"cells": {"cell_diameter_px": [50, 40]}},
        {"cells": {"nucleus_diameter_px": [30, 45]}},
        {"optics": {"vignetting": [0.3, 0.1]}},
        {"optics": {"camera_gain": 0}},
    ],
)
def test_out_of_range_values_are_rejected(override):
    with pytest.raises(ConfigError):
        resolve_config(SimulateConfig, override)


def test_saved_config_loads_back_equal(tmp_path):
    config = SimulateConfig(seed=7, moas=["Eg5 inhibitors"], cells={"packing": 0.9})
    path = save_config(config, tmp_path / "simulate.yaml")
    assert load_config(SimulateConfig, path) == config
