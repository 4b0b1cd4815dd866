import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.evaluate.statistical_cell import (
    benjamini_hochberg, bootstrap_mean_ci, centroid_distance, coupling_agreement, coupling_figure, coupling_per_cell,
    coupling_table, differential_coupling, draw_swap_partners, drug_shift_table, holm, permutation_test,
    reference_adjusted, shift_recall, tie_resolved_spearman, trimmed_mean, truth_long,
)


# ----------------------------------------------------------------------------- swap partners


def test_swap_partners_are_other_cells_of_the_same_group():
    groups = np.repeat(["a", "b", "c"], [5, 3, 7])
    partners = draw_swap_partners(len(groups), 20, groups=groups, seed=3)
    assert partners.shape == (15, 20)
    assert not np.any(partners == np.arange(15)[:, None])
    assert np.all(groups[partners] == groups[:, None])
    # every other member of a group is reachable
    assert set(partners[0]) == {1, 2, 3, 4}


def test_swap_partners_are_seeded_and_cover_all_cells_without_groups():
    first = draw_swap_partners(6, 50, seed=1)
    np.testing.assert_array_equal(first, draw_swap_partners(6, 50, seed=1))
    assert not np.array_equal(first, draw_swap_partners(6, 50, seed=2))
    assert not np.any(first == np.arange(6)[:, None])
    assert set(first.ravel()) == set(range(6))


def test_swap_partners_reject_a_group_of_one():
    with pytest.raises(InputError, match="group 'b' holds 1 cell"):
        draw_swap_partners(3, 2, groups=["a", "a", "b"])
    with pytest.raises(InputError, match="groups must hold 3"):
        draw_swap_partners(3, 2, groups=["a", "a"])
    with pytest.raises(InputError, match="n_repeats"):
        draw_swap_partners(3, 0)


# ----------------------------------------------------------------------------- coupling


def test_coupling_of_a_toy_table_by_hand():
    elbo_true = [-10.0, -30.0, -20.0, -20.0]
    membrane = [[-20.0, -20.0], [-30.0, -30.0], [-40.0, -40.0], [-20.0, -20.0]]
    dna = [[-10.0, -10.0], [-60.0, -30.0], [-25.0, -15.0], [-50.0, -30.0]]
    structures = ["Cortex", "Cortex", "Envelope", "Envelope"]
    table = coupling_table(elbo_true, {"Membrane": membrane, "DNA": dna}, structures, n_boot=200)
    assert table.columns.tolist() == ["structure", "channel", "coupling", "ci_low", "ci_high", "n_cells"]
    assert table[["structure", "channel"]].values.tolist() == [
        ["Cortex", "Membrane"], ["Cortex", "DNA"], ["Envelope", "Membrane"], ["Envelope", "DNA"]]
    # per cell: membrane 1-10/20 = .5, 1-30/30 = 0, 1-20/40 = .5, 0; DNA 0, 1-30/45 = 1/3, 1-20/20 = 0, 1-20/40 = .5
    np.testing.assert_allclose(table["coupling"], [0.25, 1 / 6, 0.25, 0.25])
    assert table["n_cells"].tolist() == [2, 2, 2, 2]
    # two cells: every resampled mean is one of the values or their mean; the 95% interval spans them
    np.testing.assert_allclose(table["ci_low"], [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(table["ci_high"], [0.5, 1 / 3, 0.5, 0.5])


def test_coupling_ratio_is_the_same_for_losses_and_elbos():
    elbo = coupling_per_cell([-2.0, -3.0], [[-4.0], [-6.0]])
    loss = coupling_per_cell([2.0, 3.0], [[4.0], [6.0]])
    np.testing.assert_allclose(elbo, [0.5, 0.5])
    np.testing.assert_allclose(loss, elbo)


def test_coupling_rejects_bad_shapes_naming_the_argument():
    with pytest.raises(InputError, match="elbo_swapped must be"):
        coupling_per_cell([-1.0, -2.0], [-1.0, -2.0])
    with pytest.raises(InputError, match="elbo_swapped must be"):
        coupling_per_cell([-1.0, -2.0], [[-1.0], [-2.0], [-3.0]])
    with pytest.raises(InputError, match="elbo_true must be one-dimensional"):
        coupling_per_cell([[-1.0]], [[-1.0]])
    with pytest.raises(InputError, match="structures must hold 2"):
        coupling_table([-1.0, -2.0], {"DNA": [[-2.0], [-3.0]]}, ["a"])
    with pytest.raises(InputError, match="averages to 0"):
        coupling_per_cell([-1.0], [[1.0, -1.0]])


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_cells():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.4, 0.2, 20), rng.normal(0.4, 0.2, 2000)
    low_few, high_few = bootstrap_mean_ci(few, n_boot=500, rng=1)
    low_many, high_many = bootstrap_mean_ci(many, n_boot=500, rng=1)
    assert low_few < few.mean() < high_few
    assert low_many < many.mean() < high_many
    assert high_many - low_many < 0.25 * (high_few - low_few)
    assert bootstrap_mean_ci(few, n_boot=500, rng=1) == (low_few, high_few)
    with pytest.raises(InputError, match="values is empty"):
        bootstrap_mean_ci([])


def test_trimmed_mean_by_hand_and_bad_trim():
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 9.0]  # one far cell
    assert trimmed_mean(values) == pytest.approx(1.35)
    assert trimmed_mean(values, 0.1) == pytest.approx(np.mean(values[1:-1]))  # one value cut at each end
    assert trimmed_mean(values, 0.5) == pytest.approx(0.55)  # the median
    rows = np.array([[0.0, 1.0, 2.0, 30.0], [4.0, 4.0, 4.0, 4.0]])
    assert trimmed_mean(rows, 0.25, axis=1).tolist() == [1.5, 4.0]
    with pytest.raises(InputError, match="trim must be in"):
        trimmed_mean(values, 0.6)


def test_coupling_table_trim_leaves_out_a_few_far_cells():
    # 10 cells ignore the DNA (coupling 0); one cell's error doubles under swaps (coupling 0.5)
    true = -np.ones(10)
    swapped = -np.ones((10, 2))
    swapped[0] = -2.0
    structures = ["Envelope"] * 10
    mean = coupling_table(true, {"DNA": swapped}, structures, n_boot=50)
    trimmed = coupling_table(true, {"DNA": swapped}, structures, n_boot=50, trim=0.1)
    assert mean["coupling"].item() == pytest.approx(0.05)
    assert trimmed["coupling"].item() == 0.0
    assert trimmed["ci_low"].item() == 0.0 < mean["ci_high"].item()


def test_differential_coupling_by_hand_and_skips_zero_sums():
    result = differential_coupling([0.5, 0.0, 0.2], [0.5, 0.0, 0.6], ["a", "a", "b"])
    assert result.to_dict() == {"a": 0.0, "b": pytest.approx(-0.5)}


# ----------------------------------------------------------------------------- agreement


def test_tie_resolved_spearman_ignores_order_within_zero_ties_only():
    truth = [0.0, 0.0, 0.0, 0.2, 0.5, 0.9]
    perfect_but_noisy_at_zero = [0.02, -0.01, 0.0, 0.3, 0.4, 0.95]
    assert tie_resolved_spearman(perfect_but_noisy_at_zero, truth) == pytest.approx(1.0)
    # plain Spearman is capped below 1 by the ties
    from scipy.stats import spearmanr
    assert spearmanr(perfect_but_noisy_at_zero, truth)[0] < 0.95
    # a zero-truth structure ranked above two coupled ones: ranks (5 1 2 3 4 6) vs (3 1 2 4 5 6), 1 - 6 * 6 / 210
    assert tie_resolved_spearman([0.5, -0.01, 0.0, 0.3, 0.4, 0.95], truth) == pytest.approx(1 - 36 / 210)
    # without ties it is plain Spearman
    x, y = [0.1, 0.5, 0.3, 0.9], [1.0, 2.0, 4.0, 3.0]
    assert tie_resolved_spearman(x, y) == pytest.approx(spearmanr(x, y)[0])
    assert np.isnan(tie_resolved_spearman([1.0, 2.0], [1.0, 2.0]))


def test_tie_resolved_spearman_counts_exact_zeros_where_the_truth_is_zero_as_right():
    truth = [0.0, 0.0, 0.0, 0.2, 0.5, 0.9]
    assert tie_resolved_spearman(truth, truth) == pytest.approx(1.0)  # e.g. closed gates: exact zeros
    # a coupled structure read as exactly 0 ties with the three zeros: ranks (2.5 2.5 2.5 2.5 5 6) against
    # (2 2 2 4 5 6), hand-computed Pearson r of the ranks
    ranks_x, ranks_y = np.array([2.5, 2.5, 2.5, 2.5, 5, 6]), np.array([2, 2, 2, 4, 5, 6])
    expected = np.corrcoef(ranks_x, ranks_y)[0, 1]
    assert expected < 0.95
    assert tie_resolved_spearman([0.0, 0.0, 0.0, 0.0, 0.5, 0.9], truth) == pytest.approx(expected)


def test_coupling_agreement_per_channel_and_pooled():
    wide = pd.DataFrame({"structure": ["Envelope", "Cortex", "Puncta", "Golgi"],
                         "coupling_membrane": [0.0, 0.8, 0.0, 0.1], "coupling_dna": [0.9, 0.0, 0.0, 0.3]})
    truth = truth_long(wide, {"Membrane": "coupling_membrane", "DNA": "coupling_dna"})
    estimated = truth.assign(coupling=[0.01, 0.85, 0.7, -0.01, 0.0, 0.03, 0.2, 0.25])
    result = coupling_agreement(estimated, truth)
    assert result.index.tolist() == ["Membrane", "DNA", "pooled"]
    assert result["n"].tolist() == [4, 4, 8]
    assert result["n_nonzero"].tolist() == [2, 2, 4]
    np.testing.assert_allclose(result["spearman_ties_resolved"], 1.0)
    np.testing.assert_allclose(result["spearman_nonzero"], [np.nan, np.nan, 1.0])  # 2 pairs: undefined
    assert (result.loc[["Membrane", "DNA"], "spearman"] < 1).all()
    with pytest.raises(InputError, match="no coupling for"):
        coupling_agreement(estimated.assign(structure=estimated["structure"].replace("Golgi", "Other")), truth)
    with pytest.raises(InputError, match="truth table repeats"):
        coupling_agreement(estimated, pd.concat([truth, truth.head(1)]))


def test_truth_long_names_missing_columns():
    with pytest.raises(InputError, match="coupling_dna"):
        truth_long(pd.DataFrame({"structure": ["a"], "coupling_membrane": [0.1]}), {"DNA": "coupling_dna"})


# ----------------------------------------------------------------------------- drug shifts


def test_centroid_distance_uses_active_dimensions_only():
    x = np.array([[0.0, 0.0, 100.0], [2.0, 0.0, -100.0], [4.0, 3.0, 7.0], [4.0, 3.0, 7.0]])
    treated = [False, False, True, True]
    assert centroid_distance(x, treated, [True, True, False]) == pytest.approx(np.hypot(3.0, 3.0))
    with pytest.raises(InputError, match="active must hold 3"):
        centroid_distance(x, treated, [True, False])
    with pytest.raises(InputError, match="embeddings must be"):
        centroid_distance(x[:, 0], treated)
    with pytest.raises(InputError, match="one treated and one control"):
        centroid_distance(x, [True] * 4)


def test_permutation_p_small_for_a_shift_and_uniform_for_identical_groups():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    treated = np.arange(60) >= 30
    shifted = x + np.where(treated[:, None], [1.5, 0.0, 0.0, 0.0], 0.0)
    distance, p = permutation_test(shifted, treated, n_permutations=199, seed=0)
    assert p == pytest.approx(1 / 200)
    assert distance > 1.0
    nulls = [permutation_test(rng.normal(size=(40, 3)), np.arange(40) >= 20, n_permutations=99, seed=k)[1]
             for k in range(60)]
    assert 0.35 < np.mean(nulls) < 0.65
    assert 0.02 < np.mean(np.asarray(nulls) <= 0.1) < 0.25
    assert min(nulls) >= 1 / 100
    assert permutation_test(shifted, treated, n_permutations=50, seed=4) == permutation_test(
        shifted, treated, n_permutations=50, seed=4)


def test_benjamini_hochberg_by_hand():
    # sorted p 0.001 0.008 0.039 0.041 0.2, m = 5: p * m / rank = .005 .02 .065 .05125 .2, then running minimum from the top
    q = benjamini_hochberg([0.041, 0.001, 0.2, 0.008, 0.039])
    np.testing.assert_allclose(q, [0.05125, 0.005, 0.2, 0.02, 0.05125])
    with pytest.raises(InputError, match="p_values must lie"):
        benjamini_hochberg([0.5, 1.5])


def test_holm_by_hand():
    # sorted p 0.001 0.008 0.039 0.041 0.2, m = 5: p * (m - k + 1) = .005 .032 .117 .082 .2, then running maximum
    p = [0.041, 0.001, 0.2, 0.008, 0.039]
    np.testing.assert_allclose(holm(p), [0.117, 0.005, 0.2, 0.032, 0.117])
    assert (holm(p) >= benjamini_hochberg(p)).all()
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]  # 1.2 capped
    assert holm([]).shape == (0,)
    with pytest.raises(InputError, match="p_values must lie"):
        holm([0.5, np.nan])


def _screen(seed: int = 0):
    """Cells of two structures under DMSO and two drugs; DrugA moves structure x in the target space."""
    rng = np.random.default_rng(seed)
    compounds = np.repeat(["DMSO", "DrugA", "DrugB"], 40)
    structures = np.tile(np.repeat(["x", "y"], 20), 3)
    target = rng.normal(size=(120, 5))
    target[(compounds == "DrugA") & (structures == "x"), 0] += 3.0
    target[:, 4] += 50.0 * ((compounds == "DrugB") & (structures == "y"))  # inactive dimension
    reference = rng.normal(size=(120, 3))
    return compounds, structures, {"reference": reference, "target": target}


def test_drug_shift_table_finds_the_shifted_pair_only():
    compounds, structures, latents = _screen()
    active = {"target": np.array([True, True, True, True, False])}
    table = drug_shift_table(latents, compounds, structures, active=active, n_permutations=199)
    assert table.columns.tolist() == ["drug", "structure", "latent", "distance", "p_value", "q_value",
                                      "significant", "n_control", "n_treated"]
    assert len(table) == 8
    assert (table["n_control"] == 20).all() and (table["n_treated"] == 20).all()
    called = table[table["significant"]]
    assert called[["drug", "structure", "latent"]].values.tolist() == [["DrugA", "x", "target"]]
    assert (table["q_value"] >= table["p_value"]).all()
    truth = pd.DataFrame({"Metadata_Compound": ["DMSO", "DMSO", "DrugA", "DrugA", "DrugB", "DrugB"],
                          "structure": ["x", "y"] * 3, "shifted": [False, False, True, False, False, True]})
    score = shift_recall(table, truth)
    assert score["recall"] == 0.5 and score["n_shifted"] == 2
    assert score["missed"] == [["DrugB", "y"]] and score["false_positives"] == 0
    reference = shift_recall(table, truth, latent="reference")
    assert reference["recall"] == 0.0


def test_drug_shift_table_adjusts_each_latent_space_by_the_correction_asked():
    compounds, structures, latents = _screen()
    bh = drug_shift_table(latents, compounds, structures, n_permutations=99)
    family_wise = drug_shift_table(latents, compounds, structures, n_permutations=99, correction="holm")
    pd.testing.assert_series_equal(family_wise["p_value"], bh["p_value"])
    for _, part in family_wise.groupby("latent"):
        np.testing.assert_allclose(part["q_value"], holm(part["p_value"]))
        np.testing.assert_allclose(bh.loc[part.index, "q_value"], benjamini_hochberg(part["p_value"]))
    assert (family_wise["q_value"] >= bh["q_value"]).all()
    with pytest.raises(InputError, match="unknown correction 'bonferroni'; choose from \\['bh', 'holm'\\]"):
        drug_shift_table(latents, compounds, structures, correction="bonferroni")


def _shape_confounded_screen(n: int = 60) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Structure x: the drug's cells are larger but x follows size only; structure y: the drug moves y
    by 1.5 on cells of the control's sizes."""
    rng = np.random.default_rng(4)
    compounds = np.tile(np.repeat(["DMSO", "Drug"], n), 2)
    structures = np.repeat(["x", "y"], 2 * n)
    size = rng.normal(size=4 * n) + 1.5 * ((compounds == "Drug") & (structures == "x"))
    reference = np.column_stack([size, rng.normal(size=4 * n)])
    target = np.column_stack([2.0 * size, rng.normal(size=4 * n)]) + 0.3 * rng.normal(size=(4 * n, 2))
    target[(compounds == "Drug") & (structures == "y"), 1] += 1.5
    return compounds, structures, {"reference": reference, "target": target}


def test_reference_adjusted_removes_a_shape_difference_and_keeps_a_structure_shift():
    compounds, structures, latents = _shape_confounded_screen()
    latents["target_given_reference"] = reference_adjusted(latents["target"], latents["reference"], structures)
    table = drug_shift_table(latents, compounds, structures, control="DMSO", n_permutations=199)
    called = {(row.structure, row.latent) for row in table.itertuples() if row.significant}
    assert called == {("x", "reference"), ("x", "target"), ("y", "target"), ("y", "target_given_reference")}
    for structure in ("x", "y"):  # the residuals of each structure's own fit average zero
        np.testing.assert_allclose(latents["target_given_reference"][structures == structure].mean(0), 0, atol=1e-9)


def test_reference_adjusted_rejects_a_group_too_small_for_its_fit():
    with pytest.raises(InputError, match="group 'b' has 3 cells; the fit on 2 reference dimensions needs more than 3"):
        reference_adjusted(np.zeros((8, 1)), np.arange(16.0).reshape(8, 2), ["a"] * 5 + ["b"] * 3)
    with pytest.raises(InputError, match="same N"):
        reference_adjusted(np.zeros((8, 1)), np.zeros((7, 2)), ["a"] * 8)


def test_shift_recall_counts_false_positives_by_hand():
    calls = pd.DataFrame({"drug": ["A", "A", "B", "B"], "structure": ["x", "y", "x", "y"], "latent": "target",
                          "significant": [True, True, True, False]})
    truth = pd.DataFrame({"Metadata_Compound": ["A", "A", "B", "B", "C"], "structure": ["x", "y", "x", "y", "x"],
                          "shifted": [True, False, False, False, True]})
    score = shift_recall(calls, truth)
    assert score["recall"] == 1.0 and score["n_shifted"] == 1  # C was not tested
    assert score["false_positives"] == 2 and score["false_positive_pairs"] == [["A", "y"], ["B", "x"]]
    with pytest.raises(InputError, match="no test in latent space 'reference'"):
        shift_recall(calls, truth, latent="reference")
    with pytest.raises(InputError, match="shifted"):
        shift_recall(calls, truth.drop(columns="shifted"))


def test_drug_shift_table_rejects_bad_input():
    compounds, structures, latents = _screen()
    with pytest.raises(InputError, match="control condition 'Vehicle'"):
        drug_shift_table(latents, compounds, structures, control="Vehicle")
    with pytest.raises(InputError, match=r"latents\['target'\] must be"):
        drug_shift_table({"reference": latents["reference"], "target": latents["target"][:10]}, compounds, structures)
    with pytest.raises(InputError, match=r"active names latent space\(s\) \['targt'\]"):
        drug_shift_table(latents, compounds, structures, active={"targt": np.ones(5, bool)})
    with pytest.raises(InputError, match="structures must hold 120"):
        drug_shift_table(latents, compounds, structures[:5])


# ----------------------------------------------------------------------------- figure


def test_coupling_figure_orders_structures_membrane_first():
    table = pd.DataFrame({"structure": ["Env", "Env", "Cortex", "Cortex"], "channel": ["Membrane", "DNA"] * 2,
                          "coupling": [0.0, 0.8, 0.7, 0.0], "ci_low": [-0.1, 0.7, 0.6, -0.1],
                          "ci_high": [0.1, 0.9, 0.8, 0.1], "n_cells": [10] * 4})
    fig = coupling_figure(table)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Cortex", "Env"]
    assert len(ax.patches) == 4
    truth = table[["structure", "channel"]].assign(coupling=[0.0, 0.9, 0.8, 0.0])
    with_truth = coupling_figure(table, truth).axes[0]
    markers = [c for c in with_truth.collections if type(c).__name__ == "PathCollection"]
    assert len(markers) == 2 and [len(m.get_offsets()) for m in markers] == [2, 2]
    assert ax.get_ylabel() == "coupling (1 - ELBO / swapped ELBO)"
    assert coupling_figure(table, score="error").axes[0].get_ylabel() == "coupling (1 - error / swapped error)"
