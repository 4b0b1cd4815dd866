"""The in-domain feature extractor of generation metrics: a small CNN trained once on a dataset's
real crops, saved and reused for every model so that FID and KID compare. It learns to classify a
label of the crops (e.g. their compound) or, without labels, self-supervised: contrastively, so that
two augmented views of a crop embed close together and apart from the other crops. ImageNet's
InceptionV3 sees RGB photographs; this network sees the channels as they are, and needs no download.

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
from typing import Callable, Sequence

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
    "contrastive_loss",
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
    num_classes: int = pydantic.Field(2, ge=2, description="outputs of the training head (classes, or the "
                                                            "projection of contrastive training)")
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
    head on the embedding, used during training only, classifies ``num_classes`` labels or projects
    the embedding to ``num_classes`` dimensions for the contrastive loss.
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
        """Outputs of the training head (N, num_classes): class scores or contrastive projections."""
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


def _random_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An augmented view of each crop of (N, C, H, W) in [0, 1]: a random flip and rotation
    (:func:`_random_dihedral`), a shift by up to an eighth of the side (wrapping round) and a gain
    of 0.7-1.3 per channel, clipped to [0, 1]."""
    x = _random_dihedral(x, generator)
    limit = max(1, min(x.shape[-2:]) // 8)
    shifts = torch.randint(-limit, limit + 1, (len(x), 2), generator=generator)
    x = torch.stack([crop.roll((int(dy), int(dx)), dims=(-2, -1)) for crop, (dy, dx) in zip(x, shifts)])
    gain = 0.7 + 0.6 * torch.rand(len(x), x.shape[1], 1, 1, generator=generator)
    return (x * gain).clamp(0, 1)


def contrastive_loss(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent loss of two views' projections (N, D): each row of ``first`` must pick its row of
    ``second`` (and vice versa) among the other 2N - 2 rows, by cosine similarity / ``temperature``.

    >>> views = torch.eye(3)
    >>> bool(contrastive_loss(views, views) < contrastive_loss(views, views.roll(1, 0)))
    True
    """
    n = len(first)
    projections = nn.functional.normalize(torch.cat([first, second]).float(), dim=1)
    similarity = projections @ projections.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(similarity.device)
    return nn.functional.cross_entropy(similarity, partners)


def train_feature_extractor(
    images: ImageBatch,
    labels: Sequence | np.ndarray | None = None,
    epochs: int = 30,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    num_features: int = 128,
    width: int = 32,
    learning_rate: float = 1e-3,
    device: str | torch.device = "cpu",
    projection_dim: int = 64,
    temperature: float = 0.2,
) -> FeatureExtractor:
    """Train a :class:`FeatureExtractor` on real crops: to classify ``labels``, or self-supervised
    without them.

    Parameters
    ----------
    images
        (N, C, H, W) in [0, 1]; kept on the CPU, moved to ``device`` batch by batch.
    labels
        N class labels of any hashable type (e.g. compound names), at least 2 distinct: Adam on
        cross-entropy with random flips and 90-degree rotations. None: contrastive training (SimCLR's
        NT-Xent, :func:`contrastive_loss` at ``temperature``) of two augmented views of each crop
        (:func:`_random_view`: flips, rotations, shifts, per-channel gain), on the head's
        ``projection_dim``-dimensional projection of the embedding; needs at least 2 images.
    epochs, batch_size, learning_rate
        Adam's passes, batch and step size.
    seed
        Fixes initial weights, shuffling and augmentation (the global RNG is left untouched).

    Returns
    -------
    FeatureExtractor
        In eval mode, on ``device``; ``loss_history`` holds the mean training loss per epoch. The
        embedding (the layer FID and KID use) is the same for both ways of training.
    """
    x = as_unit_images(images, "images")
    if labels is None:
        if len(x) < 2:
            raise InputError(f"contrastive training needs at least 2 images; got {len(x)}")
        outputs, loss_of = projection_dim, _contrastive_objective(x, temperature)
    else:
        classes, codes = np.unique(np.asarray(labels), return_inverse=True)
        if len(codes) != len(x) or len(classes) < 2:
            raise InputError(f"need one label per image and at least 2 classes; got {len(codes)} labels "
                             f"of {len(classes)} class(es) for {len(x)} images")
        outputs, loss_of = len(classes), _classification_objective(x, torch.as_tensor(codes, dtype=torch.long))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        extractor = FeatureExtractor(x.shape[1], num_features, outputs, width).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(extractor.parameters(), lr=learning_rate)
    extractor.train()
    for _ in tqdm(range(epochs), desc="train extractor", unit="epoch", disable=not progress):
        extractor.loss_history.append(_train_epoch(extractor, optimizer, len(x), loss_of, batch_size, generator))
    return extractor.eval()


Objective = Callable[[FeatureExtractor, torch.Tensor, torch.Generator], torch.Tensor]
"""The loss of the crops at some indices, for an extractor, drawing augmentation from a generator."""


def _classification_objective(x: torch.Tensor, y: torch.Tensor) -> Objective:
    def loss(extractor: FeatureExtractor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        device = device_of(extractor)
        batch = _random_dihedral(x[index], generator).to(device)
        return nn.functional.cross_entropy(extractor.logits(batch), y[index].to(device))

    return loss


def _contrastive_objective(x: torch.Tensor, temperature: float) -> Objective:
    def loss(extractor: FeatureExtractor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        views = torch.cat([_random_view(x[index], generator), _random_view(x[index], generator)])
        first, second = extractor.logits(views.to(device_of(extractor))).chunk(2)
        return contrastive_loss(first, second, temperature)

    return loss


def _train_epoch(
    extractor: FeatureExtractor, optimizer: torch.optim.Optimizer, n_images: int, loss_of: Objective,
    batch_size: int, generator: torch.Generator,
) -> float:
    """One pass over shuffled batches; return the mean loss per image."""
    order = torch.randperm(n_images, generator=generator)
    total = 0.0
    for start in range(0, n_images, batch_size):
        index = order[start:start + batch_size]
        loss = loss_of(extractor, index, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    return total / n_images


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
