from pathlib import Path

import pydantic
import pytest
import yaml

from morphospace.config import Config, ConfigError, apply_overrides, load_config, resolve_config, save_config


class Inner(Config):
    size: int = 64
    mode: str = "pad"


class Outer(Config):
    seed: int = 0
    rate: float = pydantic.Field(0.1, gt=0)
    names: list[str] = ["a"]
    inner: Inner = Inner()


def test_defaults_and_nested_overrides():
    cfg = resolve_config(Outer, {"inner": {"mode": "drop"}}, ["inner.size=32", "seed=7", "names=[x, y]"])
    assert (cfg.seed, cfg.inner.size, cfg.inner.mode, cfg.names) == (7, 32, "drop", ["x", "y"])


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"key 'inner.sise': unknown key"):
        resolve_config(Outer, {"inner": {"sise": 3}})


def test_ill_typed_value_is_named():
    with pytest.raises(ConfigError, match=r"key 'rate'"):
        resolve_config(Outer, {}, ["rate=-1"])
    with pytest.raises(ConfigError, match=r"key 'inner.size'"):
        resolve_config(Outer, {}, ["inner.size=big"])


def test_override_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["seed"])
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_overrides_do_not_mutate_input():
    data = {"inner": {"size": 1}}
    apply_overrides(data, ["inner.size=2"])
    assert data == {"inner": {"size": 1}}


def test_load_file_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Outer, bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_config(Outer, listing)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(Outer, tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("sead: 3\n")
    with pytest.raises(ConfigError, match=r"(?s)typo.yaml.*key 'sead': unknown key"):
        load_config(Outer, typo)


def test_save_and_reload_round_trip(tmp_path: Path):
    cfg = resolve_config(Outer, {}, ["inner.size=16", "seed=3"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text())["inner"]["size"] == 16
    assert load_config(Outer, path) == cfg
