"""One field from corrected channels to single-cell crops: correction, nuclei, cells, crops (or,
with ``tiles`` set, to whole-field tiles without segmentation).

:func:`process_field` is the notebook entry point of what ``prepare`` does to every field;
``prepare`` (:mod:`morphospace.workflows.prepare`) adds QC, illumination estimation, parallelism,
resuming and the crop store around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pydantic

from morphospace.config import Config
from morphospace.preprocess.background import BackgroundConfig
from morphospace.preprocess.correct import correct_channel
from morphospace.preprocess.denoise import DenoiseConfig
from morphospace.segment.tiles import TilesConfig, tile_field
from morphospace.segment.cells import CellsConfig, cytoplasm_image, segment_cells
from morphospace.segment.crops import CropResult, CropsConfig, crop_cells
from morphospace.errors import InputError
from morphospace.segment.nuclei import NucleiConfig, resolve_nucleus_channel, segment_nuclei_as

__all__ = ["FieldConfig", "FieldResult", "process_field"]


class FieldConfig(Config):
    """The per-field steps: background, denoising, nuclei, cells, crops; with ``tiles`` set the
    corrected field is cut into tiles instead (no nuclei, cells or crops)."""

    background: BackgroundConfig = pydantic.Field(default_factory=BackgroundConfig)
    denoise: DenoiseConfig = pydantic.Field(default_factory=DenoiseConfig)
    nuclei: NucleiConfig = pydantic.Field(default_factory=NucleiConfig)
    cells: CellsConfig = pydantic.Field(default_factory=CellsConfig)
    crops: CropsConfig = pydantic.Field(default_factory=CropsConfig)
    tiles: TilesConfig | None = None

    @property
    def stored_size(self) -> int:
        """Side in px of what the store holds: the tile size with ``tiles``, else the crop size."""
        return self.tiles.size if self.tiles else self.crops.size

    def resolve_channels(self, channels: Sequence[str], source: str) -> "FieldConfig":
        """A copy with ``auto`` channels named from the field's ``channels``: the nuclei channel
        (see :func:`~morphospace.segment.nuclei.resolve_nucleus_channel`) and, for cells, every
        other channel. Raises InputError naming ``source``, the config key and the channels when a
        named channel is missing or the nuclei channel cannot be told. With ``tiles`` nothing is
        segmented: the nuclei channel only names the channel QC judges, the first channel when no
        channel is named like a nuclear stain."""
        channels = list(channels)
        if self.tiles:
            try:
                nucleus = resolve_nucleus_channel(channels, self.nuclei.channel, source,
                                                  role="nothing segmented (tiles); field QC judged")
            except InputError:
                if self.nuclei.channel != "auto":
                    raise
                nucleus = channels[0]
            return self.model_copy(update={"nuclei": self.nuclei.model_copy(update={"channel": nucleus})})
        nucleus = resolve_nucleus_channel(channels, self.nuclei.channel, source, setting="--set nuclei.channel=NAME")
        cytoplasm = ([c for c in channels if c != nucleus] if self.cells.channels == "auto"
                     else list(self.cells.channels))
        unknown = [c for c in cytoplasm if c not in channels]
        if unknown:
            raise InputError(f"{source}: config key 'cells.channels' names channel(s) {unknown}; available: {channels}")
        return self.model_copy(update={"nuclei": self.nuclei.model_copy(update={"channel": nucleus}),
                                       "cells": self.cells.model_copy(update={"channels": cytoplasm})})


@dataclass
class FieldResult:
    """One processed field: ``corrected`` (C, H, W) float32, label images (H, W; None when tiled),
    and its crops (or tiles)."""

    corrected: np.ndarray
    nuclei: np.ndarray | None
    cells: np.ndarray | None
    crops: CropResult


def process_field(
    planes: dict[str, np.ndarray],
    config: FieldConfig,
    illumination: dict[str, np.ndarray] | None = None,
    scales: dict[str, float] | None = None,
) -> FieldResult:
    """Correct, segment and crop one field held in memory.

    Parameters
    ----------
    planes
        Channel name -> (H, W) image, in channel order.
    config
        The per-field steps (a ``prepare`` config works too), with channels named
        (:meth:`FieldConfig.resolve_channels`).
    illumination
        Channel name -> illumination function (H, W), for the channels to correct.
    scales
        Channel name -> divisor from plate normalisation.
    """
    illumination, scales = illumination or {}, scales or {}
    corrected = {name: correct_channel(image, config.background, config.denoise, illumination.get(name),
                                       scales.get(name))
                 for name, image in planes.items()}
    if config.tiles:
        stack = np.stack(list(corrected.values()))
        return FieldResult(stack, None, None, tile_field(stack, config.tiles))
    nuclei = segment_nuclei_as(corrected[config.nuclei.channel], config.nuclei)
    cells_config = config.cells
    if not cells_config.channels and cells_config.method == "watershed":
        cells = nuclei.copy()  # nothing stains the cytoplasm: a cell is its nucleus
    else:
        cells = segment_cells(
            nuclei, cytoplasm_image(corrected, cells_config.channels), method=cells_config.method,
            elevation=cells_config.elevation, sigma=cells_config.sigma,
            threshold_factor=cells_config.threshold_factor, max_distance=cells_config.max_distance,
            compactness=cells_config.compactness,
        )
    stack = np.stack(list(corrected.values()))
    crops_config = config.crops
    crops = crop_cells(
        stack, nuclei, cells, size=crops_config.size, border=crops_config.border, pad_mode=crops_config.pad_mode,
        mask_outside_cell=crops_config.mask_outside_cell, align=crops_config.align,
    )
    return FieldResult(stack, nuclei, cells, crops)
