"""Per-plate intensity scaling of fields before cropping, which evens out plate and batch shifts.

Each channel of a plate is divided by the median over its fields of (99th percentile - median)
of the raw field, from the QC pass's intensity statistics.

Examples
--------
>>> import pandas as pd
>>> qc = pd.DataFrame({"Metadata_Plate": ["A", "A", "B"], "q99_DNA": [30.0, 50.0, 9.0],
...                    "median_DNA": [10.0, 10.0, 1.0]})
>>> plate_scales(qc, ["DNA"], NormalizeConfig(method="plate"))
{'A': {'DNA': 30.0}, 'B': {'DNA': 8.0}}
"""

from __future__ import annotations

from typing import Literal, Sequence

import pandas as pd
import pydantic

from morphospace.config import Config

__all__ = ["NormalizeConfig", "plate_scales"]


class NormalizeConfig(Config):
    """Field intensity scaling before cropping: ``none``, or ``plate`` (see the module docstring)."""

    method: Literal["none", "plate"] = "none"
    percentile: float = pydantic.Field(99.0, gt=50, lt=100)


def plate_scales(qc: pd.DataFrame, channels: Sequence[str], config: NormalizeConfig) -> dict[str, dict[str, float]]:
    """Divisor of every plate and channel, from per-field QC statistics with ``q99_<channel>`` and
    ``median_<channel>`` columns and ``Metadata_Plate``; empty when ``config.method`` is ``none``."""
    if config.method == "none":
        return {}
    scales = {}
    for plate, group in qc.groupby("Metadata_Plate"):
        scales[str(plate)] = {
            c: max(float((group[f"q99_{c}"] - group[f"median_{c}"]).median()), 1e-6) for c in channels
        }
    return scales
