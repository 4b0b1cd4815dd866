from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from morphospace.errors import InputError
from morphospace.io.images import read_image, write_tiff


def test_round_trips(tmp_path: Path):
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    np.testing.assert_array_equal(read_image(write_tiff(tmp_path / "a.tiff", image)), image)
    iio.imwrite(tmp_path / "a.png", image.astype(np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image.astype(np.uint8))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b"II*\x00garbage"), "unreadable or truncated"),
        (lambda p: tifffile.imwrite(p, np.full((4, 4), np.nan, np.float32)), "NaN or infinite"),
        (lambda p: tifffile.imwrite(p, np.zeros((4, 4), np.uint16)), "image is empty"),
        (lambda p: tifffile.imwrite(p, np.ones((2, 2, 2, 2), np.uint16)), "dimensions"),
    ],
)
def test_bad_images_name_file_and_problem(tmp_path: Path, make, message):
    path = tmp_path / "bad.tiff"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        read_image(path)
    assert "bad.tiff" in str(info.value)


def test_truncated_tiff(tmp_path: Path):
    path = tmp_path / "cut.tiff"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 4000, (256, 256), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InputError, match="cut.tiff: unreadable or truncated"):
        read_image(path)
