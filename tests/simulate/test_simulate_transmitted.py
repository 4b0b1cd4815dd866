"""Transmitted mode: a phase-contrast-like image paired with DNA and membrane fluorescence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage
from skimage.segmentation import find_boundaries

from morphospace.simulate import SimulateConfig, simulate_field, simulate_screen
from morphospace.simulate.transmitted import uneven_background

FLAT = SimulateConfig(mode="transmitted", field_size=160, cells_per_field=5,
                      optics={"vignetting": [0.0, 0.0], "read_noise": 0.0},
                      transmitted={"unevenness": 0.0, "texture": 0.0})


@pytest.fixture(scope="module")
def field():
    return simulate_field(FLAT, seed=4)


def test_channels_are_transmitted_dna_membrane(field):
    assert field.channel_names == ("Transmitted", "DNA", "Membrane")
    assert field.channels.shape == (3, 160, 160) and field.channels.dtype == np.uint16
    assert SimulateConfig().channels == ("DNA", "Actin", "Tubulin")


def test_nuclei_are_dark_and_cells_have_a_bright_halo(field):
    light = field.channels[0].astype(float)
    nuclei, cells = field.nuclei_labels > 0, field.cell_labels > 0
    halo = ndimage.binary_dilation(cells, iterations=3) & ~cells
    far = ~ndimage.binary_dilation(cells, iterations=25)
    assert light[nuclei].mean() < min(light[cells & ~nuclei].mean(), light[far].mean()) - 50
    assert light[halo].mean() > light[far].mean()


def test_fluorescence_marks_nuclei_and_membranes(field):
    dna, membrane = field.channels[1].astype(float), field.channels[2].astype(float)
    nuclei, cells = field.nuclei_labels > 0, field.cell_labels > 0
    assert dna[nuclei].mean() > 3 * dna[~cells].mean()
    outline = find_boundaries(field.cell_labels, mode="inner")  # every cell's own outline, shared borders too
    assert membrane[outline].mean() > 2 * membrane[cells & ~outline].mean()


def test_same_seed_repeats(field):
    again = simulate_field(FLAT, seed=4)
    np.testing.assert_array_equal(again.channels, field.channels)


def test_uneven_background_has_the_asked_amplitude():
    light = uneven_background((64, 80), 0.1, np.random.default_rng(0))
    assert light.shape == (64, 80)
    assert np.abs(light - 1).max() == pytest.approx(0.1)
    assert np.all(uneven_background((8, 8), 0.0, np.random.default_rng(0)) == 1)


def test_screen_manifest_pairs_channels_with_nuclei_labels(tmp_path):
    config = FLAT.model_copy(update={"plates": 1, "dmso_wells_per_plate": 1, "moas": ["Eg5 inhibitors"],
                                     "compounds_per_moa": 1, "concentrations": 1, "field_size": 96,
                                     "cells_per_field": 3})
    screen = simulate_screen(config, tmp_path / "screen", progress=False)
    manifest = pd.read_csv(screen.manifest_path)
    files = [c for c in manifest.columns if c.startswith("FileName_")]
    assert files == ["FileName_Transmitted", "FileName_DNA", "FileName_Membrane", "FileName_NucleiLabels"]
    row = manifest.iloc[0]
    labels = tifffile.imread(screen.root / row["FileName_NucleiLabels"])
    light = tifffile.imread(screen.root / row["FileName_Transmitted"])
    assert labels.shape == light.shape == (96, 96)
    assert labels.max() >= 1
