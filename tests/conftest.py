"""Shared fixtures: tiny generated data only (tests never need ../shared/data).

Tests that train models, run whole workflows or start processes are marked ``slow`` (``pytest -m
"not slow"`` runs the rest in well under two minutes); every test that uses the trained runs of
:func:`trained_runs` is marked so here.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.io.store import CropStoreWriter
from morphospace.models.registry import resolve_run_config
from morphospace.models.training import RunConfig


@pytest.fixture()
def small_store(tmp_path: Path) -> Path:
    """60 crops (2 channels, 12x12) on plates P0, P1, P2 with plate-dependent brightness;
    crop i has value i in pixel (0, 0) of channel 0 and MoA "A" or "B"."""
    n = 60
    rng = np.random.default_rng(0)
    plates = np.repeat(["P0", "P1", "P2"], n // 3)
    brightness = np.repeat([1.0, 10.0, 100.0], n // 3)
    images = rng.uniform(0, 1, (n, 2, 12, 12)).astype(np.float32) * brightness[:, None, None, None]
    images[:, 0, 0, 0] = np.arange(n)
    table = pd.DataFrame({"Metadata_Plate": plates, "Metadata_MoA": np.where(np.arange(n) % 2, "A", "B"),
                          "Metadata_Well": [f"W{i % 5}" for i in range(n)]})
    path = tmp_path / "store"
    with CropStoreWriter(path, ["DNA", "Actin"], (12, 12), "float32", chunk_cells=8) as writer:
        writer.append(images, table)
    return path

@pytest.fixture(scope="session")
def blob_store(tmp_path_factory) -> Path:
    """96 crops (2 channels, 16 x 16): a bright disc of varying size and brightness on a dark
    background; channel 1 a ring; metadata with two compounds."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    images, rows = [], []
    for i in range(96):
        radius = rng.uniform(2.5, 5.0)
        r2 = (yy - 7.5 + rng.normal(0, 0.7)) ** 2 + (xx - 7.5 + rng.normal(0, 0.7)) ** 2
        disc = (r2 < radius**2) * rng.uniform(0.6, 1.0)
        ring = ((r2 < (radius + 2) ** 2) & (r2 >= radius**2)) * 0.5
        images.append(np.stack([disc, ring]) + rng.normal(0, 0.03, (2, 16, 16)))
        rows.append({"Metadata_Plate": f"P{i % 3}", "Metadata_Compound": "big" if radius > 3.75 else "small"})
    path = tmp_path_factory.mktemp("blobs") / "store"
    with CropStoreWriter(path, ["DNA", "Actin"], (16, 16), "float32") as writer:
        writer.append(np.clip(np.stack(images), 0, None).astype(np.float32), pd.DataFrame(rows))
    return path


def _tiny_config(store: Path, runs: Path, name: str, model: dict, **trainer) -> RunConfig:
    """A small training config on ``store`` (base 8 channels, latent 8, batch 16, 3 epochs)."""
    return resolve_run_config({
        "name": name, "runs_dir": str(runs), "seed": 0,
        "data": {"store": str(store), "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 0.9, "val": 0.1, "test": 0.0}},
        "model": {"latent_dim": 8, "base_channels": 8, **model},
        "trainer": {"max_epochs": 3, "precision": "32-true", "channels_last": False, "log_every_n_steps": 1,
                    "sample_images": 4, **trainer},
    })


@pytest.fixture(scope="session")
def trained_runs(blob_store: Path, tmp_path_factory) -> dict[str, Path]:
    """A tiny trained VAE and LSGAN on the blob store, shared by the tests that use runs."""
    from morphospace.workflows.train import train

    runs = tmp_path_factory.mktemp("runs")
    result = {}
    for name, model in {"vae": {"family": "vae"}, "lsgan": {"family": "gan", "loss": "lsgan"}}.items():
        train(_tiny_config(blob_store, runs, name, model, max_epochs=2), progress=False)
        result[name] = runs / name
    return result


@pytest.fixture()
def tiny_config():
    """Factory of small training configs: ``tiny_config(store, runs_dir, name, model, **trainer)``."""
    return _tiny_config


@pytest.fixture(scope="session")
def transmitted_screen(tmp_path_factory):
    """A transmitted-light screen: 3 fields of 96 px with DNA and membrane fluorescence and nuclei labels."""
    from morphospace.simulate import SimulateConfig, simulate_screen

    config = SimulateConfig(mode="transmitted", plates=1, dmso_wells_per_plate=2, moas=["Eg5 inhibitors"],
                            compounds_per_moa=1, concentrations=1, field_size=96, cells_per_field=5,
                            cells={"cell_diameter_px": [40, 55], "nucleus_diameter_px": [16, 22], "mitotic_diameter_px": [28, 34]})  # small cells: several per tiny field
    return simulate_screen(config, tmp_path_factory.mktemp("isl") / "screen", progress=False)


def _isl_config(screen, tmp_path: Path, **model) -> Path:
    """A tiny in-silico-labeling YAML (16 px tiles, 2 epochs) on ``screen``, written into ``tmp_path``."""
    import yaml

    config = {
        "name": "isl_test", "runs_dir": str(tmp_path / "runs"), "seed": 1,
        "data": {"manifest": str(screen.manifest_path),
                 "channels": {"inputs": ["Transmitted"], "targets": ["DNA"], "mask": "NucleiLabels"},
                 "split": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
                 "tiles": {"size": 16, "tiles_per_epoch": 16, "batch_size": 8}},
        "model": {"family": "isl", "net": {"channels": [8, 16], "residual_units": 1}, **model},
        "trainer": {"max_epochs": 2, "precision": "32-true"},
    }
    path = tmp_path / "isl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def isl_config():
    """Factory of tiny in-silico-labeling YAMLs: ``isl_config(screen, tmp_path, **model)``."""
    return _isl_config


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "trained_runs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
