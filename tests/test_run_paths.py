"""Runs store their data paths absolute, so they are used from any folder; older runs with relative
paths are read against the folder they were trained in."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from morphospace.cli import main
from morphospace.config import resolve_paths
from morphospace.errors import InputError
from morphospace.models.registry import read_run_config, resolve_run_config

_CONFIG = {"name": "run_a", "runs_dir": "runs", "data": {"store": "stores/cells"},
           "model": {"family": "vae", "latent_dim": 8}}


def test_relative_paths_become_absolute_against_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    isl = {"name": "isl", "data": {"manifest": "../fields/m.csv", "channels": {"inputs": ["Phase"]}},
           "model": {"family": "isl", "init": {"run": "runs/isl"}}}
    config = resolve_run_config(isl, source="test.yaml")
    assert config.data.manifest == str(tmp_path.parent / "fields" / "m.csv")
    assert config.model.init.run == str(tmp_path / "runs" / "isl")
    assert config.runs_dir == "runs" and config.source == "test.yaml"  # where runs go stays as given
    kept = resolve_run_config(_CONFIG, ["data.store=/data/cells"])
    assert kept.data.store == "/data/cells"


def _old_run(root: Path) -> Path:
    """A run folder as older releases saved it: data paths relative to the folder it was trained in."""
    (root / "stores" / "cells").mkdir(parents=True)
    run = root / "runs" / "run_a"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(_CONFIG))
    return run


def test_an_older_run_is_read_against_the_folder_it_was_trained_in(tmp_path, monkeypatch):
    run = _old_run(tmp_path / "project")
    monkeypatch.chdir(run.parent)  # inside runs/: the relative store is not here
    assert read_run_config("run_a").data.store == str(tmp_path / "project" / "stores" / "cells")


def test_an_older_run_whose_data_is_nowhere_names_the_paths(tmp_path, monkeypatch):
    run = _old_run(tmp_path / "project")
    shutil.rmtree(tmp_path / "project" / "stores")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"config.yaml: saved with relative data paths \(data.store: stores/cells\) "
                                         r"found neither in .*project nor in"):
        read_run_config(run)


def test_resolve_paths_leaves_the_original_and_absolute_paths(tmp_path):
    config = resolve_run_config(_CONFIG, base=tmp_path)
    again = resolve_paths(config, "/elsewhere")
    assert again.data.store == config.data.store == str(tmp_path / "stores" / "cells")


@pytest.mark.slow
def test_a_run_is_evaluated_from_another_folder(transmitted_screen, isl_config, tmp_path, monkeypatch, capsys):
    path = isl_config(transmitted_screen, tmp_path, loss={"kind": "l1"})
    settings = yaml.safe_load(path.read_text())
    monkeypatch.chdir(tmp_path)
    settings["runs_dir"] = "runs"
    settings["data"]["manifest"] = os.path.relpath(transmitted_screen.manifest_path, tmp_path)
    path.write_text(yaml.safe_dump(settings))
    assert main(["--no-progress", "train", "isl.yaml"]) == 0
    saved = yaml.safe_load((tmp_path / "runs" / "isl_test" / "config.yaml").read_text())
    assert saved["data"]["manifest"] == str(transmitted_screen.manifest_path)
    assert main(["--no-progress", "train", "isl.yaml"]) == 0  # the same config: nothing to redo, no conflict
    monkeypatch.chdir(tmp_path / "runs")
    capsys.readouterr()
    assert main(["evaluate", "isl", "--run", "isl_test", "--set", "tile=32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"]["DNA"]["crops"] > 0
    assert main(["predict", "--run", "isl_test", "--out", "predicted", "--set", "tile=32"]) == 0
