"""One entry for every mode: :func:`simulate` renders a config with the simulator of its ``mode``."""

from __future__ import annotations

import os

from morphospace.simulate.config import SIMULATOR_OF_MODE, SimulateConfig
from morphospace.simulate.donors import SimulatedDonors, simulate_donors
from morphospace.simulate.screen import SimulatedScreen, simulate_screen
from morphospace.simulate.structure_crops import SimulatedStructures, simulate_structures

__all__ = ["simulate"]

_SIMULATORS = {"simulate_screen": simulate_screen, "simulate_structures": simulate_structures,
               "simulate_donors": simulate_donors}


def simulate(config: SimulateConfig, out: str | os.PathLike, workers: int = 1, progress: bool = True,
             overwrite: bool = False, scheduler: str | None = None
             ) -> SimulatedScreen | SimulatedStructures | SimulatedDonors:
    """Render ``config`` into ``out`` with the simulator of ``config.mode``
    (:data:`~morphospace.simulate.config.SIMULATOR_OF_MODE`); its ``summary()`` says what was written."""
    simulator = _SIMULATORS[SIMULATOR_OF_MODE[config.mode]]
    return simulator(config, out, workers=workers, progress=progress, overwrite=overwrite, scheduler=scheduler)
