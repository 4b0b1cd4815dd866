import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.evaluate.retrieval import moa_retrieval, replicate_retrieval


def _treatments(seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (4, 16))
    rows = []
    for m in range(4):
        for c in range(3):
            vector = centres[m] + noise * rng.normal(size=16)
            rows.append({"Metadata_Compound": f"m{m}c{c}", "Metadata_MoA": f"M{m}",
                         **{f"f{i}": v for i, v in enumerate(vector)}})
    return pd.DataFrame(rows)


def test_hand_computed_average_precision():
    # query q (MoA X): ranking by cosine is p1 (X), n1 (Y), p2 (X)  ->  AP = (1/1 + 2/3) / 2
    p = pd.DataFrame({"Metadata_Compound": ["q", "p1", "n1", "p2"], "Metadata_MoA": ["X", "X", "Y", "X"],
                      "f1": [1.0, 1.0, 1.0, 0.0], "f2": [0.0, 0.1, 0.5, 1.0]})
    result = moa_retrieval(p, null_size=100)
    ap = result.average_precision.set_index("Metadata_Compound")["average_precision"]
    assert ap["q"] == pytest.approx((1 + 2 / 3) / 2)


def test_separated_moas_are_retrieved_and_shuffled_are_not():
    profiles = _treatments()
    result = moa_retrieval(profiles, null_size=1000)
    assert result.mean_average_precision == pytest.approx(1.0) and result.fraction_retrieved == 1.0
    compound_moa = profiles["Metadata_MoA"].to_numpy()
    shuffled = profiles.assign(Metadata_MoA=np.random.default_rng(1).permutation(compound_moa))
    result = moa_retrieval(shuffled, null_size=1000)
    assert result.mean_average_precision < 0.5 and result.fraction_retrieved < 0.5


def test_replicates_against_controls():
    rng = np.random.default_rng(0)
    rows = [{"Metadata_Compound": "DMSO", "Metadata_Concentration": 0.0, **dict(enumerate(rng.normal(0, 1, 8)))}
            for _ in range(12)]
    active = rng.normal(0, 1, 8) * 5
    for _ in range(3):
        rows.append({"Metadata_Compound": "active", "Metadata_Concentration": 1.0,
                     **dict(enumerate(active + rng.normal(0, 0.3, 8)))})
        rows.append({"Metadata_Compound": "inactive", "Metadata_Concentration": 1.0,
                     **dict(enumerate(rng.normal(0, 1, 8)))})
    wells = pd.DataFrame(rows).rename(columns={i: f"f{i}" for i in range(8)})
    result = replicate_retrieval(wells, null_size=1000)
    per = result.per_group.set_index("Metadata_Treatment")["mean_average_precision"]
    assert per["active @ 1.0"] == pytest.approx(1.0) and per["inactive @ 1.0"] < 0.6
    assert set(result.per_group["Metadata_Treatment"]) == {"active @ 1.0", "inactive @ 1.0"}
    with pytest.raises(InputError, match="control wells"):
        replicate_retrieval(wells[wells["Metadata_Compound"] != "DMSO"], null_size=100)
