import pytest
import torch

from morphospace.config import ConfigError, resolve_config
from morphospace.data.transforms import (
    AugmentConfig, apply_view, augment_batch, center_crop_or_pad, flip_rotate_views, undo_view, view_average,
)


def test_center_crop_and_pad():
    x = torch.ones(2, 3, 68, 68)
    assert center_crop_or_pad(x, 64).shape == (2, 3, 64, 64)
    padded = center_crop_or_pad(torch.ones(1, 1, 3, 3), 5)
    assert padded.shape == (1, 1, 5, 5) and padded.sum() == 9 and padded[0, 0, 0, 0] == 0


def test_flips_and_rotations_keep_pixels_and_vary():
    x = torch.arange(25.0).reshape(1, 1, 5, 5).repeat(64, 1, 1, 1)
    y = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert len({tuple(t.flatten().tolist()) for t in y}) == 8  # the 8 symmetries of a square


def test_views_are_the_augmentations_symmetries_and_undo_inverts_them():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    views = flip_rotate_views(True, True)
    assert len(views) == 8 and views[0] == (False, 0)
    assert len({tuple(apply_view(x, v).flatten().tolist()) for v in views}) == 8
    assert torch.equal(apply_view(x, (True, 1)), torch.rot90(x.flip(-1), 1, (-2, -1)))
    assert all(torch.equal(undo_view(apply_view(x, v), v), x) for v in views)
    assert flip_rotate_views(False, True, square=False) == [(False, 0), (False, 2)]
    assert flip_rotate_views(False, False) == [(False, 0)]


def test_view_average_makes_a_prediction_equivariant():
    x = torch.rand(2, 1, 4, 6, 6)  # z-stacks: every slice viewed alike
    shifted = lambda t: torch.roll(t, 1, dims=-1)  # noqa: E731  (not equivariant to flips or turns)
    views = flip_rotate_views(True, True)
    average = view_average(shifted, x, views)
    assert average.shape == x.shape and not torch.allclose(average, shifted(x))
    for v in views:
        torch.testing.assert_close(view_average(shifted, apply_view(x, v), views), apply_view(average, v))
    assert torch.equal(view_average(shifted, x, [(False, 0)]), shifted(x))


def test_same_generator_seed_same_augmentation():
    x = torch.rand(16, 2, 12, 12)
    config = AugmentConfig(resized_crop_scale=(0.5, 1.0))
    a = augment_batch(x, config, torch.Generator().manual_seed(5))
    b = augment_batch(x, config, torch.Generator().manual_seed(5))
    c = augment_batch(x, config, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape


def test_full_scale_crop_is_identity():
    x = torch.rand(4, 1, 10, 10)
    config = AugmentConfig(flips=False, rot90=False, resized_crop_scale=(1.0, 1.0), resized_crop_ratio=(1.0, 1.0))
    torch.testing.assert_close(augment_batch(x, config, torch.Generator().manual_seed(0)), x)


def test_config_validation():
    with pytest.raises(ConfigError, match="resized_crop_scale"):
        resolve_config(AugmentConfig, {"resized_crop_scale": [0.0, 1.5]})


def test_z_stacks_flip_and_rotate_every_slice_alike_and_keep_depth():
    stack = torch.arange(3 * 25.0).reshape(1, 1, 3, 5, 5).repeat(64, 2, 1, 1, 1)
    stack[:, 1] += 100
    y = augment_batch(stack, AugmentConfig(resized_crop_scale=(1.0, 1.0), resized_crop_ratio=(1.0, 1.0)),
                      torch.Generator().manual_seed(0))
    assert y.shape == stack.shape
    first = y[:, 0, 0]
    symmetries = [lambda t, k=k, f=f: torch.rot90(t.flip(-1) if f else t, k, dims=(-2, -1))
                  for k in range(4) for f in (False, True)]
    for sample, plane in zip(y, first):  # one transform per sample: every slice and channel the same one
        undo = next(s for s in symmetries if torch.equal(s(plane), stack[0, 0, 0]))
        torch.testing.assert_close(undo(sample), stack[0])
    assert len({tuple(t.flatten().tolist()) for t in first}) == 8
