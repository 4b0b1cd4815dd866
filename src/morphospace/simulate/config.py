"""Settings of the synthetic screen (:class:`SimulateConfig`) and its ``cells`` and ``optics`` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from morphospace.config import Config
from morphospace.simulate.phenotypes import MAX_COMPOUNDS_PER_MOA, MOAS
from morphospace.simulate.structures import CELL_HEIGHT, DRUGS, NUCLEUS_HEIGHT, STRUCTURE_CHANNELS, STRUCTURES

__all__ = ["SimulateConfig", "CellsConfig", "OpticsConfig", "TransmittedConfig", "StructuresConfig", "DonorsConfig",
           "DONOR_CHANNELS", "MAX_WELLS", "SIMULATOR_OF_MODE", "check_simulation"]

MAX_WELLS = 384
DONOR_CHANNELS = ("DNA", "Actin", "Junctions")
"""Channels of ``mode: donors`` fields, in file order."""

SIMULATOR_OF_MODE = {"fluorescence": "simulate_screen", "transmitted": "simulate_screen",
                     "structures": "simulate_structures", "donors": "simulate_donors"}
"""The function of :mod:`morphospace.simulate` that renders each ``mode``."""

Range = tuple[float, float]


def _check_range(value: Range, low: float = 0.0, high: float = float("inf")) -> Range:
    if not low <= value[0] <= value[1] <= high:
        raise ValueError(f"expected {low} <= min <= max <= {high}, got {list(value)}")
    return value


class CellsConfig(Config):
    """Cell population of a DMSO field; treatments scale these (lengths in px)."""

    cell_diameter_px: Range = (58.0, 72.0)
    nucleus_diameter_px: Range = (30.0, 40.0)
    mitotic_diameter_px: Range = (40.0, 48.0)
    mitotic_fraction: float = Field(0.05, ge=0.0, le=1.0, description="baseline mitotic fraction")
    packing: float = Field(
        0.6, ge=0.4, le=1.5, description="minimum centre distance as a fraction of the summed radii"
    )
    clustering: float = Field(
        1.0, ge=0.0, le=1.0, description="chance that a cell is placed against an earlier one"
    )
    nucleus_margin_px: float = Field(
        2.0, ge=1.0, le=10.0, description="least distance from a nucleus to its cell's outline"
    )

    @field_validator("cell_diameter_px", "nucleus_diameter_px", "mitotic_diameter_px")
    @classmethod
    def _positive_range(cls, value: Range) -> Range:
        return _check_range(value, low=4.0, high=1000.0)

    @model_validator(mode="after")
    def _nucleus_fits(self) -> CellsConfig:
        if self.nucleus_diameter_px[1] > 0.7 * self.cell_diameter_px[0]:
            raise ValueError("nucleus_diameter_px max must be at most 0.7 x cell_diameter_px min")
        return self


class OpticsConfig(Config):
    """Image formation: blur, illumination, camera (intensities in photons or ADU)."""

    psf_sigma_px: float = Field(1.8, ge=0.0, le=5.0, description="Gaussian PSF sigma")
    brightness: float = Field(1.0, gt=0.0, le=20.0, description="multiplies every photon count")
    background: float = Field(40.0, ge=0.0, description="autofluorescence, photons per pixel")
    camera_gain: float = Field(1.0, gt=0.0, le=20.0, description="ADU per photo-electron")
    camera_offset: float = Field(200.0, ge=0.0, le=10000.0, description="ADU added to every pixel")
    read_noise: float = Field(4.0, ge=0.0, le=100.0, description="Gaussian read noise, ADU rms")
    vignetting: Range = Field((0.1, 0.3), description="per-plate fall-off at the farthest corner")
    vignetting_shift: float = Field(
        0.15, ge=0.0, le=0.5, description="largest offset of the illumination centre, fraction of field"
    )
    batch_gain_sd: float = Field(0.1, ge=0.0, le=1.0, description="log-normal sd of per-batch channel gains")

    @field_validator("vignetting")
    @classmethod
    def _fraction_range(cls, value: Range) -> Range:
        return _check_range(value, low=0.0, high=0.9)


class TransmittedConfig(Config):
    """Phase-contrast-like transmitted light (``mode: transmitted``); thickness in relative units."""

    cell_thickness: float = Field(0.35, gt=0.0, le=10.0, description="dome height of a spread interphase cell")
    mitotic_thickness: float = Field(1.2, gt=0.0, le=10.0, description="dome height of a rounded mitotic cell")
    nucleus_thickness: float = Field(0.6, ge=0.0, le=10.0, description="extra height of a nucleus")
    texture: float = Field(0.15, ge=0.0, le=1.0, description="relative amplitude of organelle texture")
    contrast: float = Field(0.25, gt=0.0, le=1.0, description="darkening per unit of thickness above its halo blur")
    halo_sigma_px: float = Field(6.0, gt=0.0, le=50.0, description="width of the bright halo around objects")
    photons: float = Field(3000.0, gt=0.0, description="background photons per pixel")
    unevenness: float = Field(0.12, ge=0.0, le=0.5, description="amplitude of the smooth background gradient")


class StructuresConfig(Config):
    """Single-cell crops with one tagged structure each (``mode: structures``); lengths in px.

    Every structure in ``structures`` is imaged in ``cells_per_condition`` cells under DMSO and
    under each drug in ``drugs``. Sizes are fractions so that any ``crop_size`` works: the cell's
    mean radius is ``cell_size`` x half the crop's smaller side, the nucleus's ``nucleus_size`` x
    the minor semi-axis of a cell drawn apart from its own (its own cell's if
    ``nucleus_size_follows_cell``; either way capped to fit), so that the membrane does not tell
    the nucleus's size. ``depth`` and ``z_step_px`` shape the 3D stacks (``dims: 3``);
    there the cell's z half-height is ``cell_height`` x a mean radius and the nucleus's
    ``nucleus_height`` x a minor semi-axis (at most 0.8 x the cell's), drawn apart so that the
    membrane does not tell the nucleus's height; the sizes they are fractions of are drawn apart
    from the cell's own unless ``heights_follow_sizes``, so that a height, which a stack shows only
    to its z step, is not told by the other channel's xy size. The nucleus's long axis is
    independent of the cell's unless ``nucleus_angle_sd`` ties it (sd about the cell's long axis,
    rad), for the same reason: the membrane would tell the axis along which the nucleoli lie.
    The coupling truth uses ``truth_cells`` DMSO cells per structure, ``truth_swaps`` reference
    swaps per cell and ``truth_samples`` structure draws for the expected structure image.
    ``aligned`` renders every crop in the frame of the Statistical Cell's preprocessing (nucleus
    centre at the crop centre, the cell's long axis along x, mirrored so the cell body lies
    towards +x and +y; :func:`~morphospace.simulate.structures.align_cell`); the truth is then
    that of the aligned crops.
    """

    structures: list[str] = Field(default_factory=lambda: list(STRUCTURES))
    drugs: list[str] = Field(default_factory=lambda: list(DRUGS))
    cells_per_condition: int = Field(32, ge=1, le=100000)
    crop_size: tuple[int, int] = (64, 64)
    depth: int = Field(16, ge=4, le=256, description="z slices of a 3D crop")
    z_step_px: float = Field(3.0, ge=1.0, le=20.0, description="z step in xy pixels (anisotropy)")
    cell_size: Range = (0.55, 0.75)
    elongation: Range = (1.0, 1.6)
    nucleus_size: Range = (0.5, 0.65)
    nucleus_size_follows_cell: bool = Field(
        False, description="the nucleus's xy size a fraction of its own cell's minor semi-axis; false: of a cell "
                           "drawn apart (capped to fit its own)")
    nucleus_offset: float = Field(0.6, ge=0.0, le=1.0, description="largest nucleus offset, fraction of the room")
    nucleus_angle_sd: float | None = Field(
        None, ge=0.0, le=3.2, description="sd (rad) of the nucleus's long axis about the cell's; null: uniform, "
                                          "independent of the cell's")
    cell_height: Range = CELL_HEIGHT
    nucleus_height: Range = NUCLEUS_HEIGHT
    heights_follow_sizes: bool = Field(
        False, description="3D: each z half-height a fraction of its own object's xy size (the cell's mean radius, "
                           "the nucleus's minor semi-axis); false: of sizes drawn apart from them")
    psf_sigma_px: float = Field(1.0, ge=0.0, le=5.0)
    noise_sd: float = Field(0.02, ge=0.0, le=1.0, description="Gaussian noise on the [0, 1] intensities")
    truth_cells: int = Field(16, ge=2, le=10000)
    truth_swaps: int = Field(4, ge=1, le=1000)
    truth_samples: int = Field(8, ge=1, le=1000)
    aligned: bool = False

    @field_validator("structures")
    @classmethod
    def _known_structures(cls, value: list[str]) -> list[str]:
        return _known_names(value, STRUCTURES, "structure")

    @field_validator("drugs")
    @classmethod
    def _known_drugs(cls, value: list[str]) -> list[str]:
        return _known_names(value, DRUGS, "drug", allow_empty=True)

    @field_validator("crop_size")
    @classmethod
    def _crop_fits(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 16 or max(value) > 1024:
            raise ValueError(f"expected (H, W) with 16 <= H, W <= 1024, got {list(value)}")
        return value

    @field_validator("cell_size", "nucleus_size")
    @classmethod
    def _fraction(cls, value: Range) -> Range:
        return _check_range(value, low=0.1, high=0.9)

    @field_validator("cell_height", "nucleus_height")
    @classmethod
    def _height_fraction(cls, value: Range) -> Range:
        return _check_range(value, low=0.1, high=1.0)

    @field_validator("elongation")
    @classmethod
    def _elongation(cls, value: Range) -> Range:
        return _check_range(value, low=1.0, high=3.0)


class DonorsConfig(Config):
    """Donors in two groups imaged as whole monolayer fields (``mode: donors``); lengths in px.

    ``donors_per_group`` healthy and as many disease donors, each in ``wells_per_donor`` wells of
    ``fields_per_well`` fields, the wells shuffled over ``plates`` plates. The disease donors'
    severities are spread evenly over ``severity`` (their order shuffled); a donor's cytoskeletal
    disruption (0 to 1, see :mod:`morphospace.simulate.monolayer`) is ``phenotype_strength`` x its
    severity, 0 for healthy donors. Every donor has its own nuisance drawn uniformly from the
    ranges (cell size, fibre spacing, healthy fibre alignment) and log-normal channel gains of sd
    ``donor_gain_sd``; each well adds gains of sd ``well_gain_sd`` and each plate those of
    ``optics.batch_gain_sd`` and its own vignetting.
    """

    donors_per_group: int = Field(8, ge=2, le=1000)
    wells_per_donor: int = Field(3, ge=1, le=384)
    severity: Range = (0.2, 1.0)
    phenotype_strength: float = Field(0.5, ge=0.0, le=1.0, description="disruption of a donor of severity 1")
    cell_diameter_px: Range = (40.0, 56.0)
    fibre_period_px: Range = (5.0, 8.0)
    alignment: Range = (0.5, 0.9)
    donor_gain_sd: float = Field(0.15, ge=0.0, le=1.0)
    well_gain_sd: float = Field(0.05, ge=0.0, le=1.0)

    @field_validator("severity", "alignment")
    @classmethod
    def _unit_range(cls, value: Range) -> Range:
        return _check_range(value, low=0.0, high=1.0)

    @field_validator("cell_diameter_px", "fibre_period_px")
    @classmethod
    def _length_range(cls, value: Range) -> Range:
        return _check_range(value, low=2.0, high=500.0)

    @property
    def n_donors(self) -> int:
        return 2 * self.donors_per_group


def _known_names(value: list[str], known, kind: str, allow_empty: bool = False) -> list[str]:
    unknown = [name for name in value if name not in known]
    if unknown:
        raise ValueError(f"unknown {kind}(s) {unknown}; choose from {list(known)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{kind}s listed twice: {value}")
    if not value and not allow_empty:
        raise ValueError(f"list at least one {kind}")
    return value


class SimulateConfig(Config):
    """A synthetic BBBC021-like screen.

    Every plate holds ``dmso_wells_per_plate`` DMSO wells and one well per treatment (each of the
    first ``compounds_per_moa`` compounds of every MoA in ``moas`` at ``concentrations`` doses),
    with ``fields_per_well`` fields of ``field_size`` x ``field_size`` px each. ``cells_per_field``
    is the Poisson mean of cells per field (set it in proportion when changing ``field_size``).
    ``pixel_size_um`` is recorded for downstream tools; the renderer works in pixels.
    ``mode: transmitted`` renders a transmitted-light image, DNA and a membrane stain instead of
    DNA, actin and tubulin (settings in ``transmitted``), for in-silico-labeling data.
    ``mode: donors`` renders endothelial monolayers of healthy and disease donors instead (DNA,
    Actin, Junctions; settings in ``donors``; ``plates``, ``field_size``, ``fields_per_well``,
    ``seed`` and ``optics`` apply, the treatment and cell settings do not).
    """

    seed: int = Field(0, ge=0)
    plates: int = Field(2, ge=1, le=1000)
    plates_per_batch: int = Field(1, ge=1)
    field_size: int = Field(256, ge=64, le=4096)
    fields_per_well: int = Field(1, ge=1, le=100)
    dmso_wells_per_plate: int = Field(4, ge=1, le=MAX_WELLS)
    compounds_per_moa: int = Field(2, ge=1, le=MAX_COMPOUNDS_PER_MOA)
    concentrations: int = Field(3, ge=1, le=8)
    moas: list[str] = Field(default_factory=lambda: list(MOAS))
    cells_per_field: float = Field(22.0, ge=0.0, le=1000.0)
    pixel_size_um: float = Field(0.65, gt=0.0)
    cells: CellsConfig = Field(default_factory=CellsConfig)
    optics: OpticsConfig = Field(default_factory=OpticsConfig)
    mode: Literal["fluorescence", "transmitted", "structures", "donors"] = "fluorescence"
    transmitted: TransmittedConfig = Field(default_factory=TransmittedConfig)
    dims: Literal[2, 3] = Field(2, description="2: (H, W) crops; 3: (D, H, W) stacks (mode: structures only)")
    structures: StructuresConfig = Field(default_factory=StructuresConfig)
    donors: DonorsConfig = Field(default_factory=DonorsConfig)

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names of the rendered fields, in file order."""
        if self.mode == "structures":
            return STRUCTURE_CHANNELS
        if self.mode == "donors":
            return DONOR_CHANNELS
        return ("Transmitted", "DNA", "Membrane") if self.mode == "transmitted" else ("DNA", "Actin", "Tubulin")

    def with_field_size(self, field_size: int) -> SimulateConfig:
        """This config with ``field_size`` and ``cells_per_field`` scaled with the field's area
        (the same cell density).

        >>> SimulateConfig().with_field_size(512).cells_per_field
        88.0
        """
        cells = self.cells_per_field * (field_size / self.field_size) ** 2
        return self.model_validate({**self.model_dump(), "field_size": field_size, "cells_per_field": cells})

    @field_validator("moas")
    @classmethod
    def _known_moas(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in MOAS]
        if unknown:
            raise ValueError(f"unknown MoA(s) {unknown}; choose from {list(MOAS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"MoAs listed twice: {value}")
        return value

    @property
    def wells_per_plate(self) -> int:
        """DMSO wells plus one well per treatment; ``mode: donors``: the most donor wells on a plate."""
        if self.mode == "donors":
            return -(-self.donors.n_donors * self.donors.wells_per_donor // self.plates)
        return self.dmso_wells_per_plate + len(self.moas) * self.compounds_per_moa * self.concentrations

    @field_validator("dims")
    @classmethod
    def _dims_need_structures(cls, value: int, info: ValidationInfo) -> int:
        if value == 3 and info.data.get("mode") != "structures":
            raise ValueError("3 needs mode: structures (screens are 2D)")
        return value

    @model_validator(mode="after")
    def _fits_plate(self) -> SimulateConfig:
        if self.wells_per_plate > MAX_WELLS:
            raise ValueError(
                f"{self.wells_per_plate} wells per plate exceed a {MAX_WELLS}-well plate; "
                + ("use more plates, fewer donors or fewer wells per donor" if self.mode == "donors" else
                   "use fewer DMSO wells, MoAs, compounds or concentrations")
            )
        return self


def check_simulation(config: SimulateConfig, simulator: str, workers: int) -> None:
    """Raise ValueError, before any work, when ``simulator`` (a name in :data:`SIMULATOR_OF_MODE`)
    does not render ``config.mode`` or ``workers`` < 1.

    >>> check_simulation(SimulateConfig(mode="donors"), "simulate_screen", 1)
    Traceback (most recent call last):
    ...
    ValueError: simulate_screen does not render mode: donors; use simulate_donors
    """
    wanted = SIMULATOR_OF_MODE[config.mode]
    if wanted != simulator:
        raise ValueError(f"{simulator} does not render mode: {config.mode}; use {wanted}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
