"""What the generative model families (GAN, VAE) share: a LightningModule that knows its image
shape and latent size, decodes latents to images, samples, embeds images, and keeps the batch in
channels-last memory when asked; and the family rules that go with it.

Images entering and leaving the models are (N, C, H, W) floats in [-1, 1] (the data module's
``out_range``), so that the generator's tanh and the data agree.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch

from morphospace.config import key_error
from morphospace.data.spec import DataSpec
from morphospace.models.blocks import doublings
from morphospace.models.family import Family
from morphospace.models.training import RunConfig

__all__ = ["GenerativeModel", "GenerativeFamily", "to_unit_range"]


def to_unit_range(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Model images in [-1, 1] -> numpy in [0, 1]."""
    array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip((array + 1) / 2, 0, 1)


class GenerativeModel(pl.LightningModule):
    """Base of the model families.

    Parameters
    ----------
    config
        The family's config as a plain dict (saved as hyper-parameters, so checkpoints restore it).
    image_shape
        (C, H, W) of the training crops ((C, D, H, W) for families on z-stacks).
    channels_last
        Keep convolution inputs in channels-last memory format (faster on recent CPUs; the 3D
        variant for z-stacks).
    """

    encodes: ClassVar[bool] = False
    """Whether :meth:`encode_latent` is a learned encoder's forward pass (a VAE's), not a search."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters({"config": dict(config), "image_shape": list(image_shape),
                                   "channels_last": channels_last})
        self.image_shape = tuple(int(s) for s in image_shape)
        if self.image_shape[-2] != self.image_shape[-1]:
            raise ValueError(f"models need square crops, got {self.image_shape[-2]} x {self.image_shape[-1]}")
        self.channels_last = channels_last

    @property
    def latent_dim(self) -> int:
        return int(self.hparams["config"]["latent_dim"])

    @property
    def memory_format(self) -> torch.memory_format:
        """The convolutions' memory format: channels-last (``channels_last_3d`` for z-stacks) when
        ``channels_last``, else contiguous."""
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last_3d if len(self.image_shape) == 4 else torch.channels_last

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch to the model's device and memory format."""
        images = images.to(self.device)
        return images.contiguous(memory_format=self.memory_format) if self.channels_last else images

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent vectors (N, latent_dim) -> images (N, C, H, W) in [-1, 1]."""
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] -> representation vectors (N, d) for profiling."""
        raise NotImplementedError

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> latent vectors that :meth:`decode` maps back near them (for interpolation and
        algebra between real cells)."""
        raise NotImplementedError

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latent vectors from the standard normal prior (on the CPU, then moved to the model)."""
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n generated images (N, C, H, W) in [-1, 1], decoded in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self.decode(self.prior(n, generator))
        finally:
            self.train(was_training)


class GenerativeFamily(Family):
    """A family of :class:`GenerativeModel` modules on crops: they embed, sample and explore, and
    are scored by ``evaluate generation``."""

    data: ClassVar[str] = "crops"
    verbs: ClassVar[frozenset[str]] = frozenset({"embed", "generate", "explore", "evaluate"})

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        _, *spatial = spec.shape("image")
        if len(spatial) != 2:
            raise key_error("data.store", f"the {self.name} family takes 2-D crops; the store holds {spatial} crops")
        height, width = spatial
        if height != width:
            raise key_error("data.crop_size", f"crops are {height} x {width} px; the {self.name} family needs square "
                                              "crops: set data.crop_size")
        try:
            doublings(height)
        except ValueError:
            nearest = sorted({max(8, 4 * round(height / 4)), max(8, 4 * (height // 4)), 4 * (height // 4 + 1)})
            sizes = " or ".join(map(str, nearest))
            raise key_error("data.crop_size", f"{height} px crops: the {self.name} family's networks need a side that "
                                              f"is a multiple of 4 and at least 8 (e.g. {sizes})") from None
        self.check_normalization(config)

    def check_normalization(self, config: RunConfig) -> None:
        """ConfigError unless the crops are scaled to the models' output range [-1, 1]."""
        normalization = config.data.normalization
        if normalization.method == "zscore":
            raise key_error("data.normalization.method", "generative models output tanh values in [-1, 1]: use a "
                                                         "percentile or fixed normalisation with out_range [-1, 1]")
        if tuple(normalization.out_range) != (-1.0, 1.0):
            raise key_error("data.normalization.out_range", "generative models output tanh values in [-1, 1]: set "
                                                            "out_range [-1, 1]")

    def build(self, config: RunConfig, spec: DataSpec, data: pl.LightningDataModule
              ) -> tuple[pl.LightningModule, dict[str, str]]:
        model = config.model.to_dict()
        return self.module_class(model)(model, spec.shape("image"), config.trainer.channels_last), {}

    def evaluations(self, model: Any) -> tuple[str, ...]:
        return ("generation",)
