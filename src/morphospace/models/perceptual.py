"""Perceptual loss for image-to-image models: content loss on deep features plus a pixel loss plus
total variation, weighted 0.8 / 0.1 / 0.1 as in the in-silico-labeling seed.

Features come from VGG-16 (torchvision's layer layout, so an ImageNet ``vgg16`` state dict saved to
a local file loads as it is) or, when no such file is available, from an in-domain network: a small
convolutional autoencoder fitted on the training targets when training starts, within the run's
time budget. The choice is recorded in the run's config and summary.

Examples
--------
>>> import torch
>>> loss = PerceptualLoss(SmallEncoder(1))
>>> x = torch.rand(2, 1, 32, 32)
>>> terms = loss(x, x)   # identical images: only the total variation of x remains
>>> float(terms["content"]), float(terms["pixel"]), bool(terms["loss"] == 0.1 * terms["tv"])
(0.0, 0.0, True)
>>> round(float(total_variation(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]))), 3)
1.0
"""

from __future__ import annotations

import logging
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from morphospace.errors import InputError
from morphospace.models.weights import read_state_dict

__all__ = ["VGG16Features", "SmallEncoder", "PerceptualLoss", "total_variation", "fit_in_domain_features",
           "load_vgg16_features"]

logger = logging.getLogger(__name__)

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
_VGG16_RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}


class VGG16Features(nn.Module):
    """The convolutional part of VGG-16 up to ``relu4_3``, with torchvision's ``features.N`` names.

    Returns the activations of the ``layers`` (names as in :data:`_VGG16_RELU`) for a (N, 3, H, W) input.
    """

    def __init__(self, layers: tuple[str, ...] = ("relu2_2", "relu3_3")) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in _VGG16_RELU]
        if unknown:
            raise ValueError(f"unknown VGG-16 layer(s) {unknown}; choose from {list(_VGG16_RELU)}")
        modules: list[nn.Module] = []
        channels = 3
        for item in _VGG16:
            if item == "M":
                modules.append(nn.MaxPool2d(2))
            else:
                modules += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        last = max(_VGG16_RELU[name] for name in layers)
        self.features = nn.Sequential(*modules[: last + 1])
        self.taps = sorted(_VGG16_RELU[name] for name in layers)
        self.in_channels = 3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


def load_vgg16_features(path: str | os.PathLike, layers: tuple[str, ...] = ("relu2_2", "relu3_3")) -> VGG16Features:
    """VGG-16 features with weights from a local torchvision ``vgg16`` state dict (classifier keys ignored).

    Raises InputError naming the file when it is missing, unreadable or not a VGG-16 state dict.
    """
    state = read_state_dict(path, "VGG-16 weights")
    net = VGG16Features(layers)
    wanted = net.state_dict()
    found = {k: v for k, v in state.items() if k in wanted and v.shape == wanted[k].shape}
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise InputError(f"{path}: not a VGG-16 state dict (missing or mis-shaped {missing[:3]})")
    net.load_state_dict(found)
    return net


class SmallEncoder(nn.Module):
    """In-domain feature network: three conv blocks (32, 64, 128 channels; the last two stride 2);
    returns the activations of each block for (N, C, H, W) input."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(64, 128, 4, stride=2, padding=1), nn.LeakyReLU(0.2)),
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


def fit_in_domain_features(images: torch.Tensor, steps: int = 300, batch_size: int = 16, seed: int = 0,
                           lr: float = 1e-3, max_seconds: float | None = None,
                           device: torch.device | str = "cpu") -> tuple[SmallEncoder, list[float]]:
    """Fit a :class:`SmallEncoder` as the encoder of a convolutional autoencoder on ``images``
    (N, C, H, W), H and W multiples of 4, on ``device``, for ``steps`` steps or until ``max_seconds``
    have passed (at least one step). Returns the frozen encoder (eval mode) and the loss per step."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    encoder = SmallEncoder(images.shape[1])
    decoder = nn.Sequential(nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                            nn.Conv2d(32, images.shape[1], 3, padding=1))
    encoder, decoder, images = encoder.to(device), decoder.to(device), images.to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        if losses and max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        batch = images[torch.randint(len(images), (min(batch_size, len(images)),), generator=generator).to(device)]
        loss = F.mse_loss(decoder(encoder(batch)[-1]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    encoder.eval().requires_grad_(False)
    return encoder, losses


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertically and horizontally neighbouring pixels of (N, C, H, W)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


class PerceptualLoss(nn.Module):
    """``content * mean_l MSE(F_l(pred), F_l(target)) + pixel * MSE(pred, target) + tv * TV(pred)``.

    ``features`` is a frozen network returning a list of activations; when it takes 3 channels and the
    images have another number, each image channel is fed separately as a grey RGB image.
    """

    def __init__(self, features: nn.Module, content: float = 0.8, pixel: float = 0.1, tv: float = 0.1) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.weights = (content, pixel, tv)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.features.eval()  # frozen statistics whatever the surrounding mode
        return self

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = getattr(self.features, "in_channels", x.shape[1])
        if wanted == x.shape[1]:
            return self.features(x)
        planes = x.reshape(-1, 1, *x.shape[-2:]).expand(-1, wanted, -1, -1)
        return self.features(planes)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        content_weight, pixel_weight, tv_weight = self.weights
        pairs = zip(self._activations(prediction), self._activations(target))
        content = torch.stack([F.mse_loss(a, b) for a, b in pairs]).mean()
        pixel = F.mse_loss(prediction, target)
        tv = total_variation(prediction)
        loss = content_weight * content + pixel_weight * pixel + tv_weight * tv
        return {"loss": loss, "content": content, "pixel": pixel, "tv": tv}
