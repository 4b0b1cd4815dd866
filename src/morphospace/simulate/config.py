"""Settings of the synthetic screen (:class:`SimulateConfig`) and its ``cells`` and ``optics`` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from morphospace.config import Config
from morphospace.simulate.phenotypes import MAX_COMPOUNDS_PER_MOA, MOAS

__all__ = ["SimulateConfig", "CellsConfig", "OpticsConfig", "TransmittedConfig", "MAX_WELLS"]

MAX_WELLS = 384

Range = tuple[float, float]


def _check_range(value: Range, low: float = 0.0, high: float = float("inf")) -> Range:
    if not low <= value[0] <= value[1] <= high:
        raise ValueError(f"expected {low} <= min <= max <= {high}, got {list(value)}")
    return value


class CellsConfig(Config):
    """Cell population of a DMSO field; treatments scale these (lengths in px)."""

    cell_diameter_px: Range = (40.0, 55.0)
    nucleus_diameter_px: Range = (16.0, 22.0)
    mitotic_diameter_px: Range = (28.0, 34.0)
    mitotic_fraction: float = Field(0.05, ge=0.0, le=1.0, description="baseline mitotic fraction")
    packing: float = Field(
        0.8, ge=0.4, le=1.5, description="minimum centre distance as a fraction of the summed radii"
    )
    clustering: float = Field(
        0.5, ge=0.0, le=1.0, description="chance that a cell is placed against an earlier one"
    )
    nucleus_margin_px: float = Field(
        3.0, ge=1.0, le=10.0, description="least distance from a nucleus to its cell's outline"
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

    psf_sigma_px: float = Field(1.0, ge=0.0, le=5.0, description="Gaussian PSF sigma")
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


class SimulateConfig(Config):
    """A synthetic BBBC021-like screen.

    Every plate holds ``dmso_wells_per_plate`` DMSO wells and one well per treatment (each of the
    first ``compounds_per_moa`` compounds of every MoA in ``moas`` at ``concentrations`` doses),
    with ``fields_per_well`` fields of ``field_size`` x ``field_size`` px each. ``cells_per_field``
    is the Poisson mean of cells per field (set it in proportion when changing ``field_size``).
    ``pixel_size_um`` is recorded for downstream tools; the renderer works in pixels.
    ``mode: transmitted`` renders a transmitted-light image, DNA and a membrane stain instead of
    DNA, actin and tubulin (settings in ``transmitted``), for in-silico-labeling data.
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
    cells_per_field: float = Field(14.0, ge=0.0, le=1000.0)
    pixel_size_um: float = Field(0.65, gt=0.0)
    cells: CellsConfig = Field(default_factory=CellsConfig)
    optics: OpticsConfig = Field(default_factory=OpticsConfig)
    mode: Literal["fluorescence", "transmitted"] = "fluorescence"
    transmitted: TransmittedConfig = Field(default_factory=TransmittedConfig)

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names of the rendered fields, in file order."""
        return ("Transmitted", "DNA", "Membrane") if self.mode == "transmitted" else ("DNA", "Actin", "Tubulin")

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
        """DMSO wells plus one well per treatment."""
        return self.dmso_wells_per_plate + len(self.moas) * self.compounds_per_moa * self.concentrations

    @model_validator(mode="after")
    def _fits_plate(self) -> SimulateConfig:
        if self.wells_per_plate > MAX_WELLS:
            raise ValueError(
                f"{self.wells_per_plate} wells per plate exceed a {MAX_WELLS}-well plate; "
                "use fewer DMSO wells, MoAs, compounds or concentrations"
            )
        return self
