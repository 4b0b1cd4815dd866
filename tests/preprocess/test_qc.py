import numpy as np
import pandas as pd
from scipy import ndimage

from morphospace.preprocess.qc import field_qc_metrics, power_log_log_slope, qc_failures, saturation_fraction


def _field(seed: int, blur: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spots = np.zeros((128, 128))
    spots[tuple(rng.integers(0, 128, (2, 60)))] = 1000
    image = ndimage.gaussian_filter(spots, 2)
    image = ndimage.gaussian_filter(image, blur) if blur else image
    return image + rng.normal(100, 1, (128, 128))  # camera noise comes after the optics


def test_focus_slope_falls_with_blur():
    slopes = [power_log_log_slope(_field(0, blur)) for blur in (0, 1.5, 3, 6)]
    assert all(a > b for a, b in zip(slopes, slopes[1:]))


def test_white_noise_has_flat_spectrum():
    noise = np.random.default_rng(1).normal(size=(256, 256))
    assert abs(power_log_log_slope(noise)) < 0.15


def test_saturation_fraction_hand_computed():
    image = np.zeros((10, 10), np.uint16)
    image[:2, :3] = 4095
    assert saturation_fraction(image) == 0.06


def test_qc_failures_flag_blur_and_saturation():
    fields = [_field(i) for i in range(10)]
    fields[3] = _field(3, blur=5)
    fields[7] = fields[7].copy()
    fields[7][:40, :40] = fields[7].max()
    metrics = pd.DataFrame([field_qc_metrics({"DNA": f}) for f in fields])
    metrics["Metadata_Plate"] = "P1"
    reasons = qc_failures(metrics, "DNA")
    assert reasons[3].startswith("out of focus")
    assert "saturated DNA" in reasons[7]
    assert (reasons.drop([3, 7]) == "").all()


def test_relative_focus_test_needs_enough_fields():
    fields = [_field(0), _field(1), _field(2, blur=5)]
    metrics = pd.DataFrame([field_qc_metrics({"DNA": f}) for f in fields])
    assert (qc_failures(metrics, "DNA", group_column=None) == "").all()
    floor = float(np.sort(metrics["focus_DNA"])[1])
    reasons = qc_failures(metrics, "DNA", group_column=None, focus_min_slope=floor)
    assert reasons[2].startswith("out of focus") and (reasons != "").sum() == 1
