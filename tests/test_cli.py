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


@pytest.mark.parametrize("command", ["simulate", "prepare", "import", "demo", "features", "profiles", "evaluate"])
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


def test_simulate_then_prepare(tmp_path: Path, capsys):
    code = main(["--no-progress", "simulate", "--out", str(tmp_path / "sim"), "--seed", "2", "--set", "plates=1",
                 "--set", "moas=[Actin disruptors]", "--set", "compounds_per_moa=1", "--set", "concentrations=1",
                 "--set", "dmso_wells_per_plate=2", "--set", "field_size=128", "--set", "cells_per_field=5"])
    assert code == 0 and "simulated" in capsys.readouterr().out
    code = main(["--no-progress", "prepare", "--manifest", str(tmp_path / "sim" / "manifest.csv"), "--out",
                 str(tmp_path / "store"), "--set", "crops.size=32", "--set", "illumination.enabled=false", "--json"])
    assert code == 0 and '"n_cells"' in capsys.readouterr().out
    assert CropStore(tmp_path / "store").crop_shape == (32, 32)


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
