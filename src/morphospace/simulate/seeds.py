"""Independent random streams derived from the screen's seed, one per plate, batch and field
(and, for single-cell structure crops, one per cell and per truth draw; for donors, one for the
donors and one per well).

A stream depends only on the global seed, its kind and its index, never on the order in which
fields are rendered, so results are identical for any number of worker processes.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["Stream", "seed_sequence", "generator"]


class Stream(IntEnum):
    """Kinds of random stream."""

    LAYOUT = 1
    PLATE = 2
    BATCH = 3
    FIELD = 4
    CELL = 5
    TRUTH = 6
    DONOR = 7
    WELL = 8


def seed_sequence(seed: int, stream: Stream, *index: int) -> np.random.SeedSequence:
    """The seed sequence of ``stream`` number ``index`` (e.g. plate, row, column, site)."""
    return np.random.SeedSequence(seed, spawn_key=(int(stream), *(int(i) for i in index)))


def generator(seed: int | np.random.SeedSequence | np.random.Generator) -> np.random.Generator:
    """A generator from an int seed, a seed sequence or an existing generator (returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
