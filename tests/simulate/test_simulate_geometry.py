"""Outlines, placement and rasterisation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from morphospace.simulate.geometry import (
    StarShape,
    edge_distance,
    largest_components,
    place_centres,
    random_star,
    rasterize,
    separate_labels,
)


def test_star_shape_area_matches_its_radius_and_contains_its_centre():
    rng = np.random.default_rng(0)
    star = random_star(rng, (50.0, 50.0), 20.0, 1.5, 0.3, 0.1)
    labels, distance = rasterize([star], (100, 100))
    area = (labels == 1).sum()
    assert 0.8 * np.pi * 20**2 < area < 1.2 * np.pi * 20**2
    assert labels[50, 50] == 1 and distance[50, 50] < 0.1
    assert star.extent >= star.radius_at(np.linspace(0, 2 * np.pi, 360)).max()


def test_elongation_follows_the_major_axis_angle():
    star = StarShape(50.0, 50.0, 15.0, elongation=2.0, angle=np.pi / 2)
    labels, _ = rasterize([star], (100, 100))
    rows, cols = np.nonzero(labels)
    assert np.ptp(rows) > 1.8 * np.ptp(cols)


def test_overlapping_shapes_share_a_border_without_overlap():
    a = StarShape(50.0, 40.0, 15.0)
    b = StarShape(50.0, 62.0, 15.0)
    labels, _ = rasterize([a, b], (100, 100))
    assert set(np.unique(labels)) == {0, 1, 2}
    touching = ndimage.binary_dilation(labels == 1) & (labels == 2)
    assert touching.any()
    assert (labels[50, 40], labels[50, 62]) == (1, 2)


def test_rasterize_respects_allowed_owner_region():
    allowed = np.zeros((60, 60), np.int32)
    allowed[:, :30] = 7
    labels, _ = rasterize([StarShape(30.0, 30.0, 12.0)], (60, 60), allowed=allowed, owners=[7])
    assert labels[:, 30:].max() == 0 and labels[:, :30].max() == 1


def test_separate_labels_leaves_a_gap_of_two_pixels():
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 2:10] = 1
    labels[5:15, 10:18] = 2
    separated = separate_labels(labels, gap=1)
    grown = ndimage.binary_dilation(separated == 1, iterations=2)
    assert not (grown & (separated == 2)).any()
    assert (separated == 1).sum() == 80 - 10 and (separated == 2).sum() == 80 - 10


def test_largest_components_drops_fragments():
    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 3
    labels[15:17, 15:17] = 3
    labels[10:12, 2:5] = 4
    kept = largest_components(labels)
    assert (kept == 3).sum() == 36 and (kept == 4).sum() == 6 and kept[16, 16] == 0


def test_edge_distance_is_zero_on_outlines_and_grows_inside():
    labels = np.zeros((30, 30), np.int32)
    labels[5:25, 5:15] = 1
    labels[5:25, 15:25] = 2
    edge = edge_distance(labels)
    assert edge[15, 5] == 0 and edge[15, 14] == 0 and edge[15, 15] == 0
    assert edge[15, 9] > edge[15, 6] > 0
    assert edge[0, 0] == 0


def test_placement_keeps_centres_apart():
    rng = np.random.default_rng(1)
    radii = np.full(12, 20.0)
    centres = [c for c in place_centres(rng, radii, 256, packing=0.8, clustering=0.5) if c is not None]
    assert len(centres) >= 10
    points = np.array(centres)
    gaps = np.linalg.norm(points[:, None] - points[None], axis=2) + np.eye(len(points)) * 1e9
    assert gaps.min() >= 0.8 * 40.0
