"""Classical nuclei segmentation: smoothing, Otsu threshold, distance-transform watershed.

Examples
--------
>>> import numpy as np
>>> yy, xx = np.mgrid[:64, :96]
>>> image = 100.0 * (((yy - 32) ** 2 + (xx - 30) ** 2 < 100) | ((yy - 32) ** 2 + (xx - 52) ** 2 < 100))
>>> labels = segment_nuclei(image, min_area=20, min_distance=4)
>>> int(labels.max())                               # two touching discs split in two
2
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pydantic
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.morphology import h_maxima, remove_small_holes
from skimage.segmentation import clear_border, relabel_sequential, watershed

from morphospace.config import Config
from morphospace.errors import InputError
from morphospace.preprocess.qc import foreground_contrast

__all__ = ["NucleiConfig", "NUCLEAR_STAINS", "resolve_nucleus_channel", "segment_nuclei", "segment_nuclei_as",
           "foreground_mask",
           "split_touching", "filter_by_area", "instances_from_probability"]

logger = logging.getLogger(__name__)

NUCLEAR_STAINS = ("DNA", "DAPI", "Hoechst", "H2B", "DRAQ5", "Nuclei", "Nucleus", "Nuclear")
"""Channel names (any case, anywhere in the name) that ``nucleus_channel: auto`` takes for the nucleus channel."""


def resolve_nucleus_channel(channels: Sequence[str], nucleus_channel: str = "auto",
                            source: str = "the crops", setting: str = "--set nucleus_channel=NAME",
                            role: str = "nuclei segmented") -> str:
    """The channel to segment nuclei in: ``nucleus_channel`` when it is one of ``channels``; with
    ``"auto"``, the one channel whose name contains a name of :data:`NUCLEAR_STAINS` (any case),
    else the only channel of one-channel crops. ``role`` says in the log what the channel is used
    for.

    Raises InputError naming ``source``, its channels and the ``setting`` to pass when the channel
    is missing or cannot be told.

    >>> resolve_nucleus_channel(["Actin", "Hoechst33342"]), resolve_nucleus_channel(["ch0"])
    ('Hoechst33342', 'ch0')
    """
    channels = list(channels)
    if nucleus_channel != "auto":
        if nucleus_channel not in channels:
            raise InputError(f"{source}: nucleus channel {nucleus_channel!r} is not one of its channels {channels}; "
                             f"name one of them: {setting}")
        return nucleus_channel
    stains = [c for c in channels if any(stain.lower() in c.lower() for stain in NUCLEAR_STAINS)]
    if len(stains) == 1:
        logger.info("%s: %s in channel %r (named like a nuclear stain)", source, role, stains[0])
        return stains[0]
    if not stains and len(channels) == 1:
        logger.info("%s: %s in %r, its only channel", source, role, channels[0])
        return channels[0]
    found = (f"channels {stains} are all named like nuclear stains" if stains
             else f"no channel is named like a nuclear stain ({', '.join(NUCLEAR_STAINS)})")
    raise InputError(f"{source}: cannot tell which channel holds the nuclei: {found}; its channels are {channels}. "
                     f"Name it: {setting}")


class NucleiConfig(Config):
    """Nuclei segmentation settings (see :func:`segment_nuclei`) and the channel it runs on."""

    channel: str = pydantic.Field("auto", description="channel to segment; auto: the one channel named like a "
                                                      "nuclear stain (DNA, DAPI, Hoechst, ...), or the only one")
    sigma: float = pydantic.Field(1.0, ge=0)
    threshold_factor: float = pydantic.Field(1.0, gt=0)
    min_area: int = pydantic.Field(30, ge=0)
    max_area: int | None = pydantic.Field(5000, ge=1)
    min_distance: int = pydantic.Field(5, ge=1)
    h: float = pydantic.Field(1.0, ge=0)
    remove_border: bool = False
    min_contrast: float | None = pydantic.Field(
        3.0, ge=0, description="no nuclei below this foreground contrast (camera noise: 2.3); null: always "
                               "threshold. prepare's QC also skips such fields as no_foreground")


def segment_nuclei_as(image: np.ndarray, config: NucleiConfig) -> np.ndarray:
    """:func:`segment_nuclei` of the (H, W) ``image`` with the settings of ``config``."""
    return segment_nuclei(image, sigma=config.sigma, threshold_factor=config.threshold_factor,
                          min_area=config.min_area, max_area=config.max_area, min_distance=config.min_distance,
                          h=config.h, remove_border=config.remove_border, min_contrast=config.min_contrast)


def foreground_mask(image: np.ndarray, sigma: float = 1.0, threshold_factor: float = 1.0) -> np.ndarray:
    """Otsu foreground of a Gaussian-smoothed image; ``threshold_factor`` scales the Otsu level."""
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma) if sigma > 0 else image
    if float(smooth.max()) == float(smooth.min()):
        return np.zeros(smooth.shape, dtype=bool)
    return smooth > threshold_otsu(smooth) * threshold_factor


def split_touching(mask: np.ndarray, min_distance: int = 5, h: float = 1.0) -> np.ndarray:
    """Split touching blobs of a binary mask by a watershed on its distance transform.

    Markers are the regional maxima of the (lightly smoothed) distance map that rise at least
    ``h`` pixels above their surroundings and lie ``min_distance`` pixels apart.
    """
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(mask), 1.0)
    components = label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    if h > 0:
        significant = h_maxima(distance, h).astype(bool)
        peaks = peaks[significant[tuple(peaks.T)]]
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    unmarked = np.setdiff1d(np.unique(components[mask]), np.unique(components[markers > 0]))
    for component in unmarked:  # blobs too flat for a significant peak keep one marker
        rows, cols = np.nonzero(components == component)
        best = np.argmax(distance[rows, cols])
        markers[rows[best], cols[best]] = markers.max() + 1
    return watershed(-distance, markers, mask=mask)


def filter_by_area(labels: np.ndarray, min_area: int = 0, max_area: int | None = None) -> np.ndarray:
    """Remove labelled objects outside [min_area, max_area] pixels and relabel 1..n."""
    areas = np.bincount(labels.ravel())
    drop = areas < min_area
    if max_area is not None:
        drop |= areas > max_area
    drop[0] = False
    filtered = np.where(drop[labels], 0, labels)
    return relabel_sequential(filtered)[0]


def segment_nuclei(
    image: np.ndarray,
    sigma: float = 1.0,
    threshold_factor: float = 1.0,
    min_area: int = 30,
    max_area: int | None = None,
    min_distance: int = 5,
    h: float = 1.0,
    remove_border: bool = False,
    min_contrast: float | None = 3.0,
) -> np.ndarray:
    """Label nuclei in a DNA image.

    Parameters
    ----------
    image
        (H, W) DNA-stain intensities (background-corrected is best).
    sigma
        Gaussian smoothing before thresholding, pixels.
    threshold_factor
        Multiplier on the Otsu threshold (below 1 keeps dimmer nuclei).
    min_area, max_area
        Size filters in pixels, applied after splitting.
    min_distance, h
        Marker spacing (pixels) and minimum marker prominence (pixels of distance) for splitting
        touching nuclei.
    remove_border
        Drop nuclei touching the image border.
    min_contrast
        When the image's :func:`~morphospace.preprocess.qc.foreground_contrast` (at ``sigma``) is
        below this, it holds nothing to segment and no nuclei are returned, instead of Otsu
        splitting noise into "nuclei"; None always thresholds.

    Returns
    -------
    numpy.ndarray
        (H, W) int32 labels, 0 = background, nuclei 1..n.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    if min_contrast is not None and foreground_contrast(image, sigma) < min_contrast:
        return np.zeros(image.shape, np.int32)
    mask = foreground_mask(image, sigma, threshold_factor)
    mask = remove_small_holes(mask, max_size=max(min_area, 1))
    labels = split_touching(mask, min_distance=min_distance, h=h) if mask.any() else np.zeros(image.shape, int)
    if remove_border:
        labels = clear_border(labels)
    return filter_by_area(labels, min_area, max_area).astype(np.int32)


def instances_from_probability(probability: np.ndarray, threshold: float = 0.5, min_area: int = 10,
                               min_distance: int = 5, h: float = 1.0) -> np.ndarray:
    """Nuclei instances (H, W) int32 from a foreground probability map (H, W) in [0, 1]: pixels above
    ``threshold``, touching nuclei split by the distance-transform watershed of :func:`split_touching`,
    objects under ``min_area`` px dropped.

    >>> p = np.zeros((20, 40)); p[5:15, 3:13] = 0.9; p[5:15, 25:35] = 0.8
    >>> int(instances_from_probability(p).max())
    2
    """
    probability = np.asarray(probability)
    if probability.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {probability.shape}")
    mask = probability > threshold
    labels = split_touching(mask, min_distance=min_distance, h=h) if mask.any() else np.zeros(mask.shape, int)
    return filter_by_area(labels, min_area).astype(np.int32)
