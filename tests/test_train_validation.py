"""``train`` checks every rule of a config before it writes anything: each bad config exits 2 with a
message naming the file and the key, and leaves no run folder behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from morphospace.cli import main

CASES = {
    "crop size not a multiple of 4": (["data.crop_size=66"], "key 'data.crop_size': 66 px crops", "64 or 68"),
    "crop size under 8": (["data.crop_size=6"], "key 'data.crop_size': 6 px crops", "8"),
    "missing store": (["data.store=/nowhere/store"], "key 'data.store': /nowhere/store: crop store not found", ""),
    "unknown channel": (["data.channels=[DNA,Hoechst]"], "key 'data.channels'", "['Hoechst']"),
    "missing split column": (["data.split.by=Metadata_Batch"], "key 'data.split.by'", "'Metadata_Batch' is not in"),
    "missing include column": (["data.include={Metadata_Nope: [1]}"], "key 'data.include'", "Metadata_Nope"),
    "missing condition column": (["data.conditions={moa: {kind: categorical, column: Metadata_MoA}}"],
                                 "key 'data.conditions.moa.column'", "no column 'Metadata_MoA'"),
    "missing condition channel": (["data.conditions={ref: {kind: channels, channels: [GFP]}}"],
                                  "key 'data.conditions.ref.channels'", "['GFP']"),
    "output range of a generative model": (["data.normalization.out_range=[0,1]"],
                                           "key 'data.normalization.out_range'", "tanh values in [-1, 1]"),
    "unknown family": (["model.family=stylegan"], "key 'model.family': unknown family 'stylegan'",
                       "'diffusion', 'gan', 'isl', 'ssl', 'statistical_cell', 'unet_embedder', 'vae']"),
    "unknown model key": (["model.bta=2"], "key 'model.bta': unknown key", ""),
    "family value out of range": (["model.objective=convex", "model.beta=2"], "beta must lie in [0, 1]", ""),
    "z-scored input of a generative model": (["data.normalization.method=zscore"],
                                             "key 'data.normalization.method'", "tanh values"),
    "a strategy whose children cannot report": (["trainer.strategy=ddp_spawn"], "key 'trainer.strategy'",
                                                "use 'ddp'"),
}


def _config(tmp_path: Path, store: Path) -> Path:
    config = {"name": "checked", "runs_dir": str(tmp_path / "runs"),
              "data": {"store": str(store), "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                       "split": {"by": "Metadata_Plate", "train": 0.34, "val": 0.33, "test": 0.33}},
              "model": {"family": "vae", "latent_dim": 4, "base_channels": 4},
              "trainer": {"max_epochs": 1, "precision": "32-true", "limit_train_batches": 1}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_config_names_the_key_and_writes_nothing(case, blob_store: Path, tmp_path: Path, capsys):
    overrides, key, hint = CASES[case]
    path = _config(tmp_path, blob_store)
    arguments = [item for override in overrides for item in ("--set", override)]
    assert main(["train", str(path), *arguments]) == 2
    error = capsys.readouterr().err
    assert f"{path}: " in error and key in error and hint in error and "Traceback" not in error
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_corrected_command_then_trains(blob_store: Path, tmp_path: Path, capsys):
    path = _config(tmp_path, blob_store)
    assert main(["train", str(path), "--set", "data.crop_size=66"]) == 2
    assert main(["--no-progress", "train", str(path), "--set", "data.crop_size=64"]) == 0
    assert "trained 1 epoch(s)" in capsys.readouterr().out


def test_a_store_with_non_square_crops_needs_a_crop_size(tmp_path: Path, capsys):
    import numpy as np
    import pandas as pd

    from morphospace.io.store import CropStoreWriter

    with CropStoreWriter(tmp_path / "wide", ["DNA"], (16, 24)) as writer:
        writer.append(np.random.default_rng(0).random((12, 1, 16, 24), dtype=np.float32),
                      pd.DataFrame({"Metadata_Plate": ["P0", "P1", "P2"] * 4}))
    path = _config(tmp_path, tmp_path / "wide")
    assert main(["train", str(path)]) == 2
    assert "key 'data.crop_size': crops are 16 x 24 px" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
