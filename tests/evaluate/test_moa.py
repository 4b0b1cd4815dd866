import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.evaluate.moa import confusion_table, evaluate_moa, nsc_accuracy, treatment_profiles


def _profile(compound, concentration, moa, batch, vector):
    return {"Metadata_Compound": compound, "Metadata_Concentration": concentration, "Metadata_MoA": moa,
            "Metadata_Batch": batch, **{f"f{i}": v for i, v in enumerate(vector)}}


def test_hand_computed_nsc_and_nscb():
    profiles = pd.DataFrame([
        _profile("a", 1, "X", "w1", [1.0, 0.0, 0.0]),
        _profile("a", 2, "X", "w1", [1.0, 0.01, 0.0]),   # same compound: never a neighbour
        _profile("b", 1, "X", "w2", [0.9, 0.3, 0.0]),
        _profile("c", 1, "Y", "w1", [0.95, 0.0, 0.3]),   # closest to "a", but shares its batch
        _profile("d", 1, "Y", "w2", [0.0, 0.2, 1.0]),
        _profile("DMSO", 0, "DMSO", "w1", [1.0, 0.0, 0.0]),
    ])
    nsc = nsc_accuracy(profiles)
    neighbours = dict(zip(nsc.predictions["Metadata_Compound"] + nsc.predictions["Metadata_Concentration"].astype(str),
                          nsc.predictions["Metadata_Neighbor_Compound"]))
    assert neighbours == {"a1": "c", "a2": "c", "b1": "a", "c1": "a", "d1": "c"}
    assert nsc.accuracy == pytest.approx(2 / 5)           # b -> a and d -> c are right
    assert nsc.compound_accuracy == pytest.approx(2 / 4)  # a 0, b 1, c 0, d 1
    nscb = nsc_accuracy(profiles, exclude_batch=True)
    neighbours = dict(zip(nscb.predictions["Metadata_Compound"], nscb.predictions["Metadata_Neighbor_Compound"]))
    assert neighbours == {"a": "b", "b": "a", "c": "b", "d": "c"}
    assert nscb.accuracy == pytest.approx(4 / 5)
    per_moa = nscb.per_moa().set_index("Metadata_MoA")
    assert per_moa.loc["X", "correct"] == 3 and per_moa.loc["Y", "correct"] == 1


def test_single_batch_moas_are_dropped_in_the_92_convention():
    profiles = pd.DataFrame([
        _profile("a", 1, "X", "w1", [1, 0]), _profile("b", 1, "X", "w2", [1, 0.1]),
        _profile("c", 1, "Z", "w3", [0, 1]), _profile("d", 1, "Z", "w3", [0.1, 1]),
    ])
    results = evaluate_moa(profiles)
    assert results["nscb"].n_treatments == 4
    assert results["nscb_multi_batch_moas"].n_treatments == 2 and results["nscb_multi_batch_moas"].accuracy == 1.0
    assert results["nscb"].predictions.set_index("Metadata_Compound").loc["c", "Metadata_Neighbor_Compound"] in ("a", "b")


def test_nscb_skipped_when_every_treatment_spans_all_batches():
    profiles = pd.DataFrame([_profile(c, 1, m, "w1|w2", v) for c, m, v in
                             [("a", "X", [1, 0]), ("b", "X", [1, 0.1]), ("c", "Y", [0, 1]), ("d", "Y", [0.1, 1])]])
    assert set(evaluate_moa(profiles)) == {"nsc"}


def test_shuffled_labels_fall_to_chance():
    rng = np.random.default_rng(0)
    moas = [f"M{m}" for m in range(6)]
    centres = rng.normal(0, 1, (6, 20))
    rows = [_profile(f"{moa}_c{c}", dose, moa, "w1", centres[m] + 0.2 * rng.normal(size=20))
            for m, moa in enumerate(moas) for c in range(4) for dose in (1, 2)]
    profiles = pd.DataFrame(rows)
    assert nsc_accuracy(profiles).accuracy == 1.0
    compound_moa = profiles.groupby("Metadata_Compound")["Metadata_MoA"].first()
    shuffled = []
    for seed in range(30):
        permuted = dict(zip(compound_moa.index, np.random.default_rng(seed).permutation(compound_moa.to_numpy())))
        shuffled.append(nsc_accuracy(profiles.assign(Metadata_MoA=profiles["Metadata_Compound"].map(permuted))).accuracy)
    assert abs(np.mean(shuffled) - 1 / 6) < 0.05


def test_treatment_profiles_aggregate_and_check():
    wells = pd.DataFrame({"Metadata_Compound": ["a", "a", "a", "b"], "Metadata_Concentration": [1, 1, 1, 1],
                          "Metadata_MoA": ["X"] * 3 + ["Y"], "Metadata_Batch": ["w2", "w1", "w2", "w1"],
                          "f": [1.0, 2.0, 6.0, 0.0]})
    mean = treatment_profiles(wells, operation="mean")
    assert mean["f"].tolist() == [3.0, 0.0] and mean["Metadata_Batch"].tolist() == ["w1|w2", "w1"]
    assert treatment_profiles(wells, operation="median")["f"].tolist() == [2.0, 0.0]
    with pytest.raises(InputError, match="more than one MoA"):
        treatment_profiles(wells.assign(Metadata_MoA=["X", "Y", "X", "Y"]))
    with pytest.raises(InputError, match="Metadata_MoA"):
        treatment_profiles(wells.drop(columns="Metadata_MoA"))


def test_confusion_table_counts():
    profiles = pd.DataFrame([_profile("a", 1, "X", "w1", [1, 0]), _profile("b", 1, "X", "w1", [0, 1]),
                             _profile("c", 1, "Y", "w1", [0, 1.1])])
    table = confusion_table(nsc_accuracy(profiles))
    assert table.loc["X", "Y"] == 1 and table.loc["Y", "X"] == 1 and table.to_numpy().sum() == 3
