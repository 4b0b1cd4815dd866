"""Paired fields: manifest channels, per-image normalisation, checks on bad files."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from morphospace.errors import InputError
from morphospace.io.paired import (
    PairedChannels, PairedNormalization, load_paired_field, normalize_image, read_paired_manifest,
)


@pytest.fixture()
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "phase.tiff", rng.integers(100, 4000, (3, 20, 24)).astype(np.uint16))  # 3 planes
    tifffile.imwrite(tmp_path / "dna.tiff", rng.integers(1000, 9000, (20, 24)).astype(np.uint16))
    labels = np.zeros((20, 24), np.uint16)
    labels[2:6, 2:6] = 1
    tifffile.imwrite(tmp_path / "nuclei.tiff", labels)
    tifffile.imwrite(tmp_path / "empty.tiff", np.zeros((20, 24), np.uint16))
    path = tmp_path / "fields.csv"
    pd.DataFrame({"Metadata_FieldId": ["f1"], "FileName_Phase": ["phase.tiff"], "FileName_DNA": ["dna.tiff"],
                  "FileName_Nuclei": ["nuclei.tiff"]}).to_csv(path, index=False)
    return path


def test_stack_planes_become_input_channels_and_images_are_zscored(manifest):
    channels = PairedChannels(inputs=["Phase"], targets=["DNA"], mask="Nuclei")
    field = load_paired_field(read_paired_manifest(manifest, channels)[0], channels)
    assert field.inputs.shape == (3, 20, 24) and field.targets.shape == (1, 20, 24)
    assert field.mask.dtype == np.int32 and field.mask.max() == 1
    np.testing.assert_allclose(field.targets.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(field.inputs[1].std(), 1, atol=1e-4)


def test_percentile_normalisation_maps_percentiles_to_unit_range():
    image = np.linspace(0, 1000, 101)[None]
    out = normalize_image(image, PairedNormalization(method="percentile", low=10, high=90))
    assert out[0, 10] == pytest.approx(0) and out[0, 90] == pytest.approx(1)


def test_an_empty_label_image_is_accepted(manifest, tmp_path):
    pd.DataFrame({"FileName_Phase": ["phase.tiff"], "FileName_Nuclei": ["empty.tiff"]}).to_csv(
        tmp_path / "seg.csv", index=False)
    channels = PairedChannels(inputs=["Phase"], mask="Nuclei")
    field = load_paired_field(read_paired_manifest(tmp_path / "seg.csv", channels)[0], channels)
    assert field.mask.max() == 0 and field.targets.shape == (0, 20, 24)


def test_size_mismatch_names_the_file(manifest, tmp_path):
    tifffile.imwrite(tmp_path / "dna.tiff", np.arange(100, dtype=np.uint16).reshape(10, 10))
    channels = PairedChannels(inputs=["Phase"], targets=["DNA"])
    with pytest.raises(InputError, match=r"dna.tiff: size \(10, 10\) differs"):
        load_paired_field(read_paired_manifest(manifest, channels)[0], channels)


def test_missing_channel_and_bad_channel_choices(manifest):
    with pytest.raises(InputError, match="Membrane"):
        read_paired_manifest(manifest, PairedChannels(inputs=["Phase"], targets=["Membrane"]))
    with pytest.raises(ValueError, match="used twice"):
        PairedChannels(inputs=["Phase"], targets=["Phase"])
    with pytest.raises(ValueError, match="inputs"):
        PairedChannels(inputs=[])


def test_rgb_png_gives_three_channels(tmp_path):
    import imageio.v3 as iio

    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 4)).astype(np.uint8)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    tifffile.imwrite(tmp_path / "nuclei.tiff", np.ones((20, 24), np.uint16))
    pd.DataFrame({"FileName_Image": ["rgb.png"], "FileName_Nuclei": ["nuclei.tiff"]}).to_csv(tmp_path / "m.csv", index=False)
    channels = PairedChannels(inputs=["Image"], mask="Nuclei")
    field = load_paired_field(read_paired_manifest(tmp_path / "m.csv", channels)[0], channels)
    assert field.inputs.shape == (3, 20, 24)
