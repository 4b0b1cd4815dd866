import pytest
import torch
from torch import nn

from morphospace.models.blocks import Discriminator, Generator, doublings, gan_losses, gradient_penalty


@pytest.mark.parametrize("size, expected", [(64, (4, 4)), (68, (17, 2)), (72, (9, 3)), (16, (4, 2)), (20, (5, 2))])
def test_doublings(size, expected):
    assert doublings(size) == expected


def test_sizes_not_multiple_of_four_are_rejected():
    with pytest.raises(ValueError, match="multiple of 4"):
        Generator(image_size=18)


@pytest.mark.parametrize("size, channels", [(16, 1), (20, 2), (68, 3)])
def test_shapes_and_ranges(size, channels):
    g = Generator(latent_dim=5, out_channels=channels, image_size=size, base_channels=4)
    images = g(torch.randn(3, 5))
    assert images.shape == (3, channels, size, size) and images.abs().max() <= 1
    d = Discriminator(channels, size, base_channels=4, feature_dim=7, input_noise=0.1)
    assert d(images).shape == (3,) and d.features(images).shape == (3, 7)
    assert len(d.intermediate(images)) == doublings(size)[1] + 1


def test_input_noise_only_in_training():
    d = Discriminator(1, 16, base_channels=4, input_noise=1.0).eval()
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(d(x), d(x))


def test_gan_losses_hand_computed():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert gan_losses("lsgan", real, fake, False) == pytest.approx(0.5 * ((1 + 1) / 2 + (1 + 1) / 2))
    assert gan_losses("lsgan", None, fake, True) == pytest.approx(0.5 * (4 + 0) / 2)
    assert gan_losses("wgan-gp", real, fake, False) == pytest.approx(0.0 - 1.0)
    assert gan_losses("wgan-gp", None, fake, True) == pytest.approx(0.0)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.full_like(real, 0.9)) + bce(fake, torch.zeros_like(fake))
    assert gan_losses("dcgan", real, fake, False, label_smoothing=0.1) == pytest.approx(float(expected))


def test_gradient_penalty_of_a_unit_slope_critic_is_zero():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[0.6, 0.8, 0.0, 0.0]]))
    penalty = gradient_penalty(critic, torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2))
    assert float(penalty.detach()) == pytest.approx(0.0, abs=1e-10)


def test_frozen_batch_norm_stats_leave_running_statistics():
    from morphospace.models.blocks import frozen_batch_norm_stats

    d = Discriminator(1, 16, base_channels=4)
    layer = next(m for m in d.modules() if isinstance(m, nn.BatchNorm2d))
    before = layer.running_mean.clone()
    with frozen_batch_norm_stats(d):
        d(torch.rand(4, 1, 16, 16) * 5)
    assert torch.equal(layer.running_mean, before) and layer.momentum == 0.1
    d(torch.rand(4, 1, 16, 16) * 5)
    assert not torch.equal(layer.running_mean, before)
