"""Single cells with a membrane, DNA and one tagged structure, placed by known rules.

A cell is a crop centred on its cell body: the membrane is an ellipse (2D) or a flattened
ellipsoid (3D) at the crop centre, the nucleus a smaller one offset inside it. :func:`align_cell`
moves a cell into the frame of the Statistical Cell's preprocessing instead (nucleus at the crop
centre, the cell's long axis along x, mirrored so that the cell body lies towards +x and +y).
Each structure follows its own placement rule (:data:`STRUCTURES`), so the membrane and DNA channels tell more
or less about where it is; drugs (:data:`DRUGS`) change named structures and leave the cell and
nucleus shapes alone.

Coordinates are pixels from the crop centre, ordered ``(z, y, x)`` in 3D and ``(y, x)`` in 2D;
z is measured in xy pixels (a z slice is ``z_step_px`` pixels thick). Intensities lie in [0, 1].

Examples
--------
>>> import numpy as np
>>> grid = CropGrid((32, 32))
>>> cell = sample_cell(np.random.default_rng(0), grid, (0.6, 0.7), (1.0, 1.2), (0.5, 0.6), 0.5)
>>> render_cell(cell, "Nucleoli", None, grid, np.random.default_rng(1), psf_sigma_px=1.0, noise_sd=0.0).shape
(3, 32, 32)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy import ndimage

__all__ = [
    "STRUCTURE_CHANNELS",
    "STRUCTURES",
    "DRUGS",
    "CONTROL_DRUG",
    "Drug",
    "Ellipsoid",
    "CellShape",
    "CropGrid",
    "sample_cell",
    "CELL_HEIGHT",
    "NUCLEUS_HEIGHT",
    "align_cell",
    "render_reference",
    "render_structure",
    "render_cell",
    "golgi_heading",
    "golgi_ribbon",
    "nucleus_offset_along_axis",
    "cell_masks",
    "blur",
]

STRUCTURE_CHANNELS = ("Membrane", "DNA", "Structure")
CONTROL_DRUG = "DMSO"

STRUCTURES: dict[str, str] = {
    "NuclearEnvelope": "a thin rim on the nucleus surface (fixed by the DNA shape)",
    "Nucleoli": "2-3 round blobs spread along the nucleus's long axis, slightly jittered",
    "Cortex": "a band under the membrane with patchy brightness (fixed by the membrane shape)",
    "Mitochondria": "short tubules at random places in the cytoplasm (outside the nucleus, inside the cell)",
    "Golgi": "a ribbon hugging the nucleus on the side of the cell's long axis with more room, angle jittered",
    "Puncta": "6-11 dots anywhere in the crop, independent of the cell",
}
"""Structure name -> placement rule."""


@dataclass(frozen=True)
class Drug:
    """A treatment: its dose and the effect it has on each structure it shifts."""

    concentration_um: float
    effects: dict[str, str]


DRUGS: dict[str, Drug] = {
    "GolgiDisperser": Drug(1.0, {"Golgi": "the ribbon breaks into dots scattered through the cytoplasm"}),
    "NucleolarEnlarger": Drug(1.0, {"Nucleoli": "blobs 1.7x wider"}),
    "CortexThickener": Drug(1.0, {"Cortex": "band 2.5x thicker"}),
}
"""Drug name -> dose and effects; DMSO (:data:`CONTROL_DRUG`) is the untreated control."""


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipse in (y, x) with a z half-height and z centre (used in 3D only); px and radians."""

    centre: tuple[float, float]
    major: float
    minor: float
    angle: float
    height: float
    z: float = 0.0

    def radius_toward(self, direction: float) -> float:
        """Distance from the centre to the outline along ``direction`` (radians) in the xy plane."""
        t = direction - self.angle
        return float(1.0 / np.hypot(np.cos(t) / self.major, np.sin(t) / self.minor))

    @property
    def mean_radius(self) -> float:
        return 0.5 * (self.major + self.minor)


@dataclass(frozen=True)
class CellShape:
    """The reference geometry of one cell: membrane outline and nucleus (crop coordinates)."""

    membrane: Ellipsoid
    nucleus: Ellipsoid


class CropGrid:
    """Pixel coordinates of a crop, ``(D, H, W)`` or ``(H, W)``, relative to its centre (px)."""

    def __init__(self, shape: tuple[int, ...], z_step_px: float = 1.0) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.z_step_px = float(z_step_px)
        axes = [np.arange(n) - (n - 1) / 2.0 for n in self.shape]
        if len(self.shape) == 3:
            axes[0] = axes[0] * self.z_step_px
        self.coords = np.meshgrid(*axes, indexing="ij")

    @property
    def is_3d(self) -> bool:
        return len(self.shape) == 3

    @property
    def half_extent(self) -> np.ndarray:
        """Half the crop size per axis, px (z in xy pixels)."""
        sizes = np.array(self.shape, dtype=float)
        if self.is_3d:
            sizes[0] *= self.z_step_px
        return sizes / 2.0

    def normalized_radius(self, shape: Ellipsoid) -> np.ndarray:
        """1 on the outline of ``shape``, < 1 inside, per pixel."""
        y, x = self.coords[-2] - shape.centre[0], self.coords[-1] - shape.centre[1]
        c, s = np.cos(shape.angle), np.sin(shape.angle)
        squared = ((x * c + y * s) / shape.major) ** 2 + ((-x * s + y * c) / shape.minor) ** 2
        if self.is_3d:
            squared = squared + ((self.coords[0] - shape.z) / shape.height) ** 2
        return np.sqrt(squared)

    def polar_angle(self, centre: tuple[float, float]) -> np.ndarray:
        return np.arctan2(self.coords[-2] - centre[0], self.coords[-1] - centre[1])


CELL_HEIGHT: tuple[float, float] = (0.4, 0.55)
"""Range of a 3D cell's z half-height, a fraction of a mean xy radius (at most 0.8 x half the depth)."""
NUCLEUS_HEIGHT: tuple[float, float] = (0.4, 0.65)
"""Range of a 3D nucleus's z half-height, a fraction of a minor semi-axis (at most 0.8 x the cell's)."""


def _xy_sizes(rng: np.random.Generator, half_xy: float, cell_size: tuple[float, float],
              elongation: tuple[float, float], nucleus_size: tuple[float, float]) -> tuple[float, float]:
    """A cell's mean radius and its nucleus's minor semi-axis (px), drawn as :func:`sample_cell`
    draws them: the sizes that a 3D cell's heights are fractions of."""
    radius = rng.uniform(*cell_size) * half_xy
    minor = radius / np.sqrt(rng.uniform(*elongation))
    return radius, rng.uniform(*nucleus_size) * minor


def sample_cell(
    rng: np.random.Generator,
    grid: CropGrid,
    cell_size: tuple[float, float],
    elongation: tuple[float, float],
    nucleus_size: tuple[float, float],
    nucleus_offset: float,
    cell_height: tuple[float, float] = CELL_HEIGHT,
    nucleus_height: tuple[float, float] = NUCLEUS_HEIGHT,
    nucleus_angle_sd: float | None = None,
    heights_follow_sizes: bool = False,
    nucleus_size_follows_cell: bool = False,
) -> CellShape:
    """A random cell centred in the crop; see :class:`~morphospace.simulate.config.StructuresConfig`.

    The nucleus's long axis lies at a uniform angle, independent of the cell's, or with
    ``nucleus_angle_sd`` (rad) that far about the cell's long axis: a nucleus that follows the cell
    lets the membrane tell its axis, which a near-round nucleus hides in the DNA, so a model would
    rightly read the nucleoli's line (and the envelope's shape) from the membrane that their rules
    ignore.

    In 3D the cell's and the nucleus's half-heights are drawn last (the xy geometry of a stream is
    the same in 2D and 3D), each with its own spread: were the nucleus's height a fixed multiple of
    the cell's, the membrane would tell the nucleus's height as well as the DNA does, and a model
    could read the nuclear envelope from the membrane that the truth says it ignores. For the same
    reason neither height follows an xy size: the cell's is ``cell_height`` x the mean radius, and
    the nucleus's ``nucleus_height`` x the minor semi-axis, of sizes drawn apart from the cell's own
    (:func:`_xy_sizes`, so the heights spread as before). A stack shows the xy outlines to the pixel
    but a height only to the z step, so a height tied to an xy size would be read from that size
    wherever it shows (when the nucleus's size followed its cell's, a model of the cortex, which
    lines the cell's top, read the cell's height from the nucleus's size). ``heights_follow_sizes`` ties each to its
    own object's size.

    The nucleus's xy size is likewise ``nucleus_size`` x the minor semi-axis of a cell drawn apart
    (:func:`_xy_sizes`), not of its own cell, its major semi-axis capped at 0.8 x its cell's minor
    semi-axis (the minor one at the major) so that it fits, a cap that binds in about one cell in
    six and leaves the two sizes nearly apart (Pearson r 0.01 between the minor semi-axes, 0.13
    between the cell's minor and the nucleus's major one). With the size a fraction of its own
    cell's (``nucleus_size_follows_cell``), the membrane told the nucleus's size (r 0.83 between
    the minor semi-axes) and a model rightly read the nuclear envelope from the membrane that the
    truth says it ignores.
    """
    half_xy = float(min(grid.half_extent[-2:]))
    radius = rng.uniform(*cell_size) * half_xy
    stretch = np.sqrt(rng.uniform(*elongation))
    major, minor = min(radius * stretch, 0.92 * half_xy), radius / stretch
    angle = rng.uniform(0.0, np.pi)
    if nucleus_size_follows_cell:
        nucleus_minor = rng.uniform(*nucleus_size) * minor
    else:
        nucleus_minor = _xy_sizes(rng, half_xy, cell_size, elongation, nucleus_size)[1]
    nucleus_major = min(nucleus_minor * rng.uniform(1.0, 1.3), 0.8 * minor)
    nucleus_minor = min(nucleus_minor, nucleus_major)
    room = max(minor - nucleus_major - 2.0, 0.0)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    shift = rng.uniform(0.0, nucleus_offset) * room
    nucleus_angle = rng.uniform(0.0, np.pi) if nucleus_angle_sd is None else angle + rng.normal(0.0, nucleus_angle_sd)
    height = nucleus_height_px = 1.0
    if grid.is_3d:
        cell_scale, nucleus_scale = radius, nucleus_minor
        if not heights_follow_sizes:
            cell_scale = _xy_sizes(rng, half_xy, cell_size, elongation, nucleus_size)[0]
            nucleus_scale = _xy_sizes(rng, half_xy, cell_size, elongation, nucleus_size)[1]
        height = min(rng.uniform(*cell_height) * cell_scale, 0.8 * grid.half_extent[0])
        nucleus_height_px = min(rng.uniform(*nucleus_height) * nucleus_scale, 0.8 * height)
    nucleus = Ellipsoid(
        centre=(shift * np.sin(direction), shift * np.cos(direction)),
        major=nucleus_major, minor=nucleus_minor, angle=nucleus_angle, height=nucleus_height_px,
    )
    return CellShape(Ellipsoid((0.0, 0.0), major, minor, angle, height), nucleus)


def align_cell(cell: CellShape) -> CellShape:
    """``cell`` in the aligned frame: nucleus centre at the origin, membrane long axis along +x,
    mirrored in x and y so that the membrane's centre lies at x >= 0 and y >= 0 (the side with more
    room); z is left alone. Every shape and rule is unchanged, only the frame moves.

    >>> cell = CellShape(Ellipsoid((0.0, 0.0), 20.0, 10.0, np.pi / 2, 1.0), Ellipsoid((3.0, -1.0), 6.0, 5.0, 0.0, 1.0))
    >>> aligned = align_cell(cell)
    >>> [round(float(v), 6) for v in (*aligned.membrane.centre, aligned.membrane.angle, *aligned.nucleus.centre)]
    [1.0, 3.0, 0.0, 0.0, 0.0]
    >>> round(float(aligned.nucleus.angle), 6)  # the nucleus's long axis was across the cell's
    1.570796
    """
    theta = cell.membrane.angle
    dy, dx = np.subtract(cell.membrane.centre, cell.nucleus.centre)
    along, across = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
    flip_x, flip_y = np.sign(along) or 1.0, np.sign(across) or 1.0
    turn = cell.nucleus.angle - theta
    nucleus_angle = float(np.arctan2(flip_y * np.sin(turn), flip_x * np.cos(turn)))
    return CellShape(replace(cell.membrane, centre=(float(abs(across)), float(abs(along))), angle=0.0),
                     replace(cell.nucleus, centre=(0.0, 0.0), angle=nucleus_angle))


def _soft_inside(rho: np.ndarray, scale: float, softness: float = 0.7) -> np.ndarray:
    """About 1 inside (rho < 1), 0 outside, with an edge ``softness`` px wide for a size ``scale`` px."""
    return 0.5 * (1.0 + np.tanh((1.0 - rho) * scale / (2.0 * softness)))


def _rim(rho: np.ndarray, scale: float, width: float) -> np.ndarray:
    """A Gaussian ridge ``width`` px wide on the outline rho = 1."""
    return np.exp(-(((rho - 1.0) * scale) ** 2) / (2.0 * width**2))


def render_reference(cell: CellShape, grid: CropGrid) -> tuple[np.ndarray, np.ndarray]:
    """Membrane (a rim with a faint fill) and DNA (a filled nucleus), before blur and noise."""
    rho_cell = grid.normalized_radius(cell.membrane)
    rho_nucleus = grid.normalized_radius(cell.nucleus)
    scale = cell.membrane.mean_radius
    membrane = 0.8 * _rim(rho_cell, scale, 1.0) + 0.1 * _soft_inside(rho_cell, scale)
    dna = _soft_inside(rho_nucleus, cell.nucleus.mean_radius) * (0.75 - 0.25 * np.clip(rho_nucleus, 0, 1) ** 2)
    return membrane, dna


def cell_masks(cell: CellShape, grid: CropGrid) -> np.ndarray:
    """Labels per pixel: 1 own nucleus, 2 own cell outside the nucleus, 0 background (uint8)."""
    inside_cell = grid.normalized_radius(cell.membrane) < 1.0
    inside_nucleus = (grid.normalized_radius(cell.nucleus) < 1.0) & inside_cell
    return np.where(inside_nucleus, 1, np.where(inside_cell, 2, 0)).astype(np.uint8)


def _points_in_ellipsoid(rng: np.random.Generator, shape: Ellipsoid, n: int, shrink: float, is_3d: bool) -> np.ndarray:
    """``n`` uniform points (n, 2 or 3) inside ``shape`` scaled by ``shrink``, in (z,) y, x px."""
    dims = 3 if is_3d else 2
    unit = rng.normal(size=(n, dims))
    unit *= (rng.uniform(size=(n, 1)) ** (1.0 / dims)) / np.linalg.norm(unit, axis=1, keepdims=True)
    u, v = unit[:, -1] * shape.major * shrink, unit[:, -2] * shape.minor * shrink
    c, s = np.cos(shape.angle), np.sin(shape.angle)
    yx = np.stack([shape.centre[0] + u * s + v * c, shape.centre[1] + u * c - v * s], axis=1)
    return np.concatenate([shape.z + unit[:, :1] * shape.height * shrink, yx], axis=1) if is_3d else yx


def _inside(points: np.ndarray, shape: Ellipsoid, is_3d: bool) -> np.ndarray:
    """Normalised radius of each point (n,) with respect to ``shape``."""
    y, x = points[:, -2] - shape.centre[0], points[:, -1] - shape.centre[1]
    c, s = np.cos(shape.angle), np.sin(shape.angle)
    squared = ((x * c + y * s) / shape.major) ** 2 + ((-x * s + y * c) / shape.minor) ** 2
    if is_3d:
        squared = squared + ((points[:, 0] - shape.z) / shape.height) ** 2
    return np.sqrt(squared)


def _cytoplasm_points(rng: np.random.Generator, cell: CellShape, n: int, is_3d: bool) -> np.ndarray:
    """``n`` uniform points inside the cell (rho < 0.92) and outside the nucleus (rho > 1.15)."""
    kept: list[np.ndarray] = []
    count = 0
    for _ in range(50):
        points = _points_in_ellipsoid(rng, cell.membrane, 4 * n, 0.92, is_3d)
        points = points[_inside(points, cell.nucleus, is_3d) > 1.15]
        kept.append(points)
        count += len(points)
        if count >= n:
            break
    points = np.concatenate(kept)
    return points[:n] if len(points) else np.zeros((0, 3 if is_3d else 2))


def _splat(points: np.ndarray, weight: float, grid: CropGrid) -> np.ndarray:
    """Deposit ``weight`` at the pixel nearest each point (points outside the crop are dropped)."""
    image = np.zeros(grid.shape)
    if len(points) == 0:
        return image
    scaled = points.copy()
    if grid.is_3d:
        scaled[:, 0] = scaled[:, 0] / grid.z_step_px
    index = np.rint(scaled + (np.array(grid.shape) - 1) / 2.0).astype(int)
    keep = np.all((index >= 0) & (index < np.array(grid.shape)), axis=1)
    np.add.at(image, tuple(index[keep].T), weight)
    return image


def _point_weight(peak: float, grid: CropGrid, psf_sigma_px: float) -> float:
    """Weight of one deposited point whose blurred peak is ``peak``."""
    sigmas = _psf_sigmas(grid, psf_sigma_px)
    return peak * float(np.prod([np.sqrt(2.0 * np.pi) * s if s > 0 else 1.0 for s in sigmas]))


def _psf_sigmas(grid: CropGrid, psf_sigma_px: float) -> tuple[float, ...]:
    """Gaussian blur per axis in pixels (slices for z: the PSF is twice as long along z)."""
    if grid.is_3d:
        return (2.0 * psf_sigma_px / grid.z_step_px, psf_sigma_px, psf_sigma_px)
    return (psf_sigma_px, psf_sigma_px)


def blur(image: np.ndarray, grid: CropGrid, psf_sigma_px: float) -> np.ndarray:
    """The image seen through a Gaussian PSF of xy sigma ``psf_sigma_px``."""
    return ndimage.gaussian_filter(image, _psf_sigmas(grid, psf_sigma_px)) if psf_sigma_px > 0 else image


def _nuclear_envelope(cell, effect, grid, rng, psf):
    return rng.uniform(0.8, 1.0) * _rim(grid.normalized_radius(cell.nucleus), cell.nucleus.mean_radius, 0.7)


def _nucleoli(cell, effect, grid, rng, psf):
    n = int(rng.integers(2, 4))
    nucleus = cell.nucleus
    along = np.linspace(-0.45, 0.45, n) * nucleus.major * rng.uniform(0.85, 1.0)
    across = rng.normal(0.0, 0.05 * nucleus.minor, n)
    c, s = np.cos(nucleus.angle), np.sin(nucleus.angle)
    centres = np.stack([nucleus.centre[0] + along * s + across * c, nucleus.centre[1] + along * c - across * s], axis=1)
    if grid.is_3d:
        centres = np.concatenate([rng.normal(nucleus.z, 0.1 * nucleus.height, (n, 1)), centres], axis=1)
    widen = 1.7 if effect else 1.0
    image = np.zeros(grid.shape)
    for centre in centres:
        radius = rng.uniform(0.18, 0.24) * cell.nucleus.mean_radius * widen
        blob = Ellipsoid((centre[-2], centre[-1]), radius, radius, 0.0, radius, float(centre[0]) if grid.is_3d else 0.0)
        image += _soft_inside(grid.normalized_radius(blob), radius, 0.5)
    return 0.8 * np.clip(image, 0.0, 1.0)


def _cortex(cell, effect, grid, rng, psf):
    rho = grid.normalized_radius(cell.membrane)
    depth = (1.0 - rho) * cell.membrane.mean_radius
    thickness = 2.0 * (2.5 if effect else 1.0)
    band = 0.5 * (1.0 + np.tanh(depth / 0.7)) * 0.5 * (1.0 + np.tanh((thickness - depth) / 0.7))
    phi = grid.polar_angle(cell.membrane.centre)
    patches = 1.0 + 0.25 * np.cos(3.0 * phi + rng.uniform(0.0, 2.0 * np.pi))
    return rng.uniform(0.6, 0.75) * band * patches


def _mitochondria(cell, effect, grid, rng, psf):
    n_tubules = int(rng.integers(12, 20))
    starts = _cytoplasm_points(rng, cell, n_tubules, grid.is_3d)
    segments = []
    for start in starts:
        direction = rng.normal(size=start.shape)
        if grid.is_3d:
            direction[0] *= 0.2
        direction /= np.linalg.norm(direction)
        steps = np.arange(0.0, rng.uniform(4.0, 8.0), 0.7)[:, None]
        tubule = start + steps * direction
        keep = (_inside(tubule, cell.membrane, grid.is_3d) < 0.95) & (_inside(tubule, cell.nucleus, grid.is_3d) > 1.1)
        segments.append(tubule[keep])
    points = np.concatenate(segments) if segments else np.zeros((0, len(grid.shape)))
    return _splat(points, _point_weight(0.12, grid, psf), grid)


def golgi_heading(cell: CellShape) -> float:
    """Direction (radians, arctan2(y, x)) from the nucleus along the cell's long axis towards the
    side with more room: where the Golgi ribbon of ``cell`` is centred before its jitter. The side
    is the opposite of the nucleus's offset from the cell centre along that axis.

    >>> cell = CellShape(Ellipsoid((0.0, 0.0), 20.0, 12.0, np.pi / 2, 1.0), Ellipsoid((2.0, 0.5), 6.0, 5.0, 0.0, 1.0))
    >>> round(golgi_heading(cell), 6)  # long axis along y, nucleus 2 px towards +y: the ribbon faces -y
    -1.570796
    """
    angle = cell.membrane.angle
    side = -1.0 if nucleus_offset_along_axis(cell) > 0 else 1.0
    return float(np.arctan2(side * np.sin(angle), side * np.cos(angle)))


def nucleus_offset_along_axis(cell: CellShape) -> float:
    """The nucleus centre's offset from the cell centre along the cell's long axis (px, signed
    along (sin angle, cos angle) in (y, x)): the cue of the Golgi's side."""
    axis = np.array([np.sin(cell.membrane.angle), np.cos(cell.membrane.angle)])
    return float(np.dot(axis, np.subtract(cell.nucleus.centre, cell.membrane.centre)))


def golgi_ribbon(
    nucleus: Ellipsoid, heading: float, grid: CropGrid, rng: np.random.Generator, psf_sigma_px: float
) -> np.ndarray:
    """A Golgi ribbon (``grid.shape``, before blur) hugging ``nucleus`` 2.5 px out, about 1.2 rad long,
    centred on ``heading`` (radians) jittered by N(0, 0.9)."""
    angles = heading + rng.normal(0.0, 0.9) + np.arange(-0.6, 0.6, 0.08)
    radii = np.array([nucleus.radius_toward(a) for a in angles]) + 2.5 + rng.normal(0.0, 0.4, len(angles))
    yx = np.stack([nucleus.centre[0] + radii * np.sin(angles), nucleus.centre[1] + radii * np.cos(angles)], axis=1)
    if grid.is_3d:
        yx = np.concatenate([rng.normal(0.0, 0.3 * nucleus.height, (len(angles), 1)), yx], axis=1)
    return _splat(yx, _point_weight(0.35, grid, psf_sigma_px), grid)


def _golgi(cell, effect, grid, rng, psf):
    if effect:
        return _splat(_cytoplasm_points(rng, cell, 12, grid.is_3d), _point_weight(0.45, grid, psf), grid)
    return golgi_ribbon(cell.nucleus, golgi_heading(cell), grid, rng, psf)


def _puncta(cell, effect, grid, rng, psf):
    n = int(rng.integers(6, 12))
    points = rng.uniform(-1.0, 1.0, size=(n, len(grid.shape))) * (grid.half_extent - 0.5)
    return _splat(points, _point_weight(0.8, grid, psf), grid)


_RENDERERS: dict[str, Callable] = {
    "NuclearEnvelope": _nuclear_envelope,
    "Nucleoli": _nucleoli,
    "Cortex": _cortex,
    "Mitochondria": _mitochondria,
    "Golgi": _golgi,
    "Puncta": _puncta,
}


def render_structure(
    cell: CellShape, structure: str, drug: str | None, grid: CropGrid, rng: np.random.Generator, psf_sigma_px: float
) -> np.ndarray:
    """The structure channel before blur and noise; ``drug`` applies its effect when it shifts ``structure``."""
    effect = DRUGS[drug].effects.get(structure) if drug in DRUGS else None
    return _RENDERERS[structure](cell, effect, grid, rng, psf_sigma_px)


def render_cell(
    cell: CellShape,
    structure: str,
    drug: str | None,
    grid: CropGrid,
    rng: np.random.Generator,
    psf_sigma_px: float,
    noise_sd: float,
) -> np.ndarray:
    """Membrane, DNA and structure channels (3, *grid.shape), blurred, noisy, clipped to [0, 1], float32."""
    membrane, dna = render_reference(cell, grid)
    channels = np.stack([membrane, dna, render_structure(cell, structure, drug, grid, rng, psf_sigma_px)])
    channels = np.stack([blur(c, grid, psf_sigma_px) for c in channels])
    if noise_sd > 0:
        channels = channels + rng.normal(0.0, noise_sd, channels.shape)
    return np.clip(channels, 0.0, 1.0).astype(np.float32)
