import numpy as np
import pytest
from scipy import ndimage

from morphospace.preprocess.background import subtract_background
from morphospace.preprocess.denoise import denoise, remove_outliers
from morphospace.preprocess.illumination import correct_illumination, estimate_illumination


def _vignette(shape=(128, 160)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = ((yy - 50) / shape[0]) ** 2 + ((xx - 90) / shape[1]) ** 2
    return 1.0 - 0.6 * r2


def test_illumination_recovers_vignetting_under_cells():
    truth = _vignette()
    rng = np.random.default_rng(0)
    fields = []
    for _ in range(15):
        cells = np.zeros(truth.shape)
        cells[tuple(rng.integers(0, 128, 40)), tuple(rng.integers(0, 160, 40))] = 1
        cells = ndimage.gaussian_filter(cells, 4) * 3000
        fields.append((200 + cells) * truth * rng.uniform(0.9, 1.1))
    illum = estimate_illumination(fields, sigma=12, downsample=4)
    assert illum.shape == truth.shape and abs(illum.mean() - 1) < 1e-4
    np.testing.assert_allclose(illum[10:-10, 10:-10], (truth / truth.mean())[10:-10, 10:-10], rtol=0.04)
    np.testing.assert_allclose(illum, truth / truth.mean(), rtol=0.1)
    flat = correct_illumination(200 * truth, illum)
    assert flat.std() / flat.mean() < 0.02 < (200 * truth).std() / (200 * truth).mean()


def test_illumination_input_checks():
    with pytest.raises(ValueError, match="no fields"):
        estimate_illumination([])
    with pytest.raises(ValueError, match="differ in shape"):
        estimate_illumination([np.ones((8, 8)), np.ones((8, 9))])


@pytest.mark.parametrize("shrink", [1, 3])
def test_background_removes_smooth_offset_keeps_objects(shrink):
    yy, xx = np.mgrid[:96, :96]
    background = 300 + 0.5 * xx + 0.3 * yy
    objects = 500.0 * (((yy - 40) ** 2 + (xx - 50) ** 2) < 36)
    flat = subtract_background(background + objects, radius=20, shrink=shrink)
    assert np.median(flat[objects == 0]) < 10  # of a 300-400 background
    assert flat[40, 50] > 450
    assert flat.min() >= 0


def test_denoising_reduces_noise_and_outliers():
    rng = np.random.default_rng(0)
    clean = np.full((64, 64), 100.0)
    noisy = clean + rng.normal(0, 10, clean.shape)
    for method in ("median", "tv"):
        assert (denoise(noisy, method) - clean).std() < 0.7 * (noisy - clean).std()
    np.testing.assert_array_equal(denoise(noisy, "none"), noisy.astype(np.float32))
    with pytest.raises(ValueError, match="unknown denoising method"):
        denoise(noisy, "wavelet")
    spiky = clean.copy()
    spiky[10, 10] = 5000
    assert remove_outliers(spiky, radius=2, threshold=100)[10, 10] == 100
