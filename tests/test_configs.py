"""Every example config in configs/ validates against the model of its command."""

from pathlib import Path

import pytest

from morphospace.config import load_config
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.features.profiles import ProfilesConfig
from morphospace.simulate import SimulateConfig
from morphospace.workflows.demo import DemoConfig
from morphospace.workflows.fewshot import FewShotConfig
from morphospace.workflows.prepare import PrepareConfig
from morphospace.models.registry import load_run_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {"prepare": PrepareConfig, "simulate": SimulateConfig, "demo": DemoConfig, "features": FeaturesConfig,
          "profiles": ProfilesConfig, "fewshot": FewShotConfig}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(path: Path):
    command = path.stem.split("_")[0]
    if command in MODELS:
        load_config(MODELS[command], path)
    else:
        config = load_run_config(path)
        assert config.trainer.max_minutes is None, f"{path.name}: budget by epochs or steps, not minutes"
