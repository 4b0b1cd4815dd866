import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.evaluate.realism import (
    brightness_normalised,
    control_brightness,
    control_standardised,
    dimensionless_features,
    domain_auc,
    group_shifts,
    shared_features,
    shift_agreement,
)


def _cells(rng, shift=0.0, n=100, plate="P1"):
    return pd.DataFrame({
        "Metadata_Plate": plate,
        "Cells_AreaShape_Area": rng.normal(100 + shift, 10, n),
        "Cells_AreaShape_Solidity": rng.normal(0.9, 0.02, n),
        "Cells_AreaShape_Orientation": rng.uniform(-90, 90, n),
    })


def test_shared_features_skip_metadata_angles_and_empty_columns():
    a = pd.DataFrame({"Metadata_X": [1], "f": [1.0], "g": [np.nan], "Cells_AreaShape_Orientation": [3.0]})
    b = pd.DataFrame({"f": [2.0], "g": [1.0], "h": [1.0]})
    assert shared_features(a, b) == ["f"]
    with pytest.raises(InputError, match="share no feature"):
        shared_features(a[["Metadata_X"]], b)


def test_dimensionless_features_keep_unit_free_measurements_only():
    columns = ["Nuclei_AreaShape_Area", "Nuclei_AreaShape_HuMoment_1", "Cells_Correlation_Pearson_DNA_Actin",
               "Cells_Correlation_Slope_DNA_Actin", "Cells_Intensity_MeanIntensity_DNA"]
    assert dimensionless_features(columns) == ["Nuclei_AreaShape_HuMoment_1", "Cells_Correlation_Pearson_DNA_Actin"]


def test_domain_auc_is_chance_for_one_source_and_one_for_separated_sources():
    rng = np.random.default_rng(1)
    same = domain_auc(_cells(rng, n=300), _cells(rng, n=300), ["Cells_AreaShape_Area", "Cells_AreaShape_Solidity"])
    apart = domain_auc(_cells(rng, n=300), _cells(rng, shift=60, n=300), ["Cells_AreaShape_Area"])
    assert 0.4 < same < 0.6
    assert apart > 0.99


def test_domain_auc_fills_missing_values_and_rejects_tiny_tables():
    rng = np.random.default_rng(2)
    first, second = _cells(rng, n=50), _cells(rng, shift=60, n=50)
    first.loc[:10, "Cells_AreaShape_Area"] = np.nan
    assert domain_auc(first, second, ["Cells_AreaShape_Area"]) > 0.85
    with pytest.raises(InputError, match="at least 5 rows"):
        domain_auc(first.head(3), second, ["Cells_AreaShape_Area"])


def test_control_standardised_centres_each_plate_on_its_own_controls():
    table = pd.DataFrame({
        "Metadata_Plate": ["A", "A", "A", "B", "B", "B"],
        "control": [True, True, False, True, True, False],
        "f": [1.0, 3.0, 6.0, 11.0, 13.0, 16.0],
    })
    standard = control_standardised(table, ["f"], table["control"], by="Metadata_Plate")
    # centred controls are -1, 1, -1, 1: SD (ddof 1) = sqrt(4/3); treated rows sit 4 above their plate's median
    assert standard["f"].tolist() == pytest.approx([-1, 1, 4, -1, 1, 4] / np.sqrt(4 / 3))
    with pytest.raises(InputError, match="no control rows in Metadata_Plate"):
        control_standardised(table, ["f"], table["Metadata_Plate"] == "A", by="Metadata_Plate")


def test_control_standardised_clips_outliers_and_fills_missing_values():
    table = pd.DataFrame({"f": [0.0, 1.0, 2.0, 1e6, np.nan]})
    standard = control_standardised(table, ["f"], pd.Series([True, True, True, False, False]), clip=5.0)
    assert standard["f"].iloc[3] == 5.0
    assert standard["f"].iloc[4] == 0.0


def test_control_brightness_is_each_plates_control_median_over_the_screens():
    wells = pd.DataFrame({
        "Metadata_Plate": ["A", "A", "A", "B", "B", "B"],
        "control": [True, True, False, True, True, False],
        "tub": [2.0, 2.0, 50.0, 4.0, 6.0, 0.1],
        "dna": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    })
    bright = control_brightness(wells, wells["control"], {"Tubulin": "tub", "DNA": "dna"})
    # control medians: A 2, B 5, all four controls 3; treated wells are ignored
    assert bright.loc["A"].tolist() == pytest.approx([2 / 3, 1.0])
    assert bright.loc["B"].tolist() == pytest.approx([5 / 3, 1.0])
    with pytest.raises(InputError, match="no control rows in Metadata_Plate"):
        control_brightness(wells, wells["Metadata_Plate"] == "A", {"Tubulin": "tub"})
    with pytest.raises(InputError, match="'actin'"):
        control_brightness(wells, wells["control"], {"Actin": "actin"})


def test_brightness_normalised_divides_each_crop_by_its_plates_channel_brightness():
    images = np.stack([np.full((2, 2, 2), [100, 60000], np.uint16)] * 2)
    bright = pd.DataFrame({"DNA": [2.0, 0.5], "Tubulin": [1.0, 0.5]}, index=["A", "B"])
    out = brightness_normalised(images, ["A", "B"], bright, ["DNA", "Tubulin"])
    assert out.dtype == np.uint16
    assert out[0, 0, 0].tolist() == [50, 60000]
    assert out[1, 0, 0].tolist() == [200, 65535]  # 120,000 clipped to the type's range
    floats = brightness_normalised(images.astype(np.float32), ["A", "B"], bright, ["DNA", "Tubulin"])
    assert floats[1, 0, 0].tolist() == [200.0, 120000.0]
    with pytest.raises(InputError, match="'C'"):
        brightness_normalised(images, ["A", "C"], bright, ["DNA", "Tubulin"])
    with pytest.raises(InputError, match="'Actin'"):
        brightness_normalised(images, ["A", "B"], bright, ["DNA", "Actin"])


def test_group_shifts_average_per_label_without_excluded_labels():
    standard = pd.DataFrame({"f": [0.0, 2.0, 4.0, 1.0]})
    labels = pd.Series(["DMSO", "x", "x", "y"])
    shifts = group_shifts(standard, labels, exclude=["DMSO"])
    assert shifts.index.tolist() == ["x", "y"]
    assert shifts["f"].tolist() == [3.0, 1.0]


def test_shift_agreement_scores_matching_and_mismatched_groups():
    real = pd.DataFrame({"a": [1.0, 0.0, 1.0], "b": [0.0, 1.0, 1.0]}, index=["p", "q", "r"])
    simulated = pd.DataFrame({"a": [2.0, 0.0, -1.0], "b": [0.0, 3.0, -1.0], "extra": [5.0, 5.0, 5.0]},
                             index=["p", "q", "r"])
    agreement = shift_agreement(simulated, real)
    assert agreement.cosine.round(6).tolist() == [1.0, 1.0, -1.0]
    off = [0.0, 1 / np.sqrt(2), 0.0, 1 / np.sqrt(2), -1 / np.sqrt(2), -1 / np.sqrt(2)]
    assert agreement.mismatched_cosine == pytest.approx(np.mean(off))
    # magnitudes: simulated 2, 3, sqrt 2; real 1, 1, sqrt 2 -> ranks (2, 3, 1) vs (1.5, 1.5, 3)
    assert agreement.magnitude_spearman == pytest.approx(-0.866025, abs=1e-5)
    with pytest.raises(InputError, match="share no group"):
        shift_agreement(simulated.rename(index=str.upper), real)
