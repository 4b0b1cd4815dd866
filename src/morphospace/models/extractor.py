"""The in-domain feature extractor of generation metrics: a small CNN trained once on a dataset's
real crops to classify a label (e.g. their compound), saved and reused for every model so that FID
and KID compare. ImageNet's InceptionV3 sees RGB photographs; this network sees the channels as
they are, and needs no download.

Image batches are float tensors or arrays (N, C, H, W) with values in [0, 1].

Examples
--------
>>> import torch
>>> extractor = FeatureExtractor(in_channels=2, num_features=16)
>>> extractor(torch.rand(3, 2, 32, 32)).shape
torch.Size([3, 16])
>>> len(fingerprint(extractor))
10
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pydantic
import torch
from torch import nn
from tqdm.auto import tqdm

from morphospace.atomic import atomic_file
from morphospace.config import Config, ConfigError, resolve_config
from morphospace.errors import InputError

__all__ = [
    "ExtractorArguments",
    "FeatureExtractor",
    "as_unit_images",
    "device_of",
    "fingerprint",
    "train_feature_extractor",
    "save_feature_extractor",
    "load_feature_extractor",
]

ImageBatch = np.ndarray | torch.Tensor
_RANGE_TOLERANCE = 1e-4
_CHECKPOINT_FORMAT = "morphospace.FeatureExtractor/1"


class ExtractorArguments(Config):
    """Constructor arguments of :class:`FeatureExtractor`, stored with its weights."""

    in_channels: int = pydantic.Field(ge=1)
    num_features: int = pydantic.Field(128, ge=1, description="embedding dimension")
    num_classes: int = pydantic.Field(2, ge=2, description="outputs of the training head")
    width: int = pydantic.Field(32, ge=1, description="channels of the first conv block (then x2, x4, x4)")


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution with stride 2 (halves H and W), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FeatureExtractor(nn.Module):
    """Small CNN embedding crops of ``in_channels`` channels and any size (>= 32 px recommended).

    Four strided conv blocks (``width``, 2, 4, 4 x ``width`` channels; 32x32 -> 2x2), global
    average pooling, then a linear layer with ReLU to ``num_features``: the embedding. A linear
    head on the embedding classifies ``num_classes`` labels during training only.
    """

    def __init__(self, in_channels: int, num_features: int = 128, num_classes: int = 2, width: int = 32) -> None:
        super().__init__()
        self.arguments = ExtractorArguments(in_channels=in_channels, num_features=num_features,
                                            num_classes=num_classes, width=width)
        self.in_channels = in_channels
        self.num_features = num_features  # read by torchmetrics
        widths = [in_channels, width, 2 * width, 4 * width, 4 * width]
        self.body = nn.Sequential(
            *[_conv_block(a, b) for a, b in zip(widths[:-1], widths[1:])],
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(widths[-1], num_features), nn.ReLU(inplace=True))
        self.head = nn.Linear(num_features, num_classes)
        self.loss_history: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding (N, num_features) of images (N, in_channels, H, W) in [0, 1] (any float dtype)."""
        return self.embed(self.body(x.to(self.head.weight.dtype) - 0.5))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, num_classes); used for training."""
        return self.head(self.forward(x))


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def fingerprint(extractor: FeatureExtractor) -> str:
    """Short hash of the weights: scores compare only between runs with the same fingerprint."""
    digest = hashlib.sha1()
    for key, value in extractor.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def _random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each crop of (N, C, H, W) flipped and rotated by multiples of 90 degrees at random
    (rotations other than 180 degrees only for square crops)."""
    choices = (torch.rand(len(x), 3, generator=generator) < 0.5)[:, :, None, None, None]
    x = torch.where(choices[:, 0], x.flip(-1), x)
    x = torch.where(choices[:, 1], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(choices[:, 2], x.transpose(-1, -2), x)
    return x


def train_feature_extractor(
    images: ImageBatch,
    labels: Sequence | np.ndarray,
    epochs: int = 30,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    num_features: int = 128,
    width: int = 32,
    learning_rate: float = 1e-3,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """Train a :class:`FeatureExtractor` to classify ``labels`` of real crops.

    Parameters
    ----------
    images
        (N, C, H, W) in [0, 1]; kept on the CPU, moved to ``device`` batch by batch.
    labels
        N class labels of any hashable type (e.g. compound names); at least 2 distinct.
    epochs, batch_size, learning_rate
        Adam on cross-entropy, with random flips and 90-degree rotations.
    seed
        Fixes initial weights, shuffling and augmentation (the global RNG is left untouched).

    Returns
    -------
    FeatureExtractor
        In eval mode, on ``device``; ``loss_history`` holds the mean training loss per epoch.
    """
    x = as_unit_images(images, "images")
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    if len(codes) != len(x) or len(classes) < 2:
        raise InputError(f"need one label per image and at least 2 classes; got {len(codes)} labels "
                         f"of {len(classes)} class(es) for {len(x)} images")
    y = torch.as_tensor(codes, dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        extractor = FeatureExtractor(x.shape[1], num_features, len(classes), width).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(extractor.parameters(), lr=learning_rate)
    extractor.train()
    for _ in tqdm(range(epochs), desc="train extractor", unit="epoch", disable=not progress):
        extractor.loss_history.append(_train_epoch(extractor, optimizer, x, y, batch_size, generator))
    return extractor.eval()


def _train_epoch(
    extractor: FeatureExtractor, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    batch_size: int, generator: torch.Generator,
) -> float:
    """One pass over shuffled, augmented batches; return the mean loss per image."""
    device = device_of(extractor)
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        batch = _random_dihedral(x[index], generator).to(device)
        loss = nn.functional.cross_entropy(extractor.logits(batch), y[index].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    return total / len(x)


def save_feature_extractor(extractor: FeatureExtractor, path: str | os.PathLike) -> Path:
    """Write one ``torch.save`` file: ``{"format", "arguments" (constructor arguments), "state_dict"}``.

    The file appears atomically; load it with :func:`load_feature_extractor`.
    """
    path = Path(path)
    checkpoint = {
        "format": _CHECKPOINT_FORMAT,
        "arguments": extractor.arguments.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in extractor.state_dict().items()},
    }
    with atomic_file(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def load_feature_extractor(path: str | os.PathLike, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Read a file written by :func:`save_feature_extractor`; the extractor is in eval mode.

    Raises :class:`InputError` naming the file when it is missing or not such a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: feature extractor file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        raise InputError(f"{path}: not a readable feature extractor checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a feature extractor checkpoint (expected format {_CHECKPOINT_FORMAT!r})")
    try:
        arguments = resolve_config(ExtractorArguments, checkpoint.get("arguments"), source=str(path))
        extractor = FeatureExtractor(**arguments.model_dump())
        extractor.load_state_dict(checkpoint.get("state_dict"))
    except (ConfigError, RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: malformed feature extractor checkpoint ({exc})") from None
    return extractor.to(device).eval()


def as_unit_images(images: ImageBatch, name: str) -> torch.Tensor:
    """``images`` as a float32 CPU tensor (N, C, H, W); InputError unless finite and in [0, 1]."""
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
    else:
        tensor = torch.as_tensor(np.asarray(images))
    tensor = tensor.to(torch.float32)
    if tensor.ndim != 4 or len(tensor) == 0:
        raise InputError(f"{name}: expected a non-empty (N, C, H, W) image batch; got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise InputError(f"{name}: images contain NaN or infinite values")
    low, high = tensor.min().item(), tensor.max().item()
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise InputError(f"{name}: values must lie in [0, 1], got {low:.3g} to {high:.3g} "
                         "(rescale model outputs from [-1, 1] with (x + 1) / 2)")
    return tensor
