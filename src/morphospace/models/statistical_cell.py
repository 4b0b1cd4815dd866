"""The Statistical Cell: a reference beta-VAE of the reference channels (membrane and DNA) and a
conditional target beta-VAE of a structure channel given the reference image and the structure's
label, in 2D or 3D.

Batches (see :mod:`morphospace.data.dataset`): ``image`` holds the target channel(s)
(``data.channels``), the ``data.conditions`` entry of kind ``channels`` named by
``model.reference`` holds the reference channels of the same crop (normalised and augmented with
the image), and the optional categorical entry named by ``model.label`` holds the structure label.
Shapes: 2D (N, C, H, W), 3D (N, C, D, H, W); images in [-1, 1].

Models, both diagonal-Gaussian VAEs with a standard normal prior:

- reference: ``x_r`` (N, Cr, ...) -> q(z_r | x_r) -> ``x_r`` again;
- target: ``x_t`` (N, Ct, ...) with ``x_r`` and the label -> q(z_t | x_t, x_r, label) ->
  p(x_t | z_t, x_r, label).

Networks: residual units (MONAI ``ResidualUnit``: two 3x3 convolutions, batch norm, PReLU, a
shortcut), ``levels`` of them halving H and W; in 3D the depth D is halved with them only while it
stays at least 4 (16 x 64 x 64 with 4 levels: D 16 -> 8 -> 4 -> 4 -> 4, H and W 64 -> 4), so that
thin anisotropic stacks keep their z-resolution. Channels double per level from ``base_channels``
(at most 8 x). The target networks concatenate, before every unit of the encoder and decoder, the
reference image resized to that scale (area averaging), a learnt embedding of the label
(``label_embedding_dim`` values, constant over space) and, with ``positions``, each pixel's position
along every spatial axis from -1 to 1 through the crop centre (crops are centred on their cell, so
the networks can relate the reference's geometry to the cell's centre). With ``label_conditioning:
film`` the label is not a map: its embedding gives a scale and a shift of every channel after each
unit (x * (1 + gamma) + beta, one linear layer per unit, 0 at first), so that the few channels of
the full-resolution units can act differently per structure. With ``reference_summary``
the target decoder also reads the reference model's posterior mean of the reference (without
gradient, so the reference model trains as before) with its latent, both projected to the coarsest
scale: a summary of the whole cell's geometry, which the reference maps give its convolutions only
locally. The decoders upsample (nearest) and end with a 3x3 convolution and tanh. The last
decoder unit works at full resolution with ``base_channels`` channels; with
``target_full_resolution_channels`` the target decoder's is that wide instead, capacity where the
structure is drawn from the full-resolution reference (a cortex that follows the membrane's outline
within a pixel) at a fraction of widening every level.
``spectral_norm`` puts spectral normalisation on every convolution and dense layer (but the label
modulation's).

Losses per cell, with recon the squared error summed over pixels (a Gaussian decoder of variance
1/2, up to a constant) and KL = sum_j 0.5 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2) nats:

- ``objective: convex`` (Eq 3): (1 - beta) recon + beta KL, beta in [0, 1];
- ``objective: weighted``: recon + beta KL;

each model with its own beta (``reference_beta``, ``target_beta``, default ``beta``); the
training loss is the sum of both models' batch means.

With ``null_latent_share`` p > 0, that share of each training batch's cells gives the target
decoder a learnt null latent instead of a posterior draw (their KL is left out): the decoder then
also learns the structure expected from the reference and the label alone, E[x_t | x_r, label],
which :meth:`StatisticalCell.expected_target` returns and the reference-only coupling compares with
the observed structure. The other cells' objective is unchanged; the null cells' squared error
enters with the objective's weight of recon ((1 - beta) convex, 1 weighted), as its own batch mean.
With ``expected_target: unet`` (and no null share) a network of its own learns that expectation
instead (:class:`ExpectedTargetUNet`, ``expected_target_channels``): a U-Net from the gated
reference and the label to the structure, trained with squared error on every training cell, its
batch mean entering the objective as the null cells' does. The VAE decoder then spends nothing on
the expectation, and the U-Net's skip connections hand each scale's reference features to the
output, where the null latent path reads the reference only as resized maps. With
``expected_target_outputs: per_label`` the U-Net's last stage draws one structure image per label
and each cell is read from its own label's: MONAI's U-Net draws its output at the top level,
straight from the joined skip features, so one shared output leaves that stage a single channel
wide for every structure alike. With ``expected_target_steered_maps`` k the U-Net also reads k
position maps whose slopes and offsets a small perceptron draws from the reference's intensity
moments (:class:`SteeredPositions`: each channel's centroid and covariance): where a structure lies
in relation to the whole cell, such as a Golgi on the side of the nucleus with more room, is set by
centroids that may lie a fraction of a pixel apart, which the moments hold exactly and a stack of
3x3 convolutions has to learn to compare across the crop (tried in 3D, not adopted). With
``expected_target_axis_map: [body, centre]`` it reads one fixed map instead, nothing learnt
(:func:`axis_map`): each pixel's signed distance along the body channel's long axis from the
centre channel's centroid, positive on the side of the body's centroid, so that the side with
more room is a sign a pixel reads where it lies (tried in 3D, not adopted).
``expected_target_initial_output`` starts the U-Net's last bias at a given level, such as the
background, for an output without tanh (``expected_target_activation: identity``; tried in 3D with
the map, not adopted). The U-Net costs a fraction of the VAEs' step and may need more steps than
they do: with ``vae_epochs`` the VAEs train during that many epochs and the U-Net alone during the
rest of ``trainer.max_epochs`` (:meth:`StatisticalCell.expected_target_loss`).

With ``reference_swap_share`` p > 0, that share of each training batch's cells shows the target
model (encoder and decoder; the reference model still reads the true reference) a chimera: one
reference channel, drawn at random among ``reference_swap_channels`` (default all), replaced by
that channel of another cell of the batch (:meth:`StatisticalCell.chimera_references`), while the
target stays the cell's own. The coupling analyses score the model on such chimeras; a model that
never saw one answers out of its training distribution there, and a structure tied to one channel
alone (a nuclear envelope to the DNA) can seem coupled to the other too, because the model also
read the other's redundant cues (the nucleus lies inside the membrane). When every channel can be
the swapped one, though, a chimera does not say which channel is foreign, and the model learns to
hedge a structure tied to one channel by the other's cues; swapping one channel
(``reference_swap_channels: [Membrane]``) keeps the other a trusted anchor, on which the
structures tied to the swapped channel then partly lean instead (docs/results.md measures both).

With ``structure_balance`` each cell's target squared error (posterior or null) enters the
objective weighted by the mean over structures of their running mean error divided by its own
structure's (:meth:`StatisticalCell.structure_weights`), so that a sparse structure, whose summed
error is small beside a bright one's, gets as large a share of the gradient; the ELBO used by the
analyses stays unweighted. ``expected_target_balance`` does the same for the expected-structure
U-Net's loss alone, from the running means of the U-Net's own errors: the coupling compares those
errors as ratios per structure, 1 - e(true) / e(swapped), so a faint structure's relative gain
counts as much as a bright one's.

With ``reference_gates`` the target model (encoder and decoder) reads each reference channel x
through a gate z of the cell's structure and that channel, (x + 1) z - 1 (:class:`ReferenceGates`:
hard concrete gates, drawn in training, deterministic at analysis; a closed gate leaves an empty
channel), and the target objective pays, with the KL's weight, ``reference_gate_cost`` times
-log P(z = 0) nats per cell for every gate: a structure keeps a channel only while reading it saves
more than that, in squared error or in the latent code's KL. The cost grows without bound as a
gate opens, so a channel that stops paying keeps closing however open its gate is (the expected
number of open gates, the L0 cost, flattens once a gate is nearly always open, and a channel read
early on stayed open). A channel the structure does not need is then closed, not merely little
used, so swapping it changes nothing; without gates a network that learnt redundant cues of both
channels (the nucleus lies inside the membrane) answers a swap of either. The gates' logits train
at their own rate ``reference_gate_lr``; their values are the run's note ``reference_gates``.
With ``reference_gate_warmup`` the gates stay open (every channel read whole, no cost) for that
share of the budget's optimiser steps: a gate closed before the networks have learnt what its
channel tells a structure gets no gradient to reopen, and a relation learnt late is lost.

Optimiser: Adam (``lr``, ``betas``) over both models, the gates' logits at ``reference_gate_lr``;
``lr_schedule: cosine`` lowers the rates to 0 over the budget's optimiser steps
(:func:`morphospace.models.training.with_lr_schedule`).

ELBO per cell (up to a constant): -(recon + KL), recon from the posterior mean (``elbo_samples:
0``) or averaged over that many reparameterised draws of a fixed seed. The mean KL of every latent
dimension over each training epoch is kept per model; a dimension whose mean exceeds
``active_threshold`` nats is active.

Logged: ``reference_loss``, ``reference_recon``, ``reference_kl``, ``reference_elbo`` and the same
with ``target_`` (over the cells that kept their latent), ``target_null_recon`` with a null share,
``loss`` (the sum of the objectives), each epoch ``reference_active_dims`` and
``target_active_dims``; ``kl_per_dimension.csv`` has columns ``reference_z*`` and ``target_z*``.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import lightning.pytorch as pl
import pydantic
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn

from morphospace.config import Config, key_error
from morphospace.data.conditions import CategoricalCondition, ChannelCondition
from morphospace.data.spec import DataSpec
from morphospace.errors import InputError
from morphospace.models.base import GenerativeFamily, GenerativeModel
from morphospace.models.training import RunConfig, log_metrics, with_lr_schedule
from morphospace.models.vae import (KLPerDimension, bounded_logvar, squared_error_per_cell, vae_objective,
                                   vae_terms_per_cell)

__all__ = ["StatisticalCellConfig", "StatisticalCell", "StatisticalCellFamily", "FAMILY", "level_strides",
           "position_maps", "intensity_moments", "SteeredPositions", "axis_map", "ConditionalEncoder",
           "ConditionalDecoder", "ExpectedTargetUNet", "MODELS"]

MODELS = ("reference", "target")
"""The two models of a Statistical Cell, in the order their terms are computed."""

MIN_DEPTH = 4
"""Depth (z slices) below which 3D networks stop halving D."""


#: Weight of the past in each structure's running mean of the target squared error
#: (``structure_balance``): about the last 100 training batches count.
STRUCTURE_SCALE_MOMENTUM = 0.99


def balance_weights(scale: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each cell's weight (N,) that makes every structure count alike: the mean of the structures'
    running errors ``scale`` (S,), over those seen so far (> 0), divided by the cell's structure's,
    for ``labels`` (N,) in [0, S); 1 for a structure not seen yet, and for every cell before any is.

    >>> balance_weights(torch.tensor([4.0, 1.0, 0.0]), torch.tensor([0, 1, 2]))
    tensor([0.6250, 2.5000, 1.0000])
    """
    seen = scale > 0
    if not seen.any():
        return torch.ones(len(labels), device=scale.device)
    per_structure = torch.where(seen, scale[seen].mean() / scale.clamp_min(torch.finfo(scale.dtype).tiny), 1.0)
    return per_structure[labels]


def _mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (N,), 0 when N is 0."""
    return values.mean() if len(values) else values.new_zeros(())


class StatisticalCellConfig(Config):
    """A reference beta-VAE and a target conditional beta-VAE (see the module docstring)."""

    family: Literal["statistical_cell"] = "statistical_cell"
    reference: str = pydantic.Field("reference", description="data.conditions entry of kind channels")
    reference_channels: list[str] | None = pydantic.Field(
        None, min_length=1, description="the reference channels, checked against the condition's; null: its own")
    label: str | None = pydantic.Field(None, description="data.conditions entry of kind categorical: the structure")
    spatial_dims: Literal[2, 3] = 2
    reference_latent_dim: int = pydantic.Field(32, ge=1)
    target_latent_dim: int = pydantic.Field(32, ge=1)
    beta: float = pydantic.Field(0.5, ge=0)
    reference_beta: float | None = pydantic.Field(None, ge=0, description="null: beta")
    target_beta: float | None = pydantic.Field(None, ge=0, description="null: beta")
    objective: Literal["convex", "weighted"] = "convex"
    base_channels: int = pydantic.Field(16, ge=2)
    levels: int = pydantic.Field(4, ge=1, le=6, description="residual units that halve H and W")
    label_embedding_dim: int = pydantic.Field(8, ge=1)
    label_conditioning: Literal["maps", "film"] = pydantic.Field(
        "maps", description="maps: the label embedding as constant condition maps; film: a per-label scale and "
                            "shift of every channel after each unit")
    positions: bool = pydantic.Field(
        False, description="also give the target networks each pixel's position from the crop centre")
    reference_summary: bool = pydantic.Field(
        False, description="also give the target decoder the reference model's posterior mean of the reference")
    target_full_resolution_channels: int | None = pydantic.Field(
        None, ge=2, description="width of the target decoder's full-resolution unit, which draws the structure "
                                "from the full-resolution reference; null: base_channels")
    spectral_norm: bool = False
    lr: float = pydantic.Field(2e-4, gt=0)
    lr_schedule: Literal["constant", "cosine"] = pydantic.Field(
        "constant", description="cosine: the learning rate falls from lr to 0 over the budget's optimiser steps")
    betas: tuple[float, float] = (0.9, 0.999)
    active_threshold: float = pydantic.Field(0.1, ge=0, description="nats of mean KL for an active dimension")
    elbo_samples: int = pydantic.Field(0, ge=0, description="posterior draws of the per-cell ELBO; 0: posterior mean")
    structure_balance: bool = pydantic.Field(
        False, description="weight each structure's target squared error in the training loss by the inverse of its "
                           "running mean, so that every structure counts alike")
    null_latent_share: float = pydantic.Field(
        0.0, ge=0, lt=1, description="share of each training batch decoded from a learnt null target latent, so "
                                     "that the decoder learns the structure expected from the reference alone")
    expected_target: Literal["null_latent", "unet"] = pydantic.Field(
        "null_latent", description="what learns the structure expected from the reference alone: null_latent, the "
                                   "target decoder at a learnt null latent (null_latent_share > 0); unet, a U-Net of "
                                   "its own trained on every cell (null_latent_share 0)")
    expected_target_channels: list[int] = pydantic.Field(
        default_factory=lambda: [8, 16, 32, 64], min_length=2,
        description="channels per level of the expected_target U-Net; each level but the first halves H and W")
    expected_target_activation: Literal["tanh", "identity"] = pydantic.Field(
        "tanh", description="last activation of the expected_target U-Net: tanh, into [-1, 1]; identity, none (a "
                            "sparse structure's tanh output can saturate at the background and stop learning)")
    expected_target_initial_output: float | None = pydantic.Field(
        None, description="the bias of the expected_target U-Net's last convolution at the start (e.g. -1, the "
                          "background of images in [-1, 1], with activation identity: faint structures then start "
                          "unsaturated at the background); null: the initialisation's")
    expected_target_steered_maps: int = pydantic.Field(
        0, ge=0, description="position maps steered by the reference's intensity moments that the expected_target "
                             "U-Net also reads (SteeredPositions); 0: none")
    expected_target_axis_map: list[str] | None = pydantic.Field(
        None, min_length=2, max_length=2, description="[body, centre]: two reference channels whose axis_map (the "
                                                      "signed distance along the body's long axis from the centre's "
                                                      "centroid) the expected_target U-Net also reads; null: none")
    expected_target_balance: bool = pydantic.Field(
        False, description="weight each cell's squared error in the expected_target U-Net's loss by the mean of the "
                           "structures' running mean U-Net errors over its own structure's, so that every structure "
                           "counts alike (needs expected_target: unet and model.label)")
    expected_target_outputs: Literal["shared", "per_label"] = pydantic.Field(
        "shared", description="outputs of the expected_target U-Net: shared, one structure image for every label; "
                              "per_label, one per label, each cell read from its label's (needs model.label)")
    vae_epochs: int | None = pydantic.Field(
        None, ge=1, description="epochs during which the two VAEs train; the later epochs of trainer.max_epochs train "
                                "the expected_target U-Net alone, which costs a fraction of their step (needs "
                                "expected_target: unet, no reference_gates); null: the VAEs train every epoch")
    reference_swap_share: float = pydantic.Field(
        0.0, ge=0, le=1, description="share of each training batch whose target model reads a chimera reference: "
                                     "one channel swapped for another cell's, as the coupling analyses do")
    reference_swap_channels: list[str] | None = pydantic.Field(
        None, min_length=1, description="the reference channels reference_swap_share may swap; null: every one")
    reference_gates: bool = pydantic.Field(
        False, description="pass each reference channel the target model reads through a learnt stochastic gate "
                           "per structure and channel, whose openness costs reference_gate_cost nats")
    reference_gate_cost: float = pydantic.Field(
        1.0, ge=0, description="nats per cell times -log P(gate closed) of every gate, weighed in the target "
                               "objective as the KL")
    reference_gate_lr: float = pydantic.Field(0.05, gt=0, description="learning rate of the gates' logits")
    reference_gate_warmup: float = pydantic.Field(
        0.0, ge=0, lt=1, description="share of the budget's optimiser steps during which the gates stay open and "
                                     "cost nothing, so that the networks first learn what each channel tells")

    @pydantic.model_validator(mode="after")
    def _beta_range(self) -> "StatisticalCellConfig":
        if self.objective == "convex":
            for name in ("beta", "reference_beta", "target_beta"):
                value = getattr(self, name)
                if value is not None and value > 1:
                    raise ValueError(f"{name} must lie in [0, 1] with the convex objective, got {value}")
        return self

    @pydantic.model_validator(mode="after")
    def _one_expected_target(self) -> "StatisticalCellConfig":
        if self.expected_target == "unet" and self.null_latent_share > 0:
            raise ValueError(f"null_latent_share must be 0 with expected_target: unet (got "
                             f"{self.null_latent_share}): the U-Net learns the expected structure instead")
        if self.expected_target_outputs == "per_label" and (self.expected_target != "unet" or self.label is None):
            raise ValueError("expected_target_outputs: per_label needs expected_target: unet and a model.label")
        if self.expected_target_steered_maps and self.expected_target != "unet":
            raise ValueError("expected_target_steered_maps needs expected_target: unet (the maps are the U-Net's "
                             "inputs)")
        if self.expected_target_initial_output is not None and self.expected_target != "unet":
            raise ValueError("expected_target_initial_output needs expected_target: unet")
        if self.expected_target_balance and self.expected_target != "unet":
            raise ValueError("expected_target_balance needs expected_target: unet (it weighs the U-Net's loss)")
        if self.expected_target_axis_map is not None and self.expected_target != "unet":
            raise ValueError("expected_target_axis_map needs expected_target: unet (the map is the U-Net's input)")
        if self.expected_target_axis_map is not None and len(set(self.expected_target_axis_map)) < 2:
            raise ValueError(f"expected_target_axis_map names one channel twice: {self.expected_target_axis_map}")
        if self.vae_epochs is not None and (self.expected_target != "unet" or self.reference_gates):
            raise ValueError("vae_epochs needs expected_target: unet and no reference_gates: the later epochs train "
                             "the U-Net alone, and the gates learn from the target VAE's objective")
        return self

    @property
    def learns_expected_target(self) -> bool:
        """Whether the model learns the structure expected from the reference alone (the
        reference-only coupling needs it): a null latent share or the expected-target U-Net."""
        return self.null_latent_share > 0 or self.expected_target == "unet"

    def beta_of(self, model: Literal["reference", "target"]) -> float:
        """The beta of the ``reference`` or ``target`` model."""
        value = self.reference_beta if model == "reference" else self.target_beta
        return self.beta if value is None else value


def level_strides(spatial: Sequence[int], levels: int) -> list[tuple[int, ...]]:
    """Strides of each level for a crop of spatial shape (H, W) or (D, H, W): H and W halve every
    level; D halves while the halved depth stays at least :data:`MIN_DEPTH`.

    >>> level_strides((16, 64, 64), 4)
    [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]
    """
    strides, shape = [], list(spatial)
    for _ in range(levels):
        step = tuple(2 if axis >= len(shape) - 2 or (size % 2 == 0 and size // 2 >= MIN_DEPTH) else 1
                     for axis, size in enumerate(shape))
        shape = [size // s for size, s in zip(shape, step)]
        strides.append(step)
    return strides


def _scales(spatial: Sequence[int], strides: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Spatial shape before every level and after the last one."""
    shapes = [tuple(spatial)]
    for step in strides:
        shapes.append(tuple(size // s for size, s in zip(shapes[-1], step)))
    return shapes


def _widths(base: int, levels: int) -> list[int]:
    return [base * min(2 ** (k + 1), 8) for k in range(levels)]


def position_maps(shape: Sequence[int], n: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Each pixel's position along every spatial axis of ``shape``, from -1 (first) to 1 (last)
    through 0 at the crop centre: (n, len(shape), *shape).

    >>> position_maps((3,), 1)[0, 0].tolist()
    [-1.0, 0.0, 1.0]
    """
    axes = [torch.linspace(-1.0, 1.0, size, dtype=dtype, device=device) for size in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")).expand(n, -1, *shape)


def _channels_last_format(tensor: torch.Tensor) -> torch.memory_format | None:
    """``channels_last`` (4D) or ``channels_last_3d`` (5D) when ``tensor`` (features or a
    convolution's weight) is laid out so and not also contiguous (as tensors of one pixel are),
    else None."""
    layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(tensor.ndim)
    if layout is None or tensor.is_contiguous() or not tensor.is_contiguous(memory_format=layout):
        return None
    return layout


class _Conditioning(nn.Module):
    """Condition maps at a scale: the reference resized by area averaging, the label embedding
    broadcast over space and, with ``positions``, :func:`position_maps`, concatenated
    (N, Cr + E + P, *shape); empty (N, 0, *shape) without them.

    The maps take the features' dtype and memory format before they are joined, so that the
    concatenation already is what the next convolution reads: under bf16 autocast with
    channels-last weights, a float32 or channels-first concatenation was cast and copied again by
    every convolution reading it (the same numbers; a 3D training step at 4 base channels a
    quarter shorter on 2 CPU cores)."""

    def __init__(self, n_labels: int, embedding_dim: int, reference_channels: int, positions: int = 0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_labels, embedding_dim) if n_labels else None
        self.positions = positions
        self.channels = reference_channels + (embedding_dim if n_labels else 0) + positions

    def forward(self, features: torch.Tensor, reference: torch.Tensor | None, labels: torch.Tensor | None
                ) -> torch.Tensor:
        shape = features.shape[2:]
        maps = [features]
        if reference is not None:
            same_size = reference.shape[2:] == shape
            resized = reference if same_size else F.interpolate(reference, size=shape, mode="area")
            maps.append(resized.to(features.dtype))
        if self.embedding is not None:
            embedded = self.embedding(labels).to(features.dtype)
            maps.append(embedded.view(*embedded.shape, *[1] * len(shape)).expand(-1, -1, *shape))
        if self.positions:
            maps.append(position_maps(shape, len(features), features.dtype, features.device))
        layout = _channels_last_format(features)
        if layout is not None:
            maps = [m.contiguous(memory_format=layout) for m in maps]
        return torch.cat(maps, dim=1)


class _LabelModulation(nn.Module):
    """Feature-wise linear modulation by the label: after unit k, x * (1 + gamma_k) + beta_k, with
    gamma_k and beta_k (N, widths[k]) from the label embedding by one linear layer per unit, both 0
    at initialisation."""

    def __init__(self, n_labels: int, embedding_dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_labels, embedding_dim)
        self.layers = nn.ModuleList(nn.Linear(embedding_dim, 2 * width) for width in widths)
        for layer in self.layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor, labels: torch.Tensor, unit: int) -> torch.Tensor:
        gamma, beta = self.layers[unit](self.embedding(labels)).to(features.dtype).chunk(2, dim=1)
        shape = (*gamma.shape, *[1] * (features.ndim - 2))
        return features * (1 + gamma.view(shape)) + beta.view(shape)


def _label_conditioning(n_labels: int, embedding_dim: int, film: bool, widths: Sequence[int]
                        ) -> tuple[int, _LabelModulation | None]:
    """Labels of the condition maps (0 with ``film``) and the modulation (None without ``film`` or labels)."""
    if film and n_labels:
        return 0, _LabelModulation(n_labels, embedding_dim, widths)
    return n_labels, None


#: Hard concrete gates (Louizos, Welling and Kingma 2018, "Learning sparse neural networks through
#: L0 regularization"): temperature and the interval (low, high) the relaxed Bernoulli is stretched
#: to before clipping to [0, 1].
GATE_TEMPERATURE, GATE_LOW, GATE_HIGH = 2 / 3, -0.1, 1.1

#: Logit of every gate at initialisation: open (z > 0) with probability 0.97, fully open (z = 1)
#: with probability 0.6, so that the networks first learn from nearly whole references.
GATE_INITIAL_LOGIT = 2.0


class ReferenceGates(nn.Module):
    """A stochastic gate z in [0, 1] per (structure label, reference channel) on the target model's
    reference channels: references (N, Cr, ...) in [-1, 1] -> (x + 1) z - 1 with the z of each
    cell's label and channel, so that a closed gate (z = 0) leaves an empty channel (-1, the
    background) and a partly open one dims the channel's signal over the same background.

    Hard concrete gates: in training z is drawn (clipped, stretched relaxed Bernoulli of logit
    ``logits[label, channel]``), so it is exactly 0 or 1 with some probability and in between
    otherwise, and its draw has a gradient in the logit; in eval mode z is its deterministic value
    clip(sigmoid(logit) (high - low) + low, 0, 1). A channel whose gate is 0 is not read at all, so
    swapping it changes nothing. :meth:`open_probability`, P(z > 0), is differentiable in the
    logits; the model's cost of a gate, -log(1 - P(z > 0)), closes those the structure does not
    need. Without labels (``n_labels`` 0) there is one row of gates, used for every cell.
    """

    def __init__(self, n_labels: int, n_channels: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.full((max(n_labels, 1), n_channels), GATE_INITIAL_LOGIT))

    def open_probability(self) -> torch.Tensor:
        """P(z > 0) of every gate (S, Cr) in training."""
        return torch.sigmoid(self.logits - GATE_TEMPERATURE * math.log(-GATE_LOW / GATE_HIGH))

    def values(self) -> torch.Tensor:
        """The deterministic gates (S, Cr) of eval mode, in [0, 1].

        >>> gates = ReferenceGates(1, 3)
        >>> with torch.no_grad():
        ...     _ = gates.logits.copy_(torch.tensor([[-10.0, 0.0, 10.0]]))
        >>> [round(v, 3) for v in gates.values()[0].tolist()]
        [0.0, 0.5, 1.0]
        """
        return (torch.sigmoid(self.logits) * (GATE_HIGH - GATE_LOW) + GATE_LOW).clamp(0, 1)

    def sample(self, rows: torch.Tensor) -> torch.Tensor:
        """Gates (N, Cr) drawn for cells of label ``rows`` (N,)."""
        logits = self.logits[rows]
        u = torch.rand(logits.shape, device=logits.device).clamp(1e-6, 1 - 1e-6)
        relaxed = torch.sigmoid((u.log() - (-u).log1p() + logits) / GATE_TEMPERATURE)
        return (relaxed * (GATE_HIGH - GATE_LOW) + GATE_LOW).clamp(0, 1)

    def rows(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """The gate row (N,) of each of n cells: its label, 0 without labels."""
        if labels is None:
            return torch.zeros(n, dtype=torch.long, device=self.logits.device)
        return labels

    def forward(self, reference: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        rows = self.rows(labels, len(reference))
        gates = self.sample(rows) if self.training else self.values()[rows]
        gates = gates.to(reference.dtype).view(*gates.shape, *[1] * (reference.ndim - 2))
        return (reference + 1) * gates - 1


def _unit(spatial_dims: int, in_channels: int, out_channels: int, strides: Sequence[int] | int = 1) -> ResidualUnit:
    return ResidualUnit(spatial_dims, in_channels, out_channels, strides=strides, norm="BATCH", act="PRELU")


class ConditionalEncoder(nn.Module):
    """Images (N, C, *spatial) with optional condition maps -> (mu, log-variance), each (N, latent_dim).

    ``reference_channels`` 0, ``n_labels`` 0 and ``positions`` False give an unconditional encoder;
    ``film`` modulates the units' outputs by the label instead of giving it as maps.
    """

    def __init__(self, spatial_dims: int, in_channels: int, spatial: Sequence[int], latent_dim: int,
                 base_channels: int, levels: int, reference_channels: int = 0, n_labels: int = 0,
                 embedding_dim: int = 8, positions: bool = False, film: bool = False) -> None:
        super().__init__()
        self.strides = level_strides(spatial, levels)
        end = _scales(spatial, self.strides)[-1]
        widths = _widths(base_channels, levels)
        map_labels, self.modulation = _label_conditioning(n_labels, embedding_dim, film, widths)
        self.condition = _Conditioning(map_labels, embedding_dim, reference_channels, spatial_dims * positions)
        self.stem = Convolution(spatial_dims, in_channels, base_channels, conv_only=True)
        self.units = nn.ModuleList(
            _unit(spatial_dims, width_in + self.condition.channels, width, step)
            for width_in, width, step in zip([base_channels, *widths[:-1]], widths, self.strides))
        self.head = nn.Linear(widths[-1] * math.prod(end), 2 * latent_dim)

    def forward(self, images: torch.Tensor, reference: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(images)
        for k, unit in enumerate(self.units):
            x = unit(self.condition(x, reference, labels))
            if self.modulation is not None:
                x = self.modulation(x, labels, k)
        mu, logvar = self.head(x.flatten(1)).chunk(2, dim=1)
        return mu, bounded_logvar(logvar)


class ConditionalDecoder(nn.Module):
    """Latents (N, latent_dim) with optional condition maps -> images (N, C, *spatial) in [-1, 1].

    ``summary_dim`` > 0: a summary vector (N, summary_dim) is read with the latent, both projected
    together to the coarsest scale; ``film`` modulates the units' outputs by the label instead of
    giving it as maps; ``full_resolution_channels`` is the width of the last unit, the one at full
    resolution that the output convolution reads (None: ``base_channels``).
    """

    def __init__(self, spatial_dims: int, out_channels: int, spatial: Sequence[int], latent_dim: int,
                 base_channels: int, levels: int, reference_channels: int = 0, n_labels: int = 0,
                 embedding_dim: int = 8, positions: bool = False, summary_dim: int = 0, film: bool = False,
                 full_resolution_channels: int | None = None) -> None:
        super().__init__()
        self.scales = _scales(spatial, level_strides(spatial, levels))
        widths = _widths(base_channels, levels)[::-1]
        top_width = full_resolution_channels or base_channels
        unit_widths = [*widths[1:], top_width]
        map_labels, self.modulation = _label_conditioning(n_labels, embedding_dim, film, unit_widths)
        self.condition = _Conditioning(map_labels, embedding_dim, reference_channels, spatial_dims * positions)
        self.top, self.summary_dim = widths[0], summary_dim
        self.project = nn.Linear(latent_dim + summary_dim, self.top * math.prod(self.scales[-1]))
        self.units = nn.ModuleList(
            _unit(spatial_dims, width_in + self.condition.channels, width)
            for width_in, width in zip(widths, unit_widths))
        self.out = Convolution(spatial_dims, top_width + self.condition.channels, out_channels, conv_only=True)

    def forward(self, z: torch.Tensor, reference: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, summary: torch.Tensor | None = None) -> torch.Tensor:
        if (summary is None) != (self.summary_dim == 0):
            raise ValueError(f"the decoder reads a summary of {self.summary_dim} values; got "
                             f"{None if summary is None else tuple(summary.shape)}")
        x = self.project(z if summary is None else torch.cat([z, summary.to(z.dtype)], dim=1))
        x = x.view(len(z), self.top, *self.scales[-1])
        layout = _channels_last_format(self.out.conv.weight)
        if layout is not None:  # as the convolutions' weights, so that the maps join it in that layout
            x = x.contiguous(memory_format=layout)
        for k, (unit, shape) in enumerate(zip(self.units, self.scales[-2::-1])):
            x = unit(F.interpolate(self.condition(x, reference, labels), size=shape, mode="nearest"))
            if self.modulation is not None:
                x = self.modulation(x, labels, k)
        return torch.tanh(self.out(self.condition(x, reference, labels)))


def intensity_moments(images: torch.Tensor) -> torch.Tensor:
    """Each channel's intensity moments over space, with the pixels' positions of
    :func:`position_maps` (-1 to 1 per axis) and weights w = max((x + 1) / 2, 0) (images in [-1, 1]):
    the mean weight, the centroid (one value per axis) and the covariance's upper triangle,
    (N, C * (1 + d + d (d + 1) / 2)) for d spatial axes, channel by channel; float32 whatever the
    images' dtype, so that a sub-pixel centroid is not lost to rounding.

    >>> image = -torch.ones(1, 1, 5, 5)
    >>> image[0, 0, 1, 3] = image[0, 0, 3, 3] = 1.0  # two points at y -0.5 and 0.5, x 0.5
    >>> [round(v, 4) for v in intensity_moments(image)[0].tolist()]
    [0.08, 0.0, 0.5, 0.25, 0.0, 0.0]
    """
    with torch.autocast(images.device.type, enabled=False):
        weights = ((images.float() + 1.0) / 2.0).clamp(min=0.0).flatten(2)
        spatial = images.shape[2:]
        positions = position_maps(spatial, 1, device=images.device)[0].flatten(1)
        mass = weights.sum(-1).clamp(min=1e-6)
        centroid = torch.einsum("ncp,ap->nca", weights, positions) / mass[..., None]
        centred = positions[None, None] - centroid[..., None]
        rows, cols = torch.triu_indices(len(spatial), len(spatial), device=images.device)
        covariance = torch.einsum("ncp,ncip->nci", weights, centred[:, :, rows] * centred[:, :, cols])
        features = [mass[..., None] / weights.shape[-1], centroid, covariance / mass[..., None]]
        return torch.cat(features, dim=-1).flatten(1)


class SteeredPositions(nn.Module):
    """Position maps steered by the reference: ``n_maps`` maps a_k . p + b_k over the pixels'
    positions p (:func:`position_maps`), the coefficients a_k (one per axis) and b_k drawn from the
    reference's :func:`intensity_moments` (standardised by batch norm without affine terms) by a
    small perceptron; (N, n_maps, *spatial).

    A convolution reads what lies near a pixel; where a structure lies in relation to the whole
    cell (on which side of the nucleus the cell has more room, given by centroids a fraction of a
    pixel apart) is a comparison across the crop that few convolution layers learn. The moments
    hold it exactly, and a map that is a linear function of position turns it back into something a
    pixel can read: its signed distance along a direction, from a point, that the reference sets.
    (In the 3D benchmark's expected-structure U-Net four such maps did not make the Golgi's side
    learnt, and they let a swapped membrane move the nuclear envelope more: docs/results.md.)

    >>> steer = SteeredPositions(2, 2, 3).eval()
    >>> steer(torch.rand(4, 2, 16, 16) * 2 - 1).shape
    torch.Size([4, 3, 16, 16])
    """

    def __init__(self, spatial_dims: int, reference_channels: int, n_maps: int, hidden: int = 64) -> None:
        super().__init__()
        if n_maps < 1:
            raise ValueError(f"n_maps must be at least 1, got {n_maps}")
        self.spatial_dims, self.n_maps = spatial_dims, n_maps
        n_features = reference_channels * (1 + spatial_dims + spatial_dims * (spatial_dims + 1) // 2)
        self.standardise = nn.BatchNorm1d(n_features, affine=False)
        self.perceptron = nn.Sequential(nn.Linear(n_features, hidden), nn.PReLU(),
                                        nn.Linear(hidden, n_maps * (spatial_dims + 1)))

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        with torch.autocast(reference.device.type, enabled=False):
            features = self.standardise(intensity_moments(reference))
            coefficients = self.perceptron(features).view(len(reference), self.n_maps, self.spatial_dims + 1)
            spatial = reference.shape[2:]
            positions = position_maps(spatial, 1, device=reference.device)[0].flatten(1)
            maps = torch.einsum("nka,ap->nkp", coefficients[..., :-1], positions) + coefficients[..., -1:]
        return maps.view(len(reference), self.n_maps, *spatial).to(reference.dtype)


def _plane_weights(images: torch.Tensor) -> torch.Tensor:
    """Intensity weights (N, H, W) of single-channel images (N, *spatial) in [-1, 1]: (x + 1) / 2,
    summed over z for a stack, less a tenth of each image's largest (the background's noise), floored
    at 0."""
    weights = ((images + 1.0) / 2.0).clamp(min=0.0)
    if weights.ndim == 4:
        weights = weights.sum(1)
    peak = weights.flatten(1).amax(1).view(-1, 1, 1)
    return (weights - 0.1 * peak).clamp(min=0.0)


def axis_map(reference: torch.Tensor, body: int, centre: int) -> torch.Tensor:
    """Each pixel's signed distance along the long axis of reference channel ``body`` from the
    centroid of channel ``centre``, positive on the side of the body's centroid: (N, 1, *spatial),
    float32 whatever the reference's dtype, in units of half the larger of H and W (pixels from
    the crop centre / ((max(H, W) - 1) / 2), so the map spans about -2 to 2).

    References (N, Cr, H, W) or stacks (N, Cr, D, H, W) in [-1, 1]. The long axis and the centroids
    are intensity moments of the xy plane (a stack summed over z, every pixel weighted by
    :func:`_plane_weights`), and a stack's map is the same on every slice. For a cell (body: the
    membrane) and its nucleus (centre: the DNA) the map is positive towards the end of the cell's
    long axis with more room, however small the nucleus's offset: where a structure lies on that
    side (a Golgi ribbon) is then a sign that a pixel reads where it lies, rather than a comparison of
    two centroids across the crop.

    >>> reference = -torch.ones(1, 2, 5, 5)
    >>> reference[0, 0, 2, :] = 1.0  # the body: a bar along x, centroid at x 2
    >>> reference[0, 1, 2, 1] = 1.0  # the centre: one pixel at x 1, so the body lies towards +x
    >>> axis_map(reference, 0, 1)[0, 0, 0].tolist()
    [-0.5, 0.0, 0.5, 1.0, 1.5]
    """
    with torch.autocast(reference.device.type, enabled=False):
        images = reference.float()
        height, width = images.shape[-2:]
        half = max(max(height, width) - 1, 1) / 2.0
        y = (torch.arange(height, device=images.device, dtype=torch.float32) - (height - 1) / 2.0) / half
        x = (torch.arange(width, device=images.device, dtype=torch.float32) - (width - 1) / 2.0) / half
        yy, xx = torch.meshgrid(y, x, indexing="ij")

        def centroid(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mass = weights.sum((1, 2)).clamp(min=1e-6)
            return (weights * yy).sum((1, 2)) / mass, (weights * xx).sum((1, 2)) / mass

        body_weights = _plane_weights(images[:, body])
        body_y, body_x = centroid(body_weights)
        dy, dx = yy - body_y.view(-1, 1, 1), xx - body_x.view(-1, 1, 1)
        cross = 2.0 * (body_weights * dy * dx).sum((1, 2))
        spread = (body_weights * (dx ** 2 - dy ** 2)).sum((1, 2))
        angle = 0.5 * torch.atan2(cross, spread)
        axis_y, axis_x = torch.sin(angle), torch.cos(angle)
        centre_y, centre_x = centroid(_plane_weights(images[:, centre]))
        towards_body = (body_y - centre_y) * axis_y + (body_x - centre_x) * axis_x
        sign = torch.where(towards_body >= 0, 1.0, -1.0)
        distance = ((yy - centre_y.view(-1, 1, 1)) * axis_y.view(-1, 1, 1)
                    + (xx - centre_x.view(-1, 1, 1)) * axis_x.view(-1, 1, 1)) * sign.view(-1, 1, 1)
        if images.ndim == 5:
            return distance[:, None, None].expand(-1, 1, images.shape[2], -1, -1)
        return distance[:, None]


class ExpectedTargetUNet(nn.Module):
    """The structure expected from the reference and the label alone, E[x_t | x_r, label]: a MONAI
    ``UNet`` (``channels`` per level, one residual unit each, batch norm) on the reference
    (N, Cr, *spatial) joined with the label embedding as constant maps -> (N, out_channels,
    *spatial), in [-1, 1] with ``activation`` tanh, unbounded with identity. Between levels H and W
    halve, and D in 3D while it stays at least :data:`MIN_DEPTH` (:func:`level_strides`); the skip
    connections carry each scale's features of the reference to the output at that scale.

    With ``per_label`` the last convolution draws ``out_channels`` for each of the ``n_labels``
    labels and each cell keeps its own label's: every structure gets output weights of its own, which
    only its cells train, on features the labels share.

    With ``steered_maps`` k > 0 the U-Net also reads k :class:`SteeredPositions` maps of the
    reference, joined to it; with ``axis_channels`` (body, centre) the reference's :func:`axis_map`
    of those two channels.

    ``initial_output`` sets the bias of the U-Net's last convolution at the start. Under tanh a
    structure as faint as a Golgi ribbon lies where the output saturates at the background (the 3D
    benchmark's U-Net: pre-activation about -2.2 under the ribbon, tanh' 0.05 against about 0.9 under
    a bright structure); with activation identity and ``initial_output`` -1 every structure starts
    at the background of images in [-1, 1] without that saturation (tried in 3D: the Golgi was still
    not drawn).

    >>> net = ExpectedTargetUNet(3, 2, 1, (16, 32, 32), [4, 8, 16], n_labels=6)
    >>> net(torch.zeros(2, 2, 16, 32, 32), torch.tensor([0, 5])).shape
    torch.Size([2, 1, 16, 32, 32])
    >>> ExpectedTargetUNet(2, 2, 1, (32, 32), [4, 8], n_labels=6, per_label=True).unet(torch.zeros(1, 10, 32, 32)).shape
    torch.Size([1, 6, 32, 32])
    """

    def __init__(self, spatial_dims: int, reference_channels: int, out_channels: int, spatial: Sequence[int],
                 channels: Sequence[int], n_labels: int = 0, embedding_dim: int = 8, per_label: bool = False,
                 activation: Literal["tanh", "identity"] = "tanh", steered_maps: int = 0,
                 axis_channels: tuple[int, int] | None = None, initial_output: float | None = None) -> None:
        super().__init__()
        if per_label and not n_labels:
            raise ValueError("per_label needs n_labels > 0")
        if activation not in ("tanh", "identity"):
            raise ValueError(f"activation must be tanh or identity, got {activation!r}")
        self.out_channels, self.per_label = out_channels, per_label
        self.activation = nn.Tanh() if activation == "tanh" else nn.Identity()
        if axis_channels is not None and not all(0 <= c < reference_channels for c in axis_channels):
            raise ValueError(f"axis_channels {axis_channels} must index the {reference_channels} reference channels")
        self.steering = SteeredPositions(spatial_dims, reference_channels, steered_maps) if steered_maps else None
        self.axis_channels = axis_channels
        self.condition = _Conditioning(n_labels, embedding_dim, 0)
        maps = steered_maps + (axis_channels is not None)
        self.unet = UNet(spatial_dims, reference_channels + maps + self.condition.channels,
                         out_channels * (n_labels if per_label else 1), channels=list(channels),
                         strides=level_strides(spatial, len(channels) - 1), num_res_units=1, norm="batch")
        if initial_output is not None:
            nn.init.constant_(self.output_convolution.bias, initial_output)

    @property
    def output_convolution(self) -> nn.Module:
        """The U-Net's last convolution (the top level's, which draws every output channel)."""
        convolutions = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        return [m for m in self.unet.modules() if isinstance(m, convolutions)][-1]

    def forward(self, reference: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        inputs = [reference]
        if self.steering is not None:
            inputs.append(self.steering(reference))
        if self.axis_channels is not None:
            inputs.append(axis_map(reference, *self.axis_channels).to(reference.dtype))
        out = self.unet(self.condition(torch.cat(inputs, dim=1), None, labels))
        if self.per_label:
            out = out.unflatten(1, (-1, self.out_channels))[torch.arange(len(out), device=out.device), labels]
        return self.activation(out)


@contextlib.contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation on every convolution and dense layer but the label modulation's
    (which start at 0, where the normalisation is undefined)."""
    modulation = {id(layer) for m in module.modules() if isinstance(m, _LabelModulation) for layer in m.layers}
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.Conv3d, nn.Linear)) and id(layer) not in modulation:
            nn.utils.parametrizations.spectral_norm(layer)


def _model_generators(generator: torch.Generator | None) -> dict[str, torch.Generator | None]:
    """One generator per model of :data:`MODELS`, each seeded by a draw of ``generator``, in
    order; None for each without ``generator``."""
    if generator is None:
        return dict.fromkeys(MODELS)
    seeds = torch.randint(0, 2**62, (len(MODELS),), generator=generator).tolist()
    return {name: torch.Generator().manual_seed(seed) for name, seed in zip(MODELS, seeds)}


def _reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(mu.shape, generator=generator).to(mu) if generator is not None else torch.randn_like(mu)
    return mu + noise * (0.5 * logvar).exp()


class StatisticalCell(GenerativeModel):
    """Reference VAE and target conditional VAE in one module; see the module docstring.

    Parameters
    ----------
    config
        The model config as a plain dict.
    image_shape
        (Ct, H, W) or (Ct, D, H, W) of the target crops.
    reference_channels
        Names of the reference channels (Cr of them).
    structures
        The label vocabulary (index i is ``structures[i]``); empty without a label condition.
    channels_last
        Weights in channels-last memory format (``channels_last_3d`` in 3D), so that the convolutions
        run channels-last: the same numbers up to rounding; on 2 CPU cores 1.30x faster training in
        2D at 16 base channels, 1.08x in 3D at 4 (``benchmarks/statistical_cell_speed.py``).
    """

    def __init__(self, config: dict[str, Any], image_shape: tuple[int, ...], reference_channels: Sequence[str],
                 structures: Sequence[str] = (), channels_last: bool = False) -> None:
        super().__init__(config, image_shape, channels_last)
        self.save_hyperparameters({"config": dict(config), "image_shape": list(image_shape),
                                   "reference_channels": list(reference_channels), "structures": list(structures),
                                   "channels_last": channels_last})
        self.cfg = StatisticalCellConfig.model_validate(config)
        self.reference_channels, self.structures = list(reference_channels), list(structures)
        spatial = self.image_shape[1:]
        if len(spatial) != self.cfg.spatial_dims:
            raise ValueError(f"spatial_dims {self.cfg.spatial_dims} but crops of shape {tuple(spatial)}")
        unknown = sorted(set(self.cfg.reference_swap_channels or ()) - set(self.reference_channels))
        if unknown:
            raise ValueError(f"reference_swap_channels {unknown} are not reference channels {self.reference_channels}")
        axis = self.cfg.expected_target_axis_map
        if axis is not None and not set(axis) <= set(self.reference_channels):
            raise ValueError(f"expected_target_axis_map {axis} names channels that are not reference channels "
                             f"{self.reference_channels}")
        if self.cfg.reference_gates and self.cfg.reference_summary:
            raise ValueError("reference_gates and reference_summary exclude each other: the summary would read "
                             "every reference channel past the gates")
        dims, cr, ct = self.cfg.spatial_dims, len(self.reference_channels), self.image_shape[0]
        shared = {"base_channels": self.cfg.base_channels, "levels": self.cfg.levels}
        conditioned = {"reference_channels": cr, "n_labels": len(self.structures),
                       "embedding_dim": self.cfg.label_embedding_dim, "positions": self.cfg.positions,
                       "film": self.cfg.label_conditioning == "film"}
        self.reference_encoder = ConditionalEncoder(dims, cr, spatial, self.cfg.reference_latent_dim, **shared)
        self.reference_decoder = ConditionalDecoder(dims, cr, spatial, self.cfg.reference_latent_dim, **shared)
        self.target_encoder = ConditionalEncoder(dims, ct, spatial, self.cfg.target_latent_dim, **shared,
                                                 **conditioned)
        self.target_decoder = ConditionalDecoder(
            dims, ct, spatial, self.cfg.target_latent_dim, **shared, **conditioned,
            summary_dim=self.cfg.reference_latent_dim if self.cfg.reference_summary else 0,
            full_resolution_channels=self.cfg.target_full_resolution_channels)
        self.gates = ReferenceGates(len(self.structures), cr) if self.cfg.reference_gates else None
        if self.cfg.null_latent_share > 0:
            self.target_null_latent = nn.Parameter(torch.zeros(self.cfg.target_latent_dim))
        if self.cfg.expected_target == "unet":
            self.expected_network = ExpectedTargetUNet(
                dims, cr, ct, spatial, self.cfg.expected_target_channels, len(self.structures),
                self.cfg.label_embedding_dim, per_label=self.cfg.expected_target_outputs == "per_label",
                activation=self.cfg.expected_target_activation, steered_maps=self.cfg.expected_target_steered_maps,
                axis_channels=None if axis is None else tuple(self.reference_channels.index(c) for c in axis),
                initial_output=self.cfg.expected_target_initial_output)
        if self.cfg.spectral_norm:
            _spectral_norm(self)
        self.register_buffer("reference_kl_per_dimension", torch.zeros(self.cfg.reference_latent_dim))
        self.register_buffer("target_kl_per_dimension", torch.zeros(self.cfg.target_latent_dim))
        if self.cfg.structure_balance:
            self.register_buffer("target_recon_scale", torch.zeros(len(self.structures)))
        if self.cfg.expected_target_balance:
            self.register_buffer("expected_recon_scale", torch.zeros(len(self.structures)))
        self._kl_sums: dict[str, torch.Tensor] = {}
        self._kl_batches = 0
        if channels_last:
            self.to(memory_format=self.memory_format)

    # ------------------------------------------------------------------------------ sizes and inputs

    @property
    def latent_dim(self) -> int:
        """Reference and target latent sizes together (the layout of :meth:`prior` and :meth:`decode`)."""
        return self.cfg.reference_latent_dim + self.cfg.target_latent_dim

    @property
    def kl_per_dimension(self) -> torch.Tensor:
        """Last epoch's mean KL per latent dimension, reference then target (nats)."""
        return torch.cat([self.reference_kl_per_dimension, self.target_kl_per_dimension])

    @property
    def kl_dimension_names(self) -> list[str]:
        return ([f"reference_z{i}" for i in range(self.cfg.reference_latent_dim)]
                + [f"target_z{i}" for i in range(self.cfg.target_latent_dim)])

    def labels_of(self, labels: torch.Tensor | Sequence[int] | None, n: int) -> torch.Tensor | None:
        """Label indices (n,) on the model's device; None for a model without labels. Raises
        InputError when a labelled model gets none or an index outside the vocabulary."""
        if not self.structures:
            return None
        if labels is None:
            raise InputError(f"the model needs structure labels (indices into {self.structures})")
        labels = torch.as_tensor(labels, dtype=torch.long).to(self.device).reshape(-1)
        if len(labels) != n or labels.min() < 0 or labels.max() >= len(self.structures):
            raise InputError(f"labels must be {n} indices in [0, {len(self.structures)}), got {labels.tolist()}")
        return labels

    def _batch(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        target = batch["image"].to(self.device)
        reference = batch[self.cfg.reference].to(self.device)
        labels = self.labels_of(batch[self.cfg.label], len(target)) if self.cfg.label else None
        return target, reference, labels

    # ------------------------------------------------------------------------------ the two models

    def encode_reference(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference images (N, Cr, ...) -> (mu, log-variance), each (N, reference_latent_dim)."""
        return self.reference_encoder(reference.to(self.device))

    def decode_reference(self, z: torch.Tensor) -> torch.Tensor:
        """Reference latents (N, reference_latent_dim) -> reference images (N, Cr, ...) in [-1, 1]."""
        return self.reference_decoder(z.to(self.device))

    def gate_reference(self, reference: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The reference (N, Cr, ...) as the target networks read it: through the gates of the
        cells' labels (N,) with ``reference_gates`` (:class:`ReferenceGates`; drawn in training,
        deterministic in eval mode); unchanged without them or while :meth:`gates_held_open`."""
        return reference if self.gates is None or self.gates_held_open() else self.gates(reference, labels)

    def gates_held_open(self) -> bool:
        """Whether training is within the first ``reference_gate_warmup`` share of the budget's
        optimiser steps (the gates then read every channel whole and cost nothing). False outside a
        Trainer or in eval mode; InputError for a warm-up under a budget without a step count."""
        if self.gates is None or self.cfg.reference_gate_warmup == 0 or not self.training or self._trainer is None:
            return False
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise InputError("model.reference_gate_warmup needs a budget in epochs or steps (trainer.max_epochs or "
                             "trainer.max_steps), not a wall-clock limit alone")
        return self.global_step < self.cfg.reference_gate_warmup * total

    def encode_target(self, target: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target images (N, Ct, ...) given their reference (N, Cr, ...) and labels (N,) ->
        (mu, log-variance), each (N, target_latent_dim)."""
        labels = self.labels_of(labels, len(target))
        return self.target_encoder(target.to(self.device), self.gate_reference(reference.to(self.device), labels),
                                   labels)

    def decode_target(self, z: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None = None,
                      reference_mu: torch.Tensor | None = None) -> torch.Tensor:
        """Target latents (N, target_latent_dim) given the reference (N, Cr, ...) and labels (N,) ->
        target images (N, Ct, ...) in [-1, 1]. With ``reference_summary`` the decoder also reads
        the reference model's posterior mean of ``reference`` (N, reference_latent_dim), without
        gradient: ``reference_mu`` when already computed, else encoded here."""
        reference, labels = reference.to(self.device), self.labels_of(labels, len(z))
        return self.target_decoder(z.to(self.device), self.gate_reference(reference, labels), labels,
                                   self._summary(reference, reference_mu))

    def _summary(self, reference: torch.Tensor, reference_mu: torch.Tensor | None) -> torch.Tensor | None:
        """The target decoder's summary of ``reference`` with ``reference_summary`` (see
        :meth:`decode_target`), else None."""
        if not self.cfg.reference_summary:
            return None
        return (reference_mu if reference_mu is not None else self.encode_reference(reference)[0]).detach()

    def terms(self, target: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None = None,
              n_samples: int = 1, generator: torch.Generator | None = None,
              null: torch.Tensor | None = None, target_reference: torch.Tensor | None = None,
              expected: bool = False, models: Sequence[str] = MODELS) -> dict[str, torch.Tensor]:
        """Per-cell terms of each of ``models``: ``{reference,target}_recon`` (N,) (mean over ``n_samples``
        posterior draws; 0: from the posterior mean), ``{reference,target}_kl_per_dim`` (N, d) and
        ``{reference,target}_reconstruction`` (of the last draw). ``null`` (N,) bool marks the cells
        whose target is decoded from the null latent instead (their target KL is 0). ``expected``
        with ``expected_target: unet`` adds ``target_expected_recon`` (N,), the squared error of the
        U-Net's expected structure. ``target_reference`` (N, Cr, ...) is the reference the target
        model reads (default ``reference``, which the reference model reads); with
        ``reference_gates`` one draw of the gates per cell serves its encoder, decoder and U-Net alike.
        ``models``: the models whose terms are computed (the target's alone skip the reference model's
        networks, except the reference encoder that ``reference_summary`` reads). With a
        ``generator`` each model draws from a generator of its own, seeded by two draws of
        ``generator``, so that its terms do not depend on which other model is computed."""
        unknown = sorted(set(models) - set(MODELS))
        if unknown:
            raise ValueError(f"models {unknown} are not among {list(MODELS)}")
        out: dict[str, torch.Tensor] = {}
        condition = reference if target_reference is None else target_reference
        labels = self.labels_of(labels, len(target))
        gated = self.gate_reference(condition.to(self.device), labels)
        if expected and self.cfg.expected_target == "unet":
            out["target_expected_recon"] = squared_error_per_cell(target.to(self.device),
                                                                  self.expected_network(gated, labels))
        generators = _model_generators(generator)
        posteriors = {}
        if "reference" in models:
            posteriors["reference"] = self.encode_reference(reference)
        if "target" in models:
            posteriors["target"] = self.target_encoder(target.to(self.device), gated, labels)
            reference_mu = posteriors["reference"][0] if "reference" in posteriors and condition is reference else None
            summary = self._summary(condition, reference_mu)
        for name, (mu, logvar) in posteriors.items():
            x = reference if name == "reference" else target
            recons = []
            for _ in range(max(n_samples, 1)):
                z = _reparameterise(mu, logvar, generators[name]) if n_samples else mu
                if name == "target" and null is not None:
                    z = torch.where(null[:, None], self.target_null_latent.to(z.dtype), z)
                decoded = (self.decode_reference(z) if name == "reference"
                           else self.target_decoder(z, gated, labels, summary))
                recon, kl = vae_terms_per_cell(x.to(self.device), decoded, mu, logvar)
                recons.append(recon)
            if name == "target" and null is not None:
                kl = kl * (~null[:, None])
            out |= {f"{name}_recon": torch.stack(recons).mean(0), f"{name}_kl_per_dim": kl,
                    f"{name}_reconstruction": decoded}
        return out

    def null_cells(self, n: int) -> torch.Tensor | None:
        """(n,) bool: a random ``null_latent_share`` of n cells (rounded, at least one cell left
        out of it), or None without a null share."""
        if self.cfg.null_latent_share == 0:
            return None
        count = min(round(self.cfg.null_latent_share * n), n - 1)
        null = torch.zeros(n, dtype=torch.bool, device=self.device)
        null[torch.randperm(n)[:count].to(self.device)] = True
        return null

    def chimera_references(self, reference: torch.Tensor) -> torch.Tensor:
        """References (N, Cr, ...) for the target model in training: a random
        ``reference_swap_share`` of the N cells (rounded) have one channel, drawn at random, replaced
        by that channel of another cell of the batch (a random cyclic pairing, so never their own);
        ``reference`` itself without a swap share or with fewer than 2 cells. The channel is drawn
        among ``reference_swap_channels`` (default every reference channel)."""
        n = len(reference)
        count = round(self.cfg.reference_swap_share * n)
        if count == 0 or n < 2:
            return reference
        names = self.cfg.reference_swap_channels or self.reference_channels
        swappable = torch.tensor([self.reference_channels.index(name) for name in names])
        order = torch.randperm(n)
        partner = torch.empty(n, dtype=torch.long)
        partner[order] = order.roll(-1)
        cells, channels = torch.randperm(n)[:count], swappable[torch.randint(len(swappable), (count,))]
        chimeras = reference.clone()
        chimeras[cells, channels] = reference[partner[cells], channels]
        return chimeras

    def structure_weights(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n,) weights of the cells' target squared error in the training objective: 1 without
        ``structure_balance``; else :func:`balance_weights` of the structures' running errors
        (``target_recon_scale``)."""
        if not self.cfg.structure_balance or labels is None:
            return torch.ones(n, device=self.device)
        return balance_weights(self.target_recon_scale, labels)

    def expected_target_weights(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n,) weights of the cells' squared error in the expected-structure U-Net's loss:
        :meth:`structure_weights` without ``expected_target_balance``; with it :func:`balance_weights`
        of the structures' running U-Net errors (``expected_recon_scale``)."""
        if not self.cfg.expected_target_balance or labels is None:
            return self.structure_weights(labels, n)
        return balance_weights(self.expected_recon_scale, labels)

    def update_structure_scale(self, recon: torch.Tensor, labels: torch.Tensor,
                               scale: Literal["target", "expected"] = "target") -> None:
        """Keep each structure's running mean of a per-cell squared error, ``recon`` (N,) of cells
        with ``labels`` (N,), in ``target_recon_scale`` (the target VAE's, ``scale`` target) or
        ``expected_recon_scale`` (the U-Net's, expected): a structure's first batch mean, then an
        exponential moving average with weight :data:`STRUCTURE_SCALE_MOMENTUM` on the past."""
        running = getattr(self, f"{scale}_recon_scale")
        for label in labels.unique():
            batch_mean = recon[labels == label].detach().float().mean()
            past = running[label]
            running[label] = torch.where(
                past > 0, STRUCTURE_SCALE_MOMENTUM * past + (1 - STRUCTURE_SCALE_MOMENTUM) * batch_mean, batch_mean)

    def loss_terms(self, target: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None = None,
                   null: torch.Tensor | None = None, target_reference: torch.Tensor | None = None
                   ) -> dict[str, torch.Tensor]:
        """Batch means of both models' recon, KL, objective and ELBO, ``loss`` (the sum of the
        objectives) and the batch-mean KL per dimension, from one reparameterised draw per cell.
        The target's are over the cells not in ``null`` (N,) bool; ``target_null_recon`` is the
        mean squared error of those in it (with ``expected_target: unet``: of the U-Net's expected
        structure over every cell), added to the target objective with recon's weight. With
        ``reference_gates``, ``target_gate_cost`` (:meth:`gate_cost`) enters it with the KL's weight. With
        ``structure_balance`` the objective weighs each cell's target squared error by
        :meth:`structure_weights`, and the U-Net's by :meth:`expected_target_weights` (recon, ELBO
        and ``target_null_recon`` stay unweighted); ``target_recon_per_cell`` (N,) is every cell's,
        and with the U-Net ``target_expected_recon_per_cell`` (N,) its error per cell.
        ``target_reference``: see :meth:`terms`."""
        per_cell = self.terms(target, reference, labels, n_samples=1, null=null, target_reference=target_reference,
                              expected=True)
        weights = self.structure_weights(labels, len(target))
        out: dict[str, torch.Tensor] = {}
        null_objective = None
        if "target_expected_recon" in per_cell:
            expected_recon = per_cell["target_expected_recon"]
            out["target_null_recon"], out["target_expected_recon_per_cell"] = expected_recon.mean(), expected_recon
            null_objective = (self.expected_target_weights(labels, len(target)) * expected_recon).mean()
        for name in ("reference", "target"):
            recon, kl_per_dim = per_cell[f"{name}_recon"], per_cell[f"{name}_kl_per_dim"]
            weight = weights if name == "target" else torch.ones_like(recon)
            if name == "target" and null is not None:
                out["target_null_recon"] = _mean_or_zero(recon[null])
                null_objective = _mean_or_zero((weight * recon)[null])
                recon, kl_per_dim, weight = recon[~null], kl_per_dim[~null], weight[~null]
            weighted, recon, kl_per_dim = (weight * recon).mean(), recon.mean(), kl_per_dim.mean(0)
            kl = kl_per_dim.sum()
            out |= {f"{name}_loss": vae_objective(weighted, kl, self.cfg.beta_of(name), self.cfg.objective),
                    f"{name}_recon": recon, f"{name}_kl": kl, f"{name}_elbo": -(recon + kl),
                    f"{name}_kl_per_dim": kl_per_dim}
        if null_objective is not None:
            out["target_loss"] = out["target_loss"] + self.target_recon_weight() * null_objective
        if self.gates is not None:
            out["target_gate_cost"] = (torch.zeros((), device=self.device) if self.gates_held_open()
                                       else self.gate_cost(labels, len(target)))
            out["target_loss"] = out["target_loss"] + vae_objective(
                torch.zeros(()), out["target_gate_cost"], self.cfg.beta_of("target"), self.cfg.objective)
        out["target_recon_per_cell"] = per_cell["target_recon"]
        out["loss"] = out["reference_loss"] + out["target_loss"]
        return out

    def gate_cost(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """Mean over n cells of labels (N,) of ``reference_gate_cost`` times the sum over the gates
        of the cell's label of -log P(z = 0) (from :meth:`ReferenceGates.open_probability`), nats
        per cell."""
        rows = self.gates.rows(labels, n)
        return self.cfg.reference_gate_cost * -torch.log1p(-self.gates.open_probability()[rows]).sum(1).mean()

    def reference_gate_values(self) -> dict[str, dict[str, float]]:
        """The deterministic gate of every structure and reference channel, {structure: {channel:
        value in [0, 1]}} (the structure ``all`` without labels); empty without ``reference_gates``."""
        if self.gates is None:
            return {}
        values = self.gates.values().detach().cpu().tolist()
        return {structure: dict(zip(self.reference_channels, row))
                for structure, row in zip(self.structures or ["all"], values)}

    # ------------------------------------------------------------------------------ training

    def configure_optimizers(self):
        gates = [] if self.gates is None else list(self.gates.parameters())
        networks = [p for p in self.parameters() if all(p is not g for g in gates)]
        groups = [{"params": networks}] + ([{"params": gates, "lr": self.cfg.reference_gate_lr}] if gates else [])
        optimizer = torch.optim.Adam(groups, lr=self.cfg.lr, betas=self.cfg.betas)
        if self.cfg.lr_schedule == "constant":  # also usable outside a Trainer
            return optimizer
        return with_lr_schedule(optimizer, self.trainer, self.cfg.lr_schedule)

    def _log(self, terms: dict[str, torch.Tensor], prefix: str, batch_size: int) -> None:
        names = ["loss"] + [f"{m}_{k}" for m in ("reference", "target") for k in ("loss", "recon", "kl", "elbo")]
        names += [k for k in ("target_null_recon", "target_gate_cost") if k in terms]
        log_metrics(self, {f"{prefix}{k}": terms[k] for k in names}, batch_size, on_step=prefix == "",
                    prog_bar=prefix == "")

    def vaes_training(self) -> bool:
        """Whether the VAEs train in the current epoch: always, or the first ``vae_epochs``."""
        return self.cfg.vae_epochs is None or self.current_epoch < self.cfg.vae_epochs

    def target_recon_weight(self) -> torch.Tensor:
        """The target objective's weight of a squared error: 1 - beta (convex) or 1 (weighted)."""
        return vae_objective(torch.tensor(1.0), torch.tensor(0.0), self.cfg.beta_of("target"), self.cfg.objective)

    def expected_target_loss(self, target: torch.Tensor, reference: torch.Tensor,
                             labels: torch.Tensor | None) -> torch.Tensor:
        """The expected-structure U-Net's share of the target objective alone, for target (N, Ct, ...),
        reference (N, Cr, ...) and labels (N,): the batch mean of its per-cell squared error (weighed by
        :meth:`expected_target_weights` as last updated; with ``expected_target_balance`` it then
        updates them) times :meth:`target_recon_weight`, as :meth:`loss_terms` adds it; the loss of
        the epochs after ``vae_epochs``."""
        labels = self.labels_of(labels, len(target))
        recon = self.terms(target, reference, labels, expected=True, models=())["target_expected_recon"]
        loss = self.target_recon_weight() * (self.expected_target_weights(labels, len(target)) * recon).mean()
        if self.cfg.expected_target_balance and labels is not None:
            self.update_structure_scale(recon, labels, "expected")
        log_metrics(self, {"loss": loss, "target_null_recon": recon.mean()}, len(target), prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        target, reference, labels = self._batch(batch)
        if not self.vaes_training():
            return self.expected_target_loss(target, reference, labels)
        null = self.null_cells(len(target))
        terms = self.loss_terms(target, reference, labels, null, self.chimera_references(reference))
        if self.cfg.structure_balance and labels is not None:
            fitted = ~null if null is not None else slice(None)
            self.update_structure_scale(terms["target_recon_per_cell"][fitted], labels[fitted])
        if self.cfg.expected_target_balance and labels is not None:
            self.update_structure_scale(terms["target_expected_recon_per_cell"], labels, "expected")
        for name in ("reference", "target"):
            kl = terms[f"{name}_kl_per_dim"].detach().float()
            self._kl_sums[name] = self._kl_sums[name] + kl if name in self._kl_sums else kl
        self._kl_batches += 1
        self._log(terms, "", len(target))
        return terms["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        target, reference, labels = self._batch(batch)
        terms = self.loss_terms(target, reference, labels)
        if self.cfg.null_latent_share > 0:  # the U-Net's is in the terms already
            terms["target_null_recon"] = squared_error_per_cell(target, self.expected_target(reference, labels)).mean()
        self._log(terms, "val_", len(target))

    def finish_kl_epoch(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Set both models' KL per dimension to the mean over the training batches since the last
        call and log their active dimensions; a no-op when no batch was seen. ``reduce`` averages
        over the processes of a multi-process run."""
        if self._kl_batches:
            for name in ("reference", "target"):
                mean = self._kl_sums[name] / self._kl_batches
                getattr(self, f"{name}_kl_per_dimension").copy_(reduce(mean) if reduce is not None else mean)
                self.log(f"{name}_active_dims", float(self.active_dimensions(model=name)), sync_dist=True)
        self._kl_sums, self._kl_batches = {}, 0

    def on_train_epoch_end(self) -> None:
        self.finish_kl_epoch()

    def active_dimensions(self, threshold: float | None = None,
                          model: Literal["reference", "target", "both"] = "both") -> int:
        """Latent dimensions of ``model`` whose mean KL over the last epoch exceeds ``threshold``
        nats (default ``active_threshold``)."""
        limit = self.cfg.active_threshold if threshold is None else threshold
        kl = self.kl_per_dimension if model == "both" else getattr(self, f"{model}_kl_per_dimension")
        return int((kl > limit).sum())

    # ------------------------------------------------------------------------------ analysis

    @torch.no_grad()
    def elbo_per_cell(self, target: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None = None,
                      n_samples: int | None = None, seed: int = 0, models: Sequence[str] = MODELS
                      ) -> dict[str, torch.Tensor]:
        """ELBO of every cell (up to a constant) of each of ``models`` (default ``reference`` and
        ``target``), each (N,): -(recon + KL), recon from the posterior mean (``n_samples`` 0) or
        averaged over ``n_samples`` draws seeded by ``seed`` (default: ``elbo_samples``), the same
        whichever models are asked for. The target's is log p(target | reference, label), so passing
        another cell's reference (or one with a channel swapped) gives the ELBO under that
        reference; ``models=("target",)`` then skips the reference model's networks. Eval mode."""
        n = self.cfg.elbo_samples if n_samples is None else n_samples
        with _evaluating(self):
            per_cell = self.terms(target, reference, labels, n, torch.Generator().manual_seed(seed), models=models)
        return {name: -(per_cell[f"{name}_recon"] + per_cell[f"{name}_kl_per_dim"].sum(1)) for name in models}

    @torch.no_grad()
    def embed_latents(self, target: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior means: reference (N, reference_latent_dim) and target (N, target_latent_dim)."""
        with _evaluating(self):
            return self.encode_reference(reference)[0], self.encode_target(target, reference, labels)[0]

    @torch.no_grad()
    def embed_batch(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A batch's reference and target posterior means side by side (N, latent_dim)."""
        return torch.cat(self.embed_latents(*self._batch(batch)), dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        raise InputError("the Statistical Cell embeds a target with its reference channels and label: use "
                         "embed_batch or embed_latents")

    @torch.no_grad()
    def reconstruct_target(self, target: torch.Tensor, reference: torch.Tensor,
                           labels: torch.Tensor | None = None) -> torch.Tensor:
        """Targets (N, Ct, ...) decoded from their posterior means given ``reference``."""
        with _evaluating(self):
            return self.decode_target(self.encode_target(target, reference, labels)[0], reference, labels)

    def null_latents(self, n: int) -> torch.Tensor:
        """The learnt null target latent repeated (n, target_latent_dim); InputError for a model
        trained without ``null_latent_share``."""
        if self.cfg.null_latent_share == 0:
            raise InputError("this model was trained without model.null_latent_share, so its target decoder never "
                             "learnt the structure expected from the reference alone; train with "
                             "model.null_latent_share > 0 (for example 0.25) or model.expected_target: unet")
        return self.target_null_latent.detach().expand(n, -1)

    @torch.no_grad()
    def expected_target(self, reference: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The structure (N, Ct, ...) expected from the reference (N, Cr, ...) and labels (N,) alone,
        E[x_t | x_r, label]: the target decoder at the null latent (see ``null_latent_share``), or
        with ``expected_target: unet`` the U-Net on the gated reference."""
        with _evaluating(self):
            if self.cfg.expected_target == "unet":
                reference, labels = reference.to(self.device), self.labels_of(labels, len(reference))
                return self.expected_network(self.gate_reference(reference, labels), labels)
            return self.decode_target(self.null_latents(len(reference)), reference, labels)

    @torch.no_grad()
    def target_from_reference(self, reference: torch.Tensor, labels: torch.Tensor | None = None,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """A structure (N, Ct, ...) drawn for a given reference (N, Cr, ...) and labels (N,): the
        target decoder at a prior draw of ``generator``, or at the prior mean z = 0 when None."""
        n = len(reference)
        z = (torch.randn(n, self.cfg.target_latent_dim, generator=generator) if generator is not None
             else torch.zeros(n, self.cfg.target_latent_dim))
        with _evaluating(self):
            return self.decode_target(z, reference, labels)

    @torch.no_grad()
    def integrated_cells(self, n: int, generator: torch.Generator | None = None,
                         reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrated cells: ``n`` references sampled from the reference model (or the given
        ``reference`` (n, Cr, ...)) and every structure drawn on each, S = number of labels (1
        without labels), with one prior draw per structure: (reference (n, Cr, ...),
        structures (n, S, Ct, ...)), structure s being ``structures[s]``."""
        with _evaluating(self):
            if reference is None:
                reference = self.decode_reference(torch.randn(n, self.cfg.reference_latent_dim, generator=generator))
            reference = reference.to(self.device)
            n_structures = max(len(self.structures), 1)
            drawn = []
            for s in range(n_structures):
                labels = torch.full((len(reference),), s) if self.structures else None
                drawn.append(self.target_from_reference(reference, labels, generator))
        return reference, torch.stack(drawn, dim=1)

    # ------------------------------------------------------------------------------ GenerativeModel interface

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, reference_latent_dim + target_latent_dim), reference part first -> the
        target (N, Ct, ...) drawn on the decoded reference, as the first structure (label 0)."""
        z = z.to(self.device)
        reference = self.decode_reference(z[:, : self.cfg.reference_latent_dim])
        labels = torch.zeros(len(z), dtype=torch.long) if self.structures else None
        return self.decode_target(z[:, self.cfg.reference_latent_dim:], reference, labels)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` generated targets (N, Ct, ...) in [-1, 1], each on its own sampled reference,
        the structures taken in turn (sample i is structure i mod S)."""
        with _evaluating(self):
            z = self.prior(n, generator)
            reference = self.decode_reference(z[:, : self.cfg.reference_latent_dim])
            labels = torch.arange(n) % len(self.structures) if self.structures else None
            return self.decode_target(z[:, self.cfg.reference_latent_dim:], reference, labels)


class StatisticalCellFamily(GenerativeFamily):
    """``model.family: statistical_cell``: reference and target conditional beta-VAEs, 2D or 3D."""

    name = "statistical_cell"
    config = StatisticalCellConfig
    verbs = frozenset({"embed", "generate", "evaluate"})

    def module_class(self, model: Mapping[str, Any]) -> type[StatisticalCell]:
        return StatisticalCell

    def evaluations(self, model: StatisticalCellConfig) -> tuple[str, ...]:
        return ("coupling", "drug-shift")

    def batch_requirements(self, model: StatisticalCellConfig) -> dict[str, str]:
        required = {"image": "image", model.reference: "channels"}
        return required | ({model.label: "categorical"} if model.label else {})

    def check(self, config: RunConfig, spec: DataSpec) -> None:
        model, conditions = config.model, config.data.conditions
        reference = conditions.get(model.reference)
        if not isinstance(reference, ChannelCondition):
            found = f"is of kind {reference.kind!r}" if reference is not None else "is missing"
            raise key_error("model.reference", f"data.conditions.{model.reference} {found}; the reference channels "
                                               "must be a condition of kind channels")
        if model.reference_channels is not None and list(model.reference_channels) != list(reference.channels):
            raise key_error("model.reference_channels", f"{model.reference_channels} differ from data.conditions."
                                                        f"{model.reference}.channels {reference.channels}")
        unknown = sorted(set(model.reference_swap_channels or ()) - set(reference.channels))
        if unknown:
            raise key_error("model.reference_swap_channels", f"{unknown} are not among data.conditions."
                                                             f"{model.reference}.channels {reference.channels}")
        unknown = sorted(set(model.expected_target_axis_map or ()) - set(reference.channels))
        if unknown:
            raise key_error("model.expected_target_axis_map", f"{unknown} are not among data.conditions."
                                                              f"{model.reference}.channels {reference.channels}")
        if model.label is not None and not isinstance(conditions.get(model.label), CategoricalCondition):
            raise key_error("model.label", f"data.conditions.{model.label} must be a condition of kind categorical")
        if model.reference_gates and model.reference_summary:
            raise key_error("model.reference_gates", "excludes model.reference_summary, which would read every "
                                                     "reference channel past the gates")
        for key in ("structure_balance", "expected_target_balance"):
            if getattr(model, key) and model.label is None:
                raise key_error(f"model.{key}", "balances the structures named by model.label, which is null")
        _, *spatial = spec.shape("image")
        if len(spatial) != model.spatial_dims:
            raise key_error("model.spatial_dims", f"{model.spatial_dims}, but the store holds crops of shape "
                                                  f"{tuple(spatial)}")
        if spatial[-1] != spatial[-2] or spatial[-1] % 2 ** model.levels:
            raise key_error("data.crop_size", f"crops are {spatial[-2]} x {spatial[-1]} px; the networks need square "
                                              f"crops whose side is a multiple of 2^levels = {2 ** model.levels}")
        self.check_normalization(config)

    def build(self, config: RunConfig, spec: DataSpec, data: pl.LightningDataModule
              ) -> tuple[StatisticalCell, dict[str, str]]:
        model = config.model
        structures = spec.names(model.label) if model.label else []
        module = StatisticalCell(model.to_dict(), spec.shape("image"), spec.names(model.reference), structures,
                                 config.trainer.channels_last)
        strides = level_strides(spec.shape("image")[1:], model.levels)
        return module, {"downsampling": " ".join("x".join(map(str, s)) for s in strides),
                        "structures": ", ".join(structures) or "one (no label)"}

    def callbacks(self, config: RunConfig, run_dir: Path) -> list[pl.Callback]:
        return [KLPerDimension(run_dir / "kl_per_dimension.csv")]

    def notes_after_fit(self, module: StatisticalCell) -> dict[str, str]:
        threshold = module.cfg.active_threshold
        notes = {f"{name}_active_dims": f"{module.active_dimensions(model=name)} of "
                                        f"{getattr(module.cfg, f'{name}_latent_dim')} (mean KL > {threshold} nats)"
                 for name in ("reference", "target")}
        gates = module.reference_gate_values()
        if gates:
            notes["reference_gates"] = "; ".join(
                f"{structure}: " + ", ".join(f"{channel} {value:.2f}" for channel, value in row.items())
                for structure, row in gates.items())
        return notes


FAMILY = StatisticalCellFamily()
