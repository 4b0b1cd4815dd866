"""A synthetic high-content screen in the BBBC021 mould, with exact ground truth.

MCF-7-like cells in three channels (DNA, Actin, Tubulin), DMSO controls and the 12 BBBC021
mechanisms of action, each as compounds with a dose-response. :func:`simulate_field` renders one
field in memory; :func:`simulate_screen` writes plates of fields, a manifest and truth tables.

Modules: ``config`` (settings), ``phenotypes`` (MoAs, compounds, dose-response, phenotype knobs),
``population`` (cell states and shapes), ``geometry`` (outlines, placement, rasterisation),
``layout`` (truth label images), ``compartments`` (fluorophore maps), ``optics`` (PSF,
vignetting, gains, camera noise), ``field`` (one field), ``screen`` (plates, files, workers),
``seeds`` (per-plate, per-batch and per-field random streams), ``truth`` (the truth row of each
crop prepared from a screen), ``cell_crops`` (nucleus-centred crops cut straight from rendered
fields, as BBBC021's public crops were cut), ``calibrate`` (fitting phenotype models to measured
feature shifts).

``mode: structures`` instead writes single-cell crops (Membrane, DNA and one of six tagged
structures, 2D or 3D, under DMSO and drugs that shift named structures) straight into a crop store
with the coupling and drug truth: ``structures`` (cell shapes, placement rules, drugs, rendering)
and ``structure_crops`` (jobs, store, truth; :func:`simulate_structures`).

``mode: donors`` writes whole fields of endothelial-like monolayers (DNA, Actin, Junctions) from
healthy and disease donors, the disease donors with a graded cytoskeletal phenotype, every donor
with its own nuisance, and the truth (group, severity): ``monolayer`` (one field) and ``donors``
(donors, layout, files; :func:`simulate_donors`).

:func:`simulate` renders any config with the simulator of its mode (``run``).

Examples
--------
>>> from morphospace.simulate import SimulateConfig, simulate_field
>>> field = simulate_field(SimulateConfig(field_size=128, cells_per_field=4), seed=1, moa="Eg5 inhibitors")
>>> field.channels.shape
(3, 128, 128)
"""

from morphospace.simulate.config import CellsConfig, DonorsConfig, OpticsConfig, SimulateConfig, StructuresConfig
from morphospace.simulate.donors import SimulatedDonors, simulate_donors
from morphospace.simulate.field import CHANNELS, SimulatedField, simulate_field
from morphospace.simulate.phenotypes import COMPOUNDS, CONTROL, MOAS, Compound, Treatment
from morphospace.simulate.run import simulate
from morphospace.simulate.screen import SimulatedScreen, simulate_screen
from morphospace.simulate.structure_crops import SimulatedStructures, simulate_structures
from morphospace.simulate.structures import DRUGS, STRUCTURES

__all__ = [
    "CHANNELS",
    "COMPOUNDS",
    "DRUGS",
    "CONTROL",
    "MOAS",
    "STRUCTURES",
    "CellsConfig",
    "Compound",
    "DonorsConfig",
    "OpticsConfig",
    "SimulateConfig",
    "SimulatedField",
    "SimulatedDonors",
    "SimulatedScreen",
    "SimulatedStructures",
    "StructuresConfig",
    "Treatment",
    "simulate",
    "simulate_donors",
    "simulate_field",
    "simulate_screen",
    "simulate_structures",
]
