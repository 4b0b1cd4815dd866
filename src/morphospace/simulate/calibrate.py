"""Fit phenotype models to measured feature shifts: which knob values make simulated cells move the
way real treated cells move.

A model keeps its mechanism: it moves only :func:`model_knobs` (the knobs its mechanism sets, and
size, brightness and mitotic arrest), and each knob its mechanism sets, sizes and brightness
aside, only in the direction the mechanism gives it and at least half way to the mechanism's value
(:func:`model_bounds`), so the simulator's truth still says which structures a treatment changes
and which way; the data set how far, and the direction of sizes and brightness.

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

from morphospace.simulate.phenotypes import DMSO_PHENOTYPE, MECHANISMS, Phenotype

__all__ = ["KNOB_BOUNDS", "GENERAL_KNOBS", "MECHANISM_SHARE", "ANCHOR_FEATURES", "CELL_CYCLE_KNOBS", "model_knobs",
           "model_bounds", "knob_steps", "fit_knobs", "anchored_knobs", "fit_model"]

KNOB_BOUNDS: Mapping[str, tuple[float, float]] = {
    "cell_scale": (0.6, 1.5), "cell_elongation": (1.0, 2.5), "cell_irregularity": (0.0, 0.3),
    "nucleus_scale": (0.6, 1.5), "nucleus_elongation": (1.0, 2.0), "mitotic_fraction": (0.0, 0.8),
    "monopolar_fraction": (0.0, 1.0), "multinucleate_fraction": (0.0, 0.9), "polyploid_fraction": (0.0, 0.6),
    "dna_level": (0.4, 2.5),
    "chromatin_texture": (0.0, 0.5), "chromatin_coarseness": (0.0, 1.0), "nucleoli": (0.0, 8.0),
    "nucleolus_contrast": (0.0, 0.9), "dna_foci": (0.0, 15.0), "actin_level": (0.3, 3.0),
    "cortical_actin": (0.0, 4.0), "stress_fibres": (0.0, 20.0), "fibre_spread": (0.02, 0.6),
    "actin_puncta": (0.0, 40.0), "tubulin_level": (0.3, 3.0), "microtubules": (0.0, 2.0),
    "microtubule_width": (0.3, 2.0), "microtubule_brightness": (0.3, 4.0), "microtubule_curvature": (0.005, 0.15),
    "aggresome": (0.0, 2.0),
}
"""The range each knob may take in a fitted phenotype model."""

GENERAL_KNOBS = ("cell_scale", "nucleus_scale", "dna_level", "actin_level", "tubulin_level", "mitotic_fraction")
"""Knobs any treatment may move: cell and nucleus size, stain brightness, mitotic arrest."""

MECHANISM_SHARE = 0.5
"""The least share of the way from the baseline to its :data:`~morphospace.simulate.phenotypes.MECHANISMS`
value that a fitted model moves each mechanism knob: the data may strengthen a mechanism or weaken it
by half, not remove it (a fit of the fast feature set alone left the destabilisers' microtubules and the
actin disruptors' cortex at the baseline)."""

CELL_CYCLE_KNOBS = ("mitotic_fraction", "monopolar_fraction", "multinucleate_fraction")
"""Where a mechanism sets these (arrest in mitosis, monopolar spindles, failed cytokinesis), the
fitted model keeps the mechanism's values: they define it, and single-cell crops centred on one
nucleus measure them poorly. The polyploid fraction is fitted instead: one large nucleus holding
more DNA is what such a crop measures well."""


ANCHOR_FEATURES = {
    "cell_scale": "Cells_AreaShape_Area", "nucleus_scale": "Nuclei_AreaShape_Area",
    "dna_level": "Nuclei_Intensity_MeanIntensity_DNA", "actin_level": "Cells_Intensity_MeanIntensity_Actin",
    "tubulin_level": "Cells_Intensity_MeanIntensity_Tubulin",
}
"""The feature whose real median ratio sets each size and brightness knob (:func:`anchored_knobs`)."""


def model_knobs(moa: str) -> list[str]:
    """The knobs a fitted model of ``moa`` may move: its mechanism's own knobs (those its entry in
    :data:`~morphospace.simulate.phenotypes.MECHANISMS` sets) and :data:`GENERAL_KNOBS`.

    >>> knobs = model_knobs("Eg5 inhibitors")
    >>> "monopolar_fraction" in knobs, set(GENERAL_KNOBS) <= set(knobs), "actin_puncta" in knobs
    (True, True, False)
    """
    own = list(MECHANISMS[moa])
    return own + [k for k in GENERAL_KNOBS if k not in own]


def model_bounds(moa: str, baseline: Phenotype = DMSO_PHENOTYPE) -> dict[str, tuple[float, float]]:
    """Allowed range of each of :func:`model_knobs` for ``moa``: a knob the mechanism sets in
    :data:`~morphospace.simulate.phenotypes.MECHANISMS` on that value's side of the baseline, at
    least :data:`MECHANISM_SHARE` of the way to it, unless it is a size or brightness
    (:data:`ANCHOR_FEATURES`: the data's to set); any other knob over all of :data:`KNOB_BOUNDS`.

    >>> bounds = model_bounds("Actin disruptors")
    >>> bounds["actin_puncta"], bounds["cortical_actin"], bounds["actin_level"]
    ((12.5, 40.0), (0.0, 0.65), (0.3, 3.0))
    """
    bounds = {}
    for knob in model_knobs(moa):
        low, high = KNOB_BOUNDS[knob]
        value, base = MECHANISMS[moa].get(knob), getattr(baseline, knob)
        if knob not in ANCHOR_FEATURES and value is not None and value != base:
            least = round(base + MECHANISM_SHARE * (value - base), 6)
            low, high = (least, high) if value > base else (low, least)
        bounds[knob] = (low, high)
    return bounds


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
              ridge: float = 0.05, bounds: Mapping[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """Knob values (inside ``bounds``, default :data:`KNOB_BOUNDS`) whose linearised shift best
    matches ``target``.

    ``effects``: features x knobs, the shift of each feature per unit of each knob; ``target``: the
    wanted shift per feature (same units, features missing from either side are ignored). The ridge
    term adds ``ridge`` x (knob change / knob range) per knob to the residual, so knobs the target
    does not need stay at the baseline. Returns every knob in ``effects`` with its fitted value.
    A bound that starts at the baseline keeps the knob on that side of it.
    """
    rows = [f for f in effects.index if f in target.index]
    if not rows:
        raise ValueError("effects and target share no feature")
    knobs = list(effects.columns)
    base = np.array([getattr(baseline, k) for k in knobs])
    limits = {**KNOB_BOUNDS, **(bounds or {})}
    low = np.array([limits[k][0] for k in knobs]) - base
    high = np.array([limits[k][1] for k in knobs]) - base
    span = np.array([KNOB_BOUNDS[k][1] - KNOB_BOUNDS[k][0] for k in knobs])
    matrix = effects.loc[rows, knobs].to_numpy(float) * span  # per knob range
    system = np.vstack([matrix, ridge * np.eye(len(knobs))]) if ridge > 0 else matrix
    wanted = np.concatenate([target.loc[rows].to_numpy(float), np.zeros(len(knobs) if ridge > 0 else 0)])
    solution = lsq_linear(system, wanted, bounds=(low / span, high / span + 1e-12)).x
    return {k: float(b + x * s) for k, b, x, s in zip(knobs, base, solution, span)}



def anchored_knobs(ratios: Mapping[str, float], strength: float) -> dict[str, float]:
    """Full-strength size and brightness knobs from real median ratios (treated / control) of their
    :data:`ANCHOR_FEATURES`, measured on cells whose mean phenotype strength is ``strength``.

    A knob's effect grows linearly with strength, so a brightness ratio ``r`` gives
    ``1 + (r - 1) / strength``; a size knob scales a radius, so an area ratio gives
    ``1 + (sqrt(r) - 1) / strength``. Values are clipped to :data:`KNOB_BOUNDS`.

    >>> anchored_knobs({"nucleus_scale": 1.21, "dna_level": 1.5}, strength=0.5)
    {'nucleus_scale': 1.2, 'dna_level': 2.0}
    """
    if not 0 < strength <= 1:
        raise ValueError(f"strength must lie in (0, 1], got {strength}")
    values = {}
    for knob, ratio in ratios.items():
        change = np.sqrt(ratio) if knob in ("cell_scale", "nucleus_scale") else ratio
        low, high = KNOB_BOUNDS[knob]
        values[knob] = float(np.clip(round(1.0 + (change - 1.0) / strength, 6), low, high))
    return values


def fit_model(effects: pd.DataFrame, target: pd.Series, moa: str, anchors: Mapping[str, float],
              baseline: Phenotype = DMSO_PHENOTYPE, ridge: float = 0.1) -> dict[str, float]:
    """The phenotype model of ``moa``: the ``anchors`` (knob -> value, from :func:`anchored_knobs`)
    and the cell-cycle knobs its mechanism sets (:data:`CELL_CYCLE_KNOBS`) as given, and the
    mechanism's other knobs (and the mitotic fraction, where the mechanism does not set it) fitted
    by :func:`fit_knobs` (bounds :func:`model_bounds`, ``ridge``) to what of ``target`` the given
    knobs' linearised ``effects`` leave."""
    kept = {**anchors, **{k: v for k, v in MECHANISMS[moa].items() if k in CELL_CYCLE_KNOBS}}
    moved = pd.Series({k: v - getattr(baseline, k) for k, v in kept.items()})
    residual = target - effects[list(kept)].reindex(target.index).fillna(0.0) @ moved
    rest = [k for k in model_knobs(moa) if k not in kept and k in effects.columns]
    fitted = fit_knobs(effects[rest], residual, baseline, ridge=ridge, bounds=model_bounds(moa, baseline)) if rest else {}
    return {**kept, **fitted}
