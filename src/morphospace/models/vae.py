"""VAE, beta-VAE and VAE-GAN (VAEplus, Lafarge et al. 2019) on single-cell crops.

Loss per image, with the reconstruction a squared error summed over pixels (the negative
log-likelihood of a Gaussian decoder with variance 1/2, up to a constant) and the KL divergence of
the diagonal Gaussian posterior to N(0, I) summed over latent dimensions:

- ``objective="weighted"``: recon + beta * KL (beta = 1: the VAE; beta > 1: the beta-VAE);
- ``objective="convex"``: (1 - beta) * recon + beta * KL with beta in [0, 1] (the Statistical
  Cell's reparameterised objective, Eq 3), keeping the loss on one scale across beta.

The ELBO of that decoder (up to a constant) is -(recon + KL). The mean KL of every latent dimension
over an epoch is kept (``kl_per_dimension``, set by :meth:`VAE.finish_kl_epoch` at the end of each
training epoch); dimensions above ``active_threshold`` nats count as active.

VAE-GAN adds a discriminator that tells real crops from reconstructions and prior samples; the
VAE also minimises an adversarial term and the squared distance between the discriminator's
intermediate features of real and reconstructed crops (feature matching).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import lightning.pytorch as pl
import pydantic
import torch
from torch import nn

from morphospace.config import Config
from morphospace.models.base import GenerativeFamily, GenerativeModel
from morphospace.models.blocks import ConvEncoder, Discriminator, Generator, frozen_batch_norm_stats, gan_losses
from morphospace.models.training import RunConfig, log_metrics

__all__ = ["AdversarialConfig", "VAEConfig", "VAE", "VAEGAN", "VAEFamily", "FAMILY", "KLPerDimension", "vae_terms",
           "vae_terms_per_cell", "vae_objective", "squared_error_per_cell", "bounded_logvar"]


class AdversarialConfig(Config):
    """The discriminator of a VAE-GAN."""

    loss: Literal["dcgan", "lsgan"] = "lsgan"
    weight: float = pydantic.Field(1.0, ge=0, description="adversarial term in the VAE loss")
    feature_matching: float = pydantic.Field(1.0, ge=0, description="discriminator feature-matching term")
    lr: float = pydantic.Field(2e-4, gt=0)
    input_noise: float = pydantic.Field(0.1, ge=0)


class VAEConfig(Config):
    """A convolutional VAE (encoder: strided convs; decoder: the GAN generator's shape)."""

    family: Literal["vae"] = "vae"
    latent_dim: int = pydantic.Field(64, ge=1)
    base_channels: int = pydantic.Field(64, ge=4)
    hidden_dim: int = pydantic.Field(256, ge=1, description="encoder features before the mean / log-variance heads")
    beta: float = pydantic.Field(1.0, ge=0)
    objective: Literal["weighted", "convex"] = "weighted"
    lr: float = pydantic.Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    active_threshold: float = pydantic.Field(0.1, ge=0, description="nats of mean KL for an active dimension")
    adversarial: AdversarialConfig | None = None

    @pydantic.model_validator(mode="after")
    def _beta_range(self) -> "VAEConfig":
        if self.objective == "convex" and self.beta > 1:
            raise ValueError(f"beta must lie in [0, 1] with the convex objective, got {self.beta}")
        return self


def bounded_logvar(raw: torch.Tensor, low: float = -20.0, high: float = 10.0) -> torch.Tensor:
    """An encoder's log-variance (any shape) held within [low, high] in the forward pass, with the
    gradient of the identity.

    The bounds keep ``exp(logvar)`` finite. A plain clamp has no gradient outside them, so a unit whose
    log-variance once passes a bound is held there for good: neither the KL term nor the reconstruction
    can move it back. Passing the gradient whole lets the KL term pull it in again.

    >>> raw = torch.tensor([-30.0, 0.0, 12.0], requires_grad=True)
    >>> logvar = bounded_logvar(raw)
    >>> logvar.tolist()
    [-20.0, 0.0, 10.0]
    >>> logvar.sum().backward()
    >>> raw.grad.tolist()
    [1.0, 1.0, 1.0]
    """
    return raw.clamp(low, high).detach() + (raw - raw.detach())


def vae_terms(x: torch.Tensor, reconstruction: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch mean reconstruction error (summed over pixels) and KL per latent dimension (N-mean).

    >>> x = torch.zeros(2, 1, 2, 2)
    >>> recon, kl = vae_terms(x, x + 1, torch.zeros(2, 3), torch.zeros(2, 3))
    >>> float(recon), kl.tolist()
    (4.0, [0.0, 0.0, 0.0])
    """
    recon, kl = vae_terms_per_cell(x, reconstruction, mu, logvar)
    return recon.mean(), kl.mean(0)


def squared_error_per_cell(x: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Squared error of each image (N,), summed over its channels and pixels (float32)."""
    return ((prediction.float() - x.float()) ** 2).flatten(1).sum(1)


def vae_terms_per_cell(x: torch.Tensor, reconstruction: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction error of each image (N,), squared error summed over pixels, and KL of each
    image's diagonal Gaussian posterior to N(0, I) per latent dimension (N, latent_dim), in nats."""
    recon = squared_error_per_cell(x, reconstruction)
    kl = 0.5 * (mu.float() ** 2 + logvar.float().exp() - 1 - logvar.float())
    return recon, kl


def vae_objective(recon: torch.Tensor, kl: torch.Tensor, beta: float, objective: str) -> torch.Tensor:
    """``convex``: (1 - beta) recon + beta KL (Eq 3 of the Statistical Cell); ``weighted``: recon + beta KL.

    >>> float(vae_objective(torch.tensor(4.0), torch.tensor(2.0), 0.25, "convex"))
    3.5
    """
    return (1 - beta) * recon + beta * kl if objective == "convex" else recon + beta * kl


class VAE(GenerativeModel):
    """Encoder to (mu, log-variance), reparameterised sample, decoder; see :class:`VAEConfig`."""

    encodes = True

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], channels_last: bool = False) -> None:
        super().__init__(config, image_shape, channels_last)
        self.cfg = VAEConfig.model_validate(config)
        channels, size = self.image_shape[0], self.image_shape[1]
        self.encoder = ConvEncoder(channels, size, self.cfg.base_channels, self.cfg.hidden_dim)
        self.to_mu = nn.Linear(self.cfg.hidden_dim, self.cfg.latent_dim)
        self.to_logvar = nn.Linear(self.cfg.hidden_dim, self.cfg.latent_dim)
        self.decoder = Generator(self.cfg.latent_dim, channels, size, self.cfg.base_channels)
        self.register_buffer("kl_per_dimension", torch.zeros(self.cfg.latent_dim))
        self._kl_sum: torch.Tensor | None = None
        self._kl_batches = 0
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (mu, log-variance), each (N, latent_dim)."""
        features = self.encoder(self.prepare_images(images))
        return self.to_mu(features), bounded_logvar(self.to_logvar(features))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction (from a reparameterised sample), mu and log-variance."""
        mu, logvar = self.encode(images)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar

    def loss_terms(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction, KL (total and per dimension), the objective and the ELBO of a batch."""
        reconstruction, mu, logvar = self(images)
        recon, kl_per_dim = vae_terms(images, reconstruction, mu, logvar)
        kl = kl_per_dim.sum()
        loss = vae_objective(recon, kl, self.cfg.beta, self.cfg.objective)
        return {"loss": loss, "recon": recon, "kl": kl, "elbo": -(recon + kl), "kl_per_dim": kl_per_dim,
                "reconstruction": reconstruction}

    def configure_optimizers(self):
        return torch.optim.Adam(self._vae_parameters(), lr=self.cfg.lr, betas=self.cfg.betas)

    def _vae_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]

    def _log_terms(self, terms: dict[str, torch.Tensor], prefix: str, batch_size: int) -> None:
        log_metrics(self, {f"{prefix}{k}": terms[k] for k in ("loss", "recon", "kl", "elbo")}, batch_size,
                    on_step=prefix == "", prog_bar=prefix == "")

    def _accumulate_kl(self, kl_per_dim: torch.Tensor) -> None:
        kl = kl_per_dim.detach().float()
        self._kl_sum = kl if self._kl_sum is None else self._kl_sum + kl
        self._kl_batches += 1

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images = self.prepare_images(batch["image"])
        terms = self.loss_terms(images)
        self._accumulate_kl(terms["kl_per_dim"])
        self._log_terms(terms, "", images.shape[0])
        return terms["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        images = self.prepare_images(batch["image"])
        self._log_terms(self.loss_terms(images), "val_", images.shape[0])

    def finish_kl_epoch(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Set ``kl_per_dimension`` to the mean over the training batches since the last call and
        log the active dimensions; a no-op when no batch was seen. ``reduce`` averages the mean over
        the processes of a multi-process run (every process must call it)."""
        if self._kl_batches:
            mean = self._kl_sum / self._kl_batches
            self.kl_per_dimension.copy_(reduce(mean) if reduce is not None else mean)
            self.log("active_dims", float(self.active_dimensions()), prog_bar=True, sync_dist=True)
        self._kl_sum, self._kl_batches = None, 0

    def on_train_epoch_end(self) -> None:
        self.finish_kl_epoch()

    def active_dimensions(self, threshold: float | None = None) -> int:
        """Latent dimensions whose mean KL over the last epoch exceeds ``threshold`` nats."""
        limit = self.cfg.active_threshold if threshold is None else threshold
        return int((self.kl_per_dimension > limit).sum())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.to(self.device))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)[0]

    @torch.no_grad()
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)[0]


class VAEGAN(VAE):
    """VAE with a discriminator on reconstructions and prior samples (adversarial + feature matching)."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], channels_last: bool = False) -> None:
        super().__init__(config, image_shape, channels_last)
        if self.cfg.adversarial is None:
            raise ValueError("VAEGAN needs config.adversarial")
        self.automatic_optimization = False
        self.discriminator = Discriminator(self.image_shape[0], self.image_shape[1], self.cfg.base_channels,
                                           100, self.cfg.adversarial.input_noise)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def configure_optimizers(self):
        vae = torch.optim.Adam(self._vae_parameters(), lr=self.cfg.lr, betas=self.cfg.betas)
        d = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.adversarial.lr, betas=(0.5, 0.999))
        return [vae, d]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        adversarial = self.cfg.adversarial
        images = self.prepare_images(batch["image"])
        opt_vae, opt_d = self.optimizers()
        terms = self.loss_terms(images)
        reconstruction = self.prepare_images(terms["reconstruction"])
        samples = self.prepare_images(self.decoder(self.prior(images.shape[0])))
        fakes = torch.cat([reconstruction, samples]).detach()
        real_scores = self.discriminator(images)
        with frozen_batch_norm_stats(self.discriminator):
            d_loss = gan_losses(adversarial.loss, real_scores, self.discriminator(fakes), for_generator=False)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        with frozen_batch_norm_stats(self.discriminator):
            fake_scores = self.discriminator(torch.cat([reconstruction, samples]))
            adv = gan_losses(adversarial.loss, None, fake_scores, for_generator=True)
            real_features = [f.detach() for f in self.discriminator.intermediate(images)]
            matching = sum(((a.float() - b.float()) ** 2).mean()
                           for a, b in zip(real_features, self.discriminator.intermediate(reconstruction)))
        loss = terms["loss"] + adversarial.weight * adv + adversarial.feature_matching * matching
        opt_vae.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_vae.step()
        self._accumulate_kl(terms["kl_per_dim"])
        self._log_terms(terms, "", images.shape[0])
        log_metrics(self, {"d_loss": d_loss, "adversarial": adv, "feature_matching": matching}, images.shape[0])


class KLPerDimension(pl.Callback):
    """Append each epoch's mean KL per latent dimension of a VAE to ``kl_per_dimension.csv``
    (written by the process of global rank 0); columns ``z0, z1...``, or the module's
    ``kl_dimension_names`` when it has them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: pl.Trainer, module: VAE) -> None:
        reduce = partial(trainer.strategy.reduce, reduce_op="mean") if trainer.world_size > 1 else None
        module.finish_kl_epoch(reduce)  # callbacks run before the module's own epoch-end hook
        if not trainer.is_global_zero:
            return
        kl = module.kl_per_dimension
        names = getattr(module, "kl_dimension_names", None) or [f"z{i}" for i in range(len(kl))]
        header = not self.path.is_file()
        with self.path.open("a") as handle:
            if header:
                handle.write("epoch," + ",".join(names) + "\n")
            handle.write(f"{trainer.current_epoch}," + ",".join(f"{v:.6g}" for v in kl.tolist()) + "\n")


class VAEFamily(GenerativeFamily):
    """``model.family: vae``: VAE, beta-VAE (weighted or convex objective) and VAE-GAN."""

    name = "vae"
    config = VAEConfig
    presets = {
        "vae": {},
        "beta_vae": {"beta": 4.0},
        "vae_gan": {"adversarial": {"loss": "lsgan", "weight": 1.0, "feature_matching": 1.0}},
    }

    def module_class(self, model: Mapping[str, Any]) -> type[VAE]:
        return VAEGAN if model.get("adversarial") else VAE

    def callbacks(self, config: RunConfig, run_dir: Path) -> list[pl.Callback]:
        return [KLPerDimension(run_dir / "kl_per_dimension.csv")]

    def has_unused_parameters(self, model: VAEConfig) -> bool:
        return model.adversarial is not None


FAMILY = VAEFamily()
