"""Linear-probe and kNN accuracy: separable labels, folds that keep groups apart, bad input, and
the ``evaluate probe`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.cli import main
from morphospace.errors import InputError
from morphospace.evaluate.probe import probe_accuracy


def _compound_signal_table(seed: int = 0) -> pd.DataFrame:
    """24 compounds of 8 rows, each compound a tight cluster at its own random place, MoAs a and b
    given to alternate compounds: a row's neighbours share its compound, not a MoA direction."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (24, 6))
    x = np.repeat(centres, 8, axis=0) + rng.normal(0, 0.1, (24 * 8, 6))
    compounds = np.repeat([f"c{i}" for i in range(24)], 8)
    moas = np.repeat(["a", "b"] * 12, 8)
    return pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]).assign(Metadata_Compound=compounds, Metadata_MoA=moas)


def test_row_folds_read_the_compound_and_group_folds_do_not():
    table = _compound_signal_table()
    rows = probe_accuracy(table, "Metadata_MoA", k=3)
    grouped = probe_accuracy(table, "Metadata_MoA", group_column="Metadata_Compound", k=3)
    assert rows.knn_accuracy == 1.0 and rows.folds == 5 and rows.chance == 0.5
    assert grouped.knn_accuracy < 0.75 and grouped.group_column == "Metadata_Compound"


def test_labels_carried_by_two_features_are_read_by_both_probes():
    rng = np.random.default_rng(1)
    labels = np.repeat(["x", "y", "z"], 20)
    x = rng.normal(0, 1, (60, 8))
    x[20:40, 3] += 10  # y
    x[40:, 5] += 10  # z
    table = pd.DataFrame(x).rename(columns=str).assign(Metadata_Phenotype=labels)
    result = probe_accuracy(table, "Metadata_Phenotype", folds=4, k=5)
    assert result.linear_accuracy == 1.0 and result.folds == 4 and result.labels == 3 and result.rows == 60
    assert result.knn_accuracy > 0.8  # the other seven features dilute the cosine distances


def test_bad_input_is_named():
    table = _compound_signal_table()
    with pytest.raises(InputError, match="stratified folds need at least 2"):
        probe_accuracy(table.iloc[:9], "Metadata_MoA")
    with pytest.raises(InputError, match="single value"):
        probe_accuracy(table.assign(Metadata_Plate="P1"), "Metadata_MoA", group_column="Metadata_Plate")
    with pytest.raises(InputError, match="'Metadata_Well' is not in the table"):
        probe_accuracy(table, "Metadata_MoA", group_column="Metadata_Well")
    with pytest.raises(InputError, match="at least two distinct"):
        probe_accuracy(table.assign(Metadata_MoA="a"), "Metadata_MoA")


def test_evaluate_probe_command_writes_its_json(tmp_path: Path, capsys):
    _compound_signal_table().to_parquet(tmp_path / "embeddings.parquet")
    assert main(["evaluate", "probe", "--table", str(tmp_path / "embeddings.parquet"), "--group",
                 "Metadata_Compound", "--set", "k=3", "--out", str(tmp_path / "eval")]) == 0
    assert "folds keeping Metadata_Compound apart" in capsys.readouterr().out
    payload = json.loads((tmp_path / "eval" / "probe.json").read_text())
    assert payload["knn_accuracy"] < 0.75 and payload["config"]["k"] == 3 and "cosine" in payload["convention"]
    assert main(["evaluate", "probe", "--table", str(tmp_path / "embeddings.parquet"), "--label", "Metadata_X"]) == 2
    assert "no label column 'Metadata_X'" in capsys.readouterr().err
