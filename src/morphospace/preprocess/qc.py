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

from morphospace.config import Config

__all__ = ["QCConfig", "power_log_log_slope", "saturation_fraction", "intensity_stats", "field_qc_metrics",
           "qc_failures"]


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


def field_qc_metrics(channels: dict[str, np.ndarray]) -> dict[str, float]:
    """QC metrics of one field, keyed ``<metric>_<channel>`` (focus, saturation, intensity stats)."""
    metrics: dict[str, float] = {}
    for name, image in channels.items():
        metrics[f"focus_{name}"] = power_log_log_slope(image)
        metrics[f"saturation_{name}"] = saturation_fraction(image)
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
) -> pd.Series:
    """Why each field fails QC: an empty string for fields that pass.

    Parameters
    ----------
    metrics
        One row per field with the columns of :func:`field_qc_metrics`.
    focus_channel
        Channel whose focus score is judged.
    group_column
        Fields are compared with others of the same group (plate) for the relative focus test.
    focus_min_slope
        Absolute floor on the focus slope, or None.
    focus_mad_k
        Fail fields whose slope lies more than ``k`` scaled MADs below their group's median
        (only in groups of at least ``min_fields_for_outliers`` fields), or None.
    saturation_max_fraction
        Fail fields where any channel has more than this fraction of pixels at its maximum.
    """
    reasons = pd.Series([""] * len(metrics), index=metrics.index, dtype=object)

    def add(mask: pd.Series, text: pd.Series | str) -> None:
        text = text if isinstance(text, pd.Series) else pd.Series(text, index=metrics.index)
        reasons[mask] = (reasons[mask] + "; " + text[mask]).str.lstrip("; ")

    focus = metrics[f"focus_{focus_channel}"]
    if focus_min_slope is not None:
        add(focus < focus_min_slope, focus.map(lambda v: f"out of focus (slope {v:.2f} < {focus_min_slope})"))
    if focus_mad_k is not None:
        groups = metrics[group_column] if group_column and group_column in metrics else pd.Series(0, index=metrics.index)
        median = focus.groupby(groups).transform("median")
        mad = (focus - median).abs().groupby(groups).transform("median") * 1.4826
        size = focus.groupby(groups).transform("size")
        floor = median - focus_mad_k * mad
        outlier = (size >= min_fields_for_outliers) & (mad > 0) & (focus < floor)
        add(outlier, pd.Series([f"out of focus (slope {v:.2f}, {focus_mad_k} MADs below its plate)" for v in focus],
                               index=metrics.index))
    if saturation_max_fraction is not None:
        for column in [c for c in metrics.columns if c.startswith("saturation_")]:
            channel = column.removeprefix("saturation_")
            over = metrics[column] > saturation_max_fraction
            add(over, metrics[column].map(lambda v, ch=channel: f"saturated {ch} ({v:.1%} of pixels at maximum)"))
    return reasons
