"""Treatment-conditioned diffusion and flow matching on crops, built on MONAI's generative parts.

Processes (``process``):

- ``ddpm``: the network predicts the noise added by MONAI's ``DDPMScheduler`` at a uniformly drawn
  step t of ``train_timesteps``; sampling runs MONAI's ``DDIMScheduler`` (deterministic, eta 0) in
  ``sampling_steps`` steps from the same noise schedule;
- ``rflow``: rectified flow with MONAI's ``RFlowScheduler``: x_t = (1 - t/T) x_0 + (t/T) x_1 with
  x_1 the start, the network predicts the velocity x_0 - x_1 and sampling integrates it with Euler
  steps from t = T to 0.

Starts x_1 (``start_from``): standard normal noise, or a control crop (the ``controls`` condition
named by ``controls``: a DMSO cell of the same plate) plus ``start_noise`` x noise on a share
``start_noise_probability`` of the training crops: the control -> treated flow of CellFlux, so that
the same control cells can be shown before and after a treatment.

Network: MONAI ``DiffusionModelUNet`` (``channels`` per level, ``num_res_blocks`` residual blocks
per level, self- and cross-attention at the levels of ``attention_levels``, group norm). Images
(N, C, H, W) in [-1, 1].

Conditions (``conditions``: names of ``data.conditions`` entries of kind categorical, numeric or
features) become one context token each of ``context_dim`` values, read by the U-Net's
cross-attention: a categorical value through a learnt embedding, a numeric value (e.g. a
standardised log dose) and a standardised feature vector through a two-layer perceptron. In
training, the whole context of a crop is replaced by the constant ``NULL_CONTEXT`` with
probability ``condition_dropout``, so that the same network also predicts without a condition;
sampling with ``guidance_scale`` s > 1 then follows classifier-free guidance,
uncond + s (cond - uncond), through MONAI's ``DiffusionInferer`` (whose guidance fills the
unconditioned context with that constant); s = 1 is the plain conditional model.

Weights: an exponential moving average of the network (``ema_decay``, with the warm-up
min(decay, (1 + n) / (10 + n)) after n updates) is kept by Lightning's ``WeightAveraging``
callback, saved in the checkpoints and used by every command after training.

Sampling without a given condition draws conditions jointly from a bank of up to ``BANK_SIZE``
training cells kept in the checkpoint, so that samples follow the training mixture of
treatments, doses and features (and a control -> treated flow starts from up to
``CONTROL_BANK_SIZE`` training control crops kept the same way).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Literal, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import WeightAveraging
from monai.inferers import DiffusionInferer
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler
from torch import nn

from morphospace.config import Config, key_error
from morphospace.data.conditions import CategoricalCondition, ControlCondition, FeatureCondition, NumericCondition
from morphospace.data.spec import DataSpec
from morphospace.errors import InputError
from morphospace.models.base import GenerativeFamily, GenerativeModel
from morphospace.models.training import RunConfig, cpu_has_bf16, log_metrics

__all__ = ["DiffusionConfig", "DiffusionModel", "DiffusionFamily", "FAMILY", "ConditionTokens", "ema_warmup",
           "NULL_CONTEXT", "BANK_SIZE", "CONTROL_BANK_SIZE"]

NULL_CONTEXT = -1.0
"""Value of every context entry of a crop whose condition is dropped (MONAI's guidance fill value)."""

BANK_SIZE = 1024
"""Training cells whose conditions are kept for sampling without a given condition."""

CONTROL_BANK_SIZE = 64
"""Training control crops kept to start samples of a control -> treated flow."""

CONDITION_KINDS = ("categorical", "numeric", "features")


class DiffusionConfig(Config):
    """Conditional diffusion (DDPM with DDIM sampling) or rectified flow on crops."""

    family: Literal["diffusion"] = "diffusion"
    process: Literal["ddpm", "rflow"] = pydantic.Field("rflow", description="ddpm (noise prediction) or rflow")
    start_from: Literal["noise", "controls"] = pydantic.Field(
        "noise", description="where samples start: standard normal noise, or control crops (rflow only)")
    controls: str = pydantic.Field("controls", description="data.conditions entry of kind controls "
                                                           "(start_from: controls)")
    start_noise: float = pydantic.Field(1.0, ge=0, description="SD of the noise added to a starting control crop")
    start_noise_probability: float = pydantic.Field(
        0.5, ge=0, le=1, description="share of the training control crops that get the noise")
    conditions: list[str] = pydantic.Field(
        default_factory=list, description="data.conditions entries (categorical, numeric, features); empty: none")
    context_dim: int = pydantic.Field(64, ge=1, description="values per condition token")
    condition_dropout: float = pydantic.Field(0.1, ge=0, lt=1, description="share of crops trained unconditioned")
    guidance_scale: float = pydantic.Field(1.0, ge=0, description="classifier-free guidance at sampling; 1: none")
    channels: tuple[int, ...] = pydantic.Field((32, 64, 64), min_length=2, description="U-Net channels per level")
    attention_levels: tuple[bool, ...] | None = pydantic.Field(
        None, description="attention per level; null: the last level only (conditions need one)")
    num_res_blocks: int = pydantic.Field(1, ge=1)
    num_head_channels: int = pydantic.Field(32, ge=1)
    norm_num_groups: int = pydantic.Field(16, ge=1)
    train_timesteps: int = pydantic.Field(1000, ge=2)
    sampling_steps: int = pydantic.Field(20, ge=1, description="DDIM or Euler steps per sample")
    ddpm_schedule: Literal["linear_beta", "scaled_linear_beta", "cosine"] = "scaled_linear_beta"
    rflow_timesteps: Literal["uniform", "logit-normal"] = pydantic.Field(
        "logit-normal", description="distribution of the training steps of rflow")
    ema_decay: float = pydantic.Field(0.999, ge=0, lt=1, description="EMA of the weights; 0: none")
    lr: float = pydantic.Field(2e-4, gt=0)
    sampling_precision: Literal["auto", "32", "bf16"] = pydantic.Field(
        "auto", description="sampling arithmetic; auto: bf16 autocast where the CPU or GPU computes bf16")

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> "DiffusionConfig":
        if self.attention_levels is not None and len(self.attention_levels) != len(self.channels):
            raise key_error("model.attention_levels", f"{len(self.attention_levels)} levels for the "
                                                      f"{len(self.channels)} levels of model.channels")
        if self.conditions and not any(self.levels_with_attention):
            raise key_error("model.attention_levels", "conditions reach the U-Net through cross-attention: "
                                                      "set at least one level to true")
        if self.start_from == "controls" and self.process != "rflow":
            raise key_error("model.start_from", "a flow from control crops needs process: rflow (ddpm starts from "
                                                "noise)")
        if len(set(self.conditions)) != len(self.conditions):
            raise key_error("model.conditions", f"names repeat: {self.conditions}")
        odd = [c for c in self.channels if c % self.norm_num_groups]
        if odd:
            raise key_error("model.channels", f"{odd} not divisible by model.norm_num_groups "
                                              f"({self.norm_num_groups})")
        return self

    @property
    def levels_with_attention(self) -> tuple[bool, ...]:
        if self.attention_levels is not None:
            return tuple(self.attention_levels)
        return tuple(k == len(self.channels) - 1 for k in range(len(self.channels)))


def ema_warmup(decay: float):
    """An ``avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: the exponential moving
    average with decay min(``decay``, (1 + n) / (10 + n)) after n updates, so that the average
    follows the weights closely while they move fast at the start.

    >>> update = ema_warmup(0.999)
    >>> round(float(update(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0))), 6)
    0.9
    """
    def update(average: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        weight = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        return weight * average + (1.0 - weight) * current
    return update


class ConditionTokens(nn.Module):
    """Conditions -> context tokens (N, K, dim), one token per condition in ``entries`` order.

    Parameters
    ----------
    entries
        ``(name, kind, size)`` per condition: kind ``categorical`` (size = vocabulary length;
        values (N,) int64), ``numeric`` (size 1; values (N,)) or ``features`` (size F; values (N, F)).
    dim
        Values per token.
    """

    def __init__(self, entries: Sequence[tuple[str, str, int]], dim: int) -> None:
        super().__init__()
        self.entries = [(str(name), str(kind), int(size)) for name, kind, size in entries]
        layers = {}
        for name, kind, size in self.entries:
            if kind == "categorical":
                layers[name] = nn.Embedding(size, dim)
            elif kind in ("numeric", "features"):
                layers[name] = nn.Sequential(nn.Linear(size, dim), nn.SiLU(), nn.Linear(dim, dim))
            else:
                raise ValueError(f"condition {name!r}: kind {kind!r} is not one of {CONDITION_KINDS}")
        self.layers = nn.ModuleDict(layers)

    def forward(self, conditions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = []
        for name, kind, size in self.entries:
            if name not in conditions:
                raise InputError(f"condition {name!r} missing; the model takes {[e[0] for e in self.entries]}")
            value = conditions[name]
            if kind == "categorical":
                value = value.long()
                if value.ndim != 1 or (len(value) and (value.min() < 0 or value.max() >= size)):
                    raise InputError(f"condition {name!r}: expected (N,) indices in [0, {size}), got "
                                     f"{tuple(value.shape)} {value.tolist()[:8]}")
            else:
                value = value.float().reshape(len(value), -1)
                if value.shape[1] != size:
                    raise InputError(f"condition {name!r}: expected {size} value(s) per cell, got {value.shape[1]}")
            tokens.append(self.layers[name](value))
        return torch.stack(tokens, dim=1)


@contextlib.contextmanager
def _sampling(module: nn.Module, bf16: bool) -> Iterator[None]:
    """Eval mode without gradients (and under bf16 autocast when ``bf16``); the mode is restored after."""
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device.type
    try:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            yield
    finally:
        module.train(was_training)


class DiffusionModel(GenerativeModel):
    """A conditional diffusion or flow-matching model of crops; see the module docstring.

    Parameters
    ----------
    config
        The model config as a plain dict.
    image_shape
        (C, H, W) of the training crops.
    condition_entries
        ``{"name", "kind", "size", "names"}`` per condition of ``config["conditions"]`` (``names``:
        the vocabulary of a categorical condition, the feature names of a feature condition).
    channels_last
        Keep convolution inputs in channels-last memory format.
    """

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, int, int],
                 condition_entries: Sequence[Mapping[str, Any]] = (), channels_last: bool = False) -> None:
        super().__init__(config, image_shape, channels_last)
        entries = [dict(e) for e in condition_entries]
        self.save_hyperparameters({"config": dict(config), "image_shape": list(image_shape),
                                   "condition_entries": entries, "channels_last": channels_last})
        self.cfg = DiffusionConfig.model_validate(config)
        if [e["name"] for e in entries] != list(self.cfg.conditions):
            raise ValueError(f"condition entries {[e['name'] for e in entries]} do not match the config's "
                             f"conditions {self.cfg.conditions}")
        self.condition_entries = entries
        channels = self.image_shape[0]
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=channels, out_channels=channels, num_res_blocks=self.cfg.num_res_blocks,
            channels=self.cfg.channels, attention_levels=self.cfg.levels_with_attention,
            norm_num_groups=self.cfg.norm_num_groups, num_head_channels=self.cfg.num_head_channels,
            with_conditioning=bool(entries), cross_attention_dim=self.cfg.context_dim if entries else None)
        self.tokens = (ConditionTokens([(e["name"], e["kind"], e["size"]) for e in entries], self.cfg.context_dim)
                       if entries else None)
        for entry in entries:
            shape = (BANK_SIZE,) if entry["kind"] in ("categorical", "numeric") else (BANK_SIZE, entry["size"])
            dtype = torch.long if entry["kind"] == "categorical" else torch.float32
            self.register_buffer(f"bank_{entry['name']}", torch.zeros(shape, dtype=dtype))
        self.register_buffer("bank_size", torch.zeros((), dtype=torch.long))
        if self.cfg.start_from == "controls":
            self.register_buffer("control_bank", torch.zeros(CONTROL_BANK_SIZE, *self.image_shape))
            self.register_buffer("control_bank_size", torch.zeros((), dtype=torch.long))
        self.inferer = DiffusionInferer(self.training_scheduler())
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------------------ schedulers

    def training_scheduler(self) -> DDPMScheduler | RFlowScheduler:
        """The scheduler that noises training crops."""
        if self.cfg.process == "ddpm":
            return DDPMScheduler(self.cfg.train_timesteps, schedule=self.cfg.ddpm_schedule, clip_sample=True)
        return RFlowScheduler(self.cfg.train_timesteps, use_discrete_timesteps=True,
                              sample_method=self.cfg.rflow_timesteps, spatial_dim=2)

    def sampling_scheduler(self, steps: int | None = None) -> DDIMScheduler | RFlowScheduler:
        """The scheduler of sampling, its timesteps set to ``steps`` (default ``sampling_steps``)."""
        steps = self.cfg.sampling_steps if steps is None else int(steps)
        if not 1 <= steps <= self.cfg.train_timesteps:
            raise InputError(f"sampling steps must be in [1, {self.cfg.train_timesteps}], got {steps}")
        if self.cfg.process == "ddpm":
            scheduler = DDIMScheduler(self.cfg.train_timesteps, schedule=self.cfg.ddpm_schedule, clip_sample=True)
        else:
            scheduler = self.training_scheduler()
        scheduler.set_timesteps(steps)
        return scheduler

    # ------------------------------------------------------------------------------ conditions

    @property
    def conditioned(self) -> bool:
        return self.tokens is not None

    @property
    def latent_dim(self) -> int:
        """Values of one sample's starting noise (C x H x W)."""
        return int(np.prod(self.image_shape))

    def set_bank(self, conditions: Mapping[str, np.ndarray | torch.Tensor], seed: int = 0) -> None:
        """Keep up to :data:`BANK_SIZE` rows (the same rows of every condition, drawn with ``seed``)
        of the training cells' encoded conditions for unconditioned sampling."""
        if not self.conditioned:
            return
        n = len(next(iter(conditions.values())))
        rows = np.sort(np.random.default_rng(seed).choice(n, min(n, BANK_SIZE), replace=False))
        for entry in self.condition_entries:
            values = torch.as_tensor(np.asarray(conditions[entry["name"]])[rows])
            getattr(self, f"bank_{entry['name']}")[: len(rows)] = values.to(getattr(self, f"bank_{entry['name']}"))
        self.bank_size.fill_(len(rows))

    def bank_conditions(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``n`` condition rows drawn (with replacement) from the bank, or its first row repeated
        when ``generator`` is None; empty for an unconditioned model."""
        if not self.conditioned:
            return {}
        size = int(self.bank_size)
        if size == 0:
            raise InputError("the model keeps no training conditions to sample from; pass conditions")
        rows = (torch.randint(size, (n,), generator=generator) if generator is not None
                else torch.zeros(n, dtype=torch.long))
        return {e["name"]: getattr(self, f"bank_{e['name']}")[rows.to(self.device)] for e in self.condition_entries}

    def set_control_bank(self, crops: torch.Tensor) -> None:
        """Keep up to :data:`CONTROL_BANK_SIZE` training control crops (N, C, H, W) to start
        samples from (``start_from: controls``)."""
        if self.cfg.start_from != "controls":
            raise InputError("the model starts from noise (start_from: noise); it keeps no control crops")
        n = min(len(crops), CONTROL_BANK_SIZE)
        self.control_bank[:n] = crops[:n].to(self.control_bank)
        self.control_bank_size.fill_(n)

    def starts(self, controls: torch.Tensor | None, n: int, generator: torch.Generator | None = None,
               noise_probability: float | None = None) -> torch.Tensor:
        """Starting points (n, C, H, W): standard normal noise (``start_from: noise``), or the
        control crops ``controls`` (n, C, H, W) plus ``start_noise`` x noise on a share
        ``noise_probability`` (default ``start_noise_probability``) of them."""
        noise = torch.randn(n, *self.image_shape, generator=generator)
        if self.cfg.start_from == "noise":
            return noise.to(self.device)
        if controls is None or tuple(controls.shape) != (n, *self.image_shape):
            shape = None if controls is None else tuple(controls.shape)
            raise InputError(f"a control -> treated flow starts from {n} control crops of shape {self.image_shape}, "
                             f"got {shape}")
        share = self.cfg.start_noise_probability if noise_probability is None else noise_probability
        noisy = (torch.rand(n, generator=generator) < share).float()[:, None, None, None]
        return controls.to(self.device) + (self.cfg.start_noise * noisy * noise).to(self.device)

    def bank_controls(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """``n`` control crops drawn from the training bank (the first one repeated when
        ``generator`` is None); None for a model that starts from noise."""
        if self.cfg.start_from != "controls":
            return None
        size = int(self.control_bank_size)
        if size == 0:
            raise InputError("the model keeps no control crops to start from; pass controls")
        rows = (torch.randint(size, (n,), generator=generator) if generator is not None
                else torch.zeros(n, dtype=torch.long))
        return self.control_bank[rows.to(self.device)]

    def context(self, conditions: Mapping[str, torch.Tensor] | None, n: int,
                drop: torch.Tensor | None = None) -> torch.Tensor | None:
        """Context tokens (n, K, context_dim) of ``conditions`` (None for an unconditioned model);
        rows where ``drop`` (n,) is true are set to :data:`NULL_CONTEXT`."""
        if not self.conditioned:
            return None
        tokens = self.tokens({k: v.to(self.device) for k, v in (conditions or {}).items()})
        if len(tokens) != n:
            raise InputError(f"conditions for {len(tokens)} cells given for {n} samples")
        if drop is not None:
            tokens = torch.where(drop.to(self.device)[:, None, None], torch.full_like(tokens, NULL_CONTEXT), tokens)
        return tokens

    # ------------------------------------------------------------------------------ training

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr)

    def diffusion_loss(self, images: torch.Tensor, context: torch.Tensor | None,
                       generator: torch.Generator | None = None, source: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error of the network's prediction (noise for ddpm, velocity x_0 - x_1 for
        rflow) at random steps, for clean crops ``images`` (N, C, H, W) in [-1, 1] and sources x_1
        ``source`` (default standard normal noise)."""
        noise = torch.randn(images.shape, generator=generator).to(images) if source is None else source.to(images)
        scheduler = self.inferer.scheduler
        if self.cfg.process == "ddpm":
            steps = torch.randint(scheduler.num_train_timesteps, (len(images),), generator=generator)
            target = noise
        else:
            steps = scheduler.sample_timesteps(images)
            target = images - noise
        steps = steps.to(images.device)
        noisy = scheduler.add_noise(original_samples=images, noise=noise, timesteps=steps)
        prediction = self.unet(self.prepare_images(noisy), timesteps=steps, context=context)
        return F.mse_loss(prediction.float(), target.float())

    def _batch_starts(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
                      ) -> torch.Tensor:
        controls = batch[self.cfg.controls] if self.cfg.start_from == "controls" else None
        return self.starts(controls, len(batch["image"]), generator)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images = self.prepare_images(batch["image"])
        drop = torch.rand(len(images)) < self.cfg.condition_dropout
        context = self.context({name: batch[name] for name in self.cfg.conditions}, len(images), drop)
        loss = self.diffusion_loss(images, context, source=self._batch_starts(batch))
        log_metrics(self, {"loss": loss}, len(images), prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        images = self.prepare_images(batch["image"])
        generator = torch.Generator().manual_seed(batch_idx)
        context = self.context({name: batch[name] for name in self.cfg.conditions}, len(images))
        loss = self.diffusion_loss(images, context, generator, self._batch_starts(batch, generator))
        log_metrics(self, {"val_loss": loss}, len(images), on_step=False)

    # ------------------------------------------------------------------------------ sampling

    def _bf16(self) -> bool:
        if self.cfg.sampling_precision != "auto":
            return self.cfg.sampling_precision == "bf16"
        if self.device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return cpu_has_bf16()

    @torch.no_grad()
    def generate(self, start: torch.Tensor, conditions: Mapping[str, torch.Tensor] | None = None,
                 guidance_scale: float | None = None, steps: int | None = None,
                 context: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] sampled from ``start`` (N, C, H, W): standard normal
        noise, or any source the model was trained to flow from. The condition is ``conditions``
        (encoded values per condition name), or ``context`` (N, K, context_dim) tokens as
        :meth:`context` makes them, or by default the bank's first row for every sample;
        ``guidance_scale`` (default the config's) and ``steps`` (default ``sampling_steps``). Eval mode."""
        n = len(start)
        if tuple(start.shape[1:]) != self.image_shape:
            raise InputError(f"start must be (N, {', '.join(map(str, self.image_shape))}), got {tuple(start.shape)}")
        scale = self.cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        with _sampling(self, self._bf16()):
            if context is None:
                context = self.context(conditions if conditions is not None else self.bank_conditions(n), n)
            elif not self.conditioned or tuple(context.shape) != (n, len(self.condition_entries), self.cfg.context_dim):
                raise InputError(f"context must be (N, K, D) = ({n}, {len(self.condition_entries)}, "
                                 f"{self.cfg.context_dim}) tokens, got {tuple(context.shape)}")
            images = self.inferer.sample(
                input_noise=self.prepare_images(start.to(self.device)), diffusion_model=self.unet,
                scheduler=self.sampling_scheduler(steps),
                conditioning=None if context is None else context.to(self.device),
                mode="crossattn", verbose=False,
                cfg=scale if context is not None and scale != 1.0 else None, cfg_fill_value=NULL_CONTEXT)
        return images.float().clamp(-1, 1)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, C, H, W) standard normal noise (drawn on the CPU)."""
        return torch.randn(n, *self.image_shape, generator=generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Noise (N, C x H x W) -> images, all on the bank's first condition row; a control ->
        treated flow starts from the bank's first control crop plus ``start_noise`` x z."""
        z = z.reshape(len(z), *self.image_shape).to(self.device)
        controls = self.bank_controls(len(z))
        return self.generate(z if controls is None else controls + self.cfg.start_noise * z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [-1, 1], each on a condition row (and, for a control -> treated flow,
        a control crop, noised as in training) drawn from the training banks."""
        generator = generator or torch.Generator().manual_seed(0)
        conditions = self.bank_conditions(n, generator)
        start = self.starts(self.bank_controls(n, generator), n, generator)
        return self.generate(start, conditions)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        raise InputError("diffusion runs generate; they do not embed images")

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        raise InputError("diffusion runs interpolate between noise vectors or conditions, not real cells")


class DiffusionFamily(GenerativeFamily):
    """``model.family: diffusion``: conditional DDPM/DDIM or rectified flow with MONAI's U-Net."""

    name = "diffusion"
    config = DiffusionConfig
    verbs = frozenset({"generate", "explore", "evaluate"})

    def module_class(self, model: Mapping[str, Any]) -> type[DiffusionModel]:
        return DiffusionModel

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        for name in config.model.conditions:
            condition = config.data.conditions.get(name)
            if not isinstance(condition, (CategoricalCondition, NumericCondition, FeatureCondition)):
                found = f"is of kind {condition.kind!r}" if condition is not None else "is missing"
                raise key_error("model.conditions", f"data.conditions.{name} {found}; diffusion takes conditions of "
                                                    f"kind {', '.join(CONDITION_KINDS)}")
        if config.model.start_from == "controls" and not isinstance(config.data.conditions.get(config.model.controls),
                                                                 ControlCondition):
            raise key_error("model.controls", f"data.conditions.{config.model.controls} must be a condition of kind "
                                              "controls (the control crops a flow starts from)")
        if config.model.guidance_scale != 1.0 and not config.model.conditions:
            raise key_error("model.guidance_scale", "guidance needs conditions (model.conditions is empty)")
        size = spec.shape("image")[-1]
        halvings = len(config.model.channels) - 1
        if size % 2 ** halvings:
            raise key_error("data.crop_size", f"{size} px crops: the U-Net halves them {halvings} times, so the side "
                                              f"must be a multiple of {2 ** halvings}")
        super().check(config, spec)

    @staticmethod
    def condition_entries(config: RunConfig, spec: DataSpec) -> list[dict[str, Any]]:
        entries = []
        for name in config.model.conditions:
            entry = spec.entry(name)
            size = len(entry.names) if entry.kind == "categorical" else int(math.prod(entry.shape) or 1)
            entries.append({"name": name, "kind": entry.kind, "size": size, "names": list(entry.names)})
        return entries

    def build(self, config: RunConfig, spec: DataSpec, data: pl.LightningDataModule
              ) -> tuple[DiffusionModel, dict[str, str]]:
        entries = self.condition_entries(config, spec)
        module = DiffusionModel(config.model.to_dict(), spec.shape("image"), entries, config.trainer.channels_last)
        if entries:
            positions = data.table.index.get_indexer(data.indices("train"))
            module.set_bank({e["name"]: data.condition_values[e["name"]][positions] for e in entries}, config.seed)
        parameters = sum(p.numel() for p in module.unet.parameters())
        notes = {"network": f"MONAI DiffusionModelUNet, channels {list(config.model.channels)}, "
                            f"{parameters:,} parameters",
                 "conditions": ", ".join(f"{e['name']} ({e['kind']})" for e in entries) or "none"}
        if config.model.start_from == "controls":
            module.set_control_bank(self._training_controls(config, data))
            notes["start"] = (f"control crops ({config.data.conditions[config.model.controls].query}, same "
                               f"{config.data.conditions[config.model.controls].by or 'split'}) + "
                               f"{config.model.start_noise} x noise on {config.model.start_noise_probability:.0%}")
        return module, notes

    @staticmethod
    def _training_controls(config: RunConfig, data: pl.LightningDataModule) -> torch.Tensor:
        """Up to CONTROL_BANK_SIZE control crops of the training split (drawn with the run's seed)."""
        pools = data.control_pools("train")[config.model.controls]
        controls = np.unique(np.concatenate(pools))
        picks = np.sort(np.random.default_rng(config.seed).choice(controls, min(len(controls), CONTROL_BANK_SIZE),
                                                                  replace=False))
        return data.dataset_for(data.store, picks, conditions=()).load(np.arange(len(picks)))

    def callbacks(self, config: RunConfig, run_dir) -> list[pl.Callback]:
        if config.model.ema_decay == 0:
            return []
        return [WeightAveraging(use_buffers=False, avg_fn=ema_warmup(config.model.ema_decay))]

    def evaluations(self, model: Any) -> tuple[str, ...]:
        return ("generation",)


FAMILY = DiffusionFamily()
