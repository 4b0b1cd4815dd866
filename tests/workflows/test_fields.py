"""Whole-image embeddings end to end: donors' fields -> tiles -> a classifier -> field and sample means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.cli import main
from morphospace.config import resolve_config
from morphospace.errors import InputError
from morphospace.evaluate.clustering import evaluate_clustering
from morphospace.models.registry import load_run_config
from morphospace.simulate import SimulateConfig, simulate_donors
from morphospace.workflows.fields import embed_fields
from morphospace.workflows.prepare import PrepareConfig, prepare
from morphospace.workflows.train import trained

pytestmark = pytest.mark.slow  # trains a model and runs prepare


@pytest.fixture(scope="module")
def donors_run(tmp_path_factory) -> tuple[Path, Path]:
    """A classifier trained one epoch on the tiles of 4 donors (2 per group, 2 fields of 128 px each)."""
    root = tmp_path_factory.mktemp("fields")
    config = SimulateConfig(mode="donors", field_size=128, plates=1, fields_per_well=2,
                            donors={"donors_per_group": 2, "wells_per_donor": 1})
    screen = simulate_donors(config, root / "donors", progress=False)
    tiles = resolve_config(PrepareConfig, {}, ["tiles.size=64", "illumination.enabled=false"])
    prepare(screen.manifest_path, root / "tiles", tiles, progress=False)
    run = load_run_config("classifier_fields", [
        f"data.store={root / 'tiles'}", f"runs_dir={root / 'runs'}", "data.batch_size=8", "data.split.train=1.0",
        "data.split.val=0", "data.split.test=0", "model.base_channels=4", "model.blocks=2",
        "model.embedding_dim=8", "trainer.max_epochs=1", "trainer.precision=32-true"])
    trained(run, progress=False)
    return run.run_dir, screen.manifest_path


def test_embed_fields_writes_tile_field_and_sample_tables(donors_run, tmp_path: Path):
    run_dir, manifest = donors_run
    summary = embed_fields(run_dir, manifest, tmp_path / "out", progress=False)
    assert (summary.n_tiles, summary.n_fields, summary.n_samples, summary.dimensions) == (32, 8, 4, 8)
    tiles = pd.read_parquet(tmp_path / "out" / "tiles.parquet")
    fields = pd.read_parquet(tmp_path / "out" / "fields.parquet")
    samples = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    embedding = [c for c in tiles.columns if c.startswith("Embedding_")]
    first = fields["Metadata_FieldId"].iloc[0]
    expected = tiles.loc[tiles["Metadata_FieldId"] == first, embedding].mean().to_numpy()
    assert np.allclose(fields.loc[fields["Metadata_FieldId"] == first, embedding].to_numpy()[0], expected, atol=1e-5)
    assert fields["Metadata_ObjectCount"].eq(4).all() and samples["Metadata_ObjectCount"].eq(2).all()
    assert set(samples["Metadata_Group"]) == {"healthy", "disease"}
    result = evaluate_clustering(samples, "Metadata_Group")
    assert result.n_labels == 2
    with pytest.raises(FileExistsError):
        embed_fields(run_dir, manifest, tmp_path / "out", progress=False)


def test_embed_fields_errors_name_the_problem(donors_run, trained_runs, tmp_path: Path):
    run_dir, manifest = donors_run
    with pytest.raises(InputError, match="holds no whole-field tiles"):
        embed_fields(trained_runs["vae"], manifest, tmp_path / "a", progress=False)
    with pytest.raises(InputError, match=r"lacks the column\(s\) \['Metadata_Patient'\]"):
        embed_fields(run_dir, manifest, tmp_path / "b", by=["Metadata_Patient"], progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_embed_manifest(donors_run, tmp_path: Path, capsys):
    run_dir, manifest = donors_run
    code = main(["--no-progress", "embed", "--run", str(run_dir), "--manifest", str(manifest),
                 "--out", str(tmp_path / "cli"), "--by", "Metadata_Donor"])
    assert code == 0
    assert "embedded 32 tiles of 8 fields (4 samples) into 8 dimensions" in capsys.readouterr().out
