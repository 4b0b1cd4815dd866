"""``explore fewshot``: segmentation on N fixed tiles, from scratch and from a labeling run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from morphospace.cli import main
from morphospace.simulate import SimulateConfig, simulate_screen

pytestmark = pytest.mark.slow  # trains models or runs whole workflows


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A simulated screen, a finished two-target labeling run, and a segmentation YAML."""
    root = tmp_path_factory.mktemp("fewshot")
    screen = simulate_screen(SimulateConfig(mode="transmitted", plates=1, dmso_wells_per_plate=2,
                                            moas=["Eg5 inhibitors"], compounds_per_moa=1, concentrations=1,
                                            field_size=96, cells_per_field=6, cells={"cell_diameter_px": [40, 55], "nucleus_diameter_px": [16, 22], "mitotic_diameter_px": [28, 34]}),
                            root / "screen", progress=False)
    common = {"runs_dir": str(root / "runs"), "seed": 2,
              "data": {"manifest": str(screen.manifest_path),
                       "channels": {"inputs": ["Transmitted"], "targets": ["Membrane", "DNA"], "mask": "NucleiLabels"},
                       "split": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
                       "tiles": {"size": 16, "tiles_per_epoch": 16, "batch_size": 8}},
              "trainer": {"max_epochs": 2, "precision": "32-true"}}
    labeling = root / "labeling.yaml"
    labeling.write_text(yaml.safe_dump({**common, "name": "labeling", "model": {
        "family": "isl", "net": {"channels": [8, 16], "residual_units": 1}}}))
    assert main(["--no-progress", "train", str(labeling)]) == 0
    segmentation = root / "segmentation.yaml"
    segmentation.write_text(yaml.safe_dump({**common, "name": "seg", "model": {
        "family": "isl", "task": "segmentation", "loss": {"kind": "jaccard"},
        "net": {"channels": [8, 16], "residual_units": 1}}}))
    return root, segmentation


def _study_yaml(root, segmentation, **extra) -> str:
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "study", "runs_dir": str(root / "studies"),
                                    "segmentation": str(segmentation), "pretrained_run": str(root / "runs" / "labeling"),
                                    "pretrained_target": "DNA", "sizes": [1, "all"], "steps": 3,
                                    "inference": {"tile": 32}, **extra}))
    return str(path)


def test_study_trains_both_starts_for_every_size_and_draws_the_curve(study, capsys):
    root, segmentation = study
    assert main(["--no-progress", "explore", "fewshot", _study_yaml(root, segmentation)]) == 0
    assert "fewshot.png" in capsys.readouterr().out
    out = root / "studies" / "study"
    table = pd.read_csv(out / "fewshot.csv")
    assert table[["tiles", "start"]].astype(str).values.tolist() == [
        ["1", "scratch"], ["1", "pretrained"], ["all", "scratch"], ["all", "pretrained"]]
    assert (table["steps"] == 3).all() and table["mean_iou"].between(0, 1).all()
    assert (out / "fewshot.png").stat().st_size > 0 and json.loads((out / "fewshot.json").read_text())["rows"]
    pretrained = json.loads((out / "n1_pretrained" / "summary.json").read_text())
    assert "sliced, output row of DNA" in pretrained["notes"]["initialised_from"]
    assert "initialised_from" not in json.loads((out / "n1_scratch" / "summary.json").read_text())["notes"]
    regions = json.loads((out / "n1_scratch" / "regions.json").read_text())
    assert len(regions["fixed_train_tiles"]) == 1
    assert regions["fixed_train_tiles"] == json.loads((out / "n1_pretrained" / "regions.json").read_text())[
        "fixed_train_tiles"]
    assert "fixed_train_tiles" not in json.loads((out / "nall_scratch" / "regions.json").read_text())
    before = (out / "n1_scratch" / "summary.json").read_text()
    assert main(["--no-progress", "explore", "fewshot", _study_yaml(root, segmentation)]) == 0  # reuses the runs
    assert (out / "n1_scratch" / "summary.json").read_text() == before
    pd.testing.assert_frame_equal(pd.read_csv(out / "fewshot.csv"), table)


def test_unknown_pretrained_target_is_named(study, capsys):
    root, segmentation = study
    path = _study_yaml(root, segmentation, name="bad_target", pretrained_target="MAP2", sizes=[1])
    assert main(["--no-progress", "explore", "fewshot", path]) == 2
    assert "'MAP2' is not a target" in capsys.readouterr().err
    assert not (root / "studies" / "bad_target").exists()


def test_labeling_config_is_refused(study, capsys):
    root, _ = study
    path = _study_yaml(root, root / "labeling.yaml", name="bad_task")
    assert main(["explore", "fewshot", path]) == 2
    assert "needs model.task: segmentation" in capsys.readouterr().err
