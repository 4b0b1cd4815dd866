import numpy as np
import pytest
import torch

from morphospace.config import ConfigError, resolve_config
from morphospace.data.normalize import ChannelNormalizer, NormalizationConfig


def _crops():
    rng = np.random.default_rng(0)
    return np.stack([rng.uniform(0, 100, (20, 8, 8)), rng.uniform(1000, 5000, (20, 8, 8))], axis=1).astype(np.float32)


def test_percentile_to_unit_and_symmetric_range():
    x = _crops()
    unit = ChannelNormalizer(NormalizationConfig(low=0, high=100)).fit(x).transform(x)
    assert unit.min() == 0 and unit.max() == 1
    sym = ChannelNormalizer(NormalizationConfig(low=0, high=100, out_range=(-1, 1))).fit(x).transform(x)
    np.testing.assert_allclose(sym, unit * 2 - 1, atol=1e-6)


def test_percentile_clips_hand_computed():
    x = np.arange(101, dtype=np.float32).reshape(1, 1, 1, 101)
    norm = ChannelNormalizer(NormalizationConfig(low=10, high=90)).fit(x)
    assert norm.stats == [[10.0, 90.0]]
    y = norm.transform(x)[0, 0, 0]
    assert y[0] == 0 and y[50] == pytest.approx(0.5) and y[100] == 1


def test_zscore_and_torch_input():
    x = _crops()
    norm = ChannelNormalizer(NormalizationConfig(method="zscore")).fit(x)
    y = norm.transform(torch.from_numpy(x))
    assert isinstance(y, torch.Tensor)
    np.testing.assert_allclose(y.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(dim=(0, 2, 3), unbiased=False).numpy(), 1, atol=1e-4)


def test_fixed_ranges_and_per_crop_scope():
    x = _crops()
    fixed = ChannelNormalizer(NormalizationConfig(method="fixed", fixed_ranges=[(0, 200), (0, 10000)]))
    assert not fixed.needs_fit
    np.testing.assert_allclose(fixed.transform(x)[:, 0], x[:, 0] / 200, atol=1e-6)
    per_crop = ChannelNormalizer(NormalizationConfig(scope="crop", low=0, high=100))
    y = per_crop.transform(x)
    np.testing.assert_allclose(y.reshape(20, 2, -1).min(-1), 0, atol=1e-6)
    np.testing.assert_allclose(y.reshape(20, 2, -1).max(-1), 1, atol=1e-6)


def test_state_round_trip_and_errors():
    x = _crops()
    norm = ChannelNormalizer(NormalizationConfig()).fit(x)
    again = ChannelNormalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.transform(x), norm.transform(x))
    with pytest.raises(ValueError, match="fitted on 2 channels"):
        norm.transform(x[:, :1])
    with pytest.raises(RuntimeError, match="call fit"):
        ChannelNormalizer(NormalizationConfig()).transform(x)
    with pytest.raises(ConfigError, match="low percentile"):
        resolve_config(NormalizationConfig, {"low": 90, "high": 10})
    with pytest.raises(ConfigError, match="fixed_ranges"):
        resolve_config(NormalizationConfig, {"method": "fixed"})
