"""What a data module's batches carry: one entry per batch key, with its kind and per-sample shape.

A model family says which keys and kinds it needs; the run skeleton checks them against the data
module's :class:`DataSpec` before anything is written, and the family builds its network from the
shapes. The spec is saved in the run's ``data.json``.

Examples
--------
>>> spec = DataSpec("crops", {"image": BatchEntry("image", (3, 64, 64), ("DNA", "Actin", "Tubulin")),
...                           "compound": BatchEntry("categorical", (), ("DMSO", "taxol"))})
>>> spec.shape("image"), spec.names("compound")
((3, 64, 64), ['DMSO', 'taxol'])
>>> spec.missing({"image": "image", "compound": "categorical", "dose": "numeric"})
["'dose' (numeric)"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["BatchEntry", "DataSpec"]


@dataclass(frozen=True)
class BatchEntry:
    """One batch key: ``kind`` (image, index, categorical, numeric, features, channels, input,
    target, mask), the shape of one sample's value, and the names along its first axis (channel
    names, feature names) or the vocabulary of a categorical entry."""

    kind: str
    shape: tuple[int, ...]
    names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "names": list(self.names)}


@dataclass(frozen=True)
class DataSpec:
    """The batches of a data module: ``source`` (the data source's name) and ``entries`` by key."""

    source: str
    entries: Mapping[str, BatchEntry] = field(default_factory=dict)

    def entry(self, key: str) -> BatchEntry:
        if key not in self.entries:
            raise KeyError(f"batches carry no {key!r} (they carry {list(self.entries)})")
        return self.entries[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entry(key).shape

    def names(self, key: str) -> list[str]:
        return list(self.entry(key).names)

    def missing(self, required: Mapping[str, str]) -> list[str]:
        """The required ``{key: kind}`` pairs the batches lack or carry with another kind, described."""
        return [f"{key!r} ({kind})" for key, kind in required.items()
                if key not in self.entries or self.entries[key].kind != kind]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "batch": {key: entry.to_dict() for key, entry in self.entries.items()}}
