"""ISL metrics against hand-computed cases."""

import numpy as np
import pytest

from morphospace.evaluate.isl import (
    ISLEvaluation, empty_crops, is_nuclear_stain, isl_scores, mask_reference_pcc, nuclei_jaccard, nucleus_means,
    pearson_per_crop, per_nucleus_intensity, psnr_per_crop, ssim_per_crop,
)


def test_pearson_of_an_image_with_itself_is_one_and_of_its_negative_minus_one():
    crops = np.random.default_rng(0).normal(size=(4, 12, 12))
    np.testing.assert_allclose(pearson_per_crop(crops, crops), 1.0)
    np.testing.assert_allclose(pearson_per_crop(-crops, crops), -1.0)


def test_pearson_hand_computed_and_constant_crop_is_nan():
    prediction = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]])
    target = np.array([[[1.0, 3.0], [2.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]]])
    # centred: p = (-1.5, -0.5, 0.5, 1.5), t = (-1.5, 0.5, -0.5, 1.5): sum p*t = 4, |p|^2 = |t|^2 = 5
    result = pearson_per_crop(prediction, target)
    assert result[0] == pytest.approx(0.8) and np.isnan(result[1])


def test_empty_crops_by_fraction_above_threshold():
    target = np.zeros((3, 10, 10))
    target[1, 0, 0] = 5.0  # 1% of the pixels
    target[2, :5] = 5.0  # 50%
    assert empty_crops(target, threshold=1.0, min_fraction=0.02).tolist() == [True, True, False]
    assert empty_crops(target, threshold=1.0, min_fraction=0.005).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="min_fraction"):
        empty_crops(target, threshold=1.0, min_fraction=1.0)


def test_ssim_and_psnr_of_identical_crops():
    crops = np.random.default_rng(1).uniform(size=(2, 32, 32))
    np.testing.assert_allclose(ssim_per_crop(crops, crops), 1.0, atol=1e-5)
    noisy = crops + 0.1
    # MSE 0.01, data range of each target crop ~1 -> PSNR = 10 log10(range^2 / 0.01)
    expected = [10 * np.log10((c.max() - c.min()) ** 2 / 0.01) for c in crops]
    np.testing.assert_allclose(psnr_per_crop(noisy, crops), expected, rtol=1e-4)
    assert np.all(ssim_per_crop(crops + np.random.default_rng(2).normal(0, 0.5, crops.shape), crops) < 0.5)


def test_nuclei_jaccard_uses_the_empty_convention():
    def segment(image):
        return (image > 0.5).astype(int)

    empty = np.zeros((1, 6, 6))
    assert nuclei_jaccard(empty, empty, segment).tolist() == [1.0]
    truth = np.zeros((1, 6, 6))
    truth[0, :2, :2] = 1.0
    prediction = np.zeros((1, 6, 6))
    prediction[0, :2, :1] = 1.0
    assert nuclei_jaccard(prediction, truth, segment).tolist() == [0.5]


def test_scores_split_empty_and_non_empty_crops():
    rng = np.random.default_rng(3)
    target = rng.normal(0, 0.05, (6, 16, 16))
    target[:4, 4:10, 4:10] += 3.0  # four crops hold a bright object
    prediction = target + rng.normal(0, 0.05, target.shape)
    scores = isl_scores(prediction, target, threshold=1.0, segment=lambda x: (x > 1.0).astype(int))
    assert scores["crops"] == 6 and scores["empty_crops"] == 2
    assert scores["pcc"]["non_empty"]["n"] == 4 and scores["pcc"]["non_empty"]["mean"] > 0.99
    assert scores["pcc"]["empty"]["mean"] < 0.9  # noise against noise
    assert scores["nuclei_jaccard"]["mean"] > 0.9
    assert scores["ssim"]["n"] == 4


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        pearson_per_crop(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        pearson_per_crop(np.zeros((4, 4)), np.zeros((4, 4)))


def _nuclei(brightness: list[float], radius: int = 5, spacing: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """One crop (1, H, W) with a 4-column grid of discs of the given brightness on 0, and their labels."""
    rows = -(-len(brightness) // 4)
    yy, xx = np.mgrid[:rows * spacing, :4 * spacing]
    image, labels = np.zeros((1, *yy.shape)), np.zeros((1, *yy.shape), int)
    for k, value in enumerate(brightness):
        cy, cx = spacing * (k // 4) + spacing // 2, spacing * (k % 4) + spacing // 2
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image[0, disc], labels[0, disc] = value, k + 1
    return image, labels


def test_nucleus_means_hand_computed_per_crop():
    image = np.array([[[1.0, 3.0, 0.0], [0.0, 5.0, 7.0]], [[2.0, 2.0, 9.0], [4.0, 0.0, 0.0]]])
    labels = np.array([[[1, 1, 0], [0, 2, 2]], [[1, 0, 0], [1, 0, 0]]])  # label 1 of crop 2 is another nucleus
    assert nucleus_means(image, labels).tolist() == [2.0, 6.0, 3.0]


def test_per_nucleus_intensity_separates_brightness_from_position():
    truth, labels = _nuclei([1, 2, 1, 2] * 4)
    same = per_nucleus_intensity(truth, truth, labels)
    assert same["r"] == pytest.approx(1.0) and same["n_nuclei"] == 16
    # the same nuclei with brightness uncorrelated to the truth: centred products cancel in every row of four
    shuffled, _ = _nuclei([1, 1, 2, 2] * 4)
    assert per_nucleus_intensity(shuffled, truth, labels)["r"] == pytest.approx(0.0, abs=1e-12)
    assert pearson_per_crop(shuffled, truth)[0] > 0.8  # the pixels still correlate: nuclei are in place
    assert per_nucleus_intensity(truth[:, :16, :32], truth[:, :16, :32], labels[:, :16, :32])["r"] is None  # 2 nuclei


def test_mask_reference_pcc_is_one_for_a_truth_that_is_the_blurred_mask():
    from scipy import ndimage

    _, labels = _nuclei([1.0] * 8)
    truth = ndimage.gaussian_filter((labels > 0).astype(float)[0], 1.5)[None]
    assert mask_reference_pcc(truth, labels, sigma=1.5)[0] == pytest.approx(1.0)
    uneven, _ = _nuclei([1, 5, 1, 5, 1, 5, 1, 5])
    assert mask_reference_pcc(uneven, labels, sigma=0)[0] < 0.9  # brightness the mask cannot know


def test_scores_with_nuclei_labels_and_the_summary_line():
    truth, labels = _nuclei([1, 2, 1, 2] * 4)
    shuffled, _ = _nuclei([1, 1, 2, 2] * 4)
    scores = isl_scores(shuffled, truth, threshold=0.5, labels=labels)
    assert scores["per_nucleus_intensity"] == {"r": pytest.approx(0.0, abs=1e-12), "n_nuclei": 16}
    assert scores["mask_reference_pcc"]["n"] == 1 and scores["mask_reference_pcc"]["mean"] > 0.8
    line = ISLEvaluation({"targets": {"DNA": scores}}, None).line()
    for part in ("DNA: PCC non-empty", "SSIM", "PSNR", "per-nucleus intensity r 0.000 (n=16)", "mask reference PCC"):
        assert part in line
    assert is_nuclear_stain("Hoechst33342") and is_nuclear_stain("dapi") and not is_nuclear_stain("MAP2")
