"""The Statistical Cell family: shapes in 2D and anisotropic 3D, the convex objective, the
conditioning on the reference and the label, per-cell ELBOs, config errors and a trained run."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch
from monai.networks.blocks import ResidualUnit

from morphospace.config import ConfigError
from morphospace.errors import InputError
from morphospace.io.store import CropStoreWriter
from morphospace.models.registry import resolve_run_config
from morphospace.models.statistical_cell import (ExpectedTargetUNet, ReferenceGates, StatisticalCell,
                                                StatisticalCellConfig, SteeredPositions, axis_map, balance_weights,
                                                intensity_moments, level_strides, position_maps)
from morphospace.models.training import GradientSpikeClip
from morphospace.models.vae import vae_objective

STRUCTURES = ["envelope", "cortex", "golgi"]


def _model(shape=(1, 16, 16), structures=STRUCTURES, **config) -> StatisticalCell:
    torch.manual_seed(0)
    settings = {"spatial_dims": len(shape) - 1, "levels": 2, "base_channels": 4, "reference_latent_dim": 3,
                "target_latent_dim": 2, "label": "structure" if structures else None, **config}
    return StatisticalCell(settings, shape, ["Membrane", "DNA"], structures)


def _inputs(shape=(1, 16, 16), n=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(n, *shape, generator=generator) * 2 - 1
    reference = torch.rand(n, 2, *shape[1:], generator=generator) * 2 - 1
    return target, reference, torch.arange(n) % len(STRUCTURES)


def test_depth_halves_only_while_it_stays_at_least_four():
    assert level_strides((16, 64, 64), 4) == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert level_strides((5, 32, 32), 2) == [(1, 2, 2), (1, 2, 2)]
    assert level_strides((64, 64), 3) == [(2, 2)] * 3


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 16, 16)], ids=["2d", "3d_anisotropic"])
def test_shapes_of_every_method(shape):
    model = _model(shape, spectral_norm=True)
    target, reference, labels = _inputs(shape)
    mu, logvar = model.encode_target(target, reference, labels)
    assert mu.shape == logvar.shape == (4, 2)
    assert model.encode_reference(reference)[0].shape == (4, 3)
    assert model.decode_reference(torch.zeros(4, 3)).shape == reference.shape
    assert model.reconstruct_target(target, reference, labels).shape == target.shape
    assert model.target_from_reference(reference, labels).shape == target.shape
    sampled = model.sample(5, torch.Generator().manual_seed(0))
    assert sampled.shape == (5, *shape) and sampled.abs().max() <= 1
    assert model.decode(model.prior(2)).shape == (2, *shape)
    cells_reference, cells = model.integrated_cells(2, torch.Generator().manual_seed(0))
    assert cells_reference.shape == (2, 2, *shape[1:]) and cells.shape == (2, 3, *shape)
    batch = {"image": target, "reference": reference, "structure": labels}
    assert model.embed_batch(batch).shape == (4, 5)
    elbo = model.elbo_per_cell(target, reference, labels, n_samples=2)
    assert set(elbo) == {"reference", "target"} and all(v.shape == (4,) and v.isfinite().all() for v in elbo.values())


def test_convex_and_weighted_objectives_by_hand():
    assert float(vae_objective(torch.tensor(4.0), torch.tensor(2.0), 0.25, "convex")) == 3.5  # 0.75 * 4 + 0.25 * 2
    assert float(vae_objective(torch.tensor(4.0), torch.tensor(2.0), 0.25, "weighted")) == 4.5  # 4 + 0.25 * 2
    model = _model(reference_beta=0.2, target_beta=0.9)
    target, reference, labels = _inputs()
    terms = model.loss_terms(target, reference, labels)
    expected = (0.8 * terms["reference_recon"] + 0.2 * terms["reference_kl"]
                + 0.1 * terms["target_recon"] + 0.9 * terms["target_kl"])
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["target_kl"], terms["target_kl_per_dim"].sum())


def test_elbo_from_the_posterior_mean_is_minus_squared_error_and_kl():
    model = _model().eval()
    target, reference, labels = _inputs()
    mu, logvar = model.encode_target(target, reference, labels)
    reconstruction = model.decode_target(mu, reference, labels)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    by_hand = -(((reconstruction - target) ** 2).sum((1, 2, 3)) + kl)
    torch.testing.assert_close(model.elbo_per_cell(target, reference, labels, n_samples=0)["target"], by_hand)
    again = model.elbo_per_cell(target, reference, labels, n_samples=3, seed=1)["target"]
    torch.testing.assert_close(again, model.elbo_per_cell(target, reference, labels, n_samples=3, seed=1)["target"])


@pytest.mark.parametrize("summary", [False, True], ids=["plain", "reference_summary"])
def test_the_target_elbo_alone_matches_both_models_and_skips_the_reference_decoder(summary):
    model = _model(reference_summary=summary).eval()
    target, reference, labels = _inputs()
    calls = []
    model.reference_decoder.register_forward_hook(lambda *_: calls.append("reference_decoder"))
    for n_samples in (0, 3):
        both = model.elbo_per_cell(target, reference, labels, n_samples=n_samples, seed=2)
        calls.clear()
        alone = model.elbo_per_cell(target, reference, labels, n_samples=n_samples, seed=2, models=("target",))
        assert set(alone) == {"target"} and calls == []
        torch.testing.assert_close(alone["target"], both["target"])
    other_seed = model.elbo_per_cell(target, reference, labels, n_samples=3, seed=3, models=("target",))["target"]
    assert not torch.allclose(other_seed, alone["target"])  # the draws do count
    with pytest.raises(ValueError, match="'decoder'"):
        model.terms(target, reference, labels, models=("decoder",))


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 16, 16)], ids=["2d", "3d_anisotropic"])
def test_a_log_variance_past_its_bound_is_pulled_back_by_the_kl(shape):
    model = _model(shape)
    target, reference, labels = _inputs(shape)
    head, latent = model.target_encoder.head, 2
    with torch.no_grad():
        head.weight[latent:].zero_()
        head.bias[latent:] = -40.0
    mu, logvar = model.encode_target(target, reference, labels)
    assert (logvar == -20).all()
    (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean().backward()
    # d KL / d logvar = (exp(logvar) - 1) / 2 at the bound, passed whole to the head: the KL raises it again
    torch.testing.assert_close(head.bias.grad[latent:], torch.full((latent,), 0.5 * (math.exp(-20) - 1)))


def test_gradient_spike_clipping_bounds_each_of_the_two_models_networks_apart():
    model = _model(reference_gates=True, null_latent_share=0.25)
    target, reference, labels = _inputs()
    clip = GradientSpikeClip(factor=2.0, window=4, min_history=1)
    model.loss_terms(target, reference, labels, null=torch.tensor([True, False, False, False]))["loss"].backward()
    assert clip.clip(model, list(model.parameters())) == []
    assert set(clip.norms) == {"reference_encoder", "reference_decoder", "target_encoder", "target_decoder", "gates",
                               "target_null_latent"}
    before = {name: history[-1] for name, history in clip.norms.items()}
    for parameter in model.target_encoder.parameters():
        parameter.grad *= 10
    assert clip.clip(model, list(model.parameters())) == ["target_encoder"]
    clipped = torch.cat([p.grad.flatten() for p in model.target_encoder.parameters()]).norm()
    torch.testing.assert_close(clipped, torch.tensor(2.0 * before["target_encoder"]))
    assert list(clip.norms["target_decoder"]) == [before["target_decoder"]] * 2  # the others kept their gradient


def test_null_cells_are_decoded_from_the_null_latent_without_kl_and_weighted_like_recon():
    model = _model(target_beta=0.8, null_latent_share=0.25)
    assert _model().null_cells(8) is None
    null = model.null_cells(8)
    assert null.dtype == torch.bool and int(null.sum()) == 2
    assert int(model.null_cells(1).sum()) == 0  # one cell always keeps its latent
    target, reference, labels = _inputs(n=6)
    null = torch.tensor([True, False, False, True, False, False])
    with torch.no_grad():
        model.target_null_latent.fill_(0.3)
    torch.manual_seed(1)
    terms = model.loss_terms(target, reference, labels, null)
    per_cell = model.eval().terms(target, reference, labels, n_samples=0, null=null)  # batch norm as when used
    assert (per_cell["target_kl_per_dim"][null] == 0).all() and (per_cell["target_kl_per_dim"][~null] > 0).all()
    expected = model.decode_target(torch.full((2, 2), 0.3), reference[null], labels[null])
    torch.testing.assert_close(per_cell["target_reconstruction"][null], expected)
    null_recon = ((per_cell["target_reconstruction"][null] - target[null]) ** 2).sum((1, 2, 3))
    torch.testing.assert_close(per_cell["target_recon"][null], null_recon)
    assert terms["target_null_recon"] > 0
    by_hand = 0.2 * terms["target_recon"] + 0.8 * terms["target_kl"] + 0.2 * terms["target_null_recon"]
    torch.testing.assert_close(terms["target_loss"], by_hand)
    torch.testing.assert_close(model.expected_target(reference, labels),
                               model.decode_target(torch.full((6, 2), 0.3), reference, labels))
    with pytest.raises(InputError, match="trained without model.null_latent_share"):
        _model().expected_target(reference, labels)
    with pytest.raises(pydantic.ValidationError, match="null_latent_share"):
        StatisticalCellConfig(null_latent_share=1.0)


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 16, 16)], ids=["2d", "3d_anisotropic"])
def test_the_expected_target_unet_is_trained_on_every_cell_with_recon_weight(shape):
    model = _model(shape, target_beta=0.8, reference_gates=True, expected_target="unet",
                   expected_target_channels=[4, 8, 16]).eval()  # batch norm and gates as when used
    assert model.cfg.learns_expected_target and not _model().cfg.learns_expected_target
    target, reference, labels = _inputs(shape, n=6)
    expected = model.expected_target(reference, labels)
    assert expected.shape == target.shape and expected.abs().max() < 1
    torch.testing.assert_close(expected, model.expected_network(model.gate_reference(reference, labels), labels))
    terms = model.loss_terms(target, reference, labels)
    by_hand = ((expected - target) ** 2).flatten(1).sum(1).mean()
    torch.testing.assert_close(terms["target_null_recon"], by_hand)
    objective = 0.2 * terms["target_recon"] + 0.8 * terms["target_kl"] + 0.2 * by_hand
    torch.testing.assert_close(terms["target_loss"], objective + 0.8 * terms["target_gate_cost"])
    assert "target_expected_recon" not in model.terms(target, reference, labels, n_samples=0)  # not for the ELBO
    model.train()
    model.loss_terms(target, reference, labels)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.expected_network.parameters()
               if p.requires_grad and p.ndim > 1)
    with pytest.raises(InputError, match="model.expected_target: unet"):
        model.null_latents(2)
    with pytest.raises(pydantic.ValidationError, match="null_latent_share must be 0 with expected_target: unet"):
        StatisticalCellConfig(expected_target="unet", null_latent_share=0.25)


def test_per_label_outputs_give_each_structure_the_last_convolutions_own_weights():
    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8],
                   expected_target_outputs="per_label").eval()
    network = model.expected_network
    target, reference, labels = _inputs((1, 8, 16, 16), n=6)  # labels 0 1 2 0 1 2
    drawn = network.unet(network.condition(reference, None, labels))
    assert drawn.shape == (6, len(STRUCTURES), 8, 16, 16)
    torch.testing.assert_close(model.expected_target(reference, labels),
                               torch.tanh(drawn[torch.arange(6), labels])[:, None])
    first = labels == 0
    model.terms(target[first], reference[first], labels[first], expected=True)["target_expected_recon"].sum().backward()
    last = network.unet.model[-1][-1].conv.unit0.conv
    assert last.weight.grad[0].abs().sum() > 0 and last.bias.grad[0] != 0
    assert last.weight.grad[1:].abs().sum() == 0 and (last.bias.grad[1:] == 0).all()
    for bad in ({"expected_target_outputs": "per_label"}, {"expected_target": "unet", "label": None,
                                                          "expected_target_outputs": "per_label"}):
        with pytest.raises(pydantic.ValidationError, match="per_label needs expected_target: unet and a model.label"):
            StatisticalCellConfig(**bad)


def test_identity_activation_leaves_the_expected_structure_unbounded_and_its_gradient_whole():
    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8],
                   expected_target_outputs="per_label", expected_target_activation="identity").eval()
    network = model.expected_network
    target, reference, labels = _inputs((1, 8, 16, 16), n=6)
    last = network.unet.model[-1][-1].conv.unit0.conv
    with torch.no_grad():
        last.bias.fill_(-5.0)  # far into tanh's flat tail: a background saturated at -1
    drawn = network.unet(network.condition(reference, None, labels))
    expected = model.expected_target(reference, labels)
    torch.testing.assert_close(expected, drawn[torch.arange(6), labels][:, None])
    assert expected.max() < -2
    model.terms(target, reference, labels, expected=True)["target_expected_recon"].sum().backward()
    identity_gradient = last.bias.grad.abs().sum()
    saturating = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8],
                        expected_target_outputs="per_label").eval()
    saturating.load_state_dict(model.state_dict())
    saturating.terms(target, reference, labels, expected=True)["target_expected_recon"].sum().backward()
    tanh_last = saturating.expected_network.unet.model[-1][-1].conv.unit0.conv
    assert tanh_last.bias.grad.abs().sum() < 1e-3 * identity_gradient  # tanh's slope there is about 1.8e-4
    with pytest.raises(pydantic.ValidationError, match="expected_target_activation"):
        StatisticalCellConfig(expected_target="unet", expected_target_activation="relu")
    with pytest.raises(ValueError, match="activation must be tanh or identity"):
        ExpectedTargetUNet(2, 2, 1, (16, 16), [4, 8], activation="sigmoid")


def test_intensity_moments_by_hand_in_float32_whatever_the_input():
    stack = -torch.ones(1, 2, 3, 5, 5)
    stack[0, 0, 2, 1, 4] = 1.0  # one voxel at z 1, y -0.5, x 1
    stack[0, 1] = -0.5  # a flat channel at weight 0.25 everywhere: centroid 0, variance of a uniform grid
    stack[0, 1, 0] = -2.0  # below the background: weight 0, not negative
    moments = intensity_moments(stack)
    assert moments.shape == (1, 2 * 10) and moments.dtype == torch.float32
    torch.testing.assert_close(moments[0, :10], torch.tensor([1 / 75, 1.0, -0.5, 1.0, 0, 0, 0, 0, 0, 0]))
    flat = moments[0, 10:]
    assert flat[0] == pytest.approx(0.25 * 2 / 3) and flat[1] == pytest.approx(0.5)  # z 0 and 1: slices 1 and 2 only
    torch.testing.assert_close(flat[2:4], torch.zeros(2))
    assert flat[7] == pytest.approx(0.5) and flat[9] == pytest.approx(0.5)  # (y, y) and (x, x): mean of 1, .25, 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shifted = -torch.ones(1, 1, 64, 64)
        shifted[0, 0, 30:34, 30:35] = 1.0  # centroid a hair right of the centre
        assert intensity_moments(shifted.bfloat16()).dtype == torch.float32
        x_centroid = intensity_moments(shifted.bfloat16())[0, 2]
    assert x_centroid == pytest.approx((32 - 31.5) * 2 / 63, abs=1e-6)


def test_steered_maps_are_linear_in_position_and_set_by_the_reference():
    steer = SteeredPositions(2, 2, 3).eval()
    reference = -torch.ones(2, 2, 16, 16)
    reference[:, :, 4:12, 4:12] = 1.0
    reference[1, 1] = reference[1, 1].roll(1, -1)  # the second cell's DNA one pixel to the right
    maps = steer(reference)
    assert maps.shape == (2, 3, 16, 16)
    torch.testing.assert_close(maps.diff(dim=-1).diff(dim=-1), torch.zeros(2, 3, 16, 14), atol=1e-5, rtol=0)
    torch.testing.assert_close(maps.diff(dim=-2).diff(dim=-2), torch.zeros(2, 3, 14, 16), atol=1e-5, rtol=0)
    assert not torch.allclose(maps[0], maps[1])
    maps.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in steer.perceptron.parameters())
    with pytest.raises(ValueError, match="n_maps must be at least 1"):
        SteeredPositions(2, 2, 0)


def test_steered_maps_learn_a_side_set_by_centroids_a_fraction_of_a_pixel_apart():
    """The cue of the simulator's Golgi side: which way the DNA lies from the membrane's centre, here
    0.3-0.7 px along x; the map to learn is x times that side, which a convolution could only tell by
    comparing the two discs' edges across the crop."""
    generator = torch.Generator().manual_seed(0)
    grid = torch.arange(16.0)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")

    def cells(n):
        side = torch.randint(0, 2, (n,), generator=generator) * 2.0 - 1.0
        offset = side * (0.3 + 0.4 * torch.rand(n, generator=generator))
        membrane = torch.sigmoid(6.0 - ((yy - 7.5) ** 2 + (xx - 7.5) ** 2).sqrt())
        dna = torch.sigmoid(3.0 - ((yy - 7.5) ** 2 + (xx[None] - 7.5 - offset[:, None, None]) ** 2).sqrt())
        reference = torch.stack([membrane.expand(n, -1, -1), dna], 1) * 2 - 1
        return reference + 0.02 * torch.randn(reference.shape, generator=generator), side

    torch.manual_seed(0)
    steer = SteeredPositions(2, 2, 1)
    optimiser = torch.optim.Adam(steer.parameters(), lr=1e-2)
    x_map = position_maps((16, 16), 1)[0, 1]
    for _ in range(150):
        reference, side = cells(64)
        loss = (steer(reference)[:, 0] - side[:, None, None] * x_map).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    reference, side = cells(256)
    with torch.no_grad():
        slope = steer.eval()(reference)[:, 0].diff(dim=-1).mean((1, 2))
    assert ((slope > 0) == (side > 0)).float().mean() > 0.95


def test_the_unet_reads_the_steered_maps_beside_the_reference():
    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8],
                   expected_target_steered_maps=3).eval()
    network = model.expected_network
    assert network.unet.model[0].conv.unit0.conv.in_channels == 2 + 3 + 8  # reference, maps, label embedding
    target, reference, labels = _inputs((1, 8, 16, 16), n=6)
    joined = torch.cat([reference, network.steering(reference)], dim=1)
    torch.testing.assert_close(model.expected_target(reference, labels),
                               torch.tanh(network.unet(network.condition(joined, None, labels))))
    model.train()
    model.terms(target, reference, labels, expected=True)["target_expected_recon"].sum().backward()
    assert network.steering.perceptron[0].weight.grad.abs().sum() > 0
    assert _model(expected_target="unet").expected_network.steering is None
    with pytest.raises(pydantic.ValidationError, match="expected_target_steered_maps needs expected_target: unet"):
        StatisticalCellConfig(expected_target_steered_maps=2)


def _elongated_cell(angle: float, offset: float, size: int = 32, depth: int = 0) -> torch.Tensor:
    """A reference (1, 2, [depth,] size, size) in [-1, 1] with noise: a membrane rim of an ellipse
    (semi-axes 12 and 7 px) whose long axis lies at ``angle`` (rad, arctan2(y, x)), centred on the
    crop, and a nucleus disc (radius 4 px) ``offset`` px from the centre along that axis."""
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    along = yy * math.sin(angle) + xx * math.cos(angle)
    across = -yy * math.cos(angle) + xx * math.sin(angle)
    rho = ((along / 12) ** 2 + (across / 7) ** 2).sqrt()
    membrane = 0.8 * torch.exp(-((rho - 1) * 9) ** 2) + 0.1 * torch.sigmoid((1 - rho) * 20)
    dy, dx = yy - offset * math.sin(angle), xx - offset * math.cos(angle)
    dna = 0.75 * torch.sigmoid(2 * (4 - (dy ** 2 + dx ** 2).sqrt()))
    planes = torch.stack([membrane, dna])
    image = planes[:, None].expand(-1, depth, -1, -1) if depth else planes
    return (image + 0.02 * torch.randn(image.shape, generator=generator))[None] * 2 - 1


@pytest.mark.parametrize("depth", [0, 6])
@pytest.mark.parametrize("angle", [0.0, 0.7, 2.0, -2.6])
@pytest.mark.parametrize("offset", [0.3, -0.3, 1.5])
def test_the_axis_map_rises_along_the_long_axis_towards_the_body_at_any_angle(angle, offset, depth):
    """A nucleus 0.3 px off the cell's centre: the map's slope follows the long axis, pointing away
    from the nucleus (towards the end with more room), and it is 0 at the nucleus's centre."""
    reference = _elongated_cell(angle, offset, depth=depth)
    distance = axis_map(reference, 0, 1)
    assert distance.shape == (1, 1, *reference.shape[2:]) and distance.dtype == torch.float32
    plane = distance[0, 0, 0] if depth else distance[0, 0]
    if depth:
        assert torch.equal(distance[0, 0], plane.expand(depth, -1, -1))
    half = (32 - 1) / 2
    step_y, step_x = plane.diff(dim=0).mean().item() * half, plane.diff(dim=1).mean().item() * half
    away = -math.copysign(1.0, offset)
    assert step_y == pytest.approx(away * math.sin(angle), abs=0.02)
    assert step_x == pytest.approx(away * math.cos(angle), abs=0.02)
    nucleus = torch.tensor([half + offset * math.sin(angle), half + offset * math.cos(angle)])
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    at_nucleus = (away * ((yy - nucleus[0]) * math.sin(angle) + (xx - nucleus[1]) * math.cos(angle)) / half)
    torch.testing.assert_close(plane, at_nucleus, atol=0.02, rtol=0)


def test_the_axis_map_is_float32_under_bf16_and_follows_the_reference_through_flips():
    reference = _elongated_cell(0.4, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = axis_map(reference.bfloat16(), 0, 1)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, axis_map(reference, 0, 1), atol=0.02, rtol=0)
    torch.testing.assert_close(axis_map(reference.flip(-1), 0, 1), axis_map(reference, 0, 1).flip(-1))


def test_the_unet_reads_the_axis_map_beside_the_reference():
    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8],
                   expected_target_axis_map=["DNA", "Membrane"]).eval()
    network = model.expected_network
    assert network.axis_channels == (1, 0)
    assert network.unet.model[0].conv.unit0.conv.in_channels == 2 + 1 + 8  # reference, the map, label embedding
    _, reference, labels = _inputs((1, 8, 16, 16), n=6)
    joined = torch.cat([reference, axis_map(reference, 1, 0)], dim=1)
    torch.testing.assert_close(model.expected_target(reference, labels),
                               torch.tanh(network.unet(network.condition(joined, None, labels))))
    assert _model(expected_target="unet").expected_network.axis_channels is None
    with pytest.raises(ValueError, match=r"expected_target_axis_map \['Actin', 'DNA'\] names channels"):
        _model(expected_target="unet", expected_target_axis_map=["Actin", "DNA"])
    with pytest.raises(ValueError, match="axis_channels"):
        ExpectedTargetUNet(2, 2, 1, (16, 16), [4, 8], axis_channels=(0, 2))


def test_the_initial_output_shifts_the_untrained_unets_output_by_its_value():
    def untrained(initial_output):
        torch.manual_seed(0)
        return ExpectedTargetUNet(3, 2, 1, (8, 16, 16), [4, 8], n_labels=3, per_label=True, activation="identity",
                                  initial_output=initial_output).eval()

    reference, labels = torch.rand(4, 2, 8, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0])
    shifted, plain = untrained(-1.0), untrained(None)
    assert shifted.output_convolution.out_channels == 3  # the last convolution draws every label's output
    assert torch.equal(shifted.output_convolution.bias, torch.full((3,), -1.0))
    torch.testing.assert_close(shifted(reference, labels) - plain(reference, labels),
                               torch.full((4, 1, 8, 16, 16), -1.0) - plain.output_convolution.bias[labels].view(
                                   -1, 1, 1, 1, 1))
    with pytest.raises(pydantic.ValidationError, match="expected_target_initial_output needs expected_target: unet"):
        StatisticalCellConfig(expected_target_initial_output=-1.0)
    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8],
                   expected_target_activation="identity", expected_target_initial_output=-1.0)
    assert torch.equal(model.expected_network.output_convolution.bias, torch.full((1,), -1.0))


def test_after_vae_epochs_the_unet_trains_alone(monkeypatch):
    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8],
                   expected_target_outputs="per_label", target_beta=0.8, vae_epochs=1)
    target, reference, labels = _inputs((1, 8, 16, 16), n=6)
    batch = {"image": target, "reference": reference, "structure": labels}
    assert model.vaes_training()  # epoch 0 outside a Trainer
    monkeypatch.setattr(StatisticalCell, "current_epoch", property(lambda self: 1))
    assert not model.vaes_training()
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here
        loss = model.training_step(batch, 0)
    by_hand = 0.2 * ((model.expected_network(reference, labels) - target) ** 2).flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, by_hand)  # in training mode: batch norm on the batch's statistics
    loss.backward()
    unet = {id(p) for p in model.expected_network.parameters()}
    assert all((p.grad is not None) == (id(p) in unet) for p in model.parameters())
    for bad in ({}, {"expected_target": "unet", "reference_gates": True}):
        with pytest.raises(pydantic.ValidationError, match="vae_epochs needs expected_target: unet and no reference"):
            StatisticalCellConfig(vae_epochs=2, **bad)


def test_a_trainer_stops_the_vaes_after_vae_epochs():
    import lightning.pytorch as pl

    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8], vae_epochs=1)
    target, reference, labels = _inputs((1, 8, 16, 16), n=8)
    cells = [{"image": t, "reference": r, "structure": label} for t, r, label in zip(target, reference, labels)]
    snapshots = []

    class Snapshot(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            snapshots.append({name: p.detach().clone() for name, p in module.named_parameters()})

    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Snapshot()])
    trainer.fit(model, torch.utils.data.DataLoader(cells, batch_size=4))
    for name in snapshots[0]:
        moved = [not torch.equal(before[name], after[name]) for before, after in zip(snapshots, snapshots[1:])]
        assert moved == ([True, True] if name.startswith("expected_network") else [False, False]), name


def test_structure_balance_weighs_each_structure_by_its_running_error():
    model = _model(target_beta=0.8, structure_balance=True, null_latent_share=0.25)
    assert "target_recon_scale" not in _model().state_dict()  # runs trained without it load as before
    target, reference, labels = _inputs(n=6)  # labels 0 1 2 0 1 2
    torch.testing.assert_close(model.structure_weights(labels, 6), torch.ones(6))  # nothing seen yet
    model.update_structure_scale(torch.tensor([1.0, 4.0, 3.0]), torch.tensor([0, 1, 0]))
    torch.testing.assert_close(model.target_recon_scale, torch.tensor([2.0, 4.0, 0.0]))
    torch.testing.assert_close(model.structure_weights(labels, 6), torch.tensor([1.5, 0.75, 1.0] * 2))  # 3 / scale
    model.update_structure_scale(torch.tensor([12.0]), torch.tensor([0]))
    torch.testing.assert_close(model.target_recon_scale, torch.tensor([0.99 * 2 + 0.01 * 12, 4.0, 0.0]))
    null = torch.tensor([True, False, False, False, False, True])
    weights = model.structure_weights(labels, 6)
    terms = model.loss_terms(target, reference, labels, null)
    recon = terms["target_recon_per_cell"]
    torch.testing.assert_close(terms["target_recon"], recon[~null].mean())  # logged unweighted
    by_hand = 0.2 * (weights * recon)[~null].mean() + 0.8 * terms["target_kl"] + 0.2 * (weights * recon)[null].mean()
    torch.testing.assert_close(terms["target_loss"], by_hand)


def test_balance_weights_by_hand():
    scale = torch.tensor([4.0, 1.0, 0.0])  # structures 0 and 1 seen, mean 2.5; structure 2 not yet
    torch.testing.assert_close(balance_weights(scale, torch.tensor([0, 1, 2, 1])), torch.tensor([0.625, 2.5, 1, 2.5]))
    torch.testing.assert_close(balance_weights(torch.zeros(3), torch.tensor([0, 2])), torch.ones(2))


def test_expected_target_balance_weighs_the_unets_loss_by_its_own_running_errors(monkeypatch):
    model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8], target_beta=0.8,
                   expected_target_balance=True, vae_epochs=1)
    assert "expected_recon_scale" not in _model().state_dict() and "target_recon_scale" not in model.state_dict()
    target, reference, labels = _inputs((1, 8, 16, 16), n=6)  # labels 0 1 2 0 1 2
    batch = {"image": target, "reference": reference, "structure": labels}
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here
        model.training_step(batch, 0)  # a VAE epoch: the U-Net's errors set the scale, the VAE's do not
    with torch.no_grad():
        first = ((model.expected_network(reference, labels) - target) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(model.expected_recon_scale, torch.stack([first[labels == k].mean() for k in range(3)]))
    model.expected_recon_scale.copy_(torch.tensor([1.0, 2.0, 4.0]))  # mean 7 / 3
    weights = torch.tensor([7 / 3, 7 / 6, 7 / 12] * 2)
    torch.testing.assert_close(model.structure_weights(labels, 6), torch.ones(6))  # the VAE's stay unweighted
    torch.testing.assert_close(model.expected_target_weights(labels, 6), weights)
    monkeypatch.setattr(StatisticalCell, "current_epoch", property(lambda self: 1))
    with pytest.warns(UserWarning, match="self.log"):
        loss = model.training_step(batch, 0)  # the U-Net alone
    recon = ((model.expected_network(reference, labels) - target) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(loss, 0.2 * (weights * recon).mean())
    batch_means = torch.stack([recon[labels == k].mean() for k in range(3)]).detach()
    torch.testing.assert_close(model.expected_recon_scale, 0.99 * torch.tensor([1.0, 2.0, 4.0]) + 0.01 * batch_means)
    with pytest.raises(pydantic.ValidationError, match="expected_target_balance needs expected_target: unet"):
        StatisticalCellConfig(expected_target_balance=True)


def test_expected_target_balance_leaves_the_vaes_gradients_alone():
    target, reference, labels = _inputs((1, 8, 16, 16), n=6)
    gradients = []
    for balance in (False, True):
        model = _model((1, 8, 16, 16), expected_target="unet", expected_target_channels=[4, 8], target_beta=0.8,
                       expected_target_balance=balance)
        if balance:
            model.expected_recon_scale.copy_(torch.tensor([1.0, 2.0, 4.0]))
        torch.manual_seed(1)  # the same posterior draws
        model.loss_terms(target, reference, labels)["loss"].backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    changed = {name.split(".")[0] for name in gradients[0] if not torch.equal(gradients[0][name], gradients[1][name])}
    assert changed == {"expected_network"} and gradients[0].keys() == gradients[1].keys()


def test_chimera_references_swap_one_channel_of_a_share_of_the_cells_for_another_cells():
    reference = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 2, 4, 4) + torch.tensor([0.0, 100.0]).view(1, 2, 1, 1)
    assert _model().chimera_references(reference) is reference
    torch.manual_seed(0)
    chimeras = _model(reference_swap_share=0.5).chimera_references(reference)
    assert chimeras.shape == reference.shape
    changed = (chimeras != reference).flatten(2).all(2)  # (cells, channels): a whole channel replaced
    assert changed.sum() == 4 and (changed.sum(1) <= 1).all() and (chimeras == reference).flatten(2).any(1).all()
    for cell, channel in changed.nonzero().tolist():
        value = chimeras[cell, channel, 0, 0]
        assert (chimeras[cell, channel] == value).all() and value != reference[cell, channel, 0, 0]
        assert value in reference[:, channel, 0, 0]
    torch.testing.assert_close(_model(reference_swap_share=1.0).chimera_references(reference[:1]), reference[:1])
    membrane_only = _model(reference_swap_share=1.0, reference_swap_channels=["Membrane"])
    chimeras = membrane_only.chimera_references(reference)
    assert torch.equal(chimeras[:, 1], reference[:, 1])
    assert (chimeras[:, 0, 0, 0] != reference[:, 0, 0, 0]).all()
    assert sorted(chimeras[:, 0, 0, 0].tolist()) == reference[:, 0, 0, 0].tolist()  # a cyclic pairing
    with pytest.raises(ValueError, match=r"reference_swap_channels \['Actin'\] are not reference channels"):
        _model(reference_swap_channels=["Actin"])


def test_the_target_model_reads_the_chimera_and_the_reference_model_the_true_reference():
    model = _model(reference_swap_share=0.5)
    target, reference, labels = _inputs()
    chimeras = reference.flip(0)
    torch.manual_seed(1)
    plain = model.loss_terms(target, reference, labels)
    torch.manual_seed(1)
    mixed = model.loss_terms(target, reference, labels, target_reference=chimeras)
    torch.manual_seed(1)
    flipped = model.loss_terms(target, chimeras, labels)
    torch.testing.assert_close(mixed["reference_recon"], plain["reference_recon"])
    torch.testing.assert_close(mixed["target_recon"], flipped["target_recon"])
    assert not torch.allclose(mixed["target_recon"], plain["target_recon"])
    with pytest.raises(pydantic.ValidationError, match="reference_swap_share"):
        StatisticalCellConfig(reference_swap_share=1.5)


def test_a_training_step_gives_the_target_model_the_chimeras(monkeypatch):
    model = _model(reference_swap_share=0.5)
    target, reference, labels = _inputs()
    monkeypatch.setattr(model, "chimera_references", lambda given: given.flip(0))
    torch.manual_seed(2)
    expected = model.loss_terms(target, reference, labels, target_reference=reference.flip(0))["loss"]
    torch.manual_seed(2)
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here
        loss = model.training_step({"image": target, "reference": reference, "structure": labels}, 0)
    torch.testing.assert_close(loss, expected)


def test_the_target_decoder_reads_the_reference_and_the_label():
    model = _model().eval()
    _, reference, _ = _inputs()
    z = torch.randn(4, 2)
    same = torch.zeros(4, dtype=torch.long)
    base = model.decode_target(z, reference, same)
    assert not torch.allclose(base, model.decode_target(z, reference.flip(0), same))
    assert not torch.allclose(base, model.decode_target(z, reference, same + 1))
    with pytest.raises(InputError, match="labels must be 4 indices in \\[0, 3\\)"):
        model.decode_target(z, reference, same + 3)
    with pytest.raises(InputError, match="needs structure labels"):
        model.decode_target(z, reference, None)


def test_a_constant_rate_needs_no_trainer_and_an_unknown_schedule_is_refused():
    assert isinstance(_model().configure_optimizers(), torch.optim.Adam)
    with pytest.raises(pydantic.ValidationError, match="lr_schedule"):
        StatisticalCellConfig.model_validate({"lr_schedule": "linear"})


def test_position_maps_run_from_minus_one_to_one_through_the_centre():
    maps = position_maps((3, 4, 5), 2)
    assert maps.shape == (2, 3, 3, 4, 5)
    torch.testing.assert_close(maps[1, 0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(maps[0, 2, 0, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    assert maps[0, 1, 0, :, 2].tolist() == pytest.approx([-1.0, -1 / 3, 1 / 3, 1.0])


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 16, 16)], ids=["2d", "3d"])
def test_positions_add_one_map_per_spatial_axis_to_the_target_networks(shape, monkeypatch):
    from morphospace.models import statistical_cell

    plain, placed = _model(shape), _model(shape, positions=True)
    axes = len(shape) - 1
    for name in ("target_encoder", "target_decoder"):
        assert getattr(placed, name).condition.channels == getattr(plain, name).condition.channels + axes
    assert placed.reference_decoder.condition.channels == 0
    target, reference, labels = _inputs(shape)
    mu, _ = placed.encode_target(target, reference, labels)
    decoded = placed.target_from_reference(reference, labels)
    assert placed.decode_target(mu, reference, labels).shape == decoded.shape == target.shape
    monkeypatch.setattr(statistical_cell, "position_maps", lambda shape, n, *args: torch.zeros(n, len(shape), *shape))
    assert not torch.allclose(placed.target_from_reference(reference, labels), decoded)  # the maps reach the output


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 16, 16)], ids=["2d", "3d"])
def test_the_reference_summary_reaches_the_target_decoder_without_training_the_reference_encoder(shape):
    plain, summarised = _model(shape, null_latent_share=0.25), _model(shape, null_latent_share=0.25,
                                                                      reference_summary=True)
    assert summarised.target_decoder.project.in_features == plain.target_decoder.project.in_features + 3
    target, reference, labels = _inputs(shape)
    expected = summarised.expected_target(reference, labels)
    with torch.no_grad():
        summarised.reference_encoder.head.bias.add_(1.0)  # another posterior mean, same reference image
    assert not torch.allclose(summarised.expected_target(reference, labels), expected)
    with torch.no_grad():
        plain_expected = plain.expected_target(reference, labels)
        plain.reference_encoder.head.bias.add_(1.0)
    torch.testing.assert_close(plain.expected_target(reference, labels), plain_expected)
    summarised.loss_terms(target, reference, labels, summarised.null_cells(len(target)))["target_loss"].backward()
    assert all(p.grad is None for p in summarised.reference_encoder.parameters())
    assert summarised.target_decoder.project.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reads a summary of 3 values; got None"):
        summarised.target_decoder(torch.zeros(4, 2), reference, labels)


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 16, 16)], ids=["2d", "3d"])
def test_film_modulates_the_units_by_the_label_instead_of_giving_it_as_maps(shape):
    maps, film = _model(shape), _model(shape, label_conditioning="film")
    for name in ("target_encoder", "target_decoder"):
        assert getattr(film, name).condition.channels == getattr(maps, name).condition.channels - 8
    assert [layer.out_features for layer in film.target_decoder.modulation.layers] == [2 * 8, 2 * 4]
    target, reference, _ = _inputs(shape)
    z, first, second = torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    film.eval()
    torch.testing.assert_close(film.decode_target(z, reference, first), film.decode_target(z, reference, second))
    film.train()
    film.loss_terms(target, reference, first)["loss"].backward()
    assert all(layer.weight.grad.abs().sum() > 0 for layer in film.target_decoder.modulation.layers)
    with torch.no_grad():
        for layer in film.target_decoder.modulation.layers:
            layer.weight.normal_()
    film.eval()
    assert not torch.allclose(film.decode_target(z, reference, first), film.decode_target(z, reference, second))
    normalised = _model(shape, label_conditioning="film", spectral_norm=True)  # zero layers left unnormalised
    assert normalised.loss_terms(target, reference, first)["loss"].isfinite()
    with pytest.raises(pydantic.ValidationError, match="label_conditioning"):
        StatisticalCellConfig.model_validate({"label_conditioning": "concat"})


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 16, 16)], ids=["2d", "3d"])
def test_the_target_decoders_full_resolution_unit_takes_its_own_width(shape):
    plain, wide = _model(shape), _model(shape, target_full_resolution_channels=12)
    full_resolution = wide.target_decoder.units[-1]
    assert full_resolution.out_channels == 12 and wide.target_decoder.out.conv.in_channels == 12 + 2 + 8
    assert plain.target_decoder.units[-1].out_channels == plain.cfg.base_channels == 4
    for name in ("reference_encoder", "reference_decoder", "target_encoder"):
        shapes = [[p.shape for p in getattr(model, name).parameters()] for model in (plain, wide)]
        assert shapes[0] == shapes[1]
    assert [u.out_channels for u in wide.target_decoder.units[:-1]] == [u.out_channels for u in
                                                                        plain.target_decoder.units[:-1]]
    target, reference, labels = _inputs(shape)
    assert wide.reconstruct_target(target, reference, labels).shape == target.shape
    with pytest.raises(pydantic.ValidationError, match="target_full_resolution_channels"):
        StatisticalCellConfig.model_validate({"target_full_resolution_channels": 1})


@pytest.mark.parametrize(("shape", "layout"), [((1, 16, 16), torch.channels_last),
                                               ((1, 8, 16, 16), torch.channels_last_3d)], ids=["2d", "3d"])
def test_channels_last_lays_out_every_convolution_so_and_keeps_the_numbers(shape, layout):
    plain = _model(shape, positions=True, reference_summary=True, spectral_norm=True)
    fast = StatisticalCell(plain.hparams["config"], shape, ["Membrane", "DNA"], STRUCTURES, channels_last=True)
    fast.load_state_dict(plain.state_dict())

    def weights(model):
        return [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]

    assert all(w.is_contiguous(memory_format=layout) for w in weights(fast))
    assert not all(w.is_contiguous(memory_format=layout) for w in weights(plain))
    assert fast.hparams["channels_last"] and fast.memory_format == layout
    target, reference, labels = _inputs(shape)
    with torch.no_grad():
        for method in ("reconstruct_target", "target_from_reference"):
            arguments = (target, reference, labels) if method == "reconstruct_target" else (reference, labels)
            torch.testing.assert_close(getattr(fast, method)(*arguments), getattr(plain, method)(*arguments),
                                       rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast.elbo_per_cell(target, reference, labels),
                                   plain.elbo_per_cell(target, reference, labels), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(("shape", "layout"), [((1, 16, 16), torch.channels_last),
                                               ((1, 8, 16, 16), torch.channels_last_3d)], ids=["2d", "3d"])
def test_under_bf16_autocast_every_unit_reads_its_condition_maps_in_bf16_and_channels_last(shape, layout):
    model = StatisticalCell(_model(shape, reference_gates=True).hparams["config"], shape, ["Membrane", "DNA"],
                            STRUCTURES, channels_last=True)
    seen = []
    for unit in (m for m in model.modules() if isinstance(m, ResidualUnit)):
        unit.register_forward_pre_hook(lambda _, args: seen.append((args[0].dtype, args[0].shape[1],
                                                                      args[0].is_contiguous(memory_format=layout))))
    target, reference, labels = _inputs(shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.loss_terms(model.prepare_images(target), model.prepare_images(reference), labels)
    conditioned = [s for s in seen if s[1] > model.cfg.base_channels * 2]  # the target units read maps
    assert len(seen) == 4 * model.cfg.levels and conditioned
    assert all(dtype == torch.bfloat16 and channels_last for dtype, _, channels_last in seen)


def test_gate_values_and_open_probability_by_hand():
    gates = ReferenceGates(2, 3)
    with torch.no_grad():
        gates.logits.copy_(torch.tensor([[-10.0, 0.0, 10.0], [0.5, 1.0, 2.0]]))
    # deterministic: clip(sigmoid(logit) * 1.2 - 0.1, 0, 1)
    torch.testing.assert_close(gates.values()[0], torch.tensor([0.0, 0.5, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(gates.values()[1], torch.sigmoid(torch.tensor([0.5, 1.0, 2.0])) * 1.2 - 0.1)
    # P(z > 0) = sigmoid(logit - (2/3) log(0.1 / 1.1)), against the share of draws above 0
    torch.manual_seed(0)
    draws = gates.sample(torch.ones(40_000, dtype=torch.long))
    assert draws.min() >= 0 and draws.max() <= 1 and (draws == 0).any() and (draws == 1).any()
    expected = torch.sigmoid(torch.tensor([0.5, 1.0, 2.0]) - 2 / 3 * np.log(0.1 / 1.1))
    torch.testing.assert_close(gates.open_probability()[1].detach(), expected)
    torch.testing.assert_close((draws > 0).float().mean(0), expected, atol=0.01, rtol=0)
    assert gates.rows(None, 3).tolist() == [0, 0, 0]


def _gated_model(logits: list[list[float]], **config) -> StatisticalCell:
    model = _model(reference_gates=True, null_latent_share=0.25, **config)
    with torch.no_grad():
        model.gates.logits.copy_(torch.tensor(logits))
    return model


def test_a_closed_gate_makes_the_target_model_ignore_its_channel():
    # envelope: Membrane closed, DNA open; cortex: both open; golgi: both closed
    model = _gated_model([[-20.0, 20.0], [20.0, 20.0], [-20.0, -20.0]]).eval()
    target, reference, _ = _inputs(n=6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    swapped = reference.clone()
    swapped[:, 0] = reference.roll(1, 0)[:, 0]  # another cell's membrane
    true, other = (model.elbo_per_cell(target, ref, labels)["target"] for ref in (reference, swapped))
    expected, expected_other = (model.expected_target(ref, labels) for ref in (reference, swapped))
    empty = reference.clone()
    empty[[0, 1, 4, 5], 0], empty[4:, 1] = -1, -1  # a closed gate reads the channel as empty
    torch.testing.assert_close(model.gate_reference(reference, labels), empty)
    for cells in (slice(0, 2), slice(4, 6)):  # the membrane is not read
        torch.testing.assert_close(other[cells], true[cells], rtol=0, atol=0)
        torch.testing.assert_close(expected_other[cells], expected[cells], rtol=0, atol=0)
    assert (other[2:4] != true[2:4]).all() and not torch.equal(expected_other[2:4], expected[2:4])
    assert model.reference_gate_values() == {"envelope": {"Membrane": 0.0, "DNA": 1.0},
                                             "cortex": {"Membrane": 1.0, "DNA": 1.0},
                                             "golgi": {"Membrane": 0.0, "DNA": 0.0}}


def test_the_gate_cost_enters_the_target_objective_with_the_kl_weight():
    logits = [[0.0, 1.0], [-1.0, 2.0], [0.5, 0.5]]
    target, reference, labels = _inputs(n=6)
    terms = {}
    for cost in (0.0, 3.0):
        model = _gated_model(logits, reference_gate_cost=cost, target_beta=0.4)
        torch.manual_seed(1)  # the same gate and latent draws
        terms[cost] = model.loss_terms(target, reference, labels)
    open_probability = torch.sigmoid(torch.tensor(logits) - 2 / 3 * np.log(0.1 / 1.1))[labels]
    by_hand = 3.0 * -torch.log1p(-open_probability).sum(1).mean()  # nats per cell
    torch.testing.assert_close(terms[3.0]["target_gate_cost"], by_hand)
    torch.testing.assert_close(terms[3.0]["target_loss"] - terms[0.0]["target_loss"], 0.4 * by_hand)
    torch.testing.assert_close(terms[3.0]["target_elbo"], terms[0.0]["target_elbo"])  # the ELBO leaves it out
    assert "target_gate_cost" not in _model().loss_terms(target, reference, labels)


def test_one_draw_of_the_gates_serves_the_target_encoder_and_decoder(monkeypatch):
    model = _gated_model([[0.0, 0.0]] * 3).train()
    draws, encoder_inputs, decoder_inputs = [], [], []
    sample = model.gates.sample
    monkeypatch.setattr(model.gates, "sample", lambda rows: draws.append(sample(rows)) or draws[-1])
    encoder, decoder = model.target_encoder.forward, model.target_decoder.forward
    monkeypatch.setattr(model.target_encoder, "forward",
                        lambda images, ref, labels: encoder_inputs.append(ref) or encoder(images, ref, labels))
    monkeypatch.setattr(model.target_decoder, "forward",
                        lambda z, ref, labels, summary: decoder_inputs.append(ref) or decoder(z, ref, labels, summary))
    target, reference, labels = _inputs()
    model.loss_terms(target, reference, labels)
    assert len(draws) == 1 and encoder_inputs[0] is decoder_inputs[0]
    torch.testing.assert_close(encoder_inputs[0], (reference + 1) * draws[0][:, :, None, None] - 1)


def test_the_gates_stay_open_and_free_during_the_warmup():
    from types import SimpleNamespace

    model = _gated_model([[-1.0, 0.5]] * 3, reference_gate_warmup=0.5).train()
    target, reference, labels = _inputs()
    assert not model.gates_held_open()  # outside a Trainer
    for step, held in ((4, True), (5, False)):  # the first half of 10 steps
        model._trainer = SimpleNamespace(estimated_stepping_batches=10, global_step=step)
        assert model.gates_held_open() is held
        model.zero_grad()
        terms = model.loss_terms(target, reference, labels)
        terms["loss"].backward()
        assert torch.equal(model.gate_reference(reference, labels), reference) is held
        assert (terms["target_gate_cost"].item() == 0) is held and (model.gates.logits.grad is None) is held
    model._trainer = SimpleNamespace(estimated_stepping_batches=float("inf"), global_step=0)
    with pytest.raises(InputError, match="reference_gate_warmup needs a budget in epochs or steps"):
        model.gates_held_open()
    model._trainer = None


def test_the_gates_train_at_their_own_rate():
    model = _gated_model([[0.0, 0.0]] * 3, lr=1e-3, reference_gate_lr=0.2)
    groups = model.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-3, 0.2] and groups[1]["params"] == [model.gates.logits]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(_model().configure_optimizers().param_groups) == 1


def test_a_model_without_labels_has_one_structure():
    model = _model(structures=[])
    target, reference, _ = _inputs()
    assert model.integrated_cells(2, reference=reference[:2])[1].shape == (2, 1, 1, 16, 16)
    assert model.elbo_per_cell(target, reference)["target"].shape == (4,)


def test_config_rules():
    with pytest.raises(pydantic.ValidationError, match="target_beta must lie in \\[0, 1\\]"):
        StatisticalCellConfig(target_beta=2.0)
    assert StatisticalCellConfig(objective="weighted", beta=4.0).beta_of("target") == 4.0
    with pytest.raises(ValueError, match="spatial_dims 3 but crops of shape"):
        _model((1, 16, 16), spatial_dims=3)
    with pytest.raises(ValueError, match="reference_gates and reference_summary exclude each other"):
        _model(reference_gates=True, reference_summary=True)


def _toy_store(path: Path, n: int = 48, depth: int | None = None) -> Path:
    """Crops with Membrane (a disc), DNA (a smaller disc inside it) and Structure: per label, the
    DNA shifted 2 px right (envelope), the membrane's rim (cortex) or a spot at a random place (golgi)."""
    rng = np.random.default_rng(0)
    size = 16
    spatial = (size, size) if depth is None else (depth, size, size)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in spatial], indexing="ij"))
    images, rows = [], []
    for i in range(n):
        centre = np.array([*([depth / 2] if depth else []), *rng.uniform(6, 10, 2)]).reshape(-1, *[1] * len(spatial))
        r2 = ((grid - centre) ** 2).sum(0)
        membrane, dna = (r2 < 36).astype(np.float32), (r2 < 9).astype(np.float32)
        label = STRUCTURES[i % 3]
        if label == "envelope":
            structure = np.roll(dna, 2, axis=-1)
        elif label == "cortex":
            structure = ((r2 < 36) & (r2 >= 20)).astype(np.float32)
        else:
            structure = np.zeros_like(dna)
            structure[..., rng.integers(2, 14), rng.integers(2, 14)] = 1
        images.append(np.stack([membrane, dna, structure]))
        rows.append({"Metadata_Plate": "P0", "Metadata_Structure": label})
    with CropStoreWriter(path, ["Membrane", "DNA", "Structure"], spatial, "float32", chunk_cells=16) as writer:
        writer.append(np.stack(images) + rng.normal(0, 0.02, (n, 3, *spatial)).astype(np.float32), pd.DataFrame(rows))
    return path


def _config(store: Path, runs: Path, **model) -> dict:
    return {
        "name": "sc", "runs_dir": str(runs), "seed": 0,
        "data": {"store": str(store), "channels": ["Structure"], "batch_size": 16,
                 "conditions": {"reference": {"kind": "channels", "channels": ["Membrane", "DNA"]},
                                "structure": {"kind": "categorical", "column": "Metadata_Structure"}},
                 "normalization": {"method": "fixed", "fixed_ranges": [[0, 1]] * 3, "out_range": [-1, 1]},
                 "split": {"by": None, "train": 0.75, "val": 0.25, "test": 0.0}},
        "model": {"family": "statistical_cell", "reference_channels": ["Membrane", "DNA"], "label": "structure",
                  "levels": 2, "base_channels": 4, "reference_latent_dim": 4, "target_latent_dim": 4, "beta": 0.2,
                  **model},
        "trainer": {"max_epochs": 2, "precision": "32-true", "channels_last": False, "log_every_n_steps": 1,
                    "sample_images": 4, "sample_every_n_epochs": 1},
    }


@pytest.mark.parametrize(("change", "key"), [
    ({"reference": "structure"}, "key 'model.reference': data.conditions.structure is of kind 'categorical'"),
    ({"reference_channels": ["DNA", "Membrane"]}, "key 'model.reference_channels'"),
    ({"label": "reference"}, "key 'model.label'"),
    ({"spatial_dims": 3}, "key 'model.spatial_dims'"),
    ({"levels": 5}, "key 'data.crop_size'"),
    ({"structure_balance": True, "label": None}, "key 'model.structure_balance'"),
    ({"expected_target": "unet", "expected_target_balance": True, "label": None},
     "key 'model.expected_target_balance': balances the structures named by model.label"),
    ({"reference_swap_channels": ["Actin"]}, "key 'model.reference_swap_channels': ['Actin'] are not among"),
    ({"reference_gates": True, "reference_summary": True}, "key 'model.reference_gates': excludes"),
    ({"expected_target_steered_maps": 2}, "key 'model': Value error, expected_target_steered_maps needs"),
    ({"expected_target": "unet", "expected_target_steered_maps": -1}, "key 'model.expected_target_steered_maps'"),
    ({"expected_target_axis_map": ["Membrane", "DNA"]}, "key 'model': Value error, expected_target_axis_map needs"),
    ({"expected_target": "unet", "expected_target_axis_map": ["DNA", "DNA"]}, "names one channel twice"),
    ({"expected_target": "unet", "expected_target_axis_map": ["DNA"]}, "key 'model.expected_target_axis_map'"),
    ({"expected_target": "unet", "expected_target_axis_map": ["Actin", "DNA"]},
     "key 'model.expected_target_axis_map': ['Actin'] are not among"),
])
def test_config_errors_name_the_key(tmp_path: Path, change: dict, key: str):
    from morphospace.workflows.train import plan_run

    store = _toy_store(tmp_path / "store", n=12)
    with pytest.raises(ConfigError, match=key.replace("[", "\\[").replace("(", "\\(")):
        plan_run(resolve_run_config(_config(store, tmp_path / "runs", **change)))
    assert not (tmp_path / "runs").exists()


def _random_discs(generator: torch.Generator, n: int = 96) -> torch.Tensor:
    """(n, 16, 16) discs of radius 3 at random centres, 0 or 1."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    centres = torch.rand(n, 2, generator=generator) * 8 + 4
    return ((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2 < 9).float()


def _fit(model: StatisticalCell, target: torch.Tensor, reference: torch.Tensor, steps: int,
         generator: torch.Generator, labels: torch.Tensor | None = None,
         optimiser: torch.optim.Optimizer | None = None) -> list[dict[str, float]]:
    """``steps`` steps of ``optimiser`` (default Adam at 3e-3) on batches of 16 random cells; the
    loss terms of every step."""
    optimiser = optimiser or torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(steps):
        picks = torch.randint(0, len(target), (16,), generator=generator)
        terms = model.loss_terms(target[picks], reference[picks], None if labels is None else labels[picks],
                                 null=model.null_cells(16))
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
        history.append({k: v.item() for k, v in terms.items() if v.ndim == 0})
    return history


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_true_reference_has_the_higher_elbo():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    discs = _random_discs(generator)
    reference = torch.stack([discs, discs.roll(1, -2)], dim=1) * 2 - 1
    target = reference[:, :1].roll(3, -1)  # the target is a shifted copy of a reference channel
    model = _model(structures=[], beta=0.05)
    losses = [step["loss"] for step in _fit(model, target, reference, 60, generator)]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    true = model.elbo_per_cell(target, reference)["target"]
    swapped = model.elbo_per_cell(target, reference.roll(1, 0))["target"]
    assert true.isfinite().all() and true.mean() > swapped.mean()
    assert (true > swapped).float().mean() > 0.8


@pytest.mark.slow
@pytest.mark.parametrize(("learner", "steps"), [({"null_latent_share": 0.5}, 80),
                                                ({"expected_target": "unet", "expected_target_channels": [8, 16, 32]},
                                                 160)], ids=["null_latent", "unet"])
def test_the_expected_structure_is_learnt_from_the_reference(learner, steps):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    reference = torch.stack([_random_discs(generator), torch.rand(96, 16, 16, generator=generator)], dim=1) * 2 - 1
    target = reference[:, :1].roll(3, -1)  # a shifted copy of the first reference channel, none of the second
    model = _model(structures=[], beta=0.05, **learner)
    null_errors = [step["target_null_recon"] for step in _fit(model, target, reference, steps, generator)]
    assert np.mean(null_errors[-10:]) < 0.5 * np.mean(null_errors[:10])

    def error(ref):
        return ((model.expected_target(ref) - target) ** 2).sum((1, 2, 3)).mean()

    first_swapped, second_swapped = reference.clone(), reference.clone()
    first_swapped[:, 0], second_swapped[:, 1] = reference.roll(1, 0)[:, 0], reference.roll(1, 0)[:, 1]
    assert error(reference) < 0.5 * error(first_swapped)  # coupled to the channel it copies
    assert error(second_swapped) < 1.2 * error(reference)  # not to the noise channel


@pytest.mark.slow
def test_the_gates_close_the_channel_each_structure_does_not_need():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    reference = torch.stack([_random_discs(generator), _random_discs(generator)], dim=1) * 2 - 1
    labels = torch.arange(96) % 2
    # each structure a shifted copy of one reference channel: "first" of the membrane, "second" of the DNA
    target = torch.where(labels[:, None, None, None] == 0, reference[:, :1], reference[:, 1:]).roll(3, -1)
    model = _model(structures=["first", "second"], beta=0.5, null_latent_share=0.5, reference_gates=True)
    _fit(model, target, reference, 300, generator, labels, model.configure_optimizers())
    assert model.reference_gate_values() == {"first": {"Membrane": 1.0, "DNA": 0.0},
                                             "second": {"Membrane": 0.0, "DNA": 1.0}}
    swapped = reference.clone()
    swapped[:, 0] = reference.roll(1, 0)[:, 0]
    second = labels == 1
    torch.testing.assert_close(model.expected_target(swapped[second], labels[second]),
                               model.expected_target(reference[second], labels[second]), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [None, 8], ids=["2d", "3d"])
def test_a_trained_run_round_trips_and_embeds(tmp_path: Path, depth):
    from morphospace.models.run import load_run, read_checkpoint
    from morphospace.workflows.latent import embed_store, generate
    from morphospace.workflows.train import train

    store = _toy_store(tmp_path / "store", depth=depth)
    schedule = "cosine" if depth else "constant"
    settings = _config(store, tmp_path / "runs", spatial_dims=3 if depth else 2, lr_schedule=schedule, lr=1e-3,
                       reference_gates=not depth)
    settings["trainer"]["channels_last"] = bool(depth)
    config = resolve_run_config(settings)
    summary = train(config, progress=False)
    run_dir = tmp_path / "runs" / "sc"
    last_lr = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["lr_schedulers"]
    assert last_lr == [] if schedule == "constant" else last_lr[0]["_last_lr"] == [pytest.approx(0.0, abs=1e-12)]
    assert {"reference_active_dims", "target_active_dims"} <= set(summary.notes)
    assert ("reference_gates" in summary.notes) == (not depth)
    logged = {"target_recon_epoch", "reference_kl_epoch", "reference_active_dims", "val_target_elbo"}
    assert logged <= set(summary.metrics)
    header = (run_dir / "kl_per_dimension.csv").read_text().splitlines()[0]
    assert header == "epoch," + ",".join([f"reference_z{i}" for i in range(4)] + [f"target_z{i}" for i in range(4)])
    assert (run_dir / "figures" / "final_samples.png").is_file()

    run = load_run(run_dir, "embed")
    assert run.module.structures == sorted(STRUCTURES) and run.module.reference_channels == ["Membrane", "DNA"]
    assert run.module.channels_last == bool(depth)  # the trainer's setting, kept by the checkpoint
    batch = run.data.dataset("val").batch(np.arange(4))
    elbo = run.module.elbo_per_cell(batch["image"], batch["reference"], batch["structure"])
    again = load_run(run_dir, "embed").module.elbo_per_cell(batch["image"], batch["reference"], batch["structure"])
    torch.testing.assert_close(elbo["target"], again["target"])
    if not depth:  # the learnt gates come back with the checkpoint
        assert run.module.reference_gate_values() == load_run(run_dir, "embed").module.reference_gate_values()
        assert run.module.reference_gate_values() != StatisticalCell(
            run.module.cfg.to_dict(), run.module.image_shape, ["Membrane", "DNA"], STRUCTURES).reference_gate_values()
    assert batch["image"].shape == (4, 1, *([depth] if depth else []), 16, 16)

    table = pd.read_parquet(embed_store(run_dir, progress=False).out)
    assert len(table) == 48 and sum(c.startswith("Embedding_") for c in table.columns) == 8
    images, _ = generate(run_dir, n=6)
    assert images.shape == (6, 1, *([depth] if depth else []), 16, 16)
