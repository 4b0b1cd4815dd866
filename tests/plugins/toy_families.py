"""Model families defined outside morphospace, as a plug-in package would: nothing in the package
is edited to add them.

- ``toy``: a small CNN that learns to tell a categorical condition from the image; its penultimate
  layer is the embedding. Runs support ``embed``.
- ``recording_vae``: the built-in VAE whose training steps record the store rows each process
  trained on (``RUN/seen_rank<r>.json``), to check how multi-process runs share the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Mapping

import lightning.pytorch as pl
import pydantic
import torch
from torch import nn

from morphospace.config import Config, key_error
from morphospace.data.spec import DataSpec
from morphospace.models.family import Family
from morphospace.models.training import RunConfig
from morphospace.models.vae import VAE, VAEConfig, VAEFamily


class ToyConfig(Config):
    family: Literal["toy"] = "toy"
    condition: str = pydantic.Field(description="categorical condition to learn from the image")
    width: int = 8
    lr: float = 0.01


class ToyClassifier(pl.LightningModule):
    """Images (N, C, H, W) -> ``width`` features -> logits over ``classes`` categories."""

    def __init__(self, config: dict[str, Any], in_channels: int, classes: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = ToyConfig.model_validate(config)
        width = self.cfg.width
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, classes)

    def embed_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.features(batch["image"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = nn.functional.cross_entropy(self.head(self.features(batch["image"])), batch[self.cfg.condition])
        self.log("loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)


class ToyFamily(Family):
    name = "toy"
    config = ToyConfig
    data = "crops"
    verbs = frozenset({"embed"})

    def module_class(self, model: Mapping[str, Any]) -> type[ToyClassifier]:
        return ToyClassifier

    def batch_requirements(self, model: ToyConfig) -> dict[str, str]:
        return {"image": "image", model.condition: "categorical"}

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        if spec.shape("image")[-1] < 4:
            raise key_error("data.crop_size", "the toy family needs crops of at least 4 px")

    def build(self, config: RunConfig, spec: DataSpec, data: pl.LightningDataModule):
        classes = len(spec.names(config.model.condition))
        return ToyClassifier(config.model.to_dict(), spec.shape("image")[0], classes), {"classes": str(classes)}


class RecordingVAEConfig(VAEConfig):
    family: Literal["recording_vae"] = "recording_vae"


class RecordingVAE(VAE):
    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], channels_last: bool = False) -> None:
        super().__init__({**config, "family": "vae"}, image_shape, channels_last)  # the VAE validates its own family
        self.seen: list[int] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen += batch["index"].tolist()
        return super().training_step(batch, batch_idx)

    def on_train_end(self) -> None:
        path = Path(self.trainer.default_root_dir) / f"seen_rank{self.trainer.global_rank}.json"
        path.write_text(json.dumps({"rows": self.seen, "world_size": self.trainer.world_size}))


class RecordingVAEFamily(VAEFamily):
    name = "recording_vae"
    config = RecordingVAEConfig
    presets = {}

    def module_class(self, model: Mapping[str, Any]) -> type[RecordingVAE]:
        return RecordingVAE
