from pathlib import Path

import numpy as np
import pytest

from morphospace import __version__
from morphospace.cli import main
from morphospace.io.store import CropStore


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", ["simulate", "manifest", "prepare", "import", "demo", "features", "profiles", "evaluate",
                                     "train", "embed", "generate", "explore", "report", "predict"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "example:" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_import_npz(tmp_path: Path, capsys):
    np.savez(tmp_path / "c.npz", images=np.random.default_rng(0).integers(0, 999, (4, 10, 10, 3)).astype(np.uint16),
             plate=np.array(["A"] * 4))
    code = main(["--no-progress", "import", "--npz", str(tmp_path / "c.npz"), "--out", str(tmp_path / "s"),
                 "--channels", "DNA,Actin,Tubulin"])
    assert code == 0 and "imported 4 crops" in capsys.readouterr().out
    assert CropStore(tmp_path / "s").channels == ["DNA", "Actin", "Tubulin"]
    assert main(["import", "--npz", str(tmp_path / "c.npz"), "--out", str(tmp_path / "s")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_input_exits_non_zero_with_message(tmp_path: Path, capsys):
    assert main(["import", "--npz", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "s")]) == 2
    assert "missing.npz: file not found" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "sim"), "--set", "platez=2"]) == 2
    assert "key 'platez': unknown key" in capsys.readouterr().err


@pytest.mark.slow
def test_simulate_then_prepare(tmp_path: Path, capsys):
    code = main(["--no-progress", "simulate", "--out", str(tmp_path / "sim"), "--seed", "2", "--set", "plates=1",
                 "--set", "moas=[Actin disruptors]", "--set", "compounds_per_moa=1", "--set", "concentrations=1",
                 "--set", "dmso_wells_per_plate=2", "--set", "field_size=128", "--set", "cells_per_field=5"])
    assert code == 0 and "simulated" in capsys.readouterr().out
    code = main(["--no-progress", "prepare", "--manifest", str(tmp_path / "sim" / "manifest.csv"), "--out",
                 str(tmp_path / "store"), "--set", "crops.size=32", "--set", "illumination.enabled=false", "--json"])
    assert code == 0 and '"n_cells"' in capsys.readouterr().out
    assert CropStore(tmp_path / "store").crop_shape == (32, 32)


@pytest.mark.slow
def test_simulate_transmitted_mode(tmp_path: Path, capsys):
    code = main(["--no-progress", "simulate", "--out", str(tmp_path / "sim"), "--mode", "transmitted", "--set",
                 "plates=1", "--set", "moas=[Actin disruptors]", "--set", "compounds_per_moa=1", "--set",
                 "concentrations=1", "--set", "dmso_wells_per_plate=1", "--set", "field_size=64"])
    assert code == 0 and "simulated" in capsys.readouterr().out
    header = (tmp_path / "sim" / "manifest.csv").read_text().splitlines()[0]
    assert "FileName_Transmitted" in header and "FileName_NucleiLabels" in header
    assert "mode: transmitted" in (tmp_path / "sim" / "simulate_config.yaml").read_text()


@pytest.mark.slow
def test_features_profiles_and_evaluations(tmp_path: Path, capsys):
    from morphospace.io.store import CropStoreWriter
    import json
    import pandas as pd
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    n = 48
    masks = np.zeros((n, 24, 24), np.uint8)
    images = rng.uniform(0.05, 0.1, (n, 2, 24, 24)).astype(np.float32)
    compounds = np.array([f"c{i % 6}" if i >= 12 else "DMSO" for i in range(n)])
    moas = np.array(["DMSO" if c == "DMSO" else ("X" if c in ("c0", "c1", "c2") else "Y") for c in compounds])
    for i in range(n):
        radius = 4 + (3 if moas[i] == "X" else 0) + (6 if moas[i] == "Y" else 0) // 2
        masks[i][disk((12, 12), radius + 3, shape=(24, 24))] = 2
        masks[i][disk((12, 12), radius, shape=(24, 24))] = 1
        images[i, 0][masks[i] == 1] += 0.5 if moas[i] == "Y" else 0.2
    table = pd.DataFrame({"Metadata_Plate": np.where(np.arange(n) % 2, "P1", "P2"),
                          "Metadata_Well": [f"{c}_{i % 4}" for i, c in enumerate(compounds)], "Metadata_Compound": compounds,
                          "Metadata_Concentration": 1.0, "Metadata_MoA": moas})
    with CropStoreWriter(tmp_path / "store", ["DNA", "Actin"], (24, 24), with_masks=True) as writer:
        writer.append(images, table, masks)
    assert main(["--no-progress", "features", "--store", str(tmp_path / "store"), "--out",
                 str(tmp_path / "cells.parquet"), "--set", "chunk_cells=16"]) == 0
    assert main(["profiles", "--features", str(tmp_path / "cells.parquet"), "--out", str(tmp_path / "p.parquet"),
                 "--set", "sphere.enabled=false"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "moa", "--profiles", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "eval"),
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["nsc"]["treatments"] == 6 and "convention" in payload
    assert (tmp_path / "eval" / "figures" / "moa_confusion_nsc.png").is_file()
    assert main(["evaluate", "retrieval", "--profiles", str(tmp_path / "p.parquet"), "--set", "null_size=200"]) == 0
    assert "mAP" in capsys.readouterr().out
    assert main(["evaluate", "clustering", "--table", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "eval"),
                 "--set", "folds=3"]) == 0
    assert (tmp_path / "eval" / "figures" / "dendrogram.png").is_file()
    assert main(["evaluate", "clustering", "--table", str(tmp_path / "p.parquet"), "--label", "Metadata_Nope"]) == 2
    assert "Metadata_Nope" in capsys.readouterr().err


@pytest.mark.slow
def test_model_commands(trained_runs, tmp_path: Path, capsys):
    run = str(trained_runs["vae"])
    assert main(["--no-progress", "embed", "--run", run, "--out", str(tmp_path / "e.parquet")]) == 0
    assert "embedded 96 cells into 8 dimensions" in capsys.readouterr().out
    assert main(["generate", "--run", run, "--n", "4", "--out", str(tmp_path / "g.png"), "--npz",
                 str(tmp_path / "g.npz")]) == 0
    assert np.load(tmp_path / "g.npz")["images"].shape == (4, 2, 16, 16)
    for kind, extra in (("interpolate", ["--seeds", "0,1"]), ("algebra", ["--cells", "30"]), ("traverse", ["--dims", "2"])):
        assert main(["explore", kind, "--run", run, *extra]) == 0
    assert main(["evaluate", "generation", "--run", run, "--out", str(tmp_path / "eval"), "--set", "n=30",
                 "--set", f"extractor={tmp_path / 'x.pt'}", "--set", "extractor_epochs=1", "--set", "feature_cells=10",
                 "--set", "cytoplasm_channels=[Actin]"]) == 0
    assert "FID" in capsys.readouterr().out
    assert main(["report", "--run", run]) == 0 and (trained_runs["vae"] / "report.html").is_file()
    assert main(["embed", "--run", str(tmp_path / "nowhere")]) == 2
    assert "not a training run" in capsys.readouterr().err


@pytest.mark.slow
def test_train_command(blob_store: Path, tmp_path: Path, capsys):
    import yaml

    config = {"name": "cli", "runs_dir": str(tmp_path), "data": {"store": str(blob_store), "batch_size": 16,
              "normalization": {"out_range": [-1, 1]}, "split": {"by": None, "train": 1.0, "val": 0.0, "test": 0.0}},
              "model": {"family": "vae", "latent_dim": 4, "base_channels": 4},
              "trainer": {"max_epochs": 1, "precision": "32-true"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["--no-progress", "train", str(tmp_path / "c.yaml"), "--set", "trainer.limit_train_batches=2"]) == 0
    assert "trained 1 epoch(s)" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "c.yaml"), "--set", "model.beta=3"]) == 2
    assert "model.beta" in capsys.readouterr().err


def test_generation_summary_of_a_cp2image_payload():
    from morphospace.cli import _generation_summary

    payload = {"family": "cp2image", "in_domain": {"fid": 10.81, "kid_mean": 0.83, "extractor": "in-domain"},
               "extractor_training": {"labels": "Metadata_MoA"},
               "feature_correlation": {"share_r_above_0_5": 0.7226, "n_cells": 500, "split": "test", "median_r": 0.6923},
               "measurement_ceiling": {"share_r_above_0_5": 0.9574}}
    assert _generation_summary(payload) == ("72.3% of features with r > 0.5 on 500 test cells (median r 0.692; real "
                                            "crops 95.7%); FID 10.81, KID 0.83 (in-domain, trained on Metadata_MoA)")


def test_compare_embeddings_lays_out_one_column_per_table(tmp_path: Path, capsys):
    import pandas as pd

    rng = np.random.default_rng(0)
    groups = ["healthy"] * 10 + ["disease"] * 10
    apart = pd.DataFrame(np.r_[rng.normal(0, 1, (10, 3)), rng.normal(8, 1, (10, 3))], columns=["a", "b", "c"])
    mixed = pd.DataFrame(rng.normal(0, 1, (20, 3)), columns=["a", "b", "c"])
    for name, table in (("apart", apart), ("mixed", mixed)):
        table.assign(Metadata_Group=groups).to_parquet(tmp_path / f"{name}.parquet")
    out = tmp_path / "comparison"
    assert main(["evaluate", "compare-embeddings", "--table", f"cnn={tmp_path / 'apart.parquet'}", "--table",
                 f"pca={tmp_path / 'mixed.parquet'}", "--label", "Metadata_Group", "--out", str(out),
                 "--set", "folds=3"]) == 0
    printed = capsys.readouterr().out
    assert "cnn" in printed and "pca" in printed and "V-measure" in printed
    table = pd.read_csv(out / "embedding_comparison.csv").set_index("metric")
    assert list(table.columns) == ["cnn", "pca"]
    assert table.loc["SVM accuracy", "cnn"] == pytest.approx(1.0) and table.loc["V-measure", "cnn"] == pytest.approx(1.0)
    assert table.loc["V-measure", "pca"] < 0.5
    assert main(["evaluate", "compare-embeddings", "--table", str(tmp_path / "apart.parquet"),
                 "--label", "Metadata_Group"]) == 2
    assert "NAME=TABLE" in capsys.readouterr().err
    assert main(["evaluate", "compare-embeddings", "--table", f"cnn={tmp_path / 'apart.parquet'}"]) == 2
    error = capsys.readouterr().err
    assert "Metadata_MoA" in error and "apart.parquet" in error
    assert main(["evaluate", "compare-embeddings", "--table", f"cnn={tmp_path / 'apart.parquet'}", "--label",
                 "Metadata_Group", "--out", str(out)]) == 2  # an earlier comparison is kept without --overwrite
