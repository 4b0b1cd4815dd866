"""Tables as they come from users and other tools: non-finite or non-numeric columns, other column
names, one compound, no batches, earlier results in the output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.cli import main
from morphospace.config import resolve_config
from morphospace.errors import InputError
from morphospace.features.profiles import ProfilesConfig, build_profiles
from morphospace.workflows.evaluation import run_moa_evaluation


def _wells(seed: int = 0) -> pd.DataFrame:
    """48 wells: 6 compounds of 2 MoAs (3 each) in 2 batches, 4 wells each, plus DMSO; the MoA
    shifts 3 of 8 features."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(6):
        for well in range(4):
            rows.append({"Metadata_Compound": f"c{c}", "Metadata_Concentration": 1.0,
                         "Metadata_MoA": "X" if c < 3 else "Y", "Metadata_Batch": f"week{well % 2}"})
    for well in range(8):
        rows.append({"Metadata_Compound": "DMSO", "Metadata_Concentration": 0.0, "Metadata_MoA": "DMSO",
                     "Metadata_Batch": f"week{well % 2}"})
    table = pd.DataFrame(rows)
    features = rng.normal(0, 1, (len(table), 8))
    features[table["Metadata_MoA"] == "X", :3] += 3
    features[table["Metadata_MoA"] == "Y", 3:6] += 3
    return pd.concat([table, pd.DataFrame(features, columns=[f"f{i}" for i in range(8)])], axis=1)


def test_a_non_finite_feature_is_left_out_and_named(caplog):
    clean = run_moa_evaluation(_wells())
    broken = _wells().assign(f7=np.nan, notes="text")
    with caplog.at_level(logging.WARNING):
        result = run_moa_evaluation(broken, source="wells.csv")
    assert result["nsc"]["accuracy"] == run_moa_evaluation(_wells().drop(columns="f7"))["nsc"]["accuracy"]
    assert clean["nsc"]["accuracy"] == 1.0
    assert "wells.csv: dropped 1 feature(s) with NaN or infinite values in any of rows" in caplog.text and "f7" in caplog.text
    assert "non-numeric column(s) that are not Metadata_*: notes" in caplog.text
    only_nan = _wells()[[c for c in _wells().columns if c.startswith("Metadata_")]].assign(f0=np.nan)
    with pytest.raises(InputError, match="wells.csv: no feature column with finite values"):
        run_moa_evaluation(only_nan, source="wells.csv")
    with pytest.raises(InputError, match="no feature column with finite values"):
        build_profiles(only_nan, resolve_config(ProfilesConfig, {"aggregate": {"enabled": False},
                                                                 "normalize": {"by": None}}))


def test_one_compound_is_not_computed_rather_than_zero():
    table = _wells()
    one = table[table["Metadata_Compound"].isin(["c0", "DMSO"])].copy()
    one.loc[one.index[:2], "Metadata_Concentration"] = 2.0  # two treatments of one compound
    with pytest.raises(InputError, match="NSC not computed: it needs at least two compounds"):
        run_moa_evaluation(one)


def test_columns_of_other_tools_batches_and_earlier_results(tmp_path: Path, capsys):
    renamed = _wells().rename(columns={"Metadata_MoA": "Metadata_moa", "Metadata_Compound": "Metadata_pert_iname"})
    renamed.drop(columns="Metadata_Batch").to_csv(tmp_path / "pycytominer.csv", index=False)
    command = ["evaluate", "moa", "--profiles", str(tmp_path / "pycytominer.csv"), "--out", str(tmp_path / "eval")]
    assert main(command) == 2
    assert "no column 'Metadata_Compound' (set compound_column; --compound-column" in capsys.readouterr().err
    columns = ["--moa-column", "Metadata_moa", "--compound-column", "Metadata_pert_iname"]
    assert main([*command, *columns]) == 0
    output = capsys.readouterr().out
    assert "NSC 100.0% (6 treatments)" in output and "NSCB not computed: no Metadata_Batch column" in output
    assert main([*command, *columns]) == 2
    assert "moa.json: already exists" in capsys.readouterr().err
    assert main([*command, *columns, "--overwrite"]) == 0


def _strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise ValueError(f"{path}: not strict JSON ({constant})")

    return json.loads(path.read_text(), parse_constant=refuse)


def _phenotype_cells(seed: int = 0) -> pd.DataFrame:
    """60 cells of 3 phenotypes (no plate, well or compound), 4 informative features, one feature NaN
    in every cell and one infinite in a few."""
    rng = np.random.default_rng(seed)
    phenotype = np.repeat(["round", "long", "big"], 20)
    features = rng.normal(0, 1, (60, 4)) + 4 * (phenotype[:, None] == np.array(["round", "long", "big", "big"]))
    table = pd.DataFrame(np.abs(features) + 1, columns=[f"Nuclei_f{i}" for i in range(4)])
    table.insert(0, "Metadata_Phenotype", phenotype)
    table.insert(1, "Metadata_FileName", [f"{p}/{i}.png" for i, p in enumerate(phenotype)])
    table.insert(2, "Metadata_StoreIndex", np.arange(60))
    table["Nuclei_undefined"] = np.nan
    table["Nuclei_ratio"] = np.where(np.arange(60) % 20 == 0, np.inf, table["Nuclei_f0"] / table["Nuclei_f1"])
    return table


def test_cell_level_profiles_and_clustering_from_the_command_line(tmp_path: Path, capsys):
    _phenotype_cells().to_parquet(tmp_path / "cells.parquet")
    cells, profiles = str(tmp_path / "cells.parquet"), str(tmp_path / "profiles.parquet")
    assert main(["evaluate", "clustering", "--table", cells, "--label", "Metadata_Phenotype", "--out",
                 str(tmp_path / "raw")]) == 0
    line = capsys.readouterr().out
    assert "left out 2 feature(s) with NaN or infinite values: Nuclei_undefined, Nuclei_ratio" in line
    raw = _strict_json(tmp_path / "raw" / "clustering.json")
    assert raw["dropped_features"] == ["Nuclei_undefined", "Nuclei_ratio"] and raw["svm_accuracy"] > 0.9
    assert main(["profiles", "--features", cells, "--out", profiles]) == 2
    error = capsys.readouterr().err
    assert f"{cells}: cannot aggregate by ['Metadata_Plate', 'Metadata_Well']" in error and "--level cells" in error
    assert main(["profiles", "--features", cells, "--out", profiles, "--level", "cells"]) == 0
    assert "wrote 60 profiles x 5 features" in capsys.readouterr().out  # rare infinities filled like NaN
    report = _strict_json(tmp_path / "profiles.parquet.json")
    assert report["config"]["level"] == "cells" and not report["config"]["aggregate"]["enabled"]
    assert any("sphere against all cells" in note for note in report["adapted"])
    assert main(["evaluate", "clustering", "--table", profiles, "--label", "Metadata_Phenotype", "--out",
                 str(tmp_path / "eval"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["labels"] == 3 and payload["dropped_features"] == []
    assert _strict_json(tmp_path / "eval" / "clustering.json")["svm_accuracy"] == payload["svm_accuracy"] > 0.9
    assert main(["evaluate", "clustering", "--table", profiles, "--label", "Metadata_MoA"]) == 2
    assert f"{profiles}: no label column 'Metadata_MoA' (choose one: --label NAME)" in capsys.readouterr().err
