"""Training beyond one process: the same command on 2 CPU processes (DDP over gloo), then resumed in
one process. The model is the VAE of a plug-in family (tests/plugins/toy_families.py, found through
the ``morphospace.families`` entry point) that records which store rows each process trained on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _plugin_path(tmp_path: Path) -> str:
    """A folder that makes tests/plugins/toy_families.py an installed plug-in (entry point metadata)."""
    site = tmp_path / "site"
    info = site / "morphospace_toy_families-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: morphospace-toy-families\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[morphospace.families]\nrecording_vae = toy_families:RecordingVAEFamily\n")
    return os.pathsep.join([str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")])


def _train(config: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    arguments = [item for override in overrides for item in ("--set", override)]
    return subprocess.run([sys.executable, "-m", "morphospace", "--no-progress", "train", str(config), *arguments],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_processes_train_on_different_samples_and_the_checkpoint_resumes_in_one(blob_store: Path, tmp_path: Path):
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "ddp", "runs_dir": str(tmp_path / "runs"), "seed": 0,
        "data": {"store": str(blob_store), "batch_size": 8, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 1.0, "val": 0.0, "test": 0.0}},
        "model": {"family": "recording_vae", "latent_dim": 4, "base_channels": 4},
        "trainer": {"max_epochs": 1, "precision": "32-true", "sample_every_n_epochs": 1, "sample_images": 4}}))
    env = {**os.environ, "PYTHONPATH": _plugin_path(tmp_path)}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_PORT", "SLURM_PROCID"):
        env.pop(key, None)
    result = _train(config, env, "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    seen = [json.loads((run / f"seen_rank{rank}.json").read_text()) for rank in (0, 1)]
    rows = [set(record["rows"]) for record in seen]
    assert all(record["world_size"] == 2 for record in seen)
    assert rows[0] and rows[1] and not rows[0] & rows[1] and rows[0] | rows[1] <= set(range(96))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs"] == 1 and summary["samples_per_second"] > 0
    assert (run / "figures" / "samples_epoch_001.png").is_file()
    assert pd.read_csv(run / "kl_per_dimension.csv")["epoch"].tolist() == [0]  # written once, not per process
    assert "Tip:" not in result.stdout + result.stderr and "GPU available" not in result.stdout + result.stderr

    result = _train(config, env, "trainer.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 1 and summary["epochs"] == 2 and summary["resumed"] is True
    assert "resuming recording_vae run" in result.stderr and len(list((run / "logs").glob("session_*"))) == 2
    assert pd.read_csv(run / "kl_per_dimension.csv")["epoch"].tolist() == [0, 1]


@pytest.mark.slow
def test_an_adversarial_model_trains_in_two_processes(blob_store: Path, tmp_path: Path):
    """A GAN's discriminator step leaves the generator without gradients; multi-process training is
    told so (DDP looks for unused parameters) instead of failing."""
    config = tmp_path / "gan.yaml"
    config.write_text(yaml.safe_dump({
        "name": "gan", "runs_dir": str(tmp_path / "runs"),
        "data": {"store": str(blob_store), "batch_size": 8, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 1.0, "val": 0.0, "test": 0.0}},
        "model": {"family": "gan", "loss": "lsgan", "latent_dim": 4, "base_channels": 4},
        "trainer": {"max_epochs": 1, "precision": "32-true", "sample_images": 4}}))
    env = {key: value for key, value in os.environ.items()
           if key not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "MASTER_PORT", "SLURM_PROCID")}
    result = _train(config, env, "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "gan" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["optimizer_steps"] == 12  # 48 crops per process, batch 8, G + D
