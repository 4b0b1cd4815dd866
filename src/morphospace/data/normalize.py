"""Per-channel intensity normalisation of crops, fitted on a training split and saved with a run.

Methods
-------
``percentile``
    Clip each channel to its [low, high] percentiles and rescale to ``out_range``.
``fixed``
    The same with user-given per-channel ranges.
``zscore``
    Subtract the channel mean and divide by its standard deviation.

With ``scope="crop"`` percentiles and z-scores are computed per crop and channel instead of over
the training set (the Statistical Cell's per-cell rescaling); nothing is fitted then.

Examples
--------
>>> import numpy as np
>>> x = np.stack([np.linspace(0, 100, 64).reshape(1, 8, 8)] * 4).astype("float32")   # (4, 1, 8, 8)
>>> norm = ChannelNormalizer(NormalizationConfig(method="percentile", low=0, high=100)).fit(x)
>>> y = norm.transform(x)
>>> float(y.min()), float(y.max())
(0.0, 1.0)
>>> ChannelNormalizer.from_dict(norm.to_dict()).stats == norm.stats
True
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pydantic
import torch

from morphospace.config import Config

__all__ = ["NormalizationConfig", "ChannelNormalizer"]

Array = np.ndarray | torch.Tensor


class NormalizationConfig(Config):
    """How crops are normalised; see the module docstring."""

    method: Literal["percentile", "fixed", "zscore"] = "percentile"
    scope: Literal["dataset", "crop"] = "dataset"
    low: float = pydantic.Field(0.1, ge=0, le=100, description="lower percentile")
    high: float = pydantic.Field(99.9, ge=0, le=100, description="upper percentile")
    out_range: tuple[float, float] = (0.0, 1.0)
    fixed_ranges: list[tuple[float, float]] | None = None
    max_fit_cells: int = pydantic.Field(2000, ge=1, description="training crops sampled to fit statistics")

    @pydantic.model_validator(mode="after")
    def _check(self) -> "NormalizationConfig":
        if self.low >= self.high:
            raise ValueError(f"low percentile ({self.low}) must be below high ({self.high})")
        if self.out_range[0] >= self.out_range[1]:
            raise ValueError(f"out_range must be increasing, got {self.out_range}")
        if self.method == "fixed" and not self.fixed_ranges:
            raise ValueError("method 'fixed' needs fixed_ranges: one [low, high] per channel")
        if self.method == "fixed" and self.scope == "crop":
            raise ValueError("method 'fixed' has no per-crop form; use scope 'dataset'")
        return self


class ChannelNormalizer:
    """Fit per-channel statistics on crops (n, C, ...) and apply them to numpy arrays or tensors."""

    def __init__(self, config: NormalizationConfig | None = None, stats: list[list[float]] | None = None) -> None:
        self.config = config or NormalizationConfig()
        self.stats = stats
        if self.config.method == "fixed":
            self.stats = [list(map(float, r)) for r in self.config.fixed_ranges]

    @property
    def needs_fit(self) -> bool:
        return self.config.scope == "dataset" and self.config.method != "fixed"

    def fit(self, images: np.ndarray) -> "ChannelNormalizer":
        """Compute per-channel statistics from crops (n, C, *spatial); returns self."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim < 3:
            raise ValueError(f"expected crops (n, C, ...), got shape {images.shape}")
        if not self.needs_fit:
            return self
        per_channel = np.moveaxis(images, 1, 0).reshape(images.shape[1], -1)
        if self.config.method == "percentile":
            lows = np.percentile(per_channel, self.config.low, axis=1)
            highs = np.percentile(per_channel, self.config.high, axis=1)
            self.stats = [[float(lo), float(hi)] for lo, hi in zip(lows, highs)]
        else:
            self.stats = [[float(m), float(s)] for m, s in zip(per_channel.mean(1), per_channel.std(1))]
        return self

    def transform(self, images: Array) -> Array:
        """Normalise crops (n, C, *spatial); returns float32 of the same kind (numpy or torch)."""
        is_numpy = isinstance(images, np.ndarray)
        x = torch.as_tensor(images).float()
        if x.ndim < 3:
            raise ValueError(f"expected crops (n, C, ...), got shape {tuple(x.shape)}")
        first, second = self._statistics(x)
        if self.config.method == "zscore":
            y = (x - first) / second.clamp_min(1e-8)
        else:
            y = ((x - first) / (second - first).clamp_min(1e-8)).clamp(0, 1)
            lo, hi = self.config.out_range
            y = y * (hi - lo) + lo
        return y.numpy() if is_numpy else y

    def _statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (low, high) or (mean, std), broadcastable to ``x`` (n, C, *spatial)."""
        spatial = (1,) * (x.ndim - 2)
        if self.config.scope == "crop":
            flat = x.flatten(2)
            if self.config.method == "percentile":
                q = torch.tensor([self.config.low / 100, self.config.high / 100], dtype=x.dtype)
                bounds = torch.quantile(flat, q, dim=2)
                return bounds[0].reshape(*x.shape[:2], *spatial), bounds[1].reshape(*x.shape[:2], *spatial)
            return flat.mean(2).reshape(*x.shape[:2], *spatial), flat.std(2).reshape(*x.shape[:2], *spatial)
        if self.stats is None:
            raise RuntimeError("normaliser has no statistics: call fit() on training crops first")
        if x.shape[1] != len(self.stats):
            raise ValueError(f"normaliser was fitted on {len(self.stats)} channels, got {x.shape[1]}")
        stats = torch.tensor(self.stats, dtype=x.dtype)
        return stats[:, 0].reshape(1, -1, *spatial), stats[:, 1].reshape(1, -1, *spatial)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the config and fitted statistics."""
        return {"config": self.config.to_dict(), "stats": self.stats}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "ChannelNormalizer":
        """Rebuild a normaliser saved with :meth:`to_dict`."""
        return cls(NormalizationConfig.model_validate(state["config"]), state.get("stats"))
