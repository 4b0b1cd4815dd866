"""CP2Image: a cell's image generated from its CellProfiler feature vector (a pixel loss plus
feature matching on a discriminator), to ask which features an image keeps.

Input: the standardised features of the crop (the ``data.conditions`` entry of kind ``features``
named by ``model.condition``). With ``encode_angles`` (default) each angle among them (an object's
orientation, a Zernike phase: :func:`~morphospace.features.cellprofiler.angular_period`) enters as
the cosine and sine of its value in the table's units (the standardised value times the training SD
plus the training centre, over the period, in radians), so that angles either side of the wrap
(-90 and 90 degrees, -pi and pi) give neighbouring inputs rather than the two ends of a scale; the
inputs are then optionally projected on ``pca_components`` principal components fitted on the
training split (saved with the model), and optionally concatenated with ``noise_dim`` standard
normal values so that one feature vector can give several cells (``noise_dim: 0``, the default, is
the deterministic model). While training, ``input_dropout`` zeroes that share of the feature inputs
of each cell at random (the rest scaled by 1 / (1 - p)), so that the generator cannot lean on single
features of the training cells: the features are many and redundant, and without it the generator
keeps far more of them on the training plates than on held-out ones.

Networks: the generator projects its input to a small spatial map and doubles it with transposed
convolutions, batch norm and leaky ReLU up to the crop size, then a 3x3 convolution to the image
channels and tanh (see :class:`~morphospace.models.blocks.Generator`); the discriminator is the
shared strided-convolution one, whose every block (and dense layer) is matched, with a logit head
and optional spectral norm on every weight (then without batch norm).

Losses per batch, each averaged over the images of the batch:

- generator: ``pixel_weight`` x the sum over pixels of the squared error to the real crop of the
  same cell, plus sum_k w_k x the sum of squared differences between the discriminator's layer-k
  activations of the generated and the real crop, with w_k = clip((step - delay (k + 1)) / ramp,
  0, 1) after ``step`` generator updates (:func:`feature_matching_weights`), plus
  ``adversarial_weight`` x the non-saturating adversarial term;
- discriminator: binary cross-entropy, real crops against generated ones.

Both networks use Adam; every batch updates the discriminator, then the generator.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import lightning.pytorch as pl
import numpy as np
import pydantic
import torch
from torch import nn

from morphospace.config import Config, key_error
from morphospace.data.conditions import FeatureCondition
from morphospace.data.spec import DataSpec
from morphospace.errors import InputError
from morphospace.features.cellprofiler import angular_period
from morphospace.models.base import GenerativeFamily, GenerativeModel
from morphospace.models.blocks import Discriminator, Generator, frozen_batch_norm_stats, gan_losses
from morphospace.models.training import RunConfig, log_metrics

__all__ = ["CP2ImageConfig", "CP2Image", "CP2ImageFamily", "FAMILY", "feature_matching_weights", "fit_inputs",
           "angle_columns"]


class CP2ImageConfig(Config):
    """CP2Image: images generated from standardised CellProfiler features."""

    family: Literal["cp2image"] = "cp2image"
    condition: str = pydantic.Field("features", description="data.conditions entry of kind features")
    noise_dim: int = pydantic.Field(0, ge=0, description="noise values beside the features; 0: deterministic")
    encode_angles: bool = pydantic.Field(True, description="angles (orientations, Zernike phases) as their cosine "
                                                           "and sine")
    pca_components: int | None = pydantic.Field(
        None, ge=1, description="project the standardised features on this many principal components (training split)")
    input_dropout: float = pydantic.Field(0.0, ge=0, lt=1, description="while training, zero this share of the "
                                                                       "feature inputs at random (rescaled)")
    base_channels: int = pydantic.Field(32, ge=4)
    feature_dim: int = pydantic.Field(64, ge=1, description="dense discriminator layer before the logit")
    negative_slope: float = pydantic.Field(0.2, ge=0, description="leaky ReLU of the generator")
    lr_generator: float = pydantic.Field(2e-4, gt=0)
    lr_discriminator: float = pydantic.Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    pixel_weight: float = pydantic.Field(0.5, ge=0, description="on the per-image sum of squared pixel errors")
    feature_matching_delay_steps: int = pydantic.Field(2500, ge=0, description="layer k starts after delay (k + 1)")
    feature_matching_ramp_steps: int = pydantic.Field(2500, ge=1, description="generator steps to reach weight 1")
    adversarial_weight: float = pydantic.Field(0.0, ge=0, description="non-saturating adversarial term of G")
    spectral_norm: bool = pydantic.Field(False, description="spectral norm on the discriminator (no batch norm)")


def feature_matching_weights(step: int, n_layers: int, delay: int, ramp: int) -> list[float]:
    """Weight of each discriminator layer's feature-matching term after ``step`` generator updates:
    w_k = clip((step - delay (k + 1)) / ramp, 0, 1), so deeper layers join later.

    >>> feature_matching_weights(3000, 3, delay=1000, ramp=1000)
    [1.0, 1.0, 0.0]
    """
    return [float(np.clip((step - delay * (k + 1)) / ramp, 0.0, 1.0)) for k in range(n_layers)]


def angle_columns(columns: list[str]) -> tuple[list[int], list[float]]:
    """Positions and periods (in the table's units) of the angles among feature ``columns``.

    >>> angle_columns(["Nuclei_AreaShape_Area", "Nuclei_AreaShape_Orientation"])
    ([1], [180.0])
    """
    periods = {i: period for i, c in enumerate(columns) if (period := angular_period(c)) is not None}
    return list(periods), [float(p) for p in periods.values()]


def fit_inputs(features: np.ndarray, pca_components: int | None) -> dict[str, torch.Tensor]:
    """What the model fits on the training split's inputs (N, E), the standardised features after
    :meth:`CP2Image.encode_angles`: the PCA mean (E,) and components (K, E) when ``pca_components``
    is set, and ``prior_scale`` (D, D), a square root of the covariance of the model's inputs
    (D = K or E), so that N(0, I) @ prior_scale.T draws inputs with the training covariance."""
    values = torch.as_tensor(np.asarray(features, np.float64))
    fitted: dict[str, torch.Tensor] = {}
    if pca_components is not None:
        mean = values.mean(0)
        _, _, right = torch.linalg.svd(values - mean, full_matrices=False)
        fitted["pca_mean"], fitted["pca_components"] = mean.float(), right[:pca_components].float()
        values = (values - mean) @ right[:pca_components].T
    covariance = torch.cov(values.T).reshape(values.shape[1], values.shape[1]) if len(values) > 1 else \
        torch.eye(values.shape[1], dtype=values.dtype)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    fitted["prior_scale"] = (eigenvectors * eigenvalues.clamp(min=0).sqrt()).float()
    return fitted


class CP2Image(GenerativeModel):
    """Generator from feature vectors and a discriminator for feature matching; see the module docstring.

    Parameters
    ----------
    config
        The model config as a plain dict.
    image_shape
        (C, H, W) of the training crops.
    n_features
        F, the number of standardised features of the condition.
    channels_last
        Keep convolution inputs in channels-last memory format.
    angles
        Positions (A,) among the F features of the angles encoded by cosine and sine (with
        ``encode_angles``), and their periods (A,) in the table's units (:func:`angle_columns`).
    """

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], n_features: int,
                 channels_last: bool = False, angles: tuple[list[int], list[float]] | None = None) -> None:
        super().__init__(config, image_shape, channels_last)
        self.cfg = CP2ImageConfig.model_validate(config)
        positions, periods = (list(map(int, angles[0])), list(map(float, angles[1]))) \
            if angles is not None and self.cfg.encode_angles else ([], [])
        if len(positions) != len(periods) or any(not 0 <= i < n_features for i in positions):
            raise ValueError(f"angles must pair positions among the {n_features} features with periods")
        self.save_hyperparameters({"config": dict(config), "image_shape": list(image_shape),
                                   "n_features": int(n_features), "channels_last": channels_last,
                                   "angles": [positions, periods]})
        self.automatic_optimization = False
        self.n_features = int(n_features)
        n_inputs = self.n_features + len(positions)
        if self.cfg.pca_components is not None and self.cfg.pca_components > n_inputs:
            raise ValueError(f"pca_components {self.cfg.pca_components} exceeds the {n_inputs} inputs")
        self.input_dim = self.cfg.pca_components or n_inputs
        self.n_angles = len(positions)
        if self.n_angles:
            self.register_buffer("angle_positions", torch.tensor(positions, dtype=torch.long))
            self.register_buffer("angle_radians_per_unit", 2 * np.pi / torch.tensor(periods))
            self.register_buffer("angle_centre", torch.zeros(self.n_angles))
            self.register_buffer("angle_scale", torch.ones(self.n_angles))
        if self.cfg.pca_components is not None:
            self.register_buffer("pca_mean", torch.zeros(n_inputs))
            self.register_buffer("pca_components", torch.eye(self.input_dim, n_inputs))
        self.register_buffer("prior_scale", torch.eye(self.input_dim))
        self.register_buffer("generator_updates", torch.zeros((), dtype=torch.long))
        channels, size = self.image_shape[0], self.image_shape[1]
        self.generator = Generator(self.latent_dim, channels, size, self.cfg.base_channels,
                                   negative_slope=self.cfg.negative_slope)
        self.discriminator = Discriminator(channels, size, self.cfg.base_channels, self.cfg.feature_dim,
                                           norm="none" if self.cfg.spectral_norm else "batch")
        if self.cfg.spectral_norm:
            for layer in self.discriminator.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(layer)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def latent_dim(self) -> int:
        """Size of the generator's input: the (projected) features and the noise."""
        return self.input_dim + self.cfg.noise_dim

    def set_inputs(self, fitted: Mapping[str, torch.Tensor]) -> None:
        """Load what :func:`fit_inputs` fitted on the training split."""
        for name, value in fitted.items():
            getattr(self, name).copy_(value)

    def set_angle_units(self, centre: np.ndarray, scale: np.ndarray) -> None:
        """The condition's centre and SD (F,) of every feature, in the table's units, so that an
        angle's standardised value x is read back as x * scale + centre."""
        if not self.n_angles:
            return
        positions = self.angle_positions.cpu().numpy()
        self.angle_centre.copy_(torch.as_tensor(np.asarray(centre, np.float32)[positions]))
        self.angle_scale.copy_(torch.as_tensor(np.asarray(scale, np.float32)[positions]))

    def encode_angles(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised features (N, F) -> (N, F + A): each angle's column holds its cosine and a
        column appended after the F holds its sine (the same (N, F) without angles)."""
        features = features.float().to(self.device)
        if not self.n_angles:
            return features
        values = features[:, self.angle_positions] * self.angle_scale + self.angle_centre
        radians = values * self.angle_radians_per_unit
        encoded = features.clone()
        encoded[:, self.angle_positions] = torch.cos(radians)
        return torch.cat([encoded, torch.sin(radians)], dim=1)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised features (N, F) -> the model's feature inputs (N, D): the angles encoded
        (:meth:`encode_angles`), then PCA scores or the same."""
        inputs = self.encode_angles(features)
        if self.cfg.pca_components is None:
            return inputs
        return (inputs - self.pca_mean) @ self.pca_components.T

    def training_inputs(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised features (N, F) -> generator inputs (N, latent_dim) for a training step:
        the projected features (:meth:`project`) with ``input_dropout``, then fresh noise."""
        inputs = nn.functional.dropout(self.project(features), self.cfg.input_dropout, training=True)
        return torch.cat([inputs, self.noise(len(inputs))], dim=1)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, noise_dim) standard normal values (drawn on the CPU, then moved to the model)."""
        return torch.randn(n, self.cfg.noise_dim, generator=generator).to(self.device)

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n generator inputs: feature vectors with the training split's covariance, and noise."""
        features = torch.randn(n, self.input_dim, generator=generator).to(self.device) @ self.prior_scale.T
        return torch.cat([features, self.noise(n, generator)], dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z.to(self.device))

    @torch.no_grad()
    def generate_from_features(self, features: torch.Tensor, seed: int = 0,
                               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] of standardised features (N, F), encoded as the run's
        feature condition encodes them (the PCA is applied here); with ``noise_dim`` > 0 the noise
        comes from a generator seeded by ``seed``, or is ``noise`` (N, noise_dim) when given."""
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise InputError(f"features must be (N, {self.n_features}), got {tuple(features.shape)}")
        if noise is None:
            noise = self.noise(len(features), torch.Generator().manual_seed(seed))
        was_training = self.training
        self.eval()
        try:
            return self.decode(torch.cat([self.project(features), noise.to(self.device)], dim=1))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.discriminator.features(self.prepare_images(images))

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        raise InputError("CP2Image runs generate from features, not from images: use explore sweep or explore "
                         "trajectory, or generate --features")

    def configure_optimizers(self):
        g = torch.optim.Adam(self.generator.parameters(), lr=self.cfg.lr_generator, betas=self.cfg.betas)
        d = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.lr_discriminator, betas=self.cfg.betas)
        return [g, d]

    def _layers_and_logit(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        layers = self.discriminator.intermediate(images)
        return layers, self.discriminator.head(layers[-1]).squeeze(1)

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pixel, feature-matching and adversarial terms of generated crops against the real crops
        of the same cells (see the module docstring)."""
        pixel = self.cfg.pixel_weight * ((fake - real) ** 2).flatten(1).sum(1).mean()
        with frozen_batch_norm_stats(self.discriminator):
            with torch.no_grad():
                real_layers, _ = self._layers_and_logit(real)
            fake_layers, fake_logit = self._layers_and_logit(fake)
        weights = feature_matching_weights(int(self.generator_updates), len(fake_layers),
                                           self.cfg.feature_matching_delay_steps, self.cfg.feature_matching_ramp_steps)
        matching = sum(w * ((f - r) ** 2).flatten(1).sum(1).mean()
                       for w, f, r in zip(weights, fake_layers, real_layers) if w > 0)
        matching = matching if isinstance(matching, torch.Tensor) else pixel.new_zeros(())
        loss = pixel + matching
        if self.cfg.adversarial_weight > 0:
            loss = loss + self.cfg.adversarial_weight * gan_losses("dcgan", None, fake_logit, for_generator=True)
        return loss, {"pixel_loss": pixel.detach(), "feature_matching": matching.detach()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        real = self.prepare_images(batch["image"])
        inputs = self.training_inputs(batch[self.cfg.condition])
        opt_g, opt_d = self.optimizers()
        fake = self.prepare_images(self.generator(inputs))
        _, real_logit = self._layers_and_logit(real)
        with frozen_batch_norm_stats(self.discriminator):
            _, fake_logit = self._layers_and_logit(fake.detach())
        d_loss = gan_losses("dcgan", real_logit, fake_logit, for_generator=False)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss, logs = self.generator_loss(real, fake)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.generator_updates += 1
        log_metrics(self, {"d_loss": d_loss, "g_loss": g_loss, **logs}, len(real), prog_bar=True)


class CP2ImageFamily(GenerativeFamily):
    """``model.family: cp2image``: images generated from CellProfiler features (CP2Image)."""

    name = "cp2image"
    config = CP2ImageConfig

    def module_class(self, model: Mapping[str, Any]) -> type[CP2Image]:
        return CP2Image

    def batch_requirements(self, model: CP2ImageConfig) -> dict[str, str]:
        return {"image": "image", model.condition: "features"}

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        condition = config.data.conditions.get(config.model.condition)
        if not isinstance(condition, FeatureCondition):
            found = f"is of kind {condition.kind!r}" if condition is not None else "is missing"
            raise key_error("model.condition", f"data.conditions.{config.model.condition} {found}; CP2Image needs a "
                                               "condition of kind features (a table from morphospace features)")
        n_features = spec.shape(config.model.condition)[0]
        if config.model.pca_components is not None and config.model.pca_components > n_features:
            raise key_error("model.pca_components", f"{config.model.pca_components} components of "
                                                    f"{n_features} features")
        augment = config.data.augment
        if augment.flips or augment.rot90 or augment.resized_crop_scale is not None:
            raise key_error("data.augment", "CP2Image learns each cell's image from its features; flips, rotations "
                                            "and crops change the image but not the features (orientation, "
                                            "position): set data.augment.flips and rot90 to false")
        super().check(config, spec)

    def build(self, config: RunConfig, spec: DataSpec, data: pl.LightningDataModule
              ) -> tuple[CP2Image, dict[str, str]]:
        model = config.model.to_dict()
        n_features = spec.shape(config.model.condition)[0]
        encoder = data.encoders[config.model.condition]
        angles = angle_columns(encoder.columns)
        module = CP2Image(model, spec.shape("image"), n_features, config.trainer.channels_last, angles=angles)
        module.set_angle_units(encoder.mean, encoder.std)
        positions = data.table.index.get_indexer(data.indices("train"))
        train_inputs = module.encode_angles(torch.as_tensor(data.condition_values[config.model.condition][positions]))
        train_inputs = train_inputs.cpu().numpy()
        fitted = fit_inputs(train_inputs, config.model.pca_components)
        module.set_inputs(fitted)
        inputs = f"{n_features} standardised features"
        if module.n_angles:
            inputs += f" ({module.n_angles} angles as cosine and sine)"
        if config.model.pca_components is not None:
            total = float(np.var(train_inputs, axis=0, ddof=1).sum())
            kept = float((fitted["prior_scale"] ** 2).sum()) / total if total > 0 else 1.0
            inputs += f" -> {config.model.pca_components} principal components ({kept:.0%} of the variance)"
        return module, {"generator_inputs": f"{inputs} + {config.model.noise_dim} noise values"}

    def has_unused_parameters(self, model: CP2ImageConfig) -> bool:
        return True


FAMILY = CP2ImageFamily()
