from pathlib import Path

import pytest

from morphospace.simulate import SimulateConfig, simulate_screen
from morphospace.workflows.prepare import PrepareConfig, prepare


@pytest.fixture(scope="session")
def screen(tmp_path_factory) -> Path:
    """One plate: every MoA once plus two DMSO wells (14 fields of 256 px)."""
    root = tmp_path_factory.mktemp("screen") / "screen"
    config = SimulateConfig(plates=1, compounds_per_moa=1, concentrations=1, dmso_wells_per_plate=2, seed=3)
    simulate_screen(config, root, progress=False)
    return root


@pytest.fixture(scope="session")
def prepared(screen: Path, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("prepared") / "store"
    prepare(screen / "manifest.csv", store, PrepareConfig(), progress=False)
    return store
