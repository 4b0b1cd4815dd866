"""U-Nets for in silico labeling and segmentation: MONAI's plain U-Net, and MONAI's FlexibleUNet
whose ResNet / EfficientNet encoder can start from pretrained weights in a local file.

The seed's "U-Net on steroids" has an ImageNet DenseNet-121 encoder; here the pretrained-capable
U-Net is FlexibleUNet (ResNet-34 encoder by default) because MONAI ships its decoder, and any
torchvision-style ResNet state dict can be loaded from disk. Without a weights file the encoder is
randomly initialised, and the run's config says so (``encoder_weights: null``).

Examples
--------
>>> import torch
>>> net = build_unet(UNetConfig(channels=[8, 16, 32]), in_channels=2, out_channels=1)
>>> net(torch.rand(1, 2, 32, 32)).shape
torch.Size([1, 1, 32, 32])
>>> UNetConfig(channels=[8, 16, 32]).size_factor
4
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

import pydantic
import torch
from monai.networks.nets import FlexibleUNet, UNet

from morphospace.config import PATH, Config
from morphospace.models.weights import load_pretrained

__all__ = ["UNetConfig", "build_unet", "load_encoder_weights"]

_FLEXIBLE_FACTOR = 32  # five stride-2 stages in every FlexibleUNet backbone


class UNetConfig(Config):
    """The network: ``unet`` (MONAI UNet, ``channels`` per level, stride 2 between levels) or
    ``flexible_unet`` (MONAI FlexibleUNet with the ``backbone`` encoder)."""

    arch: Literal["unet", "flexible_unet"] = "unet"
    channels: list[int] = pydantic.Field(default_factory=lambda: [32, 64, 128, 256], min_length=2)
    residual_units: int = pydantic.Field(2, ge=0)
    norm: Literal["batch", "instance", "none"] = pydantic.Field(
        "batch", description="batch keeps tiled inference exact in eval mode; instance norm depends on the tile")
    dropout: float = pydantic.Field(0.0, ge=0, lt=1)
    backbone: str = pydantic.Field("resnet34", description="flexible_unet encoder (resnet10-200, efficientnet-b0-b8)")
    encoder_weights: Annotated[str | None, PATH] = pydantic.Field(
        None, description="flexible_unet: local state dict of the encoder (e.g. ImageNet ResNet); null = random init")

    @property
    def size_factor(self) -> int:
        """Input sides must be multiples of this."""
        return _FLEXIBLE_FACTOR if self.arch == "flexible_unet" else 2 ** (len(self.channels) - 1)


def build_unet(config: UNetConfig, in_channels: int, out_channels: int) -> torch.nn.Module:
    """A 2-D U-Net of ``config`` mapping (N, in_channels, H, W) to (N, out_channels, H, W) with a linear
    output (add a sigmoid for probabilities), H and W multiples of ``config.size_factor``."""
    norm = None if config.norm == "none" else config.norm
    if config.arch == "unet":
        return UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=config.channels,
                    strides=[2] * (len(config.channels) - 1), num_res_units=config.residual_units,
                    norm=norm, dropout=config.dropout)
    net = FlexibleUNet(in_channels=in_channels, out_channels=out_channels, backbone=config.backbone,
                       pretrained=False, spatial_dims=2, norm=norm, dropout=config.dropout)
    if config.encoder_weights:
        load_encoder_weights(net, config.encoder_weights)
    return net


def load_encoder_weights(net: FlexibleUNet, path: str | os.PathLike) -> dict[str, int]:
    """Load a local encoder state dict (torchvision-style ResNet or MONAI EfficientNet keys, with or
    without an ``encoder.`` prefix) into ``net.encoder``, the first convolution adapted to the
    number of input channels; see :func:`~morphospace.models.weights.load_pretrained`."""
    return load_pretrained(net.encoder, path, "encoder weights", rename=lambda key: key.removeprefix("encoder."))
