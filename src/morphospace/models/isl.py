"""In silico labeling and nuclei segmentation: a U-Net from transmitted light to fluorescence (or to
a nuclei probability map) as a LightningModule, with the seed's losses.

Losses (``loss.kind``): ``l1`` and ``l2`` (pixel losses); ``pix2pix`` (a conditional PatchGAN
discriminator, MONAI's PatchDiscriminator on input and output stacked, plus ``l1_weight`` x L1;
manual optimisation, one discriminator and one generator step per batch); ``perceptual`` (content on
deep features + pixel + total variation, :mod:`morphospace.models.perceptual`); ``jaccard`` (soft
Jaccard distance on sigmoid probabilities, MONAI's DiceLoss with ``jaccard=True``; task
``segmentation``; intersection and union are summed over the batch, so tiles without nuclei do not
each cost a constant 1).

Batches are dicts with ``input`` (N, Ci, s, s), ``target`` (N, Ct, s, s) and, for segmentation,
``mask`` (N, 1, s, s) foreground in {0, 1}.

Without VGG weights the perceptual loss's in-domain features are fitted when training starts
(:meth:`ImageToImage.on_train_start`), so that their time counts in ``trainer.max_minutes`` (they
take at most a quarter of what is left of it); their steps and seconds go to the summary's notes.

``init`` starts the network from a finished run (transfer learning): tensors that match are copied,
and the output layer of a one-channel head takes the row of ``init.target`` (the seed's few-shot
nuclei segmentation initialised from the DAPI in-silico-labeling model).

The family (``model.family: isl``) trains on the ``paired`` data source; its runs support
``predict`` (whole fields) and ``evaluate isl`` or ``evaluate segmentation`` (by task).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, Mapping

import lightning.pytorch as pl
import pydantic
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from monai.losses import DiceLoss, PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator
from torchmetrics.functional import pearson_corrcoef

from morphospace.config import PATH, Config, key_error
from morphospace.data.spec import DataSpec
from morphospace.data.tiles import PairedDataModule
from morphospace.errors import InputError
from morphospace.models.family import Family
from morphospace.models.perceptual import (
    PerceptualLoss, SmallEncoder, VGG16Features, fit_in_domain_features, load_vgg16_features,
)
from morphospace.models.tiled import predict_field
from morphospace.models.training import RunConfig, log_metrics
from morphospace.models.unet import UNetConfig, build_unet
from morphospace.models.weights import transfer_weights

__all__ = ["ISLLossConfig", "InitConfig", "ISLModelConfig", "ImageToImage", "ISLFamily", "FAMILY", "batch_pcc"]


class ISLLossConfig(Config):
    """The training objective and its settings."""

    kind: Literal["l1", "l2", "pix2pix", "perceptual", "jaccard"] = "l1"
    l1_weight: float = pydantic.Field(100.0, ge=0, description="pix2pix: lambda of the L1 term (pix2pix paper: 100)")
    adversarial_criterion: Literal["bce", "least_squares", "hinge"] = "bce"
    discriminator_layers: int = pydantic.Field(3, ge=1)
    discriminator_channels: int = pydantic.Field(64, ge=4)
    lr_discriminator: float = pydantic.Field(2e-4, gt=0)
    perceptual_weights: tuple[float, float, float] = pydantic.Field(
        (0.8, 0.1, 0.1), description="content, pixel, total variation (the seed's weights)")
    vgg_weights: Annotated[str | None, PATH] = pydantic.Field(
        None, description="local torchvision vgg16 state dict; null = in-domain features fitted on the targets")
    vgg_layers: list[str] = pydantic.Field(default_factory=lambda: ["relu2_2", "relu3_3"])
    in_domain_steps: int = pydantic.Field(300, ge=1, description="autoencoder steps of the in-domain features")

    @pydantic.field_validator("perceptual_weights")
    @classmethod
    def _non_negative(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or sum(value) <= 0:
            raise ValueError(f"perceptual weights must be non-negative and not all 0, got {list(value)}")
        return value


class InitConfig(Config):
    """Where the network's starting weights come from: a finished labeling or segmentation run."""

    run: Annotated[str, PATH] = pydantic.Field(description="run directory with checkpoints/last.ckpt")
    target: str | None = pydantic.Field(
        None, description="that run's target channel whose output weights start a one-channel head (e.g. DAPI)")


class ISLModelConfig(Config):
    """An image-to-image model: task, network, loss, optimiser."""

    family: Literal["isl"] = "isl"
    task: Literal["labeling", "segmentation"] = "labeling"
    net: UNetConfig = pydantic.Field(default_factory=UNetConfig)
    loss: ISLLossConfig = pydantic.Field(default_factory=ISLLossConfig)
    lr: float = pydantic.Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    init: InitConfig | None = pydantic.Field(None, description="null: random initialisation")

    @pydantic.model_validator(mode="after")
    def _task_and_loss(self) -> "ISLModelConfig":
        if (self.task == "segmentation") != (self.loss.kind == "jaccard"):
            raise ValueError("loss.kind 'jaccard' goes with task 'segmentation' and only with it")
        return self


class ImageToImage(pl.LightningModule):
    """A U-Net trained from paired tiles; see the module docstring.

    Parameters
    ----------
    config
        :class:`ISLModelConfig` as a plain dict (saved as hyper-parameters).
    in_channels, out_channels
        Input channels (transmitted-light planes) and outputs (target stains; 1 for segmentation).
    """

    def __init__(self, config: dict[str, Any], in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.save_hyperparameters({"config": dict(config), "in_channels": in_channels, "out_channels": out_channels})
        self.cfg = ISLModelConfig.model_validate(config)
        self.net = build_unet(self.cfg.net, in_channels, out_channels)
        loss = self.cfg.loss
        self.automatic_optimization = loss.kind != "pix2pix"
        if loss.kind == "pix2pix":
            self.discriminator = PatchDiscriminator(
                spatial_dims=2, channels=loss.discriminator_channels, in_channels=in_channels + out_channels,
                out_channels=1, num_layers_d=loss.discriminator_layers)
            self.adversarial = PatchAdversarialLoss(criterion=loss.adversarial_criterion)
        if loss.kind == "perceptual":
            features = VGG16Features(tuple(loss.vgg_layers)) if loss.vgg_weights else SmallEncoder(out_channels)
            self.perceptual = PerceptualLoss(features, *loss.perceptual_weights)
        if loss.kind == "jaccard":
            self.jaccard = DiceLoss(sigmoid=True, jaccard=True, batch=True)
        self.features_ready = loss.kind != "perceptual" or bool(loss.vgg_weights)
        self.training_notes: dict[str, str] = {}

    @property
    def size_factor(self) -> int:
        return self.cfg.net.size_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (N, Ci, H, W) -> raw outputs (N, Co, H, W) (logits for segmentation)."""
        return self.net(x)

    def set_perceptual_features(self, features: torch.nn.Module) -> None:
        """Replace the perceptual loss's feature network (loaded VGG or fitted in-domain encoder)."""
        self.perceptual.features.load_state_dict(features.state_dict())
        self.features_ready = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.features_ready = True  # a checkpoint holds the features it trained with

    def on_train_start(self) -> None:
        """Fit the in-domain perceptual features on the training targets when a new run starts
        (after the Trainer's timer started, so their time counts in ``trainer.max_minutes``)."""
        if self.features_ready:
            return
        start = time.perf_counter()
        loss, trainer = self.cfg.loss, self.trainer
        tiles = trainer.datamodule.train_set
        targets = torch.stack([tiles[i]["target"] for i in range(min(256, len(tiles)))])
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        features, losses = fit_in_domain_features(targets, loss.in_domain_steps, seed=trainer.datamodule.seed,
                                                  max_seconds=remaining / 4 if remaining else None, device=self.device)
        self.set_perceptual_features(features)
        self.perceptual.features.load_state_dict(trainer.strategy.broadcast(self.perceptual.features.state_dict()))
        stopped = " (stopped at a quarter of the time budget)" if len(losses) < loss.in_domain_steps else ""
        self.training_notes["perceptual_features"] = (
            f"in-domain autoencoder features on {len(targets)} training target tiles, {len(losses)} steps{stopped} "
            f"in {time.perf_counter() - start:.1f} s within the training budget (reconstruction MSE "
            f"{losses[0]:.3g} -> {losses[-1]:.3g}); no VGG weights given")

    def _target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["mask"] if self.cfg.task == "segmentation" else batch["target"]

    def loss_terms(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The non-adversarial loss and its parts for a batch."""
        kind = self.cfg.loss.kind
        if kind == "perceptual":
            return self.perceptual(prediction, target)
        if kind == "jaccard":
            return {"loss": self.jaccard(prediction, target)}
        if kind == "l2":
            return {"loss": F.mse_loss(prediction, target)}
        return {"loss": F.l1_loss(prediction, target)}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch["input"], self._target(batch)
        if self.cfg.loss.kind == "pix2pix":
            self._pix2pix_step(x, y)
            return None
        terms = self.loss_terms(self(x), y)
        log_metrics(self, {f"train_{k}": v for k, v in terms.items()}, len(x))
        return terms["loss"]

    def _critic(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat([x, y], dim=1))[-1]

    def _pix2pix_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        opt_g, opt_d = self.optimizers()
        prediction = self(x)
        d_real = self.adversarial(self._critic(x, y), target_is_real=True, for_discriminator=True)
        d_fake = self.adversarial(self._critic(x, prediction.detach()), target_is_real=False, for_discriminator=True)
        d_loss = 0.5 * (d_real + d_fake)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        adversarial = self.adversarial(self._critic(x, prediction), target_is_real=True, for_discriminator=False)
        l1 = F.l1_loss(prediction, y)
        g_loss = adversarial + self.cfg.loss.l1_weight * l1
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        log_metrics(self, {"train_loss": g_loss, "train_l1": l1, "train_adversarial": adversarial,
                           "train_d_loss": d_loss}, len(x))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y = batch["input"], self._target(batch)
        prediction = self(x)
        metrics = {"val_l1": F.l1_loss(prediction, y)} if self.cfg.task == "labeling" else {
            "val_loss": self.jaccard(prediction, y)}
        if self.cfg.task == "labeling":
            metrics["val_pcc"] = batch_pcc(prediction[:, 0], y[:, 0])
        else:
            metrics["val_iou"] = _batch_iou(prediction > 0, y > 0.5)
        log_metrics(self, metrics, len(x), on_step=False)

    def configure_optimizers(self):
        generator = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, betas=self.cfg.betas)
        if self.cfg.loss.kind != "pix2pix":
            return generator
        discriminator = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.loss.lr_discriminator,
                                         betas=(0.5, 0.999))
        return [generator, discriminator]

    @torch.no_grad()
    def predict_field(self, field: torch.Tensor, tile: int = 256, overlap: float = 0.5,
                      batch_size: int = 4, bf16: bool = False) -> torch.Tensor:
        """A whole field (Ci, H, W) -> prediction (Co, H, W): normalised fluorescence, or nuclei
        probabilities in [0, 1] for segmentation. Runs in eval mode; ``bf16``: under bf16 autocast."""
        was_training = self.training
        self.eval()
        try:
            output = predict_field(self, field.to(self.device), tile, overlap, batch_size, self.size_factor,
                                   torch.bfloat16 if bf16 else None)
        finally:
            self.train(was_training)
        return torch.sigmoid(output) if self.cfg.task == "segmentation" else output


def batch_pcc(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Pearson correlation over the crops (N, H, W) of a batch where both are non-constant; 0
    when none is.

    >>> x = torch.rand(3, 8, 8)
    >>> round(float(batch_pcc(2 * x + 1, x)), 5)
    1.0
    """
    p, t = prediction.detach().float().flatten(1), target.detach().float().flatten(1)
    defined = (p.std(1) > 0) & (t.std(1) > 0)
    if not defined.any():
        return torch.tensor(0.0)
    return pearson_corrcoef(p[defined].T, t[defined].T).mean()


def _batch_iou(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the images of a batch of boolean masks (N, 1, H, W); 1 where both are empty."""
    intersection = (prediction & truth).flatten(1).sum(1).float()
    union = (prediction | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union)).mean()


def _vgg_features(model: ImageToImage, config: RunConfig) -> str | None:
    """Load the perceptual loss's VGG-16 features when given; returns what was used (the in-domain
    features are fitted when training starts, see :meth:`ImageToImage.on_train_start`)."""
    loss = config.model.loss
    if loss.kind != "perceptual" or not loss.vgg_weights:
        return None
    model.set_perceptual_features(load_vgg16_features(loss.vgg_weights, tuple(loss.vgg_layers)))
    return f"VGG-16 {loss.vgg_layers} from {loss.vgg_weights}"


def _initialise(model: ImageToImage, init: InitConfig) -> str:
    """Start ``model`` from the run named by ``model.init``; returns what was done."""
    from morphospace.models.run import load_module  # the run module reaches every family through the registry

    source_config, source = load_module(init.run)
    if not isinstance(source, ImageToImage):
        raise key_error("model.init.run", f"{init.run} is a {source_config.model.family} run, not an isl run")
    index = None
    if init.target is not None:
        targets = source_config.data.channels.targets
        if init.target not in targets:
            raise key_error("model.init.target", f"{init.target!r} is not a target of {init.run} (has {targets})")
        index = targets.index(init.target)
    counts = transfer_weights(source.net.state_dict(), model.net, index)
    if counts["copied"] + counts["sliced"] == 0:
        raise InputError(f"{init.run}: no tensor of its network fits this run's network (model.init)")
    target = f", output row of {init.target}" if init.target else ""
    return (f"{init.run}: {counts['copied']} tensors copied, {counts['sliced']} sliced{target}, "
            f"{counts['skipped']} left at random")


class ISLFamily(Family):
    """``model.family: isl``: in silico labeling (task ``labeling``) and nuclei segmentation
    (task ``segmentation``) U-Nets on paired fields."""

    name = "isl"
    config = ISLModelConfig
    data = "paired"
    verbs = frozenset({"predict", "evaluate"})
    sample_unit = "tiles"

    def module_class(self, model: Mapping[str, Any]) -> type[ImageToImage]:
        return ImageToImage

    def batch_requirements(self, model: ISLModelConfig) -> dict[str, str]:
        return {"input": "input", "mask": "mask"} if model.task == "segmentation" else {"input": "input",
                                                                                      "target": "target"}

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        channels = config.data.channels
        if config.model.task == "segmentation" and not channels.mask:
            raise key_error("data.channels.mask", "task 'segmentation' needs the nuclei label column")
        if config.model.task == "labeling" and not channels.targets:
            raise key_error("data.channels.targets", "task 'labeling' needs target channels")
        factor, size = config.model.net.size_factor, config.data.tiles.size
        if size % factor:
            raise key_error("data.tiles.size", f"{size} px is not a multiple of the network's factor {factor}")
        loss = config.model.loss
        smallest = 3 * 2 ** loss.discriminator_layers  # each PatchGAN layer halves the tile, the last needs 3 px
        if loss.kind == "pix2pix" and size < smallest:
            raise key_error("data.tiles.size", f"{size} px tiles are too small for the pix2pix discriminator of "
                                               f"{loss.discriminator_layers} layers (at least {smallest} px); use "
                                               "larger tiles or fewer model.loss.discriminator_layers")

    def build(self, config: RunConfig, spec: DataSpec, data: PairedDataModule
              ) -> tuple[ImageToImage, dict[str, str]]:
        out_channels = 1 if config.model.task == "segmentation" else spec.shape("target")[0]
        model = ImageToImage(config.model.to_dict(), spec.shape("input")[0], out_channels)
        notes = {}
        features = _vgg_features(model, config)
        if features:
            notes["perceptual_features"] = features
        if config.model.init is not None:
            notes["initialised_from"] = _initialise(model, config.model.init)
        return model, notes

    def notes_after_fit(self, module: ImageToImage) -> dict[str, str]:
        return module.training_notes

    def evaluations(self, model: ISLModelConfig) -> tuple[str, ...]:
        return ("segmentation",) if model.task == "segmentation" else ("isl",)

    def has_unused_parameters(self, model: ISLModelConfig) -> bool:
        return model.loss.kind == "pix2pix"


FAMILY = ISLFamily()
