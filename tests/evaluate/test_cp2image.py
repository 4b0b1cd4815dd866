import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.evaluate.cp2image import (
    circular_correlation, closer_to_own_group, correlation_histogram_figure, correlation_scatter_figure, feature_correlations,
    nsc_generated_vs_real, remeasure, summarize_correlations, summarize_sweeps, sweep_response, to_feature_scale,
)


def _features(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"Metadata_StoreIndex": np.arange(n), "Nuclei_AreaShape_Area": rng.normal(100, 10, n),
                         "Nuclei_Intensity_MeanIntensity_DNA": rng.random(n),
                         "Cells_AreaShape_Eccentricity": rng.random(n)})


def test_perfect_copy_gives_r_one_and_share_one():
    requested = _features()
    table = feature_correlations(requested, requested.copy())
    assert list(table.index) == ["Nuclei_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA",
                                 "Cells_AreaShape_Eccentricity"]
    np.testing.assert_allclose(table["pearson_r"], 1.0)
    np.testing.assert_allclose(table["spearman_r"], 1.0)
    assert (table["n"] == 200).all()
    summary = summarize_correlations(table)
    assert summary["share_r_above_0_5"] == 1.0 and summary["median_r"] == pytest.approx(1.0)
    assert summary["n_undefined"] == 0


def test_shuffled_rows_give_r_near_zero():
    requested = _features(2000)
    shuffled = requested.sample(frac=1.0, random_state=1).reset_index(drop=True)
    table = feature_correlations(requested, shuffled)
    assert table["pearson_r"].abs().max() < 0.1
    assert summarize_correlations(table)["share_r_above_0_5"] == 0.0


def test_linear_and_monotone_relations():
    x = np.arange(1.0, 11.0)
    requested = pd.DataFrame({"a": x, "b": x})
    remeasured = pd.DataFrame({"a": -3 * x + 2, "b": np.exp(x)})
    table = feature_correlations(requested, remeasured)
    assert table.loc["a", "pearson_r"] == pytest.approx(-1.0)
    assert table.loc["b", "spearman_r"] == pytest.approx(1.0)
    assert table.loc["b", "pearson_r"] < 1.0  # exp is monotone, not linear


def test_constant_column_and_nan_values_are_handled():
    requested = pd.DataFrame({"flat": [2.0] * 5, "gappy": [1.0, 2.0, np.nan, 4.0, 5.0], "short": [1.0, np.nan,
                                                                                                     np.nan, np.nan, 2.0]})
    remeasured = pd.DataFrame({"flat": [1.0, 2.0, 3.0, 4.0, 5.0], "gappy": [2.0, 4.0, 100.0, 8.0, np.inf],
                               "short": [1.0, 2.0, 3.0, 4.0, 5.0]})
    table = feature_correlations(requested, remeasured)
    assert np.isnan(table.loc["flat", "pearson_r"]) and np.isnan(table.loc["flat", "spearman_r"])
    assert table.loc["gappy", "n"] == 3 and table.loc["gappy", "pearson_r"] == pytest.approx(1.0)
    assert np.isnan(table.loc["short", "pearson_r"])  # 2 finite pairs only
    summary = summarize_correlations(table)
    assert summary["undefined"] == ["flat", "short"]
    assert summary["share_r_above_0_5"] == 1.0 and list(summary["best"]) == list(summary["worst"]) == ["gappy"]


def test_best_and_worst_are_ordered_and_limited():
    table = pd.DataFrame({"pearson_r": np.linspace(-0.5, 1.0, 30), "spearman_r": 0.0},
                         index=[f"f{i:02d}" for i in range(30)])
    summary = summarize_correlations(table)
    assert list(summary["best"])[:2] == ["f29", "f28"] and len(summary["best"]) == 20
    assert list(summary["worst"])[:2] == ["f00", "f01"] and len(summary["worst"]) == 20
    assert summary["share_r_above_0_5"] == pytest.approx(10 / 30)


def test_mismatched_tables_are_an_input_error():
    with pytest.raises(InputError, match="differ in rows"):
        feature_correlations(_features(10), _features(11))
    with pytest.raises(InputError, match="share no feature"):
        feature_correlations(pd.DataFrame({"a": [1.0]}), pd.DataFrame({"b": [1.0]}))


def test_figures_show_six_features_and_the_histogram():
    requested = _features(50)
    noisy = requested.copy()
    noisy["Nuclei_AreaShape_Area"] += np.random.default_rng(2).normal(0, 10, 50)
    table = feature_correlations(requested, noisy)
    scatter = correlation_scatter_figure(requested, noisy, table)
    assert sum(ax.axison for ax in scatter.axes) == 3  # three features: three panels, three blank
    assert scatter.axes[2].get_title().startswith("Nuclei_AreaShape_Area")  # the noisy one, worst, last
    histogram = correlation_histogram_figure(table)
    assert "3 features" in histogram.axes[0].get_title()


def test_sweep_response_and_summary():
    assert sweep_response([-2, -1, 0, 1, 2], [1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(1.0)
    assert sweep_response([-2, -1, 0, 1, 2], [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert np.isnan(sweep_response([-2, -1, 0, 1, 2], [3.0] * 5))
    requested = np.tile(np.linspace(-2, 2, 5), (3, 1))  # 3 cells, 5 steps each
    assert sweep_response(requested, requested * 10) == pytest.approx(1.0)
    with pytest.raises(InputError, match="requested and"):
        sweep_response([1, 2, 3], [1, 2])
    summary = summarize_sweeps({"a": 0.9, "b": 0.7, "c": 0.1, "d": float("nan")})
    assert summary["share_above"] == pytest.approx(2 / 3) and summary["median"] == pytest.approx(0.7)


def test_circular_correlation_against_a_hand_computed_case():
    # a small arc: a = -30, 0, 30 (mean 0); b = -a -> r = -1; b = 2a (mean 0) -> sum sin a sin 2a /
    # sqrt(sum sin^2 a sum sin^2 2a) = 2 (0.5 x 0.866) / sqrt(2 x 0.25 x 2 x 0.75) = 1
    small = np.array([-30.0, 0.0, 30.0])
    assert circular_correlation(small, -small, 360.0) == pytest.approx(-1.0)
    assert circular_correlation(small, 2 * small, 360.0) == pytest.approx(1.0)
    assert np.isnan(circular_correlation(small, np.zeros(3), 360.0))


def test_angles_are_scored_by_circular_correlation_across_the_wrap():
    rng = np.random.default_rng(0)
    orientation = rng.uniform(-90, 90, 300)
    wrapped = (orientation + 20 + 90) % 180 - 90  # the same axis turned by 20 degrees, back into [-90, 90)
    requested = pd.DataFrame({"Nuclei_AreaShape_Orientation": orientation, "Nuclei_AreaShape_Area": orientation})
    remeasured = pd.DataFrame({"Nuclei_AreaShape_Orientation": wrapped, "Nuclei_AreaShape_Area": wrapped})
    table = feature_correlations(requested, remeasured)
    assert table.loc["Nuclei_AreaShape_Orientation", "circular"]
    assert not table.loc["Nuclei_AreaShape_Area", "circular"]
    assert table.loc["Nuclei_AreaShape_Orientation", "pearson_r"] > 0.99  # a constant turn keeps the axis order
    assert table.loc["Nuclei_AreaShape_Area", "pearson_r"] < 0.8  # a linear r breaks at the wrap
    assert summarize_correlations(table)["n_circular"] == 1
    steps = np.array([-100.0, -50.0, 0.0, 50.0, 100.0])  # requested beyond the range: read modulo 180
    assert sweep_response(steps, (steps + 90) % 180 - 90, period=180.0) == pytest.approx(1.0)


def test_closer_to_own_group_on_a_constructed_dose_series():
    # real cells on a line: DMSO at x=0, doses at x=1, 2, 3 (second feature noise-free constant 0 -> dropped)
    real = {name: np.column_stack([np.full(4, x), np.zeros(4)]) for name, x in
            (("DMSO", 0.0), ("5", 1.0), ("15", 2.0), ("50", 3.0))}
    generated = {"5": np.array([[0.4, 0.0]]),   # nearer DMSO (0.4) than its dose (0.6)
                 "15": np.array([[1.9, 9.0]]),  # nearer its own dose
                 "50": np.array([[3.5, 0.0]])}  # beyond its dose, still nearer it
    result = closer_to_own_group(generated, real, "DMSO")
    assert result["n_features"] == 1
    assert [result["groups"][g]["closer"] for g in ("5", "15", "50")] == [False, True, True]
    assert result["share_closer"] == pytest.approx(2 / 3)
    sd = np.std(np.repeat([0.0, 1.0, 2.0, 3.0], 4))
    assert result["groups"]["5"]["distance_to_own"] == pytest.approx(0.6 / sd)
    assert result["groups"]["5"]["distance_to_reference"] == pytest.approx(0.4 / sd)
    # every generated cell shifted by a generator bias of -2: the 5 uM cell lands at x=-1, nearer
    # DMSO's real cells; minus the generated DMSO cell's offset (-2), it lands on its own dose
    biased = {"DMSO": np.array([[-2.0, 0.0]]), "5": np.array([[-1.0, 0.0]])}
    assert not closer_to_own_group(biased, real, "DMSO")["groups"]["5"]["closer"]
    corrected = closer_to_own_group(biased, real, "DMSO", offset_from_reference=True)
    assert corrected["groups"]["5"]["distance_to_own"] == pytest.approx(0.0)
    assert corrected["share_closer"] == 1.0
    with pytest.raises(InputError, match="generated cells of the reference group"):
        closer_to_own_group(generated, real, "DMSO", offset_from_reference=True)


def test_closer_to_own_group_needs_the_groups():
    real = {"DMSO": np.zeros((2, 1)), "5": np.ones((2, 1))}
    with pytest.raises(InputError, match="reference group 'control'"):
        closer_to_own_group({"5": np.ones((1, 1))}, real, "control")
    with pytest.raises(InputError, match="no real cells"):
        closer_to_own_group({"50": np.ones((1, 1))}, real, "DMSO")


def _annotated_cells(features: np.ndarray) -> pd.DataFrame:
    compounds = ["DMSO", "a", "b", "c", "d"]
    moas = {"DMSO": "DMSO", "a": "X", "b": "X", "c": "Y", "d": "Y"}
    rows = np.repeat(compounds, 3)
    return pd.DataFrame({"Metadata_Compound": rows, "Metadata_Concentration": 1.0,
                         "Metadata_MoA": [moas[c] for c in rows], "f1": features[:, 0], "f2": features[:, 1]})


def test_nsc_generated_vs_real():
    rng = np.random.default_rng(0)
    centres = {"DMSO": (0, 0), "a": (5, 0), "b": (5, 0.5), "c": (0, 5), "d": (0.5, 5)}
    real = np.concatenate([np.asarray(centres[c]) + rng.normal(0, 0.3, (3, 2)) for c in centres])
    scrambled = rng.normal(0, 1, real.shape)
    result = nsc_generated_vs_real(_annotated_cells(real), _annotated_cells(scrambled))
    assert result["nsc_real"] == 1.0
    assert result["treatments"] == 4 and result["compounds"] == 4 and result["n_features"] == 2
    same = nsc_generated_vs_real(_annotated_cells(real), _annotated_cells(real))
    assert same["nsc_generated"] == same["nsc_real"] == 1.0


def test_to_feature_scale_inverts_percentile_normalisation():
    images = np.full((1, 2, 4, 4), 0.5, np.float32)
    normalization = {"config": {"method": "percentile", "scope": "dataset"}, "stats": [[0.0, 100.0], [10.0, 30.0]]}
    scaled, exact = to_feature_scale(images, normalization, [200.0, 10.0])
    assert exact
    np.testing.assert_allclose(scaled[0, :, 0, 0], [0.25, 1.0])  # 50 / 200; 20 / 10 clipped to 1
    unchanged, exact = to_feature_scale(images, {"config": {"method": "zscore"}, "stats": [[0, 1], [0, 1]]}, [1, 1])
    assert not exact and unchanged is not None and np.array_equal(unchanged, images)
    with pytest.raises(InputError, match="2 channels"):
        to_feature_scale(images, normalization, [1.0])


def test_remeasure_finds_the_drawn_nucleus():
    images = np.zeros((2, 1, 32, 32), np.float32)
    images[0, 0, 12:20, 12:20] = 0.8  # 64 px nucleus
    images[1, 0, 10:22, 10:22] = 0.8  # 144 px nucleus
    table = remeasure(images, ["DNA"])
    areas = table["Nuclei_AreaShape_Area"].to_numpy()
    np.testing.assert_allclose(areas, [64.0, 144.0], rtol=0.3)  # smoothing before thresholding widens the edge
    assert areas[1] > areas[0]
    assert not any(c.startswith("Cells_") for c in table.columns)  # no cytoplasm channel: nuclei only


def test_remeasure_gives_nan_rows_for_non_finite_images():
    images = np.zeros((2, 1, 32, 32), np.float32)
    images[:, 0, 12:20, 12:20] = 0.8
    images[1, 0, 0, 0] = np.nan
    area = remeasure(images, ["DNA"])["Nuclei_AreaShape_Area"]
    assert np.isfinite(area[0]) and np.isnan(area[1])
