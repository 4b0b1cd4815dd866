"""Paired fields for in silico labeling: input channels (transmitted light, z-planes) and target
channels (fluorescence) of the same field, each a file named in a manifest, plus optional nuclei labels.

The manifest is the field manifest of :mod:`morphospace.io.manifest` (one row per field,
``FileName_<channel>`` columns, paths relative to the CSV); a config names which channels are
inputs, which are targets and which column holds a label image. A file holding a stack (Z, H, W)
contributes each plane as a channel, an RGB(A) file its three colours. Intensities are normalised per image (the seed's per-image
z-score, or a percentile stretch), because the fluorescence floor and the light level differ between
fields.

Examples
--------
>>> import numpy as np
>>> image = np.arange(16, dtype=float).reshape(4, 4)
>>> z = normalize_image(image, PairedNormalization(method="zscore"))
>>> round(float(z.mean()), 6), round(float(z.std()), 6)
(0.0, 1.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pydantic

from morphospace.config import Config
from morphospace.errors import InputError
from morphospace.io.manifest import FieldSpec, read_channel, read_manifest

__all__ = ["PairedNormalization", "PairedChannels", "PairedField", "normalize_image", "read_paired_manifest",
           "load_paired_field"]


class PairedNormalization(Config):
    """Per-image intensity normalisation of every input and target channel."""

    method: Literal["zscore", "percentile"] = "zscore"
    low: float = pydantic.Field(1.0, ge=0, le=100, description="percentile mapped to 0 (method percentile)")
    high: float = pydantic.Field(99.8, ge=0, le=100, description="percentile mapped to 1 (method percentile)")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "PairedNormalization":
        if self.low >= self.high:
            raise ValueError(f"low percentile ({self.low}) must be below high ({self.high})")
        return self


class PairedChannels(Config):
    """Which manifest channels are inputs and targets (none when only predicting), and which column
    holds nuclei labels."""

    inputs: list[str] = pydantic.Field(..., min_length=1)
    targets: list[str] = pydantic.Field(default_factory=list)
    mask: str | None = pydantic.Field(None, description="channel whose file is an instance label image")

    @pydantic.model_validator(mode="after")
    def _distinct(self) -> "PairedChannels":
        names = self.inputs + self.targets + ([self.mask] if self.mask else [])
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"channels used twice: {repeated}")
        return self

    @property
    def files(self) -> list[str]:
        return self.inputs + self.targets + ([self.mask] if self.mask else [])


@dataclass(frozen=True)
class PairedField:
    """One field in memory: ``inputs`` (Ci, H, W) and ``targets`` (Ct, H, W) float32, normalised;
    ``mask`` (H, W) int32 instance labels or None."""

    field_id: str
    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.inputs.shape[-2:])


def normalize_image(image: np.ndarray, settings: PairedNormalization) -> np.ndarray:
    """One plane (H, W) -> float32: z-score over its own pixels, or its [low, high] percentiles
    stretched to [0, 1] (not clipped)."""
    image = np.asarray(image, dtype=np.float64)
    if settings.method == "zscore":
        scale = image.std()
        return ((image - image.mean()) / (scale if scale > 0 else 1.0)).astype(np.float32)
    low, high = np.percentile(image, [settings.low, settings.high])
    return ((image - low) / (high - low if high > low else 1.0)).astype(np.float32)


def read_paired_manifest(path: str | os.PathLike, channels: PairedChannels) -> list[FieldSpec]:
    """Fields of a manifest with a file for every input, target and mask channel.

    Raises InputError naming the manifest when a channel column is missing or files are absent.
    """
    return read_manifest(path, channels.files)


def _planes(spec: FieldSpec, channel: str, label: bool = False) -> np.ndarray:
    """(P, H, W) planes of a channel of a field: a plane, a (Z, H, W) stack, or RGB(A) colour (alpha dropped)."""
    image = read_channel(spec, channel, ndim=(2,) if label else (2, 3), allow_constant=label)
    if image.ndim == 3 and image.shape[-1] in (3, 4) and image.shape[0] > 4:
        return np.moveaxis(image[..., :3], -1, 0)
    return image if image.ndim == 3 else image[None]


def load_paired_field(spec: FieldSpec, channels: PairedChannels,
                      normalization: PairedNormalization | None = None) -> PairedField:
    """Read and normalise one field of :func:`read_paired_manifest`.

    Raises InputError naming the file when a file is unreadable, a label image is not integer, or
    the files of the field differ in size.
    """
    normalization = normalization or PairedNormalization()
    planes: dict[str, np.ndarray] = {}
    for name in channels.inputs + channels.targets:
        planes[name] = np.stack([normalize_image(p, normalization) for p in _planes(spec, name)])
    mask = None
    if channels.mask:
        mask = _planes(spec, channels.mask, label=True)[0]
        if mask.dtype.kind not in "ui":
            raise InputError(f"{spec.files[channels.mask]}: label image must hold integers, got {mask.dtype}")
        mask = mask.astype(np.int32)
    shapes = {name: array.shape[-2:] for name, array in planes.items()}
    if mask is not None:
        shapes[channels.mask] = mask.shape
    reference = shapes[channels.inputs[0]]
    for name, shape in shapes.items():
        if shape != reference:
            raise InputError(f"{spec.files[name]}: size {tuple(shape)} differs from "
                             f"{spec.files[channels.inputs[0]]} {tuple(reference)} in field {spec.field_id}")
    stack = [planes[n] for n in channels.targets]
    return PairedField(
        spec.field_id,
        np.concatenate([planes[n] for n in channels.inputs]),
        np.concatenate(stack) if stack else np.zeros((0, *reference), np.float32),
        mask,
        dict(spec.metadata),
    )
