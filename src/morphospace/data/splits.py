"""Train / validation / test splits that keep every group (plate, compound...) in one split.

Examples
--------
>>> import pandas as pd
>>> cells = pd.DataFrame({"Metadata_Plate": ["A"] * 6 + ["B"] * 2 + ["C"] * 2})
>>> split = group_split(cells, "Metadata_Plate", {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
>>> bool(split.groupby(cells["Metadata_Plate"]).nunique().max() == 1)      # no plate in two splits
True
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from morphospace.errors import InputError

__all__ = ["group_split"]


def group_split(
    table: pd.DataFrame,
    group_column: str | None,
    fractions: Mapping[str, float],
    seed: int = 0,
) -> pd.Series:
    """Assign every row to a split so that no group spans two splits.

    Groups are shuffled with ``seed``; each split with a positive fraction first receives one
    group, then every further group goes to the split furthest below its target share of rows.
    ``group_column=None`` splits rows individually.

    Returns
    -------
    pandas.Series
        Split name per row, aligned with ``table``.

    Raises
    ------
    InputError
        Unknown column, missing values in it, fractions not summing to 1, or fewer groups than
        splits with a positive fraction.
    """
    names = [name for name, share in fractions.items() if share > 0]
    shares = np.array([fractions[name] for name in names], dtype=float)
    if not np.isclose(sum(fractions.values()), 1.0) or min(fractions.values(), default=0) < 0:
        raise InputError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    if group_column is None:
        groups = pd.Series(np.arange(len(table)), index=table.index)
    elif group_column not in table.columns:
        raise InputError(f"split column {group_column!r} is not in the cell table (columns: {list(table.columns)})")
    else:
        groups = table[group_column]
        if groups.isna().any():
            raise InputError(f"split column {group_column!r} has {int(groups.isna().sum())} missing value(s)")
    sizes = groups.value_counts(sort=False)
    if len(sizes) < len(names):
        raise InputError(
            f"split column {group_column!r} has {len(sizes)} group(s), fewer than the {len(names)} splits {names}"
        )
    order = np.random.default_rng(seed).permutation(len(sizes))
    targets = shares * len(table)
    filled = np.zeros(len(names))
    assignment = {}
    for rank, position in enumerate(order):
        group, size = sizes.index[position], sizes.iloc[position]
        split = rank if rank < len(names) else int(np.argmax((targets - filled) / targets))
        assignment[group] = names[split]
        filled[split] += size
    return groups.map(assignment).rename("split")
