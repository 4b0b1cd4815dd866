import dataclasses

import numpy as np
import pandas as pd
import pytest

from morphospace.config import resolve_config
from morphospace.simulate import SimulateConfig, simulate_field
from morphospace.simulate.calibrate import KNOB_BOUNDS, fit_knobs, knob_steps
from morphospace.simulate.cell_crops import nucleus_centred_crops, phenotype_crops, screen_crops
from morphospace.simulate.phenotypes import DMSO_PHENOTYPE
from morphospace.simulate.screen import field_jobs, field_seed

SMALL = {"field_size": 128, "cells_per_field": 5, "plates": 1, "moas": ["Actin disruptors"], "compounds_per_moa": 1,
         "concentrations": 1, "dmso_wells_per_plate": 1}


def test_crops_are_centred_on_truth_nuclei_and_stay_inside_the_field():
    field = simulate_field(SimulateConfig(field_size=160, cells_per_field=8), seed=3)
    images, cells = nucleus_centred_crops(field, 40)
    assert images.shape[1:] == (40, 40, 3) and len(images) == len(cells) > 0
    centres = field.cells.set_index("Metadata_CellId")[["Metadata_Center_X", "Metadata_Center_Y"]]
    for image, cell_id in zip(images, cells["Metadata_CellId"]):
        x, y = np.rint(centres.loc[cell_id]).astype(int)
        assert np.array_equal(image, np.moveaxis(field.channels[:, y - 20:y + 20, x - 20:x + 20], 0, -1))
    half = 20
    inside = ((centres.Metadata_Center_X.round() >= half) & (centres.Metadata_Center_Y.round() >= half)
              & (centres.Metadata_Center_X.round() + half <= 160) & (centres.Metadata_Center_Y.round() + half <= 160))
    assert len(images) == int(inside.sum())
    with pytest.raises(ValueError, match="at least 8"):
        nucleus_centred_crops(field, 4)


def test_screen_crops_render_the_screens_own_fields():
    config = resolve_config(SimulateConfig, SMALL)
    images, cells = screen_crops(config, 32)
    job = field_jobs(config)[0]
    field = simulate_field(config, seed=field_seed(config, job), treatment=job.treatment, plate_index=0)
    first, first_cells = nucleus_centred_crops(field, 32)
    assert np.array_equal(images[: len(first)], first)
    assert set(cells["Metadata_MoA"]) == {"DMSO", "Actin disruptors"}
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_FieldId"} <= set(cells.columns)


def test_phenotype_crops_render_the_given_phenotype_with_shared_streams():
    config = resolve_config(SimulateConfig, SMALL)
    dim = dataclasses.replace(DMSO_PHENOTYPE, dna_level=0.5)
    base_images, base = phenotype_crops(config, DMSO_PHENOTYPE, "base", fields=2, size=32)
    dim_images, dim_cells = phenotype_crops(config, dim, "dim", fields=2, size=32)
    assert set(dim_cells["Metadata_MoA"]) == {"dim"} and len(dim_cells) == len(base)
    assert dim_images[..., 0].mean() < 0.75 * base_images[..., 0].mean()


def test_knob_steps_move_one_knob_inside_its_bounds():
    steps = knob_steps()
    assert set(steps) == set(KNOB_BOUNDS)
    for knob, (phenotype, step) in steps.items():
        low, high = KNOB_BOUNDS[knob]
        assert low <= getattr(phenotype, knob) <= high and step != 0
        changed = [f.name for f in dataclasses.fields(phenotype)
                   if getattr(phenotype, f.name) != getattr(DMSO_PHENOTYPE, f.name)]
        assert changed == [knob]


def test_fit_knobs_recovers_a_linear_target_and_respects_bounds():
    effects = pd.DataFrame({"cell_scale": [1.0, 0.0, 0.5], "actin_puncta": [0.0, 0.1, 0.0]}, index=list("abc"))
    truth = {"cell_scale": 0.8, "actin_puncta": 20.0}
    target = effects @ pd.Series({k: v - getattr(DMSO_PHENOTYPE, k) for k, v in truth.items()})
    assert fit_knobs(effects, target, ridge=0.0) == pytest.approx(truth)
    far = fit_knobs(effects, target * 100, ridge=0.0)
    assert far["actin_puncta"] == pytest.approx(KNOB_BOUNDS["actin_puncta"][1])
    with pytest.raises(ValueError, match="share no feature"):
        fit_knobs(effects, pd.Series({"z": 1.0}))
