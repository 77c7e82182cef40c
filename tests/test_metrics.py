import math

import numpy as np
import pytest

from medveil import metrics
from medveil.errors import InputError
from medveil.io import MedicalImage


def test_identical_images(rng):
    a = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    assert metrics.ssim(a, a, 255) == pytest.approx(1.0)
    assert metrics.psnr(a, a, 255) == math.inf


def test_psnr_matches_its_definition(rng):
    a = rng.integers(0, 200, (32, 32)).astype(np.uint8)
    b = a + 10
    assert metrics.psnr(a, b, 255) == pytest.approx(10 * np.log10(255**2 / 100))


def test_eight_bit_uses_255_and_wide_data_its_joint_range(rng):
    a = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    assert metrics.pair_data_range(a, a // 2, 8) == 255
    ct = rng.integers(100, 2000, (32, 32)).astype(np.uint16)
    assert metrics.pair_data_range(ct, ct // 2, 16) == ct.max() - ct.min() // 2


def test_twelve_bit_noise_is_not_flattered_by_the_nominal_range(rng):
    ct = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    noise = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    score = metrics.compare_images(MedicalImage(ct, "npy", 16), MedicalImage(noise, "npy", 16))
    assert score["ssim"] < 0.1


def test_volumes_are_scored_plane_by_plane(rng):
    vol = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    other = vol.copy()
    other[1] = 255 - other[1]
    got = metrics.compare_images(MedicalImage(vol, "npy", 8), MedicalImage(other, "npy", 8))["ssim"]
    expected = np.mean([metrics.ssim(a, b, 255) for a, b in zip(vol, other)])
    assert got == pytest.approx(expected)


def test_mismatched_or_tiny_images_are_errors():
    with pytest.raises(InputError, match="differ in shape"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((9, 9)), 255)
    with pytest.raises(InputError, match="at least 7x7"):
        metrics.ssim(np.zeros((5, 5)), np.zeros((5, 5)), 255)
