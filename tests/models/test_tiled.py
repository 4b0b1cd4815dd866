"""Whole-field tiled inference."""

import pytest
import torch

from morphospace.models.tiled import pad_to_multiple, predict_field, reflect_pad


def _local_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 1, 3, padding=1)).eval()


def test_tiled_equals_untiled_on_the_interior_of_an_odd_field():
    net = _local_net()
    field = torch.rand(2, 93, 71)
    tiled = predict_field(net, field, tile=32, overlap=0.5, multiple=16)
    with torch.no_grad():
        whole = net(field[None])[0]
    assert tiled.shape == (1, 93, 71)
    interior = (slice(None), slice(6, -6), slice(6, -6))  # the net sees 3 px; tiles blend over 16 px
    scale = whole.abs().max()
    assert torch.allclose(tiled[interior], whole[interior], atol=0.02 * scale)
    assert (tiled - whole)[interior].pow(2).mean().sqrt() < 0.002 * scale


def test_small_field_is_padded_to_a_tile():
    out = predict_field(torch.nn.Identity(), torch.rand(1, 9, 20), tile=32)
    assert out.shape == (1, 9, 20)


def test_a_constant_field_stays_constant_up_to_its_border():
    blur = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)  # zero padding: dimmer at every tile edge
    torch.nn.init.constant_(blur.weight, 1 / 9)
    field = torch.full((1, 70, 90), 5.0)
    predicted = predict_field(blur.eval(), field, tile=32, overlap=0.5)
    # without padding the field, its edge pixels would come from tile edges only: 5 * 6/9 = 3.3, corners 2.2;
    # what is left is the same everywhere: tile edges inside the field weigh 1e-3 in the Gaussian blend
    deviation = (predicted - field).abs()[0]
    assert deviation.max() < 0.02
    border = torch.cat([deviation[0], deviation[-1], deviation[:, 0], deviation[:, -1]])
    assert border.max() <= deviation[1:-1, 1:-1].max() + 1e-4


def test_reflect_pad_mirrors_beyond_the_image_size():
    image = torch.tensor([[[1.0, 2.0, 3.0]]])
    assert reflect_pad(image, 2, 3, 0, 0)[0, 0].tolist() == [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0, 2.0]
    assert reflect_pad(image, 0, 0, 2, 1).shape == (1, 4, 3)  # a 1 px side is repeated


def test_pad_to_multiple():
    padded, original = pad_to_multiple(torch.rand(3, 17, 32), 16)
    assert padded.shape == (3, 32, 32) and original == (17, 32)
    padded, _ = pad_to_multiple(torch.rand(3, 8, 8), 16, minimum=64)
    assert padded.shape == (3, 64, 64)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="multiple"):
        predict_field(torch.nn.Identity(), torch.rand(1, 40, 40), tile=30, multiple=16)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        predict_field(torch.nn.Identity(), torch.rand(40, 40), tile=32)
    with pytest.raises(ValueError, match="overlap"):
        predict_field(torch.nn.Identity(), torch.rand(1, 40, 40), tile=32, overlap=1.0)


def test_bf16_autocast_stays_close_to_float32_and_returns_float32():
    net = _local_net()
    field = torch.rand(2, 64, 48)
    full = predict_field(net, field, tile=32)
    half = predict_field(net, field, tile=32, autocast_dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert not torch.equal(half, full)  # autocast did change the arithmetic
    assert torch.allclose(half, full, atol=0.05 * full.abs().max())
