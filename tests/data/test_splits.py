import numpy as np
import pandas as pd
import pytest

from morphospace.data.splits import group_split
from morphospace.errors import InputError

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _cells(n_groups=20, seed=0):
    sizes = np.random.default_rng(seed).integers(5, 50, n_groups)
    return pd.DataFrame({"Metadata_Compound": np.repeat([f"c{i}" for i in range(n_groups)], sizes)})


def test_no_group_leaks_and_shares_are_close():
    cells = _cells()
    split = group_split(cells, "Metadata_Compound", FRACTIONS, seed=3)
    assert split.groupby(cells["Metadata_Compound"]).nunique().max() == 1
    shares = split.value_counts(normalize=True)
    for name, share in FRACTIONS.items():
        assert abs(shares[name] - share) < 0.1


def test_deterministic_given_seed():
    cells = _cells()
    a = group_split(cells, "Metadata_Compound", FRACTIONS, seed=1)
    b = group_split(cells, "Metadata_Compound", FRACTIONS, seed=1)
    c = group_split(cells, "Metadata_Compound", FRACTIONS, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_every_positive_split_gets_a_group_and_zero_splits_none():
    cells = _cells(n_groups=3)
    split = group_split(cells, "Metadata_Compound", {"train": 0.9, "val": 0.05, "test": 0.05})
    assert set(split) == {"train", "val", "test"}
    split = group_split(cells, "Metadata_Compound", {"train": 0.8, "val": 0.2, "test": 0.0})
    assert set(split) == {"train", "val"}


def test_cell_level_split():
    cells = _cells()
    split = group_split(cells, None, FRACTIONS)
    assert abs((split == "train").mean() - 0.7) < 0.02


@pytest.mark.parametrize(
    "column, fractions, message",
    [
        ("Metadata_Plate", FRACTIONS, "not in the cell table"),
        ("Metadata_Compound", {"train": 0.5, "val": 0.1, "test": 0.1}, "sum to 1"),
    ],
)
def test_errors(column, fractions, message):
    with pytest.raises(InputError, match=message):
        group_split(_cells(), column, fractions)
    with pytest.raises(InputError, match="fewer than the 3 splits"):
        group_split(_cells(n_groups=2), "Metadata_Compound", FRACTIONS)
