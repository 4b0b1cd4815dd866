"""Classifiers of a sample's group whose penultimate layer is the embedding (the classification
embedders of whole-image clustering): a custom CNN or MONAI's DenseNet-121.

The network is a backbone that pools an image to a feature vector, then a dense layer to
``embedding_dim`` values with ReLU and dropout (the embedding), then a linear layer to the classes
of the categorical condition ``label`` (cross-entropy loss; accuracy logged). Backbones:

- ``cnn``: ``blocks`` x [3x3 conv, batch norm, ReLU, 3x3 conv, batch norm, ReLU, 2x2 max pool],
  feature maps doubling from ``base_channels``, then global average pooling;
- ``densenet121``: MONAI's DenseNet-121 features and global average pooling (1,024 values), from
  scratch or from a local ImageNet state dict (``weights``: torchvision's ``densenet121`` keys or
  MONAI's; the first convolution is averaged over RGB and spread over the image's channels).

Examples
--------
>>> config = ClassifierConfig(label="group", base_channels=4, blocks=2, embedding_dim=8)
>>> model = Classifier(config.to_dict(), (3, 32, 32), classes=["healthy", "disease"])
>>> model(torch.zeros(5, 3, 32, 32)).shape, model.embed(torch.zeros(5, 3, 32, 32)).shape
(torch.Size([5, 2]), torch.Size([5, 8]))
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal, Mapping, Sequence

import pydantic
import torch
from monai.networks.nets import DenseNet121
from torch import nn
from torch.nn import functional as F

from morphospace.config import PATH, Config, key_error
from morphospace.data.conditions import CategoricalCondition
from morphospace.data.spec import DataSpec
from morphospace.models.blocks import pooled_cnn
from morphospace.models.embedding import EmbeddingFamily, EmbeddingModel
from morphospace.models.training import RunConfig
from morphospace.models.weights import load_pretrained

__all__ = ["ClassifierConfig", "Classifier", "ClassifierFamily", "FAMILY", "load_densenet_weights"]

DENSENET_HALVINGS = 5
_TORCHVISION_LAYER = re.compile(r"^(.*denselayer\d+)\.((?:norm|relu|conv)[12]\..*)$")


class ClassifierConfig(Config):
    """A group classifier whose penultimate layer embeds; see the module docstring."""

    family: Literal["classifier"] = "classifier"
    label: str = pydantic.Field(description="name of the categorical condition in data.conditions to classify")
    backbone: Literal["cnn", "densenet121"] = "cnn"
    embedding_dim: int = pydantic.Field(64, ge=1, description="width of the penultimate (embedding) layer")
    base_channels: int = pydantic.Field(16, ge=2, description="cnn: feature maps of the first block, doubling")
    blocks: int = pydantic.Field(4, ge=1, le=8, description="cnn: conv blocks, each halving the side")
    dropout: float = pydantic.Field(0.4, ge=0, lt=1, description="after the embedding layer")
    weights: Annotated[str | None, PATH] = pydantic.Field(
        None, description="densenet121: local ImageNet state dict; null = random initialisation")
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(1e-4, ge=0)

    @pydantic.model_validator(mode="after")
    def _weights_need_densenet(self) -> "ClassifierConfig":
        if self.weights and self.backbone != "densenet121":
            raise ValueError("weights are ImageNet DenseNet-121 weights: set backbone: densenet121")
        return self


def _densenet(in_channels: int) -> tuple[DenseNet121, int]:
    net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1)
    net.class_layers.out = nn.Identity()  # keep ReLU, pooling and flattening: (N, 1024)
    return net, net.features.norm5.num_features


def load_densenet_weights(net: DenseNet121, path: str | os.PathLike) -> dict[str, int]:
    """Load a local DenseNet-121 state dict (torchvision's or MONAI's keys) into ``net``'s features,
    the first convolution adapted to the number of input channels, the classifier left out; see
    :func:`~morphospace.models.weights.load_pretrained` (counts ``loaded`` and ``tensors``)."""
    return load_pretrained(net.features, path, "DenseNet-121 weights",
                           rename=lambda key: _TORCHVISION_LAYER.sub(r"\1.layers.\2", key).removeprefix("features."))


class Classifier(EmbeddingModel):
    """Backbone -> embedding (dense, ReLU, dropout) -> logits over ``classes``."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], classes: Sequence[str]) -> None:
        super().__init__(config, image_shape, classes=list(classes))
        self.cfg = ClassifierConfig.model_validate(config)
        self.classes = list(classes)
        if len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {self.classes}")
        if self.cfg.backbone == "cnn":
            self.backbone, features = pooled_cnn(self.image_shape[0], self.cfg.base_channels, self.cfg.blocks)
        else:
            self.backbone, features = _densenet(self.image_shape[0])
        self.embedding = nn.Sequential(nn.Linear(features, self.cfg.embedding_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(self.cfg.dropout), nn.Linear(self.cfg.embedding_dim, len(self.classes)))

    @property
    def embedding_dim(self) -> int:
        return self.cfg.embedding_dim

    def load_pretrained(self) -> dict[str, int]:
        """Load ``weights`` into the DenseNet backbone (a new run only; checkpoints carry them after)."""
        return load_densenet_weights(self.backbone, self.cfg.weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes)."""
        return self.head(self.embedding(self.backbone(images)))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.backbone(images.to(self.device)))

    def losses(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = batch["image"].to(self.device), batch[self.cfg.label].to(self.device).long()
        logits = self(images)
        return {"loss": F.cross_entropy(logits, labels), "accuracy": (logits.argmax(dim=1) == labels).float().mean()}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


class ClassifierFamily(EmbeddingFamily):
    """``model.family: classifier``: a custom CNN or DenseNet-121 classifying ``label``."""

    name = "classifier"
    config = ClassifierConfig
    module = Classifier
    pretrained_part = "DenseNet-121 features"

    def halvings(self, model: ClassifierConfig) -> int:
        return model.blocks if model.backbone == "cnn" else DENSENET_HALVINGS

    def batch_requirements(self, model: ClassifierConfig) -> dict[str, str]:
        return {"image": "image", model.label: "categorical"}

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        label = config.model.label
        if not isinstance(config.data.conditions.get(label), CategoricalCondition):
            raise key_error("model.label", f"data.conditions.{label} must be a condition of kind categorical (the "
                                           "sample's group, e.g. column: Metadata_Group)")
        if len(spec.names(label)) < 2:
            raise key_error("model.label", f"data.conditions.{label} has {len(spec.names(label))} class(es) in the "
                                           "training data; a classifier needs two or more")
        super().check(config, spec)

    def build_arguments(self, config: RunConfig, spec: DataSpec) -> dict[str, Any]:
        return {"classes": spec.names(config.model.label)}

FAMILY = ClassifierFamily()
