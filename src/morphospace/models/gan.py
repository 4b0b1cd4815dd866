"""CytoGAN: DCGAN, LSGAN and WGAN-GP on single-cell crops, the discriminator's penultimate layer as
the encoder (Goldsborough et al. 2017).

Every batch updates the discriminator once; after every ``discriminator_steps`` batches the
generator takes ``generator_steps`` updates (so each critic step sees fresh real crops, as in
WGAN-GP). Generator and discriminator have separate Adam optimisers. The discriminator's batch-norm
running statistics are updated on real crops only, so that the encoder (its penultimate layer, in
eval mode) normalises real cells with real-cell statistics. An exponential moving average (EMA)
of the generator's weights, with warm-up, is kept and used for sampling. Real cells are mapped into
the noise space by optimising z (:meth:`GAN.encode_latent`).

Lightning counts optimiser steps in ``global_step``: a batch with a generator update is two steps.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal, Mapping

import pydantic
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from morphospace.config import Config
from morphospace.models.base import GenerativeFamily, GenerativeModel
from morphospace.models.training import log_metrics
from morphospace.models.blocks import (
    Discriminator, GANLoss, Generator, frozen_batch_norm_stats, gan_losses, gradient_penalty,
)

__all__ = ["GANConfig", "GAN", "GANFamily", "FAMILY", "ema_update"]


def ema_update(average: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor,
               decay: float) -> torch.Tensor:
    """One exponential-moving-average step with warm-up: the decay is min(decay, (1 + n) / (10 + n))
    after n updates, so the average follows the generator closely early in training instead of
    mixing its random initial weights in for thousands of steps.

    >>> round(float(ema_update(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0), decay=0.999)), 6)
    0.9
    """
    n = float(num_averaged)
    rate = min(decay, (1 + n) / (10 + n))
    return rate * average + (1 - rate) * current


class GANConfig(Config):
    """A GAN of CytoGAN's shape (defaults: latent 100, penultimate discriminator layer 100)."""

    family: Literal["gan"] = "gan"
    loss: GANLoss = "lsgan"
    latent_dim: int = pydantic.Field(100, ge=1)
    base_channels: int = pydantic.Field(64, ge=4)
    feature_dim: int = pydantic.Field(100, ge=1, description="penultimate discriminator layer = embedding size")
    input_noise: float = pydantic.Field(0.1, ge=0, description="std of noise added to discriminator inputs")
    label_smoothing: float = pydantic.Field(0.1, ge=0, lt=0.5, description="one-sided, DCGAN only")
    lr_generator: float = pydantic.Field(2e-4, gt=0)
    lr_discriminator: float = pydantic.Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    discriminator_steps: int = pydantic.Field(1, ge=1)
    generator_steps: int = pydantic.Field(1, ge=1)
    gradient_penalty: float = pydantic.Field(10.0, ge=0, description="WGAN-GP only")
    ema_decay: float | None = pydantic.Field(0.999, gt=0, lt=1, description="with warm-up, see ema_update")
    projection_steps: int = pydantic.Field(300, ge=1, description="z optimisation steps to project real cells")
    projection_lr: float = pydantic.Field(0.05, gt=0)


class GAN(GenerativeModel):
    """Generator + discriminator trained adversarially; see :class:`GANConfig`."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], channels_last: bool = False) -> None:
        super().__init__(config, image_shape, channels_last)
        self.cfg = GANConfig.model_validate(config)
        self.automatic_optimization = False
        channels, size = self.image_shape[0], self.image_shape[1]
        self.generator = Generator(self.cfg.latent_dim, channels, size, self.cfg.base_channels)
        norm = "none" if self.cfg.loss == "wgan-gp" else "batch"
        self.discriminator = Discriminator(channels, size, self.cfg.base_channels, self.cfg.feature_dim,
                                           self.cfg.input_noise, norm)
        self.ema = (AveragedModel(self.generator, avg_fn=partial(ema_update, decay=self.cfg.ema_decay), use_buffers=True)
                    if self.cfg.ema_decay else None)
        if self.ema is not None:
            self.ema.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def configure_optimizers(self):
        g = torch.optim.Adam(self.generator.parameters(), lr=self.cfg.lr_generator, betas=self.cfg.betas)
        d = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.lr_discriminator, betas=self.cfg.betas)
        return [g, d]

    def _discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real_scores = self.discriminator(real)
        with frozen_batch_norm_stats(self.discriminator):
            fake_scores = self.discriminator(fake)
        loss = gan_losses(self.cfg.loss, real_scores, fake_scores, for_generator=False,
                          label_smoothing=self.cfg.label_smoothing)
        logs = {"d_real": real_scores.mean().detach(), "d_fake": fake_scores.mean().detach()}
        if self.cfg.loss == "wgan-gp":
            penalty = gradient_penalty(self.discriminator, real, fake)
            loss = loss + self.cfg.gradient_penalty * penalty
            logs["gradient_penalty"] = penalty.detach()
        return loss, logs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        real = self.prepare_images(batch["image"])
        opt_g, opt_d = self.optimizers()
        n = real.shape[0]
        with torch.no_grad():
            fake = self.prepare_images(self.generator(self.prior(n)))
        d_loss, logs = self._discriminator_loss(real, fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        log_metrics(self, {"d_loss": d_loss, **logs}, n, prog_bar=True)
        if (batch_idx + 1) % self.cfg.discriminator_steps:
            return
        for _ in range(self.cfg.generator_steps):
            fake = self.prepare_images(self.generator(self.prior(n)))
            with frozen_batch_norm_stats(self.discriminator):
                g_loss = gan_losses(self.cfg.loss, None, self.discriminator(fake), for_generator=True)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            if self.ema is not None:
                self.ema.update_parameters(self.generator)
        log_metrics(self, {"g_loss": g_loss}, n, prog_bar=True)

    @property
    def sampling_generator(self) -> torch.nn.Module:
        """The EMA generator when kept, else the trained one."""
        return self.ema.module if self.ema is not None else self.generator

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.sampling_generator(z.to(self.device))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.discriminator.features(self.prepare_images(images))

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Project real images into the noise space: minimise pixel MSE of G(z) to them over z
        (Adam, ``projection_steps``), with a weak pull towards the prior."""
        images = images.to(self.device)
        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        z = torch.zeros(images.shape[0], self.latent_dim, device=self.device, requires_grad=True)
        optimizer = torch.optim.Adam([z], lr=self.cfg.projection_lr)
        with torch.enable_grad():
            for _ in range(self.cfg.projection_steps):
                loss = F.mse_loss(generator(z), images) + 1e-3 * (z**2).mean()
                (z.grad,) = torch.autograd.grad(loss, z)
                optimizer.step()
        generator.train(was_training)
        return z.detach()


class GANFamily(GenerativeFamily):
    """``model.family: gan``: CytoGAN's DCGAN, LSGAN and WGAN-GP."""

    name = "gan"
    config = GANConfig
    presets = {
        "dcgan": {"loss": "dcgan"},
        "lsgan": {"loss": "lsgan"},
        "wgan_gp": {"loss": "wgan-gp", "discriminator_steps": 5, "lr_generator": 1e-4, "lr_discriminator": 1e-4,
                    "betas": [0.0, 0.9]},
    }

    def module_class(self, model: Mapping[str, Any]) -> type[GAN]:
        return GAN

    def has_unused_parameters(self, model: GANConfig) -> bool:
        return True


FAMILY = GANFamily()
