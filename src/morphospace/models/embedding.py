"""What the whole-image embedders share (autoencoder, classifier, U-Net embedder): a LightningModule
that saves its constructor arguments, moves batches to its device and maps images to vectors; and
the family rules that go with it (2-D square tiles whose side the networks can halve enough times).

Embedders train on a crop store of whole-field tiles (``prepare`` with ``tiles``, see
:mod:`morphospace.segment.tiles`) or of single-cell crops; ``embed`` then gives one vector per
tile, averaged per field and per sample by ``embed --manifest``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import lightning.pytorch as pl
import torch

from morphospace.config import key_error
from morphospace.data.spec import DataSpec
from morphospace.models.family import Family
from morphospace.models.training import RunConfig, log_metrics

__all__ = ["EmbeddingModel", "EmbeddingFamily"]


class EmbeddingModel(pl.LightningModule):
    """Base of the embedders: ``config`` (the family's config as a plain dict) and ``image_shape``
    (C, H, W) are saved as hyper-parameters with any ``extra`` constructor arguments, so that a
    checkpoint restores the module with ``Module(**hparams)``. Subclasses set ``cfg`` (their config,
    with ``lr``) and implement :meth:`losses`; training and validation log what it returns (the
    latter with the prefix ``val_``) and minimise its ``loss``."""

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int], **extra: Any) -> None:
        super().__init__()
        self.save_hyperparameters({"config": dict(config), "image_shape": list(image_shape), **extra})
        self.image_shape = tuple(int(s) for s in image_shape)

    @property
    def embedding_dim(self) -> int:
        """Length of the vectors :meth:`embed` returns."""
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) as normalised by the run's data module -> vectors (N, embedding_dim)."""
        raise NotImplementedError

    def losses(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scalar terms of a batch to log, ``loss`` (the objective) among them."""
        raise NotImplementedError

    def _step(self, batch: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
        terms = self.losses(batch)
        log_metrics(self, {f"{prefix}{name}": value for name, value in terms.items()}, len(batch["image"]),
                    on_step=not prefix, prog_bar=not prefix)
        return terms["loss"]

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "")

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val_")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)


class EmbeddingFamily(Family):
    """A family of :class:`EmbeddingModel` modules (``module``) on 2-D crops or tiles; they ``embed``.

    ``halvings`` (a method of the model config) is how many times the networks halve the side:
    the side must be a multiple of 2 to that power.
    """

    data: ClassVar[str] = "crops"
    verbs: ClassVar[frozenset[str]] = frozenset({"embed"})
    module: ClassVar[type[EmbeddingModel]]

    def halvings(self, model: Any) -> int:
        raise NotImplementedError

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        _, *spatial = spec.shape("image")
        if len(spatial) != 2:
            raise key_error("data.store", f"the {self.name} family takes 2-D tiles or crops; the store holds {spatial}")
        height, width = spatial
        factor = 2 ** self.halvings(config.model)
        if height != width or height % factor:
            raise key_error("data.crop_size", f"tiles are {height} x {width} px; the {self.name} networks need square "
                                              f"tiles whose side is a multiple of {factor}")

    pretrained_part: ClassVar[str] = "backbone"
    """What ``model.weights`` initialises, as the run's notes name it."""

    def build(self, config: RunConfig, spec: DataSpec, data: pl.LightningDataModule
              ) -> tuple[pl.LightningModule, dict[str, str]]:
        """The module; a config with ``weights`` (a local state dict) has them loaded through the
        module's ``load_pretrained`` (a new run only: checkpoints carry them after)."""
        model = config.model.to_dict()
        module = self.module_class(model)(model, spec.shape("image"), **self.build_arguments(config, spec))
        weights = getattr(config.model, "weights", None)
        if not weights:
            return module, {}
        counts = module.load_pretrained()
        return module, {"initialisation": f"{self.pretrained_part} from {weights} "
                                          f"({counts['loaded']} of {counts['tensors']} tensors)"}

    def build_arguments(self, config: RunConfig, spec: DataSpec) -> dict[str, Any]:
        """Constructor arguments beside the config and image shape (saved as hyper-parameters)."""
        return {}

    def module_class(self, model: Mapping[str, Any]) -> type[EmbeddingModel]:
        return self.module
