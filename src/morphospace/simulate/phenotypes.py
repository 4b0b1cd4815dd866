"""Mechanisms of action, compounds, dose-response and the phenotype parameters they shift.

Everything here is data: a :class:`Phenotype` holds every knob the renderer reads, the DMSO
baseline is :data:`DMSO_PHENOTYPE`, :data:`MECHANISMS` names, per mechanism of action, the knobs
its biology moves and which way, and :data:`MOA_EFFECTS` lists the values its knobs take at full
strength (knobs not listed keep the baseline). A treatment of
strength ``s`` in [0, 1] renders with ``baseline + s * (full - baseline)`` for every knob, so a weak
dose looks between DMSO and the full phenotype.

The full-strength values were fitted to real BBBC021 cells (stain-normalised per plate), one
compound per MoA (named beside each entry: the compound with the most of the 1,000 all-MoA crops),
by ``benchmarks/calibrate_simulator.py`` (see :mod:`morphospace.simulate.calibrate`): cell and
nucleus size and DNA, actin and tubulin brightness from the real median ratios to DMSO; cell-cycle
arrest as :data:`MECHANISMS` defines it; the mechanism's other knobs, in the direction
:data:`MECHANISMS` gives them, by least squares on the real feature shift. Knobs the fit left at the
baseline are not listed in :data:`MOA_EFFECTS` (the aggresome of protein degradation, for one: these
crops' features did not call for it) but stay in :data:`MECHANISMS`, so a refit on other data may
move them. The other compounds of each MoA are held out for ``benchmarks/simulator_realism.py``.

Each compound has its own Hill curve (``ec50_um``, ``hill``, ``emax``); its doses form a
three-fold dilution series whose top dose is three times its EC50, so with three doses the
strengths are roughly 0.1, 0.5 and 0.9 times ``emax``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "CONTROL",
    "MOAS",
    "COMPOUNDS",
    "MAX_COMPOUNDS_PER_MOA",
    "Compound",
    "Phenotype",
    "DMSO_PHENOTYPE",
    "MECHANISMS",
    "MOA_EFFECTS",
    "Treatment",
    "DMSO",
    "dose_series",
    "phenotype_for",
    "treatments_for",
    "default_treatment",
]

CONTROL = "DMSO"

MOAS: tuple[str, ...] = (
    "Actin disruptors",
    "Aurora kinase inhibitors",
    "Cholesterol-lowering",
    "DNA damage",
    "DNA replication",
    "Eg5 inhibitors",
    "Epithelial",
    "Kinase inhibitors",
    "Microtubule destabilizers",
    "Microtubule stabilizers",
    "Protein degradation",
    "Protein synthesis",
)


@dataclass(frozen=True)
class Compound:
    """A compound with a Hill dose-response: ``emax * c**hill / (c**hill + ec50_um**hill)``."""

    name: str
    moa: str
    ec50_um: float
    hill: float
    emax: float

    def strength(self, concentration_um: float) -> float:
        """Phenotype strength in [0, emax] at ``concentration_um`` (micromolar)."""
        if concentration_um <= 0:
            return 0.0
        ratio = (concentration_um / self.ec50_um) ** self.hill
        return self.emax * ratio / (1.0 + ratio)


def _compounds(moa: str, *rows: tuple[str, float, float, float]) -> tuple[Compound, ...]:
    return tuple(Compound(name, moa, ec50, hill, emax) for name, ec50, hill, emax in rows)


# Names follow BBBC021 where it has enough compounds; atorvastatin and monastrol are real
# members of their class that BBBC021 lacks. Order matters: ``compounds_per_moa=k`` takes the
# first k of each MoA.
COMPOUNDS: Mapping[str, tuple[Compound, ...]] = MappingProxyType(
    {
        "Actin disruptors": _compounds(
            "Actin disruptors",
            ("cytochalasin B", 3.0, 2.0, 1.0),
            ("latrunculin B", 0.3, 2.5, 0.95),
            ("cytochalasin D", 0.1, 1.8, 0.9),
        ),
        "Aurora kinase inhibitors": _compounds(
            "Aurora kinase inhibitors",
            ("AZ258", 0.3, 2.0, 1.0),
            ("AZ841", 0.1, 1.8, 0.9),
            ("AZ-A", 1.0, 2.2, 0.85),
        ),
        "Cholesterol-lowering": _compounds(
            "Cholesterol-lowering",
            ("lovastatin", 5.0, 1.6, 1.0),
            ("simvastatin", 3.0, 1.8, 0.9),
            ("atorvastatin", 2.0, 1.5, 0.85),
        ),
        "DNA damage": _compounds(
            "DNA damage",
            ("etoposide", 3.0, 2.0, 1.0),
            ("cisplatin", 10.0, 1.7, 0.9),
            ("chlorambucil", 30.0, 1.6, 0.85),
        ),
        "DNA replication": _compounds(
            "DNA replication",
            ("camptothecin", 0.3, 2.0, 1.0),
            ("floxuridine", 3.0, 1.8, 0.9),
            ("methotrexate", 1.0, 1.6, 0.85),
        ),
        "Eg5 inhibitors": _compounds(
            "Eg5 inhibitors",
            ("AZ-C", 0.1, 2.5, 1.0),
            ("AZ138", 0.3, 2.0, 0.95),
            ("monastrol", 30.0, 1.8, 0.85),
        ),
        "Epithelial": _compounds(
            "Epithelial",
            ("PP-2", 3.0, 1.8, 1.0),
            ("AZ-J", 1.0, 2.0, 0.9),
            ("AZ-U", 3.0, 1.6, 0.85),
        ),
        "Kinase inhibitors": _compounds(
            "Kinase inhibitors",
            ("PD-169316", 3.0, 1.8, 1.0),
            ("alsterpaullone", 1.0, 2.0, 0.9),
            ("bryostatin", 0.1, 1.6, 0.85),
        ),
        "Microtubule destabilizers": _compounds(
            "Microtubule destabilizers",
            ("nocodazole", 0.3, 2.2, 1.0),
            ("vincristine", 0.03, 2.0, 0.95),
            ("colchicine", 0.1, 2.0, 0.9),
        ),
        "Microtubule stabilizers": _compounds(
            "Microtubule stabilizers",
            ("taxol", 0.1, 2.0, 1.0),
            ("docetaxel", 0.03, 2.2, 0.95),
            ("epothilone B", 0.03, 1.8, 0.9),
        ),
        "Protein degradation": _compounds(
            "Protein degradation",
            ("MG-132", 1.0, 2.0, 1.0),
            ("lactacystin", 3.0, 1.8, 0.9),
            ("ALLN", 10.0, 1.6, 0.85),
        ),
        "Protein synthesis": _compounds(
            "Protein synthesis",
            ("cycloheximide", 3.0, 2.0, 1.0),
            ("emetine", 0.3, 2.0, 0.95),
            ("anisomycin", 0.3, 1.8, 0.9),
        ),
    }
)

MAX_COMPOUNDS_PER_MOA = min(len(compounds) for compounds in COMPOUNDS.values())


@dataclass(frozen=True)
class Phenotype:
    """Every rendering knob; lengths are relative to the configured sizes, counts are means.

    Geometry: ``cell_scale`` and ``nucleus_scale`` multiply radii; ``*_elongation`` is the mean
    major/minor axis ratio; ``cell_irregularity`` the amplitude of the outline's Fourier harmonics.
    Cell cycle: fractions of cells that are mitotic, multinucleate (interphase, 2-4 small nuclei) or
    polyploid (interphase, one large nucleus with more DNA; at most ``1 - multinucleate_fraction``
    of the interphase cells), and of mitoses that are monopolar. DNA: relative brightness, texture
    amplitude and coarseness (0 fine, 1 coarse), nucleoli per nucleus and their darkening, bright
    foci per nucleus. Actin: diffuse and cortical brightness, stress fibres per cell and their
    angular spread (rad), puncta per cell. Tubulin: diffuse brightness, microtubule density (1 =
    baseline count), bundle width (px), brightness and curvature (rad per 0.8 px step), perinuclear
    aggresome brightness.
    """

    cell_scale: float = 1.0
    cell_elongation: float = 1.4
    cell_irregularity: float = 0.08
    nucleus_scale: float = 1.0
    nucleus_elongation: float = 1.2
    mitotic_fraction: float = 0.05
    monopolar_fraction: float = 0.0
    multinucleate_fraction: float = 0.0
    polyploid_fraction: float = 0.0
    dna_level: float = 1.0
    chromatin_texture: float = 0.15
    chromatin_coarseness: float = 0.0
    nucleoli: float = 2.5
    nucleolus_contrast: float = 0.3
    dna_foci: float = 0.0
    actin_level: float = 1.0
    cortical_actin: float = 1.0
    stress_fibres: float = 6.0
    fibre_spread: float = 0.2
    actin_puncta: float = 0.0
    tubulin_level: float = 1.0
    microtubules: float = 1.0
    microtubule_width: float = 0.5
    microtubule_brightness: float = 1.0
    microtubule_curvature: float = 0.04
    aggresome: float = 0.0

    def toward(self, target: Phenotype, strength: float) -> Phenotype:
        """Linear interpolation: ``self`` at strength 0, ``target`` at strength 1."""
        values = {
            f.name: getattr(self, f.name) + strength * (getattr(target, f.name) - getattr(self, f.name))
            for f in dataclasses.fields(self)
        }
        return Phenotype(**values)


DMSO_PHENOTYPE = Phenotype()

MECHANISMS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "Actin disruptors": MappingProxyType(
            {"cell_scale": 0.85, "cell_irregularity": 0.2, "actin_level": 0.8, "cortical_actin": 0.3,
             "stress_fibres": 0.0, "actin_puncta": 25.0}
        ),
        "Aurora kinase inhibitors": MappingProxyType(
            {"cell_scale": 1.25, "multinucleate_fraction": 0.3, "polyploid_fraction": 0.5, "mitotic_fraction": 0.01}
        ),
        "Cholesterol-lowering": MappingProxyType(
            {"cortical_actin": 0.7, "cell_irregularity": 0.17, "tubulin_level": 1.35, "nucleus_elongation": 1.5}
        ),
        "DNA damage": MappingProxyType(
            {"nucleus_scale": 1.35, "cell_scale": 1.15, "dna_level": 1.15, "chromatin_texture": 0.3,
             "dna_foci": 8.0, "mitotic_fraction": 0.01}
        ),
        "DNA replication": MappingProxyType(
            {"nucleus_scale": 0.85, "nucleus_elongation": 1.05, "dna_level": 0.85, "chromatin_texture": 0.35,
             "chromatin_coarseness": 1.0, "nucleoli": 4.5, "nucleolus_contrast": 0.65, "mitotic_fraction": 0.0}
        ),
        "Eg5 inhibitors": MappingProxyType({"mitotic_fraction": 0.55, "monopolar_fraction": 1.0}),
        "Epithelial": MappingProxyType(
            {"cell_scale": 0.9, "cell_elongation": 1.08, "cell_irregularity": 0.04, "cortical_actin": 1.7,
             "stress_fibres": 1.5}
        ),
        "Kinase inhibitors": MappingProxyType(
            {"cell_scale": 1.1, "cell_elongation": 2.1, "nucleus_elongation": 1.5, "stress_fibres": 11.0,
             "fibre_spread": 0.08, "microtubule_curvature": 0.015}
        ),
        "Microtubule destabilizers": MappingProxyType(
            {"cell_scale": 0.85, "cell_elongation": 1.05, "mitotic_fraction": 0.3, "microtubules": 0.0,
             "tubulin_level": 1.8}
        ),
        "Microtubule stabilizers": MappingProxyType(
            {"mitotic_fraction": 0.35, "microtubules": 0.7, "microtubule_width": 1.4, "microtubule_brightness": 2.2,
             "microtubule_curvature": 0.09, "tubulin_level": 0.6}
        ),
        "Protein degradation": MappingProxyType(
            {"aggresome": 1.0, "nucleus_scale": 1.1, "dna_level": 0.9, "actin_level": 1.3, "mitotic_fraction": 0.08}
        ),
        "Protein synthesis": MappingProxyType(
            {"cell_scale": 0.72, "nucleus_scale": 0.9, "dna_level": 0.8, "actin_level": 0.55, "cortical_actin": 0.6,
             "stress_fibres": 3.0, "tubulin_level": 0.55, "microtubules": 0.6}
        ),
    }
)
"""Per mechanism of action, the knobs its biology moves and a value showing which way (the
simulator's first, hand-set phenotype models): the fit (:mod:`morphospace.simulate.calibrate`)
moves these knobs only, each on this side of the baseline (sizes and brightness excepted: the data
set them), and keeps the cell-cycle fractions given here. Aurora kinase inhibition fails
cytokinesis: some cells keep 2-4 nuclei, and more re-replicate into one large polyploid nucleus
(nucleus-centred crops of all three BBBC021 Aurora compounds show larger nuclei holding more DNA)."""

MOA_EFFECTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "Actin disruptors": MappingProxyType(  # fitted to latrunculin B
            {"cell_scale": 0.6, "nucleus_scale": 0.774, "dna_level": 1.585, "actin_level": 1.195,
             "tubulin_level": 2.596, "cell_irregularity": 0.244, "cortical_actin": 0.65, "stress_fibres": 2.542,
             "actin_puncta": 36.652, "mitotic_fraction": 0.203}
        ),
        "Aurora kinase inhibitors": MappingProxyType(  # fitted to AZ-A
            {"cell_scale": 1.272, "nucleus_scale": 1.5, "dna_level": 0.895, "actin_level": 0.694,
             "tubulin_level": 1.308, "multinucleate_fraction": 0.3, "mitotic_fraction": 0.01,
             "polyploid_fraction": 0.6}
        ),
        "Cholesterol-lowering": MappingProxyType(  # fitted to mevinolin/lovastatin
            {"cell_scale": 0.801, "nucleus_scale": 0.701, "dna_level": 1.587, "actin_level": 2.521,
             "tubulin_level": 2.945, "cortical_actin": 0.85, "cell_irregularity": 0.129, "nucleus_elongation": 1.35}
        ),
        "DNA damage": MappingProxyType(  # fitted to mitomycin C
            {"cell_scale": 1.071, "nucleus_scale": 1.216, "dna_level": 1.249, "actin_level": 1.225,
             "tubulin_level": 1.096, "mitotic_fraction": 0.01, "chromatin_texture": 0.225, "dna_foci": 4.0}
        ),
        "DNA replication": MappingProxyType(  # fitted to camptothecin
            {"cell_scale": 1.315, "nucleus_scale": 1.193, "dna_level": 1.073, "actin_level": 1.904,
             "mitotic_fraction": 0.0, "nucleus_elongation": 1.0, "chromatin_texture": 0.25,
             "chromatin_coarseness": 0.5, "nucleoli": 3.5, "nucleolus_contrast": 0.475}
        ),
        "Eg5 inhibitors": MappingProxyType(  # fitted to AZ-C
            {"cell_scale": 0.788, "nucleus_scale": 0.715, "dna_level": 2.274, "actin_level": 3.0,
             "tubulin_level": 3.0, "mitotic_fraction": 0.55, "monopolar_fraction": 1.0}
        ),
        "Epithelial": MappingProxyType(  # fitted to AZ-U
            {"cell_scale": 0.6, "nucleus_scale": 0.629, "dna_level": 1.299, "actin_level": 1.88,
             "tubulin_level": 1.515, "cell_elongation": 1.24, "cell_irregularity": 0.06, "cortical_actin": 1.532,
             "stress_fibres": 3.75, "mitotic_fraction": 0.306}
        ),
        "Kinase inhibitors": MappingProxyType(  # fitted to alsterpaullone
            {"cell_scale": 0.8, "nucleus_scale": 0.96, "actin_level": 1.093, "tubulin_level": 1.25,
             "cell_elongation": 1.75, "nucleus_elongation": 1.35, "stress_fibres": 14.078, "fibre_spread": 0.14,
             "microtubule_curvature": 0.028, "mitotic_fraction": 0.086}
        ),
        "Microtubule destabilizers": MappingProxyType(  # fitted to vincristine
            {"cell_scale": 0.647, "nucleus_scale": 1.054, "dna_level": 1.247, "actin_level": 3.0,
             "tubulin_level": 2.197, "mitotic_fraction": 0.3, "cell_elongation": 1.225, "microtubules": 0.5}
        ),
        "Microtubule stabilizers": MappingProxyType(  # fitted to taxol
            {"cell_scale": 0.6, "nucleus_scale": 0.765, "dna_level": 1.603, "actin_level": 3.0,
             "tubulin_level": 3.0, "mitotic_fraction": 0.35, "microtubules": 0.85, "microtubule_width": 0.95,
             "microtubule_brightness": 4.0, "microtubule_curvature": 0.065}
        ),
        "Protein degradation": MappingProxyType(  # fitted to proteasome inhibitor I
            {"cell_scale": 1.261, "nucleus_scale": 1.304, "actin_level": 1.461, "tubulin_level": 1.535,
             "mitotic_fraction": 0.08, "aggresome": 0.5}
        ),
        "Protein synthesis": MappingProxyType(  # fitted to emetine
            {"cell_scale": 0.754, "dna_level": 1.477, "actin_level": 2.938, "tubulin_level": 2.782,
             "cortical_actin": 0.8, "stress_fibres": 0.628, "microtubules": 0.8, "mitotic_fraction": 0.247}
        ),
    }
)


def phenotype_for(moa: str, strength: float, baseline: Phenotype = DMSO_PHENOTYPE) -> Phenotype:
    """The phenotype of ``moa`` at ``strength`` in [0, 1]; DMSO (or strength 0) gives ``baseline``."""
    if moa == CONTROL:
        return baseline
    if moa not in MOA_EFFECTS:
        raise ValueError(f"unknown mechanism of action {moa!r}; expected one of {MOAS}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"phenotype strength must lie in [0, 1], got {strength}")
    full = dataclasses.replace(baseline, **MOA_EFFECTS[moa])
    return baseline.toward(full, strength)


@dataclass(frozen=True)
class Treatment:
    """What a well received: compound (``"DMSO"`` for control), its MoA, dose (uM) and strength."""

    compound: str
    moa: str
    concentration: float
    strength: float

    @property
    def is_control(self) -> bool:
        return self.moa == CONTROL


DMSO = Treatment(CONTROL, CONTROL, 0.0, 0.0)


def _round_significant(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def dose_series(compound: Compound, count: int) -> tuple[float, ...]:
    """``count`` doses (uM, ascending): three-fold dilutions ending at 3 x EC50, 3 significant digits."""
    top_exponent = 1
    return tuple(
        _round_significant(compound.ec50_um * 3.0 ** (top_exponent - (count - 1) + k)) for k in range(count)
    )


def treatments_for(moas: tuple[str, ...] | list[str], compounds_per_moa: int, concentrations: int) -> list[Treatment]:
    """Every compound treatment of a plate, in MoA, compound, ascending-dose order (no DMSO)."""
    result = []
    for moa in moas:
        for compound in COMPOUNDS[moa][:compounds_per_moa]:
            for dose in dose_series(compound, concentrations):
                result.append(Treatment(compound.name, moa, dose, compound.strength(dose)))
    return result


def default_treatment(moa: str = CONTROL, strength: float | None = None) -> Treatment:
    """DMSO, or the MoA's first compound: at its top dose, or at ``strength`` (dose then NaN)."""
    if moa == CONTROL:
        return DMSO
    if moa not in COMPOUNDS:
        raise ValueError(f"unknown mechanism of action {moa!r}; expected {CONTROL!r} or one of {MOAS}")
    compound = COMPOUNDS[moa][0]
    if strength is not None:
        return Treatment(compound.name, moa, math.nan, float(strength))
    dose = dose_series(compound, 1)[0]
    return Treatment(compound.name, moa, dose, compound.strength(dose))
