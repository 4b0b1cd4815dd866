"""Every built-in example config validates against the model of its command, and is found by name."""

from pathlib import Path

import pytest

from morphospace.cli import main
from morphospace.config import ConfigError, builtin_configs, find_config, load_config
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.features.profiles import ProfilesConfig
from morphospace.simulate import SimulateConfig
from morphospace.workflows.demo import DemoConfig
from morphospace.workflows.fewshot import FewShotConfig
from morphospace.workflows.prepare import PrepareConfig
from morphospace.models.registry import load_run_config

MODELS = {"prepare": PrepareConfig, "simulate": SimulateConfig, "demo": DemoConfig, "features": FeaturesConfig,
          "profiles": ProfilesConfig, "fewshot": FewShotConfig}


@pytest.mark.parametrize("path", list(builtin_configs().values()), ids=lambda p: p.name)
def test_example_config_is_valid(path: Path):
    command = path.stem.split("_")[0]
    if command in MODELS:
        load_config(MODELS[command], path)
    else:
        config = load_run_config(path)
        assert config.trainer.max_minutes is None, f"{path.name}: budget by epochs or steps, not minutes"


def test_a_builtin_config_is_found_by_name_and_a_local_file_wins(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config("vae_simulated") == find_config("vae_simulated.yaml") == builtin_configs()["vae_simulated"]
    assert load_run_config("vae_simulated").name == "vae_simulated"
    (tmp_path / "vae_simulated.yaml").write_text("name: mine\n")
    assert find_config("vae_simulated.yaml") == Path("vae_simulated.yaml")
    with pytest.raises(ConfigError, match="no built-in config of that name.*vae_crops"):
        find_config("vae_simulatd")
    assert find_config("sub/missing.yaml") == Path("sub/missing.yaml")  # a path is read as given


def test_config_command_lists_and_copies(tmp_path: Path, capsys):
    assert main(["config"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == len(builtin_configs()) and listing[0].split()[0] == "autoencoder_fields"
    out = tmp_path / "mine.yaml"
    assert main(["config", "vae_crops", "--out", str(out)]) == 0
    assert out.read_text() == builtin_configs()["vae_crops"].read_text()
    assert main(["config", "vae_crops", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["config", "nope"]) == 2
