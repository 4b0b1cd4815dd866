"""Turn cell plans into exact truth: cell and nucleus label images of one field."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from morphospace.simulate.geometry import (
    StarShape,
    close_gaps,
    edge_distance,
    largest_components,
    rasterize,
    relabel,
    separate_labels,
)
from morphospace.simulate.population import CellPlan

__all__ = ["FieldLayout", "build_layout", "MIN_NUCLEUS_AREA"]

MIN_NUCLEUS_AREA = 15  # px; smaller nucleus remnants (e.g. cut by the field border) are dropped
GAP_CLOSING_PX = 3  # cells closer than twice this are made to touch (no thin background slivers)


@dataclass(frozen=True)
class FieldLayout:
    """Label images and the objects they index; ids are consecutive from 1.

    ``cells`` and ``nuclei`` are (H, W) int32 label images (0 background). ``plans[i - 1]`` is
    cell ``i``; ``nucleus_shapes[j - 1]`` is nucleus ``j`` and ``nucleus_owner[j]`` its cell id
    (``nucleus_owner[0] == 0``). ``edge`` is each cell pixel's distance to its cell outline (px)
    and ``nucleus_distance`` each nucleus pixel's normalised radial distance (0 at the centre,
    1 at the outline; 0 on other pixels).
    """

    cells: np.ndarray
    nuclei: np.ndarray
    plans: tuple[CellPlan, ...]
    nucleus_shapes: tuple[StarShape, ...]
    nucleus_owner: np.ndarray
    edge: np.ndarray
    nucleus_distance: np.ndarray

    @cached_property
    def to_nucleus(self) -> np.ndarray:
        """(H, W) distance of every pixel to the nearest nucleus pixel (px; 0 on nuclei)."""
        return ndimage.distance_transform_edt(self.nuclei == 0)

    @property
    def shape(self) -> tuple[int, int]:
        return self.cells.shape


def build_layout(plans: list[CellPlan], size: int, margin: float) -> FieldLayout:
    """Rasterise ``plans`` into a ``size`` x ``size`` field.

    Cells claim pixels by smallest normalised distance (touching cells share a border, never
    overlap); gaps narrower than ``2 * GAP_CLOSING_PX`` px between cells are closed. Nuclei are
    clipped to their cell's pixels farther than ``margin`` px from its outline (so nuclei of
    different cells stay >= 2 * margin px apart), nuclei of one cell are kept >= 2 px apart, and
    only the largest piece of any object is kept. Nuclei under :data:`MIN_NUCLEUS_AREA` px and
    cells left without a nucleus are dropped.
    """
    shape = (size, size)
    cells, _ = rasterize([plan.shape for plan in plans], shape)
    cells = largest_components(close_gaps(cells, GAP_CLOSING_PX))
    interior = np.where(edge_distance(cells) > margin, cells, 0)
    shapes = [nucleus for plan in plans for nucleus in plan.nuclei]
    owners = np.array([i + 1 for i, plan in enumerate(plans) for _ in plan.nuclei], np.int32)
    nuclei, distance = rasterize(shapes, shape, allowed=interior, owners=owners)
    nuclei = largest_components(separate_labels(nuclei, gap=1))
    areas = np.bincount(nuclei.ravel(), minlength=len(shapes) + 1)
    kept_nuclei = np.flatnonzero(areas[1:] >= MIN_NUCLEUS_AREA) + 1
    kept_cells = np.unique(owners[kept_nuclei - 1])
    cells, cell_table = relabel(cells, kept_cells, len(plans))
    nuclei, _ = relabel(nuclei, kept_nuclei, len(shapes))
    return FieldLayout(
        cells=cells,
        nuclei=nuclei,
        plans=tuple(plans[i - 1] for i in kept_cells),
        nucleus_shapes=tuple(shapes[i - 1] for i in kept_nuclei),
        nucleus_owner=np.concatenate([[0], cell_table[owners[kept_nuclei - 1]]]).astype(np.int32),
        edge=edge_distance(cells),
        nucleus_distance=np.where(nuclei > 0, distance, 0.0).astype(np.float32),
    )
