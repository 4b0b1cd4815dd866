"""Fit phenotype models to measured feature shifts: which knob values make simulated cells move the
way real treated cells move.

The fit is linearised. :func:`knob_steps` moves each knob of a baseline
:class:`~morphospace.simulate.phenotypes.Phenotype` by a fixed share of its allowed range
(:data:`KNOB_BOUNDS`); rendering and measuring cells at each stepped phenotype gives the shift of
every feature per unit of the knob (the columns of ``effects``, in SDs of the baseline cells). Then
:func:`fit_knobs` finds the knob changes, inside the bounds, whose summed effects come closest (least
squares, with a small ridge towards the baseline) to a target shift measured on real cells.

Examples
--------
>>> import pandas as pd
>>> effects = pd.DataFrame({"cell_scale": [2.0, 0.0], "dna_level": [0.0, 1.0]}, index=["area", "dna"])
>>> fitted = fit_knobs(effects, pd.Series({"area": 0.4, "dna": -0.2}), ridge=0.0)
>>> {k: round(v, 3) for k, v in fitted.items()}
{'cell_scale': 1.2, 'dna_level': 0.8}
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import lsq_linear

from morphospace.simulate.phenotypes import DMSO_PHENOTYPE, Phenotype

__all__ = ["KNOB_BOUNDS", "knob_steps", "fit_knobs"]

KNOB_BOUNDS: Mapping[str, tuple[float, float]] = {
    "cell_scale": (0.6, 1.5), "cell_elongation": (1.0, 2.5), "cell_irregularity": (0.0, 0.3),
    "nucleus_scale": (0.6, 1.5), "nucleus_elongation": (1.0, 2.0), "mitotic_fraction": (0.0, 0.8),
    "monopolar_fraction": (0.0, 1.0), "multinucleate_fraction": (0.0, 0.9), "dna_level": (0.4, 2.5),
    "chromatin_texture": (0.0, 0.5), "chromatin_coarseness": (0.0, 1.0), "nucleoli": (0.0, 8.0),
    "nucleolus_contrast": (0.0, 0.9), "dna_foci": (0.0, 15.0), "actin_level": (0.3, 3.0),
    "cortical_actin": (0.0, 4.0), "stress_fibres": (0.0, 20.0), "fibre_spread": (0.02, 0.6),
    "actin_puncta": (0.0, 40.0), "tubulin_level": (0.3, 3.0), "microtubules": (0.0, 2.0),
    "microtubule_width": (0.3, 2.0), "microtubule_brightness": (0.3, 4.0), "microtubule_curvature": (0.005, 0.15),
    "aggresome": (0.0, 2.0),
}
"""The range each knob may take in a fitted phenotype model."""


def knob_steps(baseline: Phenotype = DMSO_PHENOTYPE, knobs: Sequence[str] | None = None,
               share: float = 0.4) -> dict[str, tuple[Phenotype, float]]:
    """Per knob, the baseline with that knob moved by ``share`` of its range (towards the side with
    more room) and the signed step taken.

    >>> steps = knob_steps(knobs=["dna_level"])
    >>> steps["dna_level"][1], steps["dna_level"][0].dna_level
    (0.84, 1.84)
    """
    result = {}
    for knob in knobs or list(KNOB_BOUNDS):
        low, high = KNOB_BOUNDS[knob]
        value = getattr(baseline, knob)
        step = share * (high - low) * (1.0 if high - value >= value - low else -1.0)
        step = float(np.round(step, 6))
        result[knob] = (dataclasses.replace(baseline, **{knob: round(value + step, 6)}), step)
    return result


def fit_knobs(effects: pd.DataFrame, target: pd.Series, baseline: Phenotype = DMSO_PHENOTYPE,
              ridge: float = 0.05) -> dict[str, float]:
    """Knob values (inside :data:`KNOB_BOUNDS`) whose linearised shift best matches ``target``.

    ``effects``: features x knobs, the shift of each feature per unit of each knob; ``target``: the
    wanted shift per feature (same units, features missing from either side are ignored). The ridge
    term adds ``ridge`` x (knob change / knob range) per knob to the residual, so knobs the target
    does not need stay at the baseline. Returns every knob in ``effects`` with its fitted value.
    """
    rows = [f for f in effects.index if f in target.index]
    if not rows:
        raise ValueError("effects and target share no feature")
    knobs = list(effects.columns)
    base = np.array([getattr(baseline, k) for k in knobs])
    low = np.array([KNOB_BOUNDS[k][0] for k in knobs]) - base
    high = np.array([KNOB_BOUNDS[k][1] for k in knobs]) - base
    span = high - low
    matrix = effects.loc[rows, knobs].to_numpy(float) * span  # per knob range
    system = np.vstack([matrix, ridge * np.eye(len(knobs))]) if ridge > 0 else matrix
    wanted = np.concatenate([target.loc[rows].to_numpy(float), np.zeros(len(knobs) if ridge > 0 else 0)])
    solution = lsq_linear(system, wanted, bounds=(low / span, high / span)).x
    return {k: float(b + x * s) for k, b, x, s in zip(knobs, base, solution, span)}
