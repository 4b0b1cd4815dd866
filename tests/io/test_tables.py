"""Choosing cells of a cell table with a pandas query or COLUMN=VALUE equalities."""

from __future__ import annotations

import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.io.tables import select_cells

CELLS = pd.DataFrame({"Metadata_Compound": ["DMSO", "taxol", "taxol", "cyclohexamide"],
                      "Metadata_Concentration": [0.0, 1.0, 3.0, 15.0], "Metadata_Plate": [1, 1, 2, 2]})


def test_equalities_compare_text_and_numbers():
    assert select_cells(CELLS, "Metadata_Compound=taxol", "--q", "t").tolist() == [False, True, True, False]
    assert select_cells(CELLS, "Metadata_Concentration=15", "--q", "t").tolist() == [False, False, False, True]
    assert select_cells(CELLS, "Metadata_Plate=2, Metadata_Compound=taxol", "--q", "t").tolist() == [
        False, False, True, False]


def test_pandas_queries_pass_through():
    assert select_cells(CELLS, "Metadata_Concentration >= 3", "--q", "t").tolist() == [False, False, True, True]
    assert select_cells(CELLS, "Metadata_Compound == 'DMSO'", "--q", "t").tolist() == [True, False, False, False]


@pytest.mark.parametrize("query, message", [
    ("Metadata_Dose=3", r"--q 'Metadata_Dose=3' on the cells of t: lacks the column\(s\) \['Metadata_Dose'\]"),
    ("Metadata_Concentration=high", "Metadata_Concentration is numeric, 'high' is not a number"),
    ("Metadata_Compound=nocodazole", "no cell of t matches"),
    ("Metadata_Compound ==", "not a valid query on the cell table of t"),
    ("Metadata_Concentration + 1", "not a true/false condition"),
])
def test_bad_queries_name_the_option_and_the_problem(query, message):
    with pytest.raises(InputError, match=message):
        select_cells(CELLS, query, "--q", "t")
