"""``train`` of an in-silico-labeling run from YAML on a simulated transmitted-light screen."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from morphospace.cli import main

pytestmark = pytest.mark.slow




def test_train_writes_the_run_and_resumes(transmitted_screen, isl_config, tmp_path, capsys):
    path = isl_config(transmitted_screen, tmp_path, loss={"kind": "perceptual", "in_domain_steps": 5})
    assert main(["--no-progress", "train", str(path)]) == 0
    assert "trained 2 epoch(s)" in capsys.readouterr().out
    run = tmp_path / "runs" / "isl_test"
    summary = json.loads((run / "summary.json").read_text())
    assert "in-domain autoencoder" in summary["notes"]["perceptual_features"] and "val_pcc" in summary["metrics"]
    assert "5 steps in" in summary["notes"]["perceptual_features"]  # fitted inside the training budget
    assert "within the training budget" in summary["notes"]["perceptual_features"]
    regions = json.loads((run / "regions.json").read_text())
    assert set(regions) == {"train", "val", "test"} and len(regions["test"]) == 3  # every field is cut
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "metrics.csv").is_file()
    assert main(["--no-progress", "train", str(path), "--set", "trainer.max_epochs=3"]) == 0
    assert "trained 3 epoch(s)" in capsys.readouterr().out
    assert len(list((run / "logs").glob("session_*"))) == 2


def test_segmentation_without_a_mask_column_is_a_config_error(transmitted_screen, isl_config, tmp_path, capsys):
    path = isl_config(transmitted_screen, tmp_path, task="segmentation", loss={"kind": "jaccard"})
    data = yaml.safe_load(path.read_text())
    data["data"]["channels"].pop("mask")
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path)]) == 2
    assert f"{path}: key 'data.channels.mask'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_tiles_off_the_network_factor_are_a_config_error(transmitted_screen, isl_config, tmp_path, capsys):
    path = isl_config(transmitted_screen, tmp_path)
    assert main(["train", str(path), "--set", "data.tiles.size=18", "--set", "model.net.channels=[8,16,32]"]) == 2
    assert "key 'data.tiles.size': 18 px is not a multiple of the network's factor 4" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "model.loss.kind=pix2pix"]) == 2  # 16 px, 3 discriminator layers
    assert "key 'data.tiles.size': 16 px tiles are too small for the pix2pix discriminator" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_predict_and_evaluate_labeling(transmitted_screen, isl_config, tmp_path, capsys):
    path = isl_config(transmitted_screen, tmp_path, loss={"kind": "l1"})
    assert main(["--no-progress", "train", str(path)]) == 0
    run = tmp_path / "runs" / "isl_test"
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "pred"), "--set", "tile=32"]) == 0
    assert "predicted 3 image(s)" in capsys.readouterr().out
    predicted = sorted((tmp_path / "pred").glob("*_DNA.tiff"))
    assert len(predicted) == 3 and tifffile.imread(predicted[0]).shape == (96, 96)
    assert main(["evaluate", "isl", "--run", str(run), "--set", "tile=32", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    dna = scores["targets"]["DNA"]
    assert dna["crops"] == 3 * 6  # 3 fields x six 16-px crops down the 19-px test band
    assert -1 <= dna["pcc"]["all"]["mean"] <= 1 and "nuclei_jaccard" in dna
    assert main(["evaluate", "isl", "--run", str(run), "--set", "tile=32"]) == 2
    assert "isl.json: already exists" in capsys.readouterr().err  # earlier results are kept unless told otherwise
    assert main(["evaluate", "isl", "--run", str(run), "--set", "tile=32", "--overwrite"]) == 0
    assert "DNA: PCC non-empty" in capsys.readouterr().out
    crops = pd.read_csv(run / "evaluation" / "crops.csv")
    assert len(crops) == dna["crops"] and crops["box"].str.contains("77").all()  # test band starts at x = 77


def test_segmentation_run_is_scored_with_iou_and_f1(transmitted_screen, isl_config, tmp_path, capsys):
    path = isl_config(transmitted_screen, tmp_path, task="segmentation", loss={"kind": "jaccard"})
    assert main(["--no-progress", "train", str(path)]) == 0
    capsys.readouterr()
    run = tmp_path / "runs" / "isl_test"
    assert main(["evaluate", "segmentation", "--run", str(run), "--set", "tile=32", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["mean_iou"] <= 1 and 0 <= scores["f1_pooled"] <= 1
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "seg"), "--set", "tile=32"]) == 0
    labels = sorted((tmp_path / "seg").glob("*_nuclei_labels.tiff"))
    assert len(labels) == 3 and tifffile.imread(labels[0]).dtype == np.uint16
    assert main(["evaluate", "isl", "--run", str(run)]) == 2
    assert "runs of the isl family do not support 'evaluate isl'; this one supports predict, evaluate segmentation" in (
        capsys.readouterr().err)
    assert main(["embed", "--run", str(run)]) == 2
    assert "do not support 'embed'" in capsys.readouterr().err


def test_evaluating_a_missing_run_names_it(tmp_path, capsys):
    assert main(["evaluate", "isl", "--run", str(tmp_path / "nope")]) == 2
    assert "nope: not a training run" in capsys.readouterr().err


def test_fields_too_small_for_a_tile_per_split_are_a_config_error(transmitted_screen, isl_config, tmp_path, capsys):
    path = isl_config(transmitted_screen, tmp_path)
    assert main(["train", str(path), "--set", "data.tiles.size=48"]) == 2  # 96 px fields; 32 px tiles would fit
    assert "key 'data.split': " in (error := capsys.readouterr().err)
    assert "a 96 px field side gives bands of train 58 px, val 19 px, test 19 px" in error
    assert "the smallest field side that works is 144 px" in error
    assert not (tmp_path / "runs" / "isl_test").exists()
