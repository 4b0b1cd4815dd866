"""Self-supervised and weakly supervised cell embedders (``model.family: ssl``): a backbone that
pools a crop to a vector, trained on augmented views of the crops, whose pooled vector is the
embedding ``embed`` writes.

Objectives (``objective``):

- ``dino``: a student and a teacher network (the student's exponential moving average, momentum
  rising from ``teacher_momentum`` to 1 on a cosine over the run) see different views; the
  student's softmax over ``prototypes`` outputs (temperature ``student_temperature``) is pulled
  towards the teacher's, centred (a running mean of its outputs, momentum ``center_momentum``) and
  sharpened (``teacher_temperature``). Multi-crop: the teacher sees two global views, the student
  those and ``local_crops`` smaller views of ``local_size`` pixels (Caron et al. 2021).
- ``simclr``: two views of each crop, a projection MLP, and the normalised-temperature
  cross-entropy (NT-Xent, ``temperature``) that picks each view's partner out of the batch
  (Chen et al. 2020).
- ``supervised``: weak supervision alone: a linear head on the pooled vector predicts the
  categorical condition ``label`` (e.g. the treatment) by cross-entropy, as DeepProfiler does.

With ``label`` set and ``label_weight`` > 0, the weak-supervision loss is added to ``dino`` or
``simclr`` (WS-DINO style); keep plates or batches apart with ``data.split.by``.

Views: random resized crops (``global_scale``, ``local_scale``), flips and quarter turns, per-channel
intensity scaling and gamma, Gaussian blur and noise: nothing mixes channels.

Backbones: ``cnn`` (:func:`~morphospace.models.blocks.pooled_cnn`), ``resnet`` (MONAI's ResNet-18
layout, ``width`` times its feature maps) and ``vit`` (MONAI's ViT, mean of its tokens; global views
only, as its position embedding fixes the input size). A local state dict (``weights``) may
initialise the backbone.

Examples
--------
>>> config = SSLConfig(objective="simclr", base_channels=4, blocks=2)
>>> model = SelfSupervised(config.to_dict(), (2, 32, 32))
>>> model.embed(torch.zeros(3, 2, 32, 32)).shape
torch.Size([3, 8])
>>> round(float(nt_xent(torch.eye(4), torch.eye(4), 0.5)), 4)  # log(1 + 6 exp(-2)): partners agree
0.5944
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal, Mapping, Sequence

import pydantic
import torch
from monai.networks.nets import ResNet, ViT
from torch import nn
from torch.nn import functional as F

from morphospace.config import PATH, Config, key_error
from morphospace.data.conditions import CategoricalCondition
from morphospace.data.spec import DataSpec
from morphospace.data.transforms import add_noise, flip_and_rotate, intensity_jitter, random_blur, random_resized_crops
from morphospace.models.blocks import pooled_cnn
from morphospace.models.embedding import EmbeddingFamily, EmbeddingModel
from morphospace.models.training import RunConfig
from morphospace.models.weights import load_pretrained

__all__ = ["SSLConfig", "SelfSupervised", "SSLFamily", "FAMILY", "nt_xent", "dino_loss", "make_views"]

_RESNET18_LAYERS = [2, 2, 2, 2]
_RESNET18_PLANES = [64, 128, 256, 512]


class SSLConfig(Config):
    """A self-supervised or weakly supervised embedder; see the module docstring."""

    family: Literal["ssl"] = "ssl"
    objective: Literal["dino", "simclr", "supervised"] = "dino"
    label: str | None = pydantic.Field(None, description="categorical condition in data.conditions to predict "
                                                         "(weak supervision); null = none")
    label_weight: float = pydantic.Field(1.0, ge=0, description="weight of the label's cross-entropy beside "
                                                                "dino or simclr (0 = none)")
    backbone: Literal["cnn", "resnet", "vit"] = "cnn"
    base_channels: int = pydantic.Field(32, ge=2, description="cnn: feature maps of the first block, doubling")
    blocks: int = pydantic.Field(4, ge=1, le=8, description="cnn: conv blocks, each halving the side")
    width: float = pydantic.Field(0.25, gt=0, le=2, description="resnet: fraction of ResNet-18's feature maps")
    patch_size: int = pydantic.Field(8, ge=2, description="vit: patch side in pixels")
    hidden_size: int = pydantic.Field(192, ge=8, description="vit: token width")
    layers: int = pydantic.Field(6, ge=1, description="vit: transformer layers")
    heads: int = pydantic.Field(4, ge=1, description="vit: attention heads")
    weights: Annotated[str | None, PATH] = pydantic.Field(None, description="local state dict of the backbone")
    projection_dim: int = pydantic.Field(256, ge=8, description="hidden width of the projection head")
    output_dim: int = pydantic.Field(128, ge=2, description="simclr: projection length; dino: bottleneck length")
    prototypes: int = pydantic.Field(1024, ge=2, description="dino: outputs of the head")
    temperature: float = pydantic.Field(0.2, gt=0, description="simclr: NT-Xent temperature")
    student_temperature: float = pydantic.Field(0.1, gt=0)
    teacher_temperature: float = pydantic.Field(0.04, gt=0)
    center_momentum: float = pydantic.Field(0.9, ge=0, lt=1)
    teacher_momentum: float = pydantic.Field(0.996, ge=0, le=1, description="dino: at the start, rising to 1")
    global_scale: tuple[float, float] = pydantic.Field((0.4, 1.0), description="area fraction of the global views")
    local_crops: int = pydantic.Field(4, ge=0, description="dino: small views per crop for the student")
    local_size: int = pydantic.Field(32, ge=8, description="dino: side of the local views in pixels")
    local_scale: tuple[float, float] = pydantic.Field((0.1, 0.4), description="area fraction of the local views")
    intensity_scale: tuple[float, float] = (0.7, 1.3)
    gamma: tuple[float, float] = (0.8, 1.25)
    blur_probability: float = pydantic.Field(0.3, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise: float = pydantic.Field(0.05, ge=0, description="noise SD as a fraction of each channel's SD")
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(1e-4, ge=0)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> "SSLConfig":
        if self.objective == "supervised" and not self.label:
            raise ValueError("objective supervised needs a label (a categorical condition)")
        for name in ("global_scale", "local_scale", "intensity_scale", "gamma", "blur_sigma"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high, got {[low, high]}")
        if max(self.global_scale[1], self.local_scale[1]) > 1:
            raise ValueError("global_scale and local_scale are fractions of the crop's area, at most 1")
        if self.backbone == "vit" and self.objective == "dino" and self.local_crops:
            raise ValueError("a vit backbone takes one input size: set local_crops: 0")
        return self


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two views (N, D) of the same N samples: cross-entropy of picking each row's
    partner among the other 2N - 1 rows by cosine similarity over ``temperature``."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(a)
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, partners)


def dino_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], center: torch.Tensor,
              student_temperature: float, teacher_temperature: float) -> torch.Tensor:
    """DINO's cross-entropy between the teacher's centred, sharpened softmax of each global view
    and the student's softmax of every other view, averaged over pairs; views are (N, K) logits."""
    targets = [F.softmax((t - center) / teacher_temperature, dim=1).detach() for t in teacher]
    log_probabilities = [F.log_softmax(s / student_temperature, dim=1) for s in student]
    total, pairs = 0.0, 0
    for i, target in enumerate(targets):
        for j, log_probability in enumerate(log_probabilities):
            if i == j:
                continue
            total = total + (-target * log_probability).sum(dim=1).mean()
            pairs += 1
    return total / pairs


def make_views(images: torch.Tensor, config: SSLConfig, generator: torch.Generator | None = None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two global views at the crops' size and ``local_crops`` local views (dino) of ``images``
    (N, C, H, W), each augmented on its own (see the module docstring)."""
    side = images.shape[-1]

    def view(size: int, scale: tuple[float, float]) -> torch.Tensor:
        x = random_resized_crops(images, size, scale, generator=generator)
        x = flip_and_rotate(x, generator=generator)
        x = intensity_jitter(x, config.intensity_scale, config.gamma, generator)
        x = random_blur(x, config.blur_sigma, config.blur_probability, generator)
        return add_noise(x, config.noise, generator)

    global_views = [view(side, config.global_scale) for _ in range(2)]
    local = config.local_crops if config.objective == "dino" else 0
    return global_views, [view(config.local_size, config.local_scale) for _ in range(local)]


class _ViTBackbone(nn.Module):
    """MONAI's ViT, the mean of its output tokens as the vector."""

    def __init__(self, in_channels: int, side: int, cfg: SSLConfig) -> None:
        super().__init__()
        self.vit = ViT(in_channels=in_channels, img_size=side, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                       mlp_dim=2 * cfg.hidden_size, num_layers=cfg.layers, num_heads=cfg.heads, spatial_dims=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.vit(images)
        return tokens.mean(dim=1)


def _backbone(cfg: SSLConfig, image_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    channels, side = image_shape[0], image_shape[-1]
    if cfg.backbone == "cnn":
        return pooled_cnn(channels, cfg.base_channels, cfg.blocks)
    if cfg.backbone == "resnet":
        planes = [max(4, int(round(p * cfg.width))) for p in _RESNET18_PLANES]
        net = ResNet("basic", _RESNET18_LAYERS, planes, spatial_dims=2, n_input_channels=channels,
                     conv1_t_size=3, conv1_t_stride=1, no_max_pool=True, feed_forward=False)
        return net, planes[-1]
    return _ViTBackbone(channels, side, cfg), cfg.hidden_size


def _mlp(features: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, out))


class _DinoHead(nn.Module):
    """MLP to a bottleneck, L2-normalised, then a weight-normalised linear layer to the prototypes."""

    def __init__(self, features: int, cfg: SSLConfig) -> None:
        super().__init__()
        self.mlp = _mlp(features, cfg.projection_dim, cfg.output_dim)
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(cfg.output_dim, cfg.prototypes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=1))


class SelfSupervised(EmbeddingModel):
    """Backbone -> pooled vector (the embedding) -> objective heads; see the module docstring."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int],
                 classes: Sequence[str] = ()) -> None:
        super().__init__(config, image_shape, classes=list(classes))
        self.cfg = SSLConfig.model_validate(config)
        self.classes = list(classes)
        self.backbone, self.features = _backbone(self.cfg, self.image_shape)
        if self.cfg.objective == "simclr":
            self.projection = _mlp(self.features, self.cfg.projection_dim, self.cfg.output_dim)
        if self.cfg.objective == "dino":
            self.head = _DinoHead(self.features, self.cfg)
            self.teacher = nn.ModuleDict({"backbone": copy.deepcopy(self.backbone), "head": copy.deepcopy(self.head)})
            self.teacher.requires_grad_(False)
            self.register_buffer("center", torch.zeros(1, self.cfg.prototypes))
        self.label_head = nn.Linear(self.features, len(self.classes)) if self.uses_labels else None
        self.generator = torch.Generator().manual_seed(0)  # the family seeds it with the run's seed

    @property
    def uses_labels(self) -> bool:
        return bool(self.cfg.label) and (self.cfg.objective == "supervised" or self.cfg.label_weight > 0)

    @property
    def embedding_dim(self) -> int:
        return self.features

    def load_pretrained(self) -> dict[str, int]:
        """Load ``weights`` into the backbone (and the dino teacher's copy of it)."""
        counts = load_pretrained(self.backbone, self.cfg.weights, "backbone weights")
        if self.cfg.objective == "dino":
            self.teacher["backbone"].load_state_dict(self.backbone.state_dict())
        return counts

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled vector of the un-augmented images (dino: the teacher's, as in DINO's evaluation)."""
        backbone = self.teacher["backbone"] if self.cfg.objective == "dino" else self.backbone
        return backbone(images.to(self.device))

    def _self_supervised(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's loss and the pooled vectors of the first global view."""
        global_views, local_views = make_views(images.cpu(), self.cfg, self.generator)
        global_views = [v.to(self.device) for v in global_views]
        pooled = [self.backbone(v) for v in global_views]
        if self.cfg.objective == "simclr":
            return nt_xent(self.projection(pooled[0]), self.projection(pooled[1]), self.cfg.temperature), pooled[0]
        student = [self.head(p) for p in pooled] + [self.head(self.backbone(v.to(self.device))) for v in local_views]
        with torch.no_grad():
            teacher = [self.teacher["head"](self.teacher["backbone"](v)) for v in global_views]
        loss = dino_loss(student, teacher, self.center, self.cfg.student_temperature, self.cfg.teacher_temperature)
        if self.training:
            batch_center = torch.cat(teacher).mean(dim=0, keepdim=True)
            self.center.mul_(self.cfg.center_momentum).add_((1 - self.cfg.center_momentum) * batch_center)
        return loss, pooled[0]

    def losses(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["image"]
        terms: dict[str, torch.Tensor] = {}
        if self.cfg.objective == "supervised":
            pooled = self.backbone(make_views(images.cpu(), self.cfg, self.generator)[0][0].to(self.device))
            terms["loss"] = torch.zeros((), device=self.device)
        else:
            terms[self.cfg.objective], pooled = self._self_supervised(images)
            terms["loss"] = terms[self.cfg.objective]
        if self.label_head is not None:
            labels = batch[self.cfg.label].to(self.device).long()
            logits = self.label_head(pooled)
            weight = 1.0 if self.cfg.objective == "supervised" else self.cfg.label_weight
            terms["label_loss"] = F.cross_entropy(logits, labels)
            terms["label_accuracy"] = (logits.argmax(dim=1) == labels).float().mean()
            terms["loss"] = terms["loss"] + weight * terms["label_loss"]
        return terms

    def teacher_momentum(self) -> float:
        """dino: the EMA momentum now, from ``teacher_momentum`` to 1 on a cosine over the run's steps."""
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        progress = min(1.0, self.global_step / total)
        start = self.cfg.teacher_momentum
        return 1 - (1 - start) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.cfg.objective != "dino":
            return
        momentum = self.teacher_momentum()
        students = list(self.backbone.parameters()) + list(self.head.parameters())
        teachers = list(self.teacher["backbone"].parameters()) + list(self.teacher["head"].parameters())
        for teacher, student in zip(teachers, students):
            teacher.mul_(momentum).add_(student.detach(), alpha=1 - momentum)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["view_generator"] = self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run draws the views an uninterrupted one would have drawn next."""
        if "view_generator" in checkpoint:
            self.generator.set_state(checkpoint["view_generator"])

    def configure_optimizers(self):
        trainable = [p for name, p in self.named_parameters() if not name.startswith("teacher.")]
        return torch.optim.AdamW(trainable, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


class SSLFamily(EmbeddingFamily):
    """``model.family: ssl``: DINO, SimCLR or weak supervision on crops."""

    name = "ssl"
    config = SSLConfig
    module = SelfSupervised

    def halvings(self, model: SSLConfig) -> int:
        return model.blocks if model.backbone == "cnn" else 0

    def batch_requirements(self, model: SSLConfig) -> dict[str, str]:
        return {"image": "image", **({model.label: "categorical"} if model.label else {})}

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        model = config.model
        _, *spatial = spec.shape("image")
        if model.label and not isinstance(config.data.conditions.get(model.label), CategoricalCondition):
            raise key_error("model.label", f"data.conditions.{model.label} must be a condition of kind categorical "
                                           "(e.g. the treatment: column Metadata_Compound)")
        if model.label and len(spec.names(model.label)) < 2:
            raise key_error("model.label", f"data.conditions.{model.label} has fewer than two classes in the data")
        if model.backbone == "vit" and spatial and spatial[-1] % model.patch_size:
            raise key_error("model.patch_size", f"crops are {spatial[-1]} px; the patch side must divide it")
        if model.backbone == "cnn" and model.objective == "dino" and model.local_crops and \
                model.local_size % 2 ** model.blocks:
            raise key_error("model.local_size", f"the cnn halves the side {model.blocks} times: local views must be a "
                                                f"multiple of {2 ** model.blocks} px")
        if spatial and model.local_size > spatial[-1]:
            raise key_error("model.local_size", f"local views of {model.local_size} px exceed the {spatial[-1]} px crops")
        super().check(config, spec)

    def build_arguments(self, config: RunConfig, spec: DataSpec) -> dict[str, Any]:
        return {"classes": spec.names(config.model.label) if config.model.label else []}

    def build(self, config: RunConfig, spec: DataSpec, data: Any) -> tuple[SelfSupervised, dict[str, str]]:
        module, notes = super().build(config, spec, data)
        module.generator.manual_seed(config.seed)
        return module, notes


FAMILY = SSLFamily()
