import numpy as np
import pytest
import torch
from PIL import Image

from morphospace.explore.figures import (
    channel_colors, crop_montage_figure, crops_rgb, display_limits, rgb_figure, stretch,
)
from morphospace.explore.latent import image_rows_figure
from morphospace.explore.samples import sample_grid, write_sample_grid


def _legend_names(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_one_channel_is_grey():
    crops = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    rgb = crops_rgb(crops, ["nuclei"])
    assert rgb.shape == (3, 8, 8, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    assert rgb.max() == 1.0 and rgb.min() == 0.0
    assert channel_colors(["ch0"]) == [(1.0, 1.0, 1.0)]


def test_several_channels_take_their_colours_and_others_the_free_palette():
    dna, actin, tubulin = channel_colors(["DNA", "Actin", "Tubulin"])
    assert dna == channel_colors(["Hoechst", "x"])[0] == channel_colors(["dapi", "x"])[0]
    assert dna[2] > max(dna[:2]) and actin[0] > max(actin[1:]) and tubulin[1] > max(tubulin[0], tubulin[2])
    colours = channel_colors(["ch0", "DNA", "ch2", "ch3"])
    assert colours[1] == dna and len(set(colours)) == 4  # unknown names skip the colour DNA took
    crops = np.zeros((1, 2, 4, 4), np.float32)
    crops[0, 0, 0, 0] = 1.0  # DNA alone in one pixel, Actin alone in another
    crops[0, 1, 3, 3] = 1.0
    rgb = crops_rgb(crops, ["DNA", "Actin"], limits=[(0.0, 1.0), (0.0, 1.0)])[0]
    assert rgb[0, 0].tolist() == pytest.approx(dna) and rgb[3, 3].tolist() == pytest.approx(actin)
    assert rgb[1, 1].tolist() == [0.0, 0.0, 0.0]


def test_contrast_stretch_maps_the_panel_percentiles_to_black_and_full_colour():
    # one channel holding 0, 1, ..., 1000: 1st percentile 10, 99.8th 998 (linear interpolation)
    values = np.arange(1001, dtype=np.float32).reshape(1, 1, 7, 143)
    assert display_limits(values) == [(pytest.approx(10.0), pytest.approx(998.0))]
    assert stretch(np.array([10.0, 504.0, 998.0, 0.0, 1000.0]), 10.0, 998.0).tolist() == [0.0, 0.5, 1.0, 0.0, 1.0]
    grey = crops_rgb(values, ["ch0"])[0, ..., 0].ravel()
    assert grey[[0, 10, 504, 998, 1000]].tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    two = np.concatenate([values, 2 * values], axis=1)  # each channel stretched on its own
    assert display_limits(two)[1] == (pytest.approx(20.0), pytest.approx(1996.0))
    panel = crops_rgb(np.concatenate([values, values / 4]), ["ch0"])  # limits shared by the panel
    assert panel[0].max() == 1.0 and panel[1].max() < 0.26


def test_crop_figures_carry_a_channel_legend():
    rows = np.random.default_rng(1).random((2, 3, 2, 8, 8)).astype(np.float32)
    assert _legend_names(image_rows_figure(rows, ["DNA", "Actin"])) == ["DNA", "Actin"]
    groups = {"A": rows[0], "B": rows[1]}
    assert _legend_names(crop_montage_figure(groups, ["DNA", "Actin"], columns=3)) == ["DNA", "Actin"]
    assert _legend_names(rgb_figure(np.zeros((8, 8, 3)), ["ch0"])) == ["ch0"]


def test_sample_grid_of_one_channel_is_grey_and_written_with_its_legend(tmp_path):
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    grid = sample_grid(images, ["ch0"], columns=3)
    assert grid.shape == (18, 28, 3) and np.array_equal(grid[..., 0], grid[..., 2])
    path = write_sample_grid(tmp_path / "grid.png", images, ["ch0"], columns=3)
    png = np.asarray(Image.open(path).convert("RGB"))
    assert png.shape[0] > 18 and png.shape[1] >= 28  # the grid and the legend under it
