"""Per-channel convolutional autoencoders, the reconstruction embedder of whole-image clustering.

One autoencoder per channel (``per_channel: true``, the seed's choice: with all channels in one
network the reconstruction favoured the nuclei channel) or one for all channels. Each encoder is a
stack of strided convolutions and a dense layer to ``code_dim`` values with dropout before it; each
decoder mirrors it with transposed convolutions to a tanh output. The loss is the pixel mean
squared error; the embedding of an image is its channels' codes concatenated (C x code_dim).

Examples
--------
>>> model = Autoencoder(AutoencoderConfig(code_dim=8, base_channels=4).to_dict(), (2, 32, 32))
>>> model.embed(torch.zeros(3, 2, 32, 32)).shape
torch.Size([3, 16])
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import pydantic
import torch
from torch import nn
from torch.nn import functional as F

from morphospace.config import Config, key_error
from morphospace.data.spec import DataSpec
from morphospace.models.blocks import ConvEncoder, Generator
from morphospace.models.embedding import EmbeddingFamily, EmbeddingModel
from morphospace.models.training import RunConfig

__all__ = ["AutoencoderConfig", "Autoencoder", "AutoencoderFamily", "FAMILY"]

MAX_HALVINGS = 4


class AutoencoderConfig(Config):
    """Convolutional autoencoders (one per channel by default); see the module docstring."""

    family: Literal["autoencoder"] = "autoencoder"
    per_channel: bool = True
    code_dim: int = pydantic.Field(64, ge=1, description="code length of one autoencoder")
    base_channels: int = pydantic.Field(16, ge=2, description="feature maps of the first encoder block, doubling")
    dropout: float = pydantic.Field(0.4, ge=0, lt=1, description="before the code layer")
    lr: float = pydantic.Field(1e-3, gt=0)


class _ChannelAutoencoder(nn.Module):
    """Images (N, c, S, S) -> codes (N, code_dim) -> reconstructions (N, c, S, S) in [-1, 1]."""

    def __init__(self, channels: int, size: int, config: AutoencoderConfig) -> None:
        super().__init__()
        self.encoder = ConvEncoder(channels, size, config.base_channels, feature_dim=4 * config.code_dim,
                                   max_doublings=MAX_HALVINGS)
        self.code = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(4 * config.code_dim, config.code_dim))
        self.decoder = Generator(config.code_dim, channels, size, config.base_channels, max_doublings=MAX_HALVINGS)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.code(self.encoder(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(images))


class Autoencoder(EmbeddingModel):
    """Per-channel (or joint) autoencoders of ``image_shape`` (C, S, S) images in [-1, 1]."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int]) -> None:
        super().__init__(config, image_shape)
        self.cfg = AutoencoderConfig.model_validate(config)
        channels, size = self.image_shape[0], self.image_shape[-1]
        groups = [1] * channels if self.cfg.per_channel else [channels]
        self.autoencoders = nn.ModuleList(_ChannelAutoencoder(c, size, self.cfg) for c in groups)

    @property
    def embedding_dim(self) -> int:
        return len(self.autoencoders) * self.cfg.code_dim

    def _parts(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(images.split(1, dim=1)) if self.cfg.per_channel else [images]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions (N, C, S, S)."""
        return torch.cat([net(part) for net, part in zip(self.autoencoders, self._parts(images))], dim=1)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        return torch.cat([net.encode(part) for net, part in zip(self.autoencoders, self._parts(images))], dim=1)

    def losses(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device)
        return {"loss": F.mse_loss(self(images), images)}


class AutoencoderFamily(EmbeddingFamily):
    """``model.family: autoencoder``: per-channel convolutional autoencoders."""

    name = "autoencoder"
    config = AutoencoderConfig
    module = Autoencoder

    def halvings(self, model: AutoencoderConfig) -> int:
        return 2

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        super().check(config, spec)
        normalization = config.data.normalization
        if normalization.method == "zscore" or tuple(normalization.out_range) != (-1.0, 1.0):
            raise key_error("data.normalization", "the autoencoders reconstruct through tanh: use a percentile or "
                                                  "fixed normalisation with out_range [-1, 1]")


FAMILY = AutoencoderFamily()
