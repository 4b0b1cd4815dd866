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
from morphospace.workflows.isl import ISLTrainConfig
from morphospace.workflows.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {"prepare": PrepareConfig, "simulate": SimulateConfig, "demo": DemoConfig, "features": FeaturesConfig,
          "profiles": ProfilesConfig, "fewshot": FewShotConfig}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_is_valid(path: Path):
    command = path.stem.split("_")[0]
    text = path.read_text()
    training = (ISLTrainConfig if "family: isl" in text else TrainConfig) if "model:" in text else None
    model = MODELS.get(command, training)
    assert model, f"{path.name}: name it <command>_*.yaml with a command in {sorted(MODELS)}, or a training config"
    load_config(model, path)
