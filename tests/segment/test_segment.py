import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import disk, ellipse

from morphospace.config import resolve_config
from morphospace.errors import InputError
from morphospace.evaluate.segmentation import match_instances
from morphospace.segment.cells import segment_cells
from morphospace.segment.crops import crop_cells, principal_angle, skew_flips
from morphospace.segment.field import FieldConfig, process_field
from morphospace.segment.nuclei import segment_nuclei


def _discs(centres, radius=7, shape=(80, 80)):
    labels = np.zeros(shape, np.int32)
    for index, (r, c) in enumerate(centres, start=1):
        labels[disk((r, c), radius, shape=shape)] = index
    return labels


def test_nuclei_separate_and_touching_discs():
    truth = _discs([(20, 20), (20, 33), (60, 60)])  # first two touch
    image = ndimage.gaussian_filter((truth > 0) * 1000.0, 1) + np.random.default_rng(0).normal(50, 5, truth.shape)
    labels = segment_nuclei(image, min_area=20, min_distance=5)
    match = match_instances(truth, labels)
    assert (match.tp, match.fp, match.fn) == (3, 0, 0)
    assert min(match.matched_iou) > 0.8


def test_nuclei_size_filters_and_border_removal():
    truth = _discs([(40, 40), (2, 40)], radius=7)
    truth[disk((60, 15), 2, shape=truth.shape)] = 3
    image = (truth > 0) * 1000.0 + 10
    assert segment_nuclei(image, min_area=30).max() == 2
    assert segment_nuclei(image, min_area=30, remove_border=True).max() == 1
    assert segment_nuclei(image, min_area=0, max_area=100).max() == 1


def test_nuclei_on_empty_or_constant_image():
    assert segment_nuclei(np.zeros((32, 32))).max() == 0
    with pytest.raises(ValueError, match="2-D"):
        segment_nuclei(np.zeros((2, 32, 32)))


def test_cells_split_on_bright_shared_cortex():
    nuclei = _discs([(40, 25), (40, 55)], radius=5)
    yy, xx = np.mgrid[:80, :80]
    cytoplasm = 100.0 * (((yy - 40) ** 2 / 25**2 + (xx - 40) ** 2 / 35**2) < 1)
    cytoplasm[:, 44:47] *= 4  # the cortex between the cells sits right of the midpoint
    cells = segment_cells(nuclei, cytoplasm, elevation="intensity", sigma=1, max_distance=None)
    assert set(np.unique(cells)) == {0, 1, 2}
    boundary = np.flatnonzero(np.diff(cells[40]) != 0)
    assert any(43 <= b <= 47 for b in boundary)
    for k in (1, 2):
        assert np.all(cells[nuclei == k] == k)
    assert cells[0, 0] == 0


def test_cells_voronoi_fallback_and_reach():
    nuclei = _discs([(40, 20), (40, 36)], radius=3)
    cells = segment_cells(nuclei, None, max_distance=10)
    assert cells[40, 27] == 1 and cells[40, 29] == 2  # split halfway between the nuclei
    assert cells[40, 7] == 0 and cells[40, 8] == 1  # at most 10 px beyond the nucleus edge (col 17)
    empty = segment_cells(nuclei, np.zeros((80, 80)), max_distance=10)
    np.testing.assert_array_equal(empty, cells)


def test_crop_content_hand_computed():
    image = np.arange(3 * 20 * 20, dtype=np.float32).reshape(3, 20, 20)
    nuclei = np.zeros((20, 20), int)
    nuclei[9:12, 4:7] = 1  # centroid (10, 5)
    cells = np.zeros((20, 20), int)
    cells[7:14, 2:9] = 1
    result = crop_cells(image, nuclei, cells, size=4)
    np.testing.assert_array_equal(result.images[0], image[:, 8:12, 3:7])
    assert result.table["Metadata_Nucleus_Center_X"][0] == 5 and result.table["Metadata_Nucleus_Area"][0] == 9
    assert not result.table["Metadata_Padded"][0]


def test_border_pad_drop_and_masking():
    image = np.ones((1, 20, 20), np.float32)
    nuclei = np.zeros((20, 20), int)
    nuclei[0:3, 0:3] = 1
    nuclei[9:12, 9:12] = 2
    cells = ndimage.grey_dilation(nuclei, size=5)
    padded = crop_cells(image, nuclei, cells, size=8, border="pad")
    assert len(padded.images) == 2 and padded.table["Metadata_Padded"].tolist() == [True, False]
    assert padded.images[0, 0, 0, 0] == 0
    reflected = crop_cells(image, nuclei, cells, size=8, pad_mode="reflect")
    assert reflected.images[0].min() == 1
    dropped = crop_cells(image, nuclei, cells, size=8, border="drop")
    assert dropped.table["Metadata_ObjectNumber"].tolist() == [2]
    masked = crop_cells(image, nuclei, cells, size=8, mask_outside_cell=True)
    np.testing.assert_array_equal(masked.images[1, 0] > 0, masked.masks[1] > 0)
    assert set(np.unique(masked.masks[1])) == {0, 1, 2}


def test_alignment_makes_major_axis_horizontal_and_skew_positive():
    shape = (120, 120)
    cells = np.zeros(shape, int)
    cells[ellipse(60, 60, 10, 30, shape=shape, rotation=np.deg2rad(35))] = 1
    # a bulge on one end makes the shape skewed
    cells[disk((60 - 17 * np.sin(np.deg2rad(35)), 60 - 24 * np.cos(np.deg2rad(35))), 9, shape=shape)] = 1
    nuclei = np.zeros(shape, int)
    nuclei[disk((60, 60), 5, shape=shape)] = 1
    image = np.stack([cells * 1.0, nuclei * 1.0]).astype(np.float32)
    result = crop_cells(image, nuclei, cells, size=96, align=True)
    mask = result.masks[0] > 0
    angle = np.rad2deg(principal_angle(mask)) % 180
    assert min(angle, 180 - angle) < 3
    assert skew_flips(mask) == (False, False)
    assert result.masks[0][48, 48] == 1


def test_field_channels_resolved_from_names():
    config = FieldConfig().resolve_channels(["Hoechst", "Phalloidin", "Tubulin"], "plate.csv")
    assert config.nuclei.channel == "Hoechst" and config.cells.channels == ["Phalloidin", "Tubulin"]
    alone = FieldConfig().resolve_channels(["ch0"], "plate.csv")
    assert alone.nuclei.channel == "ch0" and alone.cells.channels == []
    with pytest.raises(InputError, match="plate.csv: cannot tell which channel.*DAPI.*Hoechst.*nuclei.channel=NAME"):
        FieldConfig().resolve_channels(["DAPI", "Hoechst"], "plate.csv")
    with pytest.raises(InputError, match="plate.csv: config key 'cells.channels' names channel.*Actin"):
        resolve_config(FieldConfig, {"cells": {"channels": ["Actin"]}}).resolve_channels(["DNA", "GFP"], "plate.csv")


def test_a_nucleus_only_field_invents_no_cell():
    nuclei = _discs([(40, 20), (40, 50)], radius=5)
    field = nuclei.astype(np.float32) * 0 + 100.0 * (nuclei > 0) + 10.0
    config = resolve_config(FieldConfig, {"crops": {"size": 32}, "nuclei": {"min_contrast": None}})
    result = process_field({"DAPI": field}, config.resolve_channels(["DAPI"], "one.csv"))
    assert result.nuclei.max() == 2
    np.testing.assert_array_equal(result.cells, result.nuclei)
