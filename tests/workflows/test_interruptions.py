"""Killed mid-run (SIGKILL, no chance to clean up) and run again: ``prepare`` and ``train`` end with
exactly what an uninterrupted run gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from morphospace.io.store import CropStore

pytestmark = pytest.mark.slow


def _env() -> dict:
    return {key: value for key, value in os.environ.items()
            if key not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "SLURM_PROCID")}


def _kill_when(command: list[str], ready, timeout: float = 120) -> None:
    """Start ``command``, SIGKILL it as soon as ``ready()`` holds; fails if it ended first."""
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"ended before it could be killed: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "never reached the point to kill it"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _run(command: list[str]) -> None:
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_prepare_killed_mid_run_resumes_to_the_same_store(screen: Path, prepared: Path, tmp_path: Path):
    out = tmp_path / "store"
    command = [sys.executable, "-m", "morphospace", "--no-progress", "prepare", "--manifest",
               str(screen / "manifest.csv"), "--out", str(out)]
    fields = out.with_name("store.partial") / "fields"
    _kill_when(command, lambda: fields.is_dir() and len([p for p in fields.iterdir() if not p.name.startswith(".")]) >= 3)
    assert (out.with_name("store.lock")).is_file() and not out.exists()  # the killed run left its lock behind
    _run(command)  # takes the stale lock over and resumes
    resumed, reference = CropStore(out), CropStore(prepared)
    assert np.array_equal(resumed.read(slice(None)), reference.read(slice(None)))
    pd.testing.assert_frame_equal(resumed.cells, reference.cells)
    qc = [pd.read_csv(store / "qc.csv") for store in (out, prepared)]
    pd.testing.assert_frame_equal(*qc)  # n_cells of the fields done before the kill included
    assert not (out / "fields").exists() and not out.with_name("store.lock").exists()


def test_train_killed_mid_run_resumes_to_the_same_weights(blob_store: Path, tmp_path: Path, tiny_config):
    from morphospace.models.run import load_module

    commands = {}
    for name in ("killed", "straight"):  # both in fresh processes: the same threads, the same arithmetic
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(tiny_config(blob_store, tmp_path / name, "vae", {"family": "vae"},
                                                     max_epochs=30).to_dict()))
        commands[name] = [sys.executable, "-m", "morphospace", "--no-progress", "train", str(config)]
    _kill_when(commands["killed"], (tmp_path / "killed" / "vae" / "checkpoints" / "last.ckpt").exists)
    _run(commands["killed"])
    _run(commands["straight"])
    (_, killed), (_, straight) = (load_module(tmp_path / name / "vae") for name in ("killed", "straight"))
    assert all(torch.equal(killed.state_dict()[key], value) for key, value in straight.state_dict().items())
