"""MoA table, compounds, dose-response and phenotype interpolation (data level)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from morphospace.simulate import COMPOUNDS, MOAS
from morphospace.simulate.calibrate import GENERAL_KNOBS, model_bounds
from morphospace.simulate.phenotypes import (
    DMSO,
    DMSO_PHENOTYPE,
    MECHANISMS,
    MOA_EFFECTS,
    default_treatment,
    dose_series,
    phenotype_for,
    treatments_for,
)
from morphospace.simulate.population import _sample_kind

BBBC021_MOAS = {
    "Actin disruptors", "Aurora kinase inhibitors", "Cholesterol-lowering", "DNA damage",
    "DNA replication", "Eg5 inhibitors", "Epithelial", "Kinase inhibitors",
    "Microtubule destabilizers", "Microtubule stabilizers", "Protein degradation", "Protein synthesis",
}


def test_moas_are_the_twelve_bbbc021_names():
    assert isinstance(MOAS, tuple) and len(MOAS) == 12 and set(MOAS) == BBBC021_MOAS
    assert set(COMPOUNDS) == BBBC021_MOAS and set(MOA_EFFECTS) == BBBC021_MOAS


def test_compound_names_are_unique_and_belong_to_their_moa():
    names = [c.name for moa in MOAS for c in COMPOUNDS[moa]]
    assert len(names) == len(set(names)) and "DMSO" not in names
    assert all(c.moa == moa for moa in MOAS for c in COMPOUNDS[moa])
    assert COMPOUNDS["Microtubule stabilizers"][0].name == "taxol"


@pytest.mark.parametrize("count", [1, 3, 5])
def test_dose_response_rises_with_concentration_and_lowest_dose_is_mild(count):
    for moa in MOAS:
        for compound in COMPOUNDS[moa]:
            doses = dose_series(compound, count)
            strengths = [compound.strength(d) for d in doses]
            assert list(doses) == sorted(doses) and len(set(doses)) == count
            assert all(a < b for a, b in zip(strengths, strengths[1:]))
            assert 0.0 < strengths[-1] <= compound.emax <= 1.0
            if count >= 3:
                assert strengths[0] < 0.3 < 0.7 < strengths[-1]


def test_compounds_of_one_moa_differ_in_strength():
    for moa in MOAS:
        tops = {round(c.strength(dose_series(c, 3)[-1]), 4) for c in COMPOUNDS[moa]}
        assert len(tops) == len(COMPOUNDS[moa])


def test_phenotype_interpolates_between_dmso_and_full_effect():
    assert phenotype_for("DMSO", 0.0) == DMSO_PHENOTYPE
    for moa in MOAS:
        assert phenotype_for(moa, 0.0) == DMSO_PHENOTYPE
        full = phenotype_for(moa, 1.0)
        half = phenotype_for(moa, 0.5)
        for name, target in MOA_EFFECTS[moa].items():
            base = getattr(DMSO_PHENOTYPE, name)
            assert getattr(full, name) == pytest.approx(target)
            assert getattr(half, name) == pytest.approx((base + target) / 2)
    with pytest.raises(ValueError):
        phenotype_for("Unknown MoA", 0.5)


def test_every_moa_has_its_own_signature():
    signatures = set()
    for moa in MOAS:
        changed = {
            f.name: round(getattr(phenotype_for(moa, 1.0), f.name), 6)
            for f in dataclasses.fields(DMSO_PHENOTYPE)
            if getattr(phenotype_for(moa, 1.0), f.name) != getattr(DMSO_PHENOTYPE, f.name)
        }
        assert changed, moa
        signatures.add(tuple(sorted(changed.items())))
    assert len(signatures) == len(MOAS)


def test_fitted_models_stay_within_their_mechanisms():
    assert set(MECHANISMS) == set(MOAS)
    for moa in MOAS:
        # a fitted model moves only its mechanism's knobs and the general ones, within their bounds,
        # and keeps the cell-cycle fractions its mechanism defines
        assert set(MOA_EFFECTS[moa]) <= set(MECHANISMS[moa]) | set(GENERAL_KNOBS), moa
        for knob, value in MOA_EFFECTS[moa].items():
            low, high = model_bounds(moa)[knob]
            assert low - 5e-4 <= value <= high + 5e-4, (moa, knob)  # fitted values are kept to 3 decimals
        for knob in ("monopolar_fraction", "multinucleate_fraction"):
            if knob in MECHANISMS[moa]:
                assert MOA_EFFECTS[moa][knob] == MECHANISMS[moa][knob]


def test_cell_kinds_follow_the_multinucleate_and_polyploid_fractions():
    phenotype = dataclasses.replace(DMSO_PHENOTYPE, mitotic_fraction=0.0, multinucleate_fraction=0.2,
                                    polyploid_fraction=0.5)
    rng = np.random.default_rng(0)
    kinds = [_sample_kind(rng, phenotype) for _ in range(4000)]
    shares = {kind: kinds.count(kind) / len(kinds) for kind in ("multinucleate", "polyploid", "normal")}
    assert shares == pytest.approx({"multinucleate": 0.2, "polyploid": 0.5, "normal": 0.3}, abs=0.03)
    assert set(_sample_kind(rng, DMSO_PHENOTYPE) for _ in range(500)) <= {"normal", "metaphase", "prometaphase"}


def test_treatments_cover_compounds_and_doses_in_order():
    treatments = treatments_for(["Eg5 inhibitors", "DNA damage"], 2, 3)
    assert len(treatments) == 12
    assert [t.compound for t in treatments[:3]] == ["AZ-C"] * 3
    assert treatments[0].concentration < treatments[1].concentration < treatments[2].concentration
    assert {t.moa for t in treatments} == {"Eg5 inhibitors", "DNA damage"}


def test_default_treatment_shortcuts():
    assert default_treatment() == DMSO and DMSO.concentration == 0.0 and DMSO.strength == 0.0
    top = default_treatment("Microtubule stabilizers")
    assert top.compound == "taxol" and top.strength > 0.8
    custom = default_treatment("Protein synthesis", strength=0.25)
    assert custom.strength == 0.25 and custom.compound == "cycloheximide"
    with pytest.raises(ValueError):
        default_treatment("Actin disrupters")
