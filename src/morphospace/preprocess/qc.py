"""Image quality control: focus from the power spectrum, saturation, intensity statistics.

Examples
--------
>>> import numpy as np
>>> from scipy import ndimage
>>> rng = np.random.default_rng(0)
>>> sharp = ndimage.gaussian_filter(rng.random((128, 128)), 1)
>>> blurred = ndimage.gaussian_filter(sharp, 3)
>>> bool(power_log_log_slope(blurred) < power_log_log_slope(sharp))
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
from scipy import ndimage
from skimage.filters import threshold_otsu

from morphospace.config import Config

__all__ = ["QCConfig", "power_log_log_slope", "saturation_fraction", "intensity_stats", "foreground_contrast",
           "field_qc_metrics", "qc_failures"]


class QCConfig(Config):
    """Field quality control; failing fields are skipped and listed with the reason."""

    enabled: bool = True
    focus_channel: str | None = pydantic.Field(None, description="default: the nuclei channel")
    focus_min_slope: float | None = None
    focus_mad_k: float | None = pydantic.Field(4.0, gt=0)
    min_fields_for_outliers: int = pydantic.Field(8, ge=3)
    saturation_max_fraction: float | None = pydantic.Field(0.01, ge=0, le=1)


def power_log_log_slope(image: np.ndarray, min_frequency: int = 2, max_fraction: float = 0.3) -> float:
    """Focus score: slope of the radially averaged power spectrum on log-log axes.

    In-focus images keep more high-frequency power, so their slope is less negative; blur makes
    it steeper (Bray et al. 2012). The fit runs over radial frequencies from ``min_frequency``
    cycles per image to ``max_fraction`` of the Nyquist frequency: the band where stained
    structures rise above the flat noise floor, which would otherwise mask the loss of detail.

    Parameters
    ----------
    image
        2-D array (H, W), any intensity scale.

    Returns
    -------
    float
        The slope (dimensionless, typically -1 to -4 for microscopy fields).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    h, w = image.shape
    yy, xx = np.indices((h, w))
    # radius in cycles per image along the shorter side
    radius = np.hypot((yy - h // 2) * (min(h, w) / h), (xx - w // 2) * (min(h, w) / w))
    bins = np.rint(radius).astype(np.int64)
    sums = np.bincount(bins.ravel(), weights=power.ravel())
    counts = np.bincount(bins.ravel())
    nyquist = min(h, w) // 2
    freqs = np.arange(min_frequency, max(min_frequency + 2, int(nyquist * max_fraction)) + 1)
    freqs = freqs[freqs < len(sums)]
    mean_power = sums[freqs] / np.maximum(counts[freqs], 1)
    keep = mean_power > 0
    if keep.sum() < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log10(freqs[keep]), np.log10(mean_power[keep]), 1)
    return float(slope)


def saturation_fraction(image: np.ndarray) -> float:
    """Fraction of pixels at the image's maximum value (a sign of clipping when well above 1/N)."""
    image = np.asarray(image)
    return float(np.count_nonzero(image == image.max()) / image.size)


def intensity_stats(image: np.ndarray) -> dict[str, float]:
    """Median, standard deviation, 1st/25th/75th/99th percentiles and total of the pixels."""
    values = np.asarray(image, dtype=np.float64)
    q01, q25, q50, q75, q99 = np.percentile(values, [1, 25, 50, 75, 99])
    return {"median": q50, "std": float(values.std()), "q01": q01, "q25": q25, "q75": q75,
            "q99": q99, "total": float(values.sum())}


def foreground_contrast(image: np.ndarray, sigma: float = 1.0) -> float:
    """How far the Otsu foreground of a smoothed image stands above its background: (median of the
    foreground - median of the background) / robust SD (1.4826 MAD) of the background.

    A field of pure camera noise scores about 2.3 whatever its level (Gaussian, Poisson or
    uniform noise); fluorescence nuclei score from 4 (dense, dim) to hundreds.

    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(100, 10, (128, 128))
    >>> round(foreground_contrast(noise), 1)
    2.3
    >>> spots = noise.copy(); spots[40:60, 40:60] += 200
    >>> foreground_contrast(spots) > 10
    True
    """
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma) if sigma > 0 else np.asarray(image)
    if float(smooth.max()) == float(smooth.min()):
        return 0.0
    threshold = threshold_otsu(smooth)
    foreground, background = smooth[smooth > threshold], smooth[smooth <= threshold]
    spread = 1.4826 * float(np.median(np.abs(background - np.median(background))))
    return float((np.median(foreground) - np.median(background)) / max(spread, 1e-6 * float(np.abs(smooth).max())))


def field_qc_metrics(channels: dict[str, np.ndarray]) -> dict[str, float]:
    """QC metrics of one field: its ``height`` and ``width`` and, keyed ``<metric>_<channel>``,
    focus, saturation, foreground contrast and intensity statistics."""
    metrics: dict[str, float] = {}
    for name, image in channels.items():
        metrics["height"], metrics["width"] = image.shape
        metrics[f"focus_{name}"] = power_log_log_slope(image)
        metrics[f"saturation_{name}"] = saturation_fraction(image)
        metrics[f"contrast_{name}"] = foreground_contrast(image)
        for key, value in intensity_stats(image).items():
            metrics[f"{key}_{name}"] = float(value)
    return metrics


def qc_failures(
    metrics: pd.DataFrame,
    focus_channel: str,
    group_column: str | None = "Metadata_Plate",
    focus_min_slope: float | None = None,
    focus_mad_k: float | None = 4.0,
    min_fields_for_outliers: int = 8,
    saturation_max_fraction: float | None = 0.01,
    min_contrast: float | None = None,
    contrast_channel: str | None = None,
) -> pd.Series:
    """Why each field fails QC: an empty string for fields that pass.

    Parameters
    ----------
    metrics
        One row per field with the columns of :func:`field_qc_metrics`.
    focus_channel
        Channel whose focus score is judged.
    group_column
        Fields are compared with others of the same group (plate) and size for the relative focus test.
    focus_min_slope
        Absolute floor on the focus slope, or None.
    focus_mad_k
        Fail fields whose slope lies more than ``k`` scaled MADs below their group's median
        (only in groups of at least ``min_fields_for_outliers`` fields), or None.
    saturation_max_fraction
        Fail fields where any channel has more than this fraction of pixels at its maximum.
    min_contrast, contrast_channel
        Fail fields whose ``contrast_channel`` (default: the focus channel) has a
        :func:`foreground_contrast` under ``min_contrast``, with the reason ``no_foreground``
        (nothing there to segment: camera noise, an empty well).
    """
    reasons = pd.Series([""] * len(metrics), index=metrics.index, dtype=object)

    def add(mask: pd.Series, text: pd.Series | str) -> None:
        text = text if isinstance(text, pd.Series) else pd.Series(text, index=metrics.index)
        reasons[mask] = (reasons[mask] + "; " + text[mask]).str.lstrip("; ")

    channel = contrast_channel or focus_channel
    empty = pd.Series(False, index=metrics.index)
    if min_contrast is not None and f"contrast_{channel}" in metrics:
        contrast = metrics[f"contrast_{channel}"]
        empty = contrast < min_contrast
        add(empty, contrast.map(lambda v: f"no_foreground (contrast {v:.1f} < {min_contrast:g} in {channel})"))
    focus = metrics[f"focus_{focus_channel}"]
    if focus_min_slope is not None:
        add(focus < focus_min_slope, focus.map(lambda v: f"out of focus (slope {v:.2f} < {focus_min_slope})"))
    if focus_mad_k is not None:  # judged against fields of the same plate and size with something in them
        groups = metrics[group_column].astype(str) if group_column and group_column in metrics else pd.Series(
            "", index=metrics.index)
        if {"height", "width"} <= set(metrics.columns):  # the spectrum's slope depends on the field's size
            groups = groups + "|" + metrics["height"].astype(str) + "x" + metrics["width"].astype(str)
        judged = focus.where(~empty)  # NaN: left out of the group statistics
        median = judged.groupby(groups).transform("median")
        mad = (judged - median).abs().groupby(groups).transform("median") * 1.4826
        size = judged.groupby(groups).transform("count")
        outlier = ~empty & (size >= min_fields_for_outliers) & (mad > 0) & (focus < median - focus_mad_k * mad)
        add(outlier, pd.Series([f"out of focus (slope {v:.2f}, {focus_mad_k} MADs below its plate)" for v in focus],
                               index=metrics.index))
    if saturation_max_fraction is not None:
        for column in [c for c in metrics.columns if c.startswith("saturation_")]:
            channel = column.removeprefix("saturation_")
            over = metrics[column] > saturation_max_fraction
            add(over, metrics[column].map(lambda v, ch=channel: f"saturated {ch} ({v:.1%} of pixels at maximum)"))
    return reasons
