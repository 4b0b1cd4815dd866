import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from morphospace.errors import InputError
from morphospace.explore.latent import attribute_vector, interpolate, quick_measures
from morphospace.explore.run_report import write_run_report
from morphospace.workflows.evaluation import GenerationConfig, run_generation_evaluation
from morphospace.workflows.latent import (
    embed_store, explore_algebra, explore_interpolate, explore_traverse, generate,
)
from morphospace.models.run import load_run


def test_interpolation_endpoints_and_spherical_norms():
    a, b = torch.randn(16, generator=torch.Generator().manual_seed(0)), torch.randn(16)
    for spherical in (False, True):
        path = interpolate(a, b, steps=5, spherical=spherical)
        assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    slerp = interpolate(a, a * 2, steps=3, spherical=True)  # colinear: falls back to linear
    assert torch.allclose(slerp[1], a * 1.5, atol=1e-5)


def test_attribute_vector_hand_computed():
    latents = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    vector = attribute_vector(latents, np.array([1, 1, 0, 0], bool), np.array([0, 0, 1, 1], bool))
    assert vector.tolist() == [2.0, -3.0]
    with pytest.raises(ValueError, match="at least one cell"):
        attribute_vector(latents, np.zeros(4, bool), np.ones(4, bool))


def test_quick_measures():
    images = np.zeros((2, 2, 8, 8), np.float32)
    images[0, 0, 2:5, 2:5] = 1.0
    images[1, 0, 1:7, 1:7] = 1.0
    table = quick_measures(images, ["DNA", "Actin"])
    assert table["NucleusArea"].tolist() == [9, 36] and table["Mean_DNA"].tolist() == [9 / 64, 36 / 64]


@pytest.mark.parametrize("family", ["vae", "lsgan"])
def test_embed_store(family, trained_runs, tmp_path: Path):
    summary = embed_store(trained_runs[family], out=tmp_path / "e.parquet", progress=False)
    table = pd.read_parquet(tmp_path / "e.parquet")
    dims = 8 if family == "vae" else 100
    assert len(table) == 96 and summary.dimensions == dims
    assert table.columns[-1] == f"Embedding_{dims - 1:03d}" and "Metadata_Compound" in table
    assert table["Metadata_StoreIndex"].tolist() == list(range(96))
    with pytest.raises(FileExistsError):
        embed_store(trained_runs[family], out=tmp_path / "e.parquet", progress=False)


def test_embed_needs_the_run_channels(trained_runs, small_store: Path, tmp_path: Path):
    from morphospace.io.store import CropStore, CropStoreWriter

    store = CropStore(small_store)
    with CropStoreWriter(tmp_path / "other", ["Hoechst", "Actin"], (12, 12)) as writer:
        writer.append(store.read(slice(None)), store.cells)
    with pytest.raises(InputError, match="lacks channel.*DNA"):
        embed_store(trained_runs["vae"], tmp_path / "other", tmp_path / "e.parquet", progress=False)


def test_generate_is_seeded(trained_runs, tmp_path: Path):
    images, path = generate(trained_runs["lsgan"], n=6, seed=3, out=tmp_path / "g.png")
    again, _ = generate(trained_runs["lsgan"], n=6, seed=3, out=tmp_path / "g2.png")
    assert images.shape == (6, 2, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert np.array_equal(images, again) and path.is_file()


def test_gan_projection_reconstructs_real_cells(trained_runs):
    run = load_run(trained_runs["lsgan"])
    model, data = run.module, run.data
    images = data.dataset_for(data.store, np.arange(6)).load(np.arange(6))
    z = model.encode_latent(images)
    with torch.no_grad():
        projected = ((model.decode(z) - images) ** 2).mean()
        origin = ((model.decode(torch.zeros_like(z)) - images) ** 2).mean()
    assert projected < origin


@pytest.mark.parametrize("family", ["vae", "lsgan"])
def test_explore_figures(family, trained_runs):
    run = trained_runs[family]
    assert explore_interpolate(run, seeds=(0, 1, 2, 3), steps=4).is_file()
    assert explore_interpolate(run, cells=(0, 1), steps=3).name == "interpolation_cells.png"
    assert explore_algebra(run, "NucleusArea", n_cells=40, n_base=2).is_file()
    path = explore_algebra(run, "compound", n_cells=40, n_base=2, query_with="Metadata_Compound == 'big'",
                           query_without="Metadata_Compound == 'small'")
    assert path.is_file()
    assert explore_traverse(run, n_dims=3, steps=4).is_file()
    with pytest.raises(InputError, match="even number"):
        explore_interpolate(run, seeds=(0, 1, 2))
    with pytest.raises(InputError, match="neither a cell-table column"):
        explore_algebra(run, "Nope", n_cells=20)


def test_generation_evaluation_and_report(trained_runs, tmp_path: Path):
    run = trained_runs["vae"]
    config = GenerationConfig(n=40, extractor=str(tmp_path / "extractor.pt"), extractor_epochs=2, feature_cells=16,
                              cytoplasm_channels=["Actin"])
    payload = run_generation_evaluation(run, tmp_path / "eval", config)
    assert payload["extractor_training"] == {"objective": "classification of Metadata_Compound",
                                             "labels": "Metadata_Compound"}  # the default when the store has it
    assert payload["in_domain"]["n_real"] == payload["in_domain"]["n_fake"] == 40
    assert payload["in_domain"]["fid"] >= 0 and "InceptionV3 not available" in payload["inception"]
    assert 0 <= payload["memorisation"]["memorised_fraction"] <= 1
    assert json.loads((tmp_path / "eval" / "generation.json").read_text())["convention"]
    assert (tmp_path / "extractor.pt").is_file() and (tmp_path / "eval" / "figures" / "real_vs_generated.png").is_file()
    again = run_generation_evaluation(run, tmp_path / "eval2", config)
    assert again["in_domain"]["extractor"] == payload["in_domain"]["extractor"]
    run_generation_evaluation(run, None, config)
    html = write_run_report(run).read_text()
    for heading in ("Configuration", "Training", "Samples during training", "Generation quality"):
        assert heading in html


def test_real_crops_are_drawn_at_random_and_kept_in_the_order_drawn(monkeypatch):
    from morphospace.workflows import evaluation

    reads = []

    def crops_named_by_row(data, rows):  # crop k holds its store row, so the result tells which rows came
        reads.append(rows)
        return rows[:, None, None, None].astype(np.float32)

    monkeypatch.setattr(evaluation, "_real_crops", crops_named_by_row)
    rows = np.arange(100)  # a store sorted by class: rows 0-49 class A, 50-99 class B
    first = evaluation._random_crops(None, rows, 8, np.random.default_rng(0))[:, 0, 0, 0].astype(int)
    assert (first < 50).any() and (first >= 50).any()  # both classes among the first crops shown
    assert sorted(first) != first.tolist() and np.all(np.diff(reads[0]) > 0)  # read in store order, drawn order kept
    assert evaluation._random_crops(None, rows[:0], 8, np.random.default_rng(0)) is None


@pytest.fixture(scope="module")
def phenotype_run(tmp_path_factory) -> Path:
    """A VAE trained one epoch on 64 one-channel crops named ch0 (discs, small then big: sorted by
    class), with Metadata_Phenotype and no Metadata_Compound."""
    from morphospace.io.store import CropStoreWriter
    from morphospace.models.registry import resolve_run_config
    from morphospace.workflows.train import train

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:16, :16]
    radii = np.concatenate([rng.uniform(2.8, 3.6, 32), rng.uniform(4.2, 5.0, 32)])
    images = np.stack([((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < r ** 2)[None] * 0.8 + rng.normal(0, 0.03, (1, 16, 16))
                       for r in radii]).clip(0, None).astype(np.float32)
    root = tmp_path_factory.mktemp("phenotypes")
    with CropStoreWriter(root / "store", ["ch0"], (16, 16), "float32") as writer:
        writer.append(images, pd.DataFrame({"Metadata_Phenotype": np.repeat(["small", "big"], 32)}))
    config = resolve_run_config({
        "name": "vae", "runs_dir": str(root / "runs"), "seed": 0,
        "data": {"store": str(root / "store"), "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 0.8, "val": 0.2, "test": 0.0}},
        "model": {"family": "vae", "latent_dim": 8, "base_channels": 8},
        "trainer": {"max_epochs": 1, "precision": "32-true", "channels_last": False, "sample_images": 4},
    })
    train(config, progress=False)
    return root / "runs" / "vae"


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path}: bare {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_generation_evaluation_of_a_one_channel_store_without_compounds(phenotype_run: Path, tmp_path: Path):
    from morphospace.cli import main

    config = GenerationConfig(n=24, extractor_epochs=2, feature_cells=24)
    payload = run_generation_evaluation(phenotype_run, tmp_path / "self", config)
    assert payload["extractor_training"]["labels"] is None
    assert payload["extractor_training"]["objective"].startswith("self-supervised")
    assert Path(payload["extractor_path"]).name == "store_1ch_16px_self-supervised.pt"
    assert payload["feature_distances"]["objects"] == ["Nuclei"]  # no cytoplasm channel: no invented cells
    assert _strict_json(tmp_path / "self" / "generation.json")["extractor_training"]["labels"] is None
    options = ["--set", "n=24", "--set", "extractor_epochs=2", "--set", "feature_cells=24"]
    assert main(["evaluate", "generation", "--run", str(phenotype_run), "--out", str(tmp_path / "labels"),
                 "--labels", "Metadata_Phenotype", *options]) == 0
    saved = _strict_json(tmp_path / "labels" / "generation.json")
    assert saved["extractor_training"] == {"objective": "classification of Metadata_Phenotype",
                                           "labels": "Metadata_Phenotype"}
    assert saved["in_domain"]["extractor"] != payload["in_domain"]["extractor"]  # another extractor, cached apart
    with pytest.raises(InputError, match="store: no column 'Metadata_Compound' .*'Metadata_Phenotype'"):
        run_generation_evaluation(phenotype_run, tmp_path / "missing", config.model_copy(
            update={"extractor_labels": "Metadata_Compound"}))


def test_embed_needs_the_run_crop_size(trained_runs, small_store: Path, tmp_path: Path):
    with pytest.raises(InputError, match="crops are \\(12, 12\\), the run vae was trained on \\(16, 16\\)"):
        embed_store(trained_runs["vae"], small_store, tmp_path / "e.parquet", progress=False)


def test_algebra_groups_are_disjoint_even_with_ties():
    from morphospace.workflows.latent import _groups

    table = pd.DataFrame({"Metadata_Compound": ["a", "b"] * 5, "score": [1, 1, 1, 1, 1, 1, 2, 3, np.nan, 4]})
    high, low = _groups(table, "score", 0.3, None, None)
    assert not (high & low).any() and high.sum() == low.sum() == 2 and not high[8] and not low[8]
    assert set(np.flatnonzero(high)) == {7, 9}
    with pytest.raises(InputError, match="both groups"):
        _groups(table, "score", 0.3, "Metadata_Compound == 'a'", None)


def test_generation_uses_the_training_split_and_checks_the_extractor(trained_runs, tmp_path: Path):
    run = trained_runs["vae"]
    config = GenerationConfig(n=200, extractor=str(tmp_path / "x.pt"), extractor_epochs=1, feature_cells=10,
                              cytoplasm_channels=["Actin"])
    payload = run_generation_evaluation(run, tmp_path / "e", config)
    data = load_run(run).data
    assert payload["in_domain"]["n_real"] == len(data.indices("train")) < 96
    assert payload["memorisation"]["baseline"] == "holdout"
    assert payload["memorisation"]["n_baseline"] == len(data.indices("val"))
    key = json.loads((tmp_path / "x.pt.json").read_text())
    (tmp_path / "x.pt.json").write_text(json.dumps({**key, "crop_size": 99}))
    with pytest.raises(FileExistsError, match="generation.json: already exists"):
        run_generation_evaluation(run, tmp_path / "e", config)
    with pytest.raises(InputError, match="trained on other inputs"):
        run_generation_evaluation(run, tmp_path / "e", config, overwrite=True)


@pytest.mark.slow
def test_embedding_encodes_only_the_conditions_the_model_reads(blob_store: Path, tmp_path: Path, tiny_config):
    from morphospace.models.registry import resolve_run_config
    from morphospace.workflows.train import train

    config = tiny_config(blob_store, tmp_path, "big_only", {"family": "vae"}, max_epochs=1).to_dict()
    config["data"] |= {"include": {"Metadata_Compound": ["big"]},
                       "conditions": {"compound": {"kind": "categorical", "column": "Metadata_Compound"}}}
    train(resolve_run_config(config), progress=False)
    summary = embed_store(tmp_path / "big_only", out=tmp_path / "all.parquet", progress=False)
    assert summary.n_cells == 96  # the 'small' cells were never trained on, and the VAE does not read compounds
