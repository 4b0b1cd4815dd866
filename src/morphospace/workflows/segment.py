"""``segment``: nuclei label images of the fields of a manifest, and a copy of the manifest that
names them, so that paired-field configs (``data.channels.mask``) and the few-shot study can use
them.

Every field's nuclear-stain plane (max-projected when it is a z-stack) is corrected as ``prepare``
corrects it (rolling-ball background, optional denoising) and segmented by
:func:`~morphospace.segment.nuclei.segment_nuclei` (Otsu threshold, distance-transform watershed).
It writes ``OUT/<field id>_nuclei.tiff`` (uint16 instance labels, 0 = background) per field and a
copy of the manifest with a ``FileName_<column>`` column (default ``FileName_NucleiLabels``; a
column of that name in the manifest, such as a simulated screen's truth labels, is replaced in the
copy), its file paths relative to the copy's folder. The manifest and its files are checked before
anything is written, and the manifest copy is written last; the manifest itself is never changed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
from tqdm.auto import tqdm

from morphospace.atomic import refuse_existing, write_text_atomic
from morphospace.config import Config
from morphospace.features.cellprofiler import resolve_nucleus_channel
from morphospace.io.images import write_tiff
from morphospace.io.manifest import FILE_PREFIX, FieldSpec, read_field, read_manifest
from morphospace.preprocess.background import BackgroundConfig
from morphospace.preprocess.correct import correct_channel
from morphospace.preprocess.denoise import DenoiseConfig
from morphospace.segment.nuclei import NucleiConfig, segment_nuclei_as

__all__ = ["SegmentConfig", "SegmentSummary", "segment_manifest", "segment_field"]

logger = logging.getLogger(__name__)


class SegmentConfig(Config):
    """``segment``: the label column it adds, the corrections and the nuclei settings
    (``nuclei.channel: auto`` takes the one channel named like a nuclear stain)."""

    column: str = pydantic.Field("NucleiLabels", pattern=r"^[A-Za-z0-9_]+$",
                                 description="label column added as FileName_<column> (what data.channels.mask names)")
    background: BackgroundConfig = pydantic.Field(default_factory=BackgroundConfig)
    denoise: DenoiseConfig = pydantic.Field(default_factory=DenoiseConfig)
    nuclei: NucleiConfig = pydantic.Field(default_factory=lambda: NucleiConfig(channel="auto"))


@dataclass
class SegmentSummary:
    """What ``segment`` wrote."""

    manifest: Path
    labels: list[Path]
    channel: str
    column: str
    nuclei: int

    def line(self) -> str:
        return (f"segmented {self.nuclei} nuclei in {len(self.labels)} field(s) of channel {self.channel}; "
                f"manifest with {FILE_PREFIX}{self.column} -> {self.manifest}")


def segment_field(image: np.ndarray, config: SegmentConfig) -> np.ndarray:
    """Nuclei instance labels (H, W) int32 of a nuclear-stain plane (H, W), corrected as ``prepare`` does."""
    return segment_nuclei_as(correct_channel(image, config.background, config.denoise), config.nuclei)


def _label_paths(specs: list[FieldSpec], out: Path) -> list[Path]:
    return [out / f"{spec.field_id}_nuclei.tiff" for spec in specs]


def _manifest_copy(manifest: Path, specs: list[FieldSpec], labels: list[Path], column: str,
                   target: Path) -> pd.DataFrame:
    """The manifest's table with every file path relative to ``target``'s folder and the label column."""
    table = pd.read_csv(manifest)
    folder = target.parent.absolute()
    for name in [c for c in table.columns if c.startswith(FILE_PREFIX)]:
        table[name] = [value if pd.isna(value) else os.path.relpath((manifest.parent / str(value)).absolute(), folder)
                       for value in table[name]]
    table[FILE_PREFIX + column] = [os.path.relpath(path.absolute(), folder) for path in labels]
    return table


def segment_manifest(manifest: str | os.PathLike, out: str | os.PathLike, config: SegmentConfig | None = None,
                     manifest_out: str | os.PathLike | None = None, overwrite: bool = False,
                     progress: bool = False) -> SegmentSummary:
    """Segment the nuclei of every field of ``manifest`` into the folder ``out`` and write the
    manifest copy ``manifest_out`` (default ``OUT/manifest.csv``); see the module docstring.

    Raises InputError naming the manifest when the nucleus channel is missing or cannot be told
    (with its channels) or a file is unreadable; FileExistsError when an output exists, unless
    ``overwrite``.
    """
    config = config or SegmentConfig()
    manifest, out = Path(manifest), Path(out)
    manifest_out = Path(manifest_out) if manifest_out else out / "manifest.csv"
    channels = list(read_manifest(manifest, missing_files=True)[0].files)
    channel = resolve_nucleus_channel([c for c in channels if c != config.column], config.nuclei.channel,
                                      str(manifest), setting="--channel NAME")
    if config.column in channels:
        logger.info("%s: its %s%s column is replaced by the segmented nuclei in %s (--set column=NAME keeps it)",
                    manifest, FILE_PREFIX, config.column, manifest_out)
    specs = read_manifest(manifest, [channel])
    labels = _label_paths(specs, out)
    for path in [*labels, manifest_out]:
        refuse_existing(path, overwrite)
    table = _manifest_copy(manifest, specs, labels, config.column, manifest_out)
    nuclei = 0
    for spec, path in zip(tqdm(specs, desc="segment", unit="field", disable=not progress), labels):
        found = segment_field(read_field(spec)[channel], config)
        nuclei += int(found.max())
        write_tiff(path, found.astype(np.uint16 if found.max() < 2**16 else np.uint32))
    write_text_atomic(manifest_out, table.to_csv(index=False))
    return SegmentSummary(manifest_out, labels, channel, config.column, nuclei)
