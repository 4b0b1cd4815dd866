"""A model family defined outside the package (tests/plugins/toy_families.py) trains, embeds and
reports through the CLI once registered, without editing any package file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from morphospace.cli import main
from morphospace.config import ConfigError
from morphospace.models.registry import (
    family_names, get_family, register_family, resolve_run_config, run_config_model, unregister_family,
)

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _plugin_module():
    spec = importlib.util.spec_from_file_location("toy_families", PLUGINS / "toy_families.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_families"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def toy():
    family = register_family(_plugin_module().ToyFamily())
    yield family
    unregister_family("toy")


def _toy_yaml(tmp_path: Path, store: Path, **data) -> Path:
    config = {"name": "toy_run", "runs_dir": str(tmp_path / "runs"), "seed": 0,
              "data": {"store": str(store), "batch_size": 16, "split": {"by": None, "train": 0.8, "val": 0.1,
                                                                          "test": 0.1},
                       "conditions": {"compound": {"kind": "categorical", "column": "Metadata_Compound"}}, **data},
              "model": {"family": "toy", "condition": "compound"},
              "trainer": {"max_epochs": 3, "precision": "32-true", "log_every_n_steps": 1}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_a_family_from_outside_the_package_trains_embeds_and_reports(toy, blob_store: Path, tmp_path: Path, capsys):
    config = _toy_yaml(tmp_path, blob_store)
    assert main(["--no-progress", "train", str(config)]) == 0
    assert "trained 3 epoch(s)" in capsys.readouterr().out
    run = tmp_path / "runs" / "toy_run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["family"] == "toy" and summary["notes"] == {"classes": "2"}
    losses = pd.read_csv(run / "metrics.csv").dropna(subset=["loss_epoch"])["loss_epoch"].tolist()
    assert losses[-1] < losses[0]
    batch = json.loads((run / "data.json").read_text())["batch"]
    assert batch["compound"] == {"kind": "categorical", "shape": [], "names": ["big", "small"]}
    assert json.loads((run / "conditions.json").read_text())["compound"]["vocabulary"] == ["big", "small"]
    assert main(["--no-progress", "embed", "--run", str(run)]) == 0
    embeddings = pd.read_parquet(run / "embeddings.parquet")
    assert len(embeddings) == 96 and [c for c in embeddings if c.startswith("Embedding_")] == [
        f"Embedding_{i:03d}" for i in range(8)]
    assert main(["report", "--run", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Family toy" in html and "categorical" in html and "Losses per epoch" in html
    assert "embeddings.parquet: 96 cells x 8 dimensions" in html
    assert main(["generate", "--run", str(run)]) == 2
    assert "runs of the toy family do not support 'generate'; this one supports embed" in capsys.readouterr().err


def test_registry_dispatches_on_model_family_after_overrides(toy):
    assert "toy" in family_names() and get_family("toy") is toy
    data = {"name": "x", "data": {"store": "s"}, "model": {"family": "vae"}}
    config = resolve_run_config(data, ["model.family=toy", "model.condition=compound"])
    assert type(config) is run_config_model(toy) and config.model.condition == "compound"
    with pytest.raises(ConfigError, match="key 'model.condition': Field required"):
        resolve_run_config(data, ["model.family=toy"])
    with pytest.raises(ValueError, match="already registered"):
        register_family(_plugin_module().ToyFamily())
    with pytest.raises(ConfigError, match="key 'model.family': missing"):
        resolve_run_config({"name": "x", "data": {"store": "s"}, "model": {}})


def test_batch_requirements_are_checked_before_writing(toy, blob_store: Path, tmp_path: Path, capsys):
    config = _toy_yaml(tmp_path, blob_store, conditions={})
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"{config}: key 'data': the toy family needs batches carrying 'compound' (categorical)" in error
    assert not (tmp_path / "runs").exists()
    config = _toy_yaml(tmp_path, blob_store, conditions={"compound": {"kind": "numeric", "column": "Metadata_Plate"}})
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert "key 'data.conditions.compound': " in error and "non-numeric" in error and not (tmp_path / "runs").exists()


def test_unknown_verbs_are_rejected_when_a_family_is_defined():
    from morphospace.models.family import Family

    with pytest.raises(TypeError, match="unknown verb"):
        type("Bad", (Family,), {"name": "bad", "verbs": frozenset({"dance"})})
    assert np.all([isinstance(get_family(name).verbs, frozenset) for name in family_names()])


def test_a_broken_plug_in_leaves_the_other_families_working(monkeypatch, caplog):
    from morphospace.models import registry
    from morphospace.models.gan import GANFamily

    class Entry:
        def __init__(self, name, load):
            self.name, self.value, self.load = name, f"plugin:{name}", load

    monkeypatch.setattr(registry, "_REGISTRY", registry._Registry())  # a fresh registry, loaded on first use
    monkeypatch.setattr(registry, "entry_points", lambda group: [
        Entry("gan", lambda: GANFamily), Entry("broken", lambda: 1 / 0), Entry("toy", lambda: _plugin_module().ToyFamily)])
    assert registry.family_names() == ["autoencoder", "classifier", "cp2image", "diffusion", "gan", "isl",
                                      "ssl", "statistical_cell", "toy", "unet_embedder", "vae"]
    assert "plug-in gan (plugin:gan) was not registered: a model family named 'gan' is already registered" in caplog.text
    assert "plug-in broken (plugin:broken) was not registered: division by zero" in caplog.text
