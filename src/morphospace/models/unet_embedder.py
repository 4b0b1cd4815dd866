"""A U-Net trained to segment one channel's structure, whose bottleneck is the embedding (the
segmentation embedder of whole-image clustering: the seed segmented actin fibres).

The target of every tile is the Otsu threshold of its ``target_channel`` (no annotated masks are
needed; the seed's masks came from annotation). The network is MONAI's U-Net of
:class:`~morphospace.models.unet.UNetConfig` (``arch: unet``) on ``input_channels`` (default: every
channel), trained with binary cross-entropy plus Dice on the logits. The embedding of a tile is
the bottleneck's feature maps averaged over space (``pooling: mean``) or their mean and maximum
(``mean_max``), since the bottleneck itself holds more values than the tile.

Examples
--------
>>> config = UNetEmbedderConfig(target_channel="Actin", unet={"channels": [4, 8, 16], "residual_units": 1})
>>> model = UNetEmbedder(config.to_dict(), (3, 32, 32), channels=["DNA", "Actin", "Junctions"])
>>> model(torch.zeros(2, 3, 32, 32)).shape, model.embed(torch.zeros(2, 3, 32, 32)).shape
(torch.Size([2, 1, 32, 32]), torch.Size([2, 16]))
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pydantic
import torch
from monai.losses import DiceLoss
from monai.networks.layers import SkipConnection
from skimage.filters import threshold_otsu
from torch import nn
from torch.nn import functional as F

from morphospace.config import Config, key_error
from morphospace.data.spec import DataSpec
from morphospace.models.embedding import EmbeddingFamily, EmbeddingModel
from morphospace.models.training import RunConfig
from morphospace.models.unet import UNetConfig, build_unet

__all__ = ["UNetEmbedderConfig", "UNetEmbedder", "UNetEmbedderFamily", "FAMILY", "otsu_masks", "bottleneck"]


class UNetEmbedderConfig(Config):
    """A segmentation U-Net embedder; see the module docstring."""

    family: Literal["unet_embedder"] = "unet_embedder"
    target_channel: str = pydantic.Field(description="channel whose Otsu mask is the segmentation target")
    input_channels: list[str] | None = pydantic.Field(None, description="channels fed to the U-Net; null: all")
    unet: UNetConfig = pydantic.Field(default_factory=lambda: UNetConfig(channels=[16, 32, 64, 128]))
    pooling: Literal["mean", "mean_max"] = "mean"
    lr: float = pydantic.Field(1e-3, gt=0)

    @pydantic.field_validator("unet")
    @classmethod
    def _plain_unet(cls, value: UNetConfig) -> UNetConfig:
        if value.arch != "unet":
            raise ValueError("the embedder reads the bottleneck of arch: unet")
        return value


def otsu_masks(images: torch.Tensor) -> torch.Tensor:
    """Per-image Otsu foreground (N, 1, H, W) float of ``images`` (N, H, W); a constant image gives
    an empty mask.

    >>> image = torch.zeros(1, 4, 4); image[0, :2] = 1.0
    >>> otsu_masks(image)[0, 0, :, 0].tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    arrays = images.detach().float().cpu().numpy()
    masks = [image > threshold_otsu(image) if np.ptp(image) > 0 else np.zeros_like(image, bool) for image in arrays]
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)).to(images.device)


def bottleneck(net: nn.Module) -> nn.Module:
    """The bottom layer of a MONAI ``UNet`` (the block between the deepest skip connections)."""
    block = net.model
    while True:
        inner = block[1].submodule
        if isinstance(inner, nn.Sequential) and len(inner) == 3 and isinstance(inner[1], SkipConnection):
            block = inner
        else:
            return inner


class UNetEmbedder(EmbeddingModel):
    """U-Net from the input channels to the target channel's mask; embeds by pooling its bottleneck."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], channels: Sequence[str]) -> None:
        super().__init__(config, image_shape, channels=list(channels))
        self.cfg = UNetEmbedderConfig.model_validate(config)
        self.channels = list(channels)
        inputs = self.cfg.input_channels or self.channels
        self.input_index = [self.channels.index(c) for c in inputs]
        self.target_index = self.channels.index(self.cfg.target_channel)
        self.net = build_unet(self.cfg.unet, len(inputs), 1)
        self.dice = DiceLoss(sigmoid=True)
        self._features: torch.Tensor | None = None
        bottleneck(self.net).register_forward_hook(self._keep_features)

    def _keep_features(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._features = output

    @property
    def embedding_dim(self) -> int:
        return self.cfg.unet.channels[-1] * (2 if self.cfg.pooling == "mean_max" else 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mask logits (N, 1, H, W) of images (N, C, H, W) holding every channel."""
        return self.net(images[:, self.input_index])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self(images.to(self.device))
        features = self._features.flatten(2)
        pooled = [features.mean(dim=2)] + ([features.amax(dim=2)] if self.cfg.pooling == "mean_max" else [])
        return torch.cat(pooled, dim=1)

    def losses(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device)
        target = otsu_masks(images[:, self.target_index])
        logits = self(images)
        return {"loss": F.binary_cross_entropy_with_logits(logits, target) + self.dice(logits, target)}


class UNetEmbedderFamily(EmbeddingFamily):
    """``model.family: unet_embedder``: a U-Net segmenting a channel's Otsu mask; bottleneck embedding."""

    name = "unet_embedder"
    config = UNetEmbedderConfig
    module = UNetEmbedder

    def halvings(self, model: UNetEmbedderConfig) -> int:
        return len(model.unet.channels) - 1

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        channels = spec.names("image")
        model = config.model
        if model.target_channel not in channels:
            raise key_error("model.target_channel", f"{model.target_channel!r} is not an image channel {channels}")
        unknown = [c for c in model.input_channels or [] if c not in channels]
        if unknown:
            raise key_error("model.input_channels", f"{unknown} are not image channels {channels}")
        super().check(config, spec)

    def build_arguments(self, config: RunConfig, spec: DataSpec) -> dict[str, Any]:
        return {"channels": spec.names("image")}


FAMILY = UNetEmbedderFamily()
