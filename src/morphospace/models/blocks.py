"""Building blocks shared by the generative model families: the DCGAN-style generator (also the
VAE decoder), the strided-convolution discriminator (also the VAE encoder trunk), GAN losses and
the gradient penalty.

Sizes: square crops whose side is a multiple of 4. The generator starts from a ``start_size``
square and doubles it ``n_up`` times, where ``n_up`` is the largest number of doublings (at most
``max_doublings``) that leaves an integer start of at least 4 pixels: 64 -> 4 * 2^4, 68 -> 17 * 2^2,
72 -> 9 * 2^3.

Examples
--------
>>> import torch
>>> g = Generator(latent_dim=8, out_channels=3, image_size=68, base_channels=8)
>>> g(torch.randn(2, 8)).shape
torch.Size([2, 3, 68, 68])
>>> d = Discriminator(in_channels=3, image_size=68, base_channels=8, feature_dim=10)
>>> d(torch.rand(2, 3, 68, 68)).shape, d.features(torch.rand(2, 3, 68, 68)).shape
(torch.Size([2]), torch.Size([2, 10]))
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "doublings",
    "pooled_cnn",
    "Generator",
    "ConvEncoder",
    "Discriminator",
    "gan_losses",
    "gradient_penalty",
    "frozen_batch_norm_stats",
    "GANLoss",
]

GANLoss = Literal["dcgan", "lsgan", "wgan-gp"]


def pooled_cnn(in_channels: int, base_channels: int, blocks: int) -> tuple[nn.Module, int]:
    """A CNN that pools an image (N, C, H, W) to a vector: ``blocks`` x [3x3 conv, batch norm, ReLU,
    3x3 conv, batch norm, ReLU, 2x2 max pool], feature maps doubling from ``base_channels``, then
    global average pooling; returns it and its output length."""
    from monai.networks.blocks import Convolution

    layers, channels = [], in_channels
    for index in range(blocks):
        out = base_channels * 2 ** index
        layers += [Convolution(2, channels, out, kernel_size=3, norm="batch", act="relu"),
                   Convolution(2, out, out, kernel_size=3, norm="batch", act="relu"), nn.MaxPool2d(2)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), channels
Norm = Literal["batch", "layer", "none"]


@contextlib.contextmanager
def frozen_batch_norm_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block, batch norm layers of ``module`` still normalise with batch statistics but
    leave their running statistics untouched (momentum 0)."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def doublings(image_size: int, max_doublings: int = 4) -> tuple[int, int]:
    """``(start_size, n)`` with ``start_size * 2**n == image_size``, n as large as allowed, start >= 4.

    Raises ValueError when ``image_size`` is not a multiple of 4.
    """
    if image_size % 4 or image_size < 8:
        raise ValueError(f"crop size must be a multiple of 4 and at least 8, got {image_size}")
    n = 0
    while n < max_doublings and image_size % 2 ** (n + 1) == 0 and image_size // 2 ** (n + 1) >= 4:
        n += 1
    return image_size // 2**n, n


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _activation(negative_slope: float) -> nn.Module:
    return nn.LeakyReLU(negative_slope, inplace=True) if negative_slope > 0 else nn.ReLU(inplace=True)


class Generator(nn.Module):
    """z (N, latent_dim) -> dense -> (N, top, s, s) -> ``n`` x [ConvTranspose 4x4/2, BN, ReLU] ->
    3x3 conv -> tanh: images (N, out_channels, image_size, image_size) in [-1, 1].

    Parameters
    ----------
    latent_dim
        Size of the noise / latent vector.
    out_channels
        Image channels.
    image_size
        Side of the square output, a multiple of 4.
    base_channels
        Feature maps of the last upsampling blocks; earlier blocks double them, up to
        ``base_channels * 2**(n - 1)`` after the dense layer.
    max_doublings
        Upper bound on the number of upsampling blocks.
    negative_slope
        Slope of the activations below 0: 0 gives ReLU (DCGAN), above 0 leaky ReLU.
    """

    def __init__(self, latent_dim: int = 100, out_channels: int = 3, image_size: int = 64, base_channels: int = 64,
                 max_doublings: int = 4, negative_slope: float = 0.0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.start_size, n_up = doublings(image_size, max_doublings)
        self.top_channels = base_channels * 2 ** max(n_up - 1, 0)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, self.top_channels * self.start_size**2, bias=False),
            nn.BatchNorm1d(self.top_channels * self.start_size**2),
            _activation(negative_slope),
        )
        blocks, channels = [], self.top_channels
        for _ in range(n_up):
            out = max(channels // 2, base_channels)
            blocks += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out), _activation(negative_slope)]
            channels = out
        blocks += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.Tanh()]
        self.upsample = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.top_channels, self.start_size, self.start_size)
        return self.upsample(x)


class ConvEncoder(nn.Module):
    """Images -> optional Gaussian input noise -> ``n`` x [Conv 4x4/2, norm, LeakyReLU(0.2)] ->
    flatten -> dense ``feature_dim`` + LeakyReLU: features (N, feature_dim).

    Parameters
    ----------
    in_channels, image_size, base_channels, max_doublings
        As for :class:`Generator` (channels double at every block, starting at ``base_channels``).
    feature_dim
        Width of the output layer.
    input_noise
        Standard deviation of Gaussian noise added to inputs in training mode.
    norm
        ``batch``, ``layer`` or ``none`` (WGAN-GP critics must not use batch norm).
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, base_channels: int = 64, feature_dim: int = 100,
                 input_noise: float = 0.0, norm: Norm = "batch", max_doublings: int = 4) -> None:
        super().__init__()
        end_size, n_down = doublings(image_size, max_doublings)
        self.input_noise = input_noise
        layers, channels = [], in_channels
        for index in range(n_down):
            out = base_channels * 2**index
            layers.append(nn.Sequential(
                nn.Conv2d(channels, out, 4, stride=2, padding=1, bias=norm == "none"),
                _norm(norm if index > 0 else "none", out),
                nn.LeakyReLU(0.2, inplace=True),
            ))
            channels = out
        self.blocks = nn.ModuleList(layers)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(channels * end_size**2, feature_dim),
                                   nn.LeakyReLU(0.2, inplace=True))
        self.feature_dim = feature_dim

    def intermediate(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of every conv block and of the dense layer (for feature matching)."""
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        outputs.append(self.dense(x))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate(x)[-1]


class Discriminator(ConvEncoder):
    """A :class:`ConvEncoder` with a dense head giving one logit (or critic score) per image; its
    ``feature_dim`` features, the penultimate layer, serve as the encoder (CytoGAN: 100 units)."""

    def __init__(self, in_channels: int = 3, image_size: int = 64, base_channels: int = 64, feature_dim: int = 100,
                 input_noise: float = 0.0, norm: Norm = "batch", max_doublings: int = 4) -> None:
        super().__init__(in_channels, image_size, base_channels, feature_dim, input_noise, norm, max_doublings)
        self.head = nn.Linear(feature_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (N, feature_dim)."""
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def gan_losses(
    loss: GANLoss, real_scores: torch.Tensor | None, fake_scores: torch.Tensor, for_generator: bool,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Adversarial loss of the discriminator (``for_generator=False``) or generator.

    ``dcgan``: binary cross-entropy on logits, real targets ``1 - label_smoothing`` (one-sided);
    ``lsgan``: least squares towards 1 (real) and 0 (fake); ``wgan-gp``: critic mean(fake) -
    mean(real), generator -mean(fake) (add :func:`gradient_penalty` to the critic loss).
    """
    if for_generator:
        if loss == "dcgan":
            return F.binary_cross_entropy_with_logits(fake_scores, torch.ones_like(fake_scores))
        if loss == "lsgan":
            return 0.5 * ((fake_scores - 1) ** 2).mean()
        return -fake_scores.mean()
    if loss == "dcgan":
        real = F.binary_cross_entropy_with_logits(real_scores, torch.full_like(real_scores, 1 - label_smoothing))
        return real + F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
    if loss == "lsgan":
        return 0.5 * (((real_scores - 1) ** 2).mean() + (fake_scores**2).mean())
    return fake_scores.mean() - real_scores.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty: mean (||grad critic(x_hat)|| - 1)^2 on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(mixed)
    (gradients,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((gradients.flatten(1).norm(dim=1) - 1) ** 2).mean()
