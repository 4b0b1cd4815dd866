"""Model families by name: configs select a family (``family: gan`` or ``family: vae``), never an
import path; checkpoints are restored without unpickling arbitrary objects."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Annotated, Any

import pydantic
import torch

from morphospace.errors import InputError
from morphospace.models.base import GenerativeModel
from morphospace.models.gan import GAN, GANConfig
from morphospace.models.vae import VAE, VAEGAN, VAEConfig

__all__ = ["ModelConfig", "PRESETS", "model_class", "build_model", "load_model", "read_checkpoint",
           "model_from_checkpoint"]

ModelConfig = Annotated[GANConfig | VAEConfig, pydantic.Field(discriminator="family")]

PRESETS: dict[str, dict[str, Any]] = {
    "dcgan": {"family": "gan", "loss": "dcgan"},
    "lsgan": {"family": "gan", "loss": "lsgan"},
    "wgan_gp": {"family": "gan", "loss": "wgan-gp", "discriminator_steps": 5, "lr_generator": 1e-4,
                "lr_discriminator": 1e-4, "betas": [0.0, 0.9]},
    "vae": {"family": "vae"},
    "beta_vae": {"family": "vae", "beta": 4.0},
    "vae_gan": {"family": "vae", "adversarial": {"loss": "lsgan", "weight": 1.0, "feature_matching": 1.0}},
}
"""The model of each example config (``configs/<preset>_*.yaml``), by name."""


def model_class(config: dict[str, Any]) -> type[GenerativeModel]:
    """The LightningModule class of a model config (as a plain dict)."""
    if config["family"] == "gan":
        return GAN
    return VAEGAN if config.get("adversarial") else VAE


def build_model(config: GANConfig | VAEConfig, image_shape: tuple[int, int, int],
                channels_last: bool = False) -> GenerativeModel:
    """A fresh model of ``config`` for crops of ``image_shape`` (C, H, W)."""
    data = config.to_dict()
    return model_class(data)(data, tuple(image_shape), channels_last)


def read_checkpoint(checkpoint: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """The content of a checkpoint file, loaded without unpickling objects (tensors and plain types).

    Raises InputError naming the file when it is missing, truncated or not a plain checkpoint.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: checkpoint not found")
    try:
        return torch.load(checkpoint, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise InputError(f"{checkpoint}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None


def model_from_checkpoint(state: dict[str, Any], source: str = "checkpoint") -> GenerativeModel:
    """Rebuild a model from checkpoint content (see :func:`read_checkpoint`), in eval mode."""
    try:
        hparams = state["hyper_parameters"]
        model = model_class(hparams["config"])(hparams["config"], tuple(hparams["image_shape"]),
                                               hparams.get("channels_last", False))
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError, pydantic.ValidationError) as exc:
        raise InputError(f"{source}: not a morphospace model checkpoint ({type(exc).__name__}: {exc})") from None
    return model.eval()


def load_model(checkpoint: str | os.PathLike, map_location: str = "cpu") -> GenerativeModel:
    """Restore a model from a Lightning checkpoint file, in eval mode."""
    return model_from_checkpoint(read_checkpoint(checkpoint, map_location), str(checkpoint))
