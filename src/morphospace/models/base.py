"""What every generative model family shares: a LightningModule that knows its image shape and
latent size, decodes latents to images, samples, embeds images, and keeps the batch in channels-last
memory when asked.

Images entering and leaving the models are (N, C, H, W) floats in [-1, 1] (the data module's
``out_range``), so that the generator's tanh and the data agree.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["GenerativeModel"]


class GenerativeModel(pl.LightningModule):
    """Base of the model families.

    Parameters
    ----------
    config
        The family's config as a plain dict (saved as hyper-parameters, so checkpoints restore it).
    image_shape
        (C, H, W) of the training crops.
    channels_last
        Keep convolution inputs in channels-last memory format (faster on recent CPUs).
    """

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters({"config": dict(config), "image_shape": list(image_shape),
                                   "channels_last": channels_last})
        self.image_shape = tuple(int(s) for s in image_shape)
        if self.image_shape[1] != self.image_shape[2]:
            raise ValueError(f"models need square crops, got {self.image_shape[1]} x {self.image_shape[2]}")
        self.channels_last = channels_last

    @property
    def latent_dim(self) -> int:
        return int(self.hparams["config"]["latent_dim"])

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch to the model's device and memory format."""
        images = images.to(self.device)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

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
