import math

import numpy as np
import pytest

import medveil
from medveil.attacks import BlackBox, LeadingBit, MinimumDifference, TanakaChosenPlaintext, oracle_view
from medveil.errors import InputError
from medveil.schemes import SKK


def scheme(name, **params):
    return medveil.from_key(medveil.generate_key(name, **params))


def ramp(size=32, top=120):
    yy, xx = np.mgrid[:size, :size]
    return ((xx + yy) * top // (2 * size - 2)).astype(np.uint8)


@pytest.mark.parametrize("name, params, shape", [
    ("tanaka", {"block": 4}, (3, 16, 16)),
    ("tanaka", {"block": 2, "channels": 3}, (3, 16, 16, 3)),
    ("skk", {}, (3, 16, 16)),
    ("skk", {"channels": 3}, (3, 16, 16, 3)),
    ("skk-smooth", {"block": 3}, (3, 16, 16)),
    ("skk-smooth", {"block": 4, "channels": 3}, (3, 16, 16, 3)),
])
def test_deterministic_per_key_different_between_keys_batch_consistent(rng, name, params, shape):
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    s1, s2 = scheme(name, **params), scheme(name, **params)
    y = s1(x)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert np.array_equal(y, medveil.from_key(s1.key)(x))
    assert not np.array_equal(y, s2(x))
    assert np.array_equal(y[1], s1(x[1]))  # same key bits for every image of the batch


def test_block_one_smoothing_equals_skk(rng):
    s = scheme("skk-smooth", block=1)
    x = rng.integers(0, 256, (4, 20, 20), dtype=np.uint8)
    assert np.array_equal(s(x), SKK.__call__(s, x))


def test_negative_positive_twice_is_the_identity_and_grayscale_has_no_shuffle(rng):
    s = scheme("skk")
    x = rng.integers(0, 256, (4, 20, 20), dtype=np.uint8)
    assert np.array_equal(s(s(x)), x)
    negate, order = s.pixel_keys((20, 20))
    assert np.array_equal(s(x), np.where(negate[..., 0], 255 - x, x))  # colour shuffling is a no-op here
    assert (order == 0).all()
    assert 0.4 < negate.mean() < 0.6


def test_smoothing_fills_each_block_with_one_value(rng):
    s = scheme("skk-smooth", block=4)
    y = s(rng.integers(0, 256, (2, 18, 18), dtype=np.uint8))  # 18 = four whole blocks and a partial one
    for by in range(5):
        for bx in range(5):
            block = y[:, by * 4:(by + 1) * 4, bx * 4:(bx + 1) * 4]
            assert (block == block[:, :1, :1]).all()


def test_keyspace_follows_paper_le_equations():
    shape = (256, 256)
    skk = scheme("skk", channels=3)
    assert skk.keyspace_bits(shape) == pytest.approx(3 * 256 * 256 + 256 * 256 * math.log2(6))
    smooth = scheme("skk-smooth", block=4, channels=3)
    assert smooth.keyspace_bits(shape) - skk.keyspace_bits(shape) == pytest.approx(2 * 64 * 64)  # x 4^(64x64)
    assert scheme("skk").keyspace_bits(shape) == 256 * 256  # grayscale: negation only


def test_tanaka_decrypts_and_rejects_bad_input(rng):
    s = scheme("tanaka", block=4)
    x = rng.integers(0, 256, (2, 16, 16), dtype=np.uint8)
    assert np.array_equal(s.decrypt(s(x)), x)
    with pytest.raises(InputError, match="divisible by 4"):
        s(x[:, :15])
    with pytest.raises(InputError, match="8-bit"):
        s(x.astype(np.uint16))
    with pytest.raises(InputError, match="colour images"):
        scheme("skk", channels=3)(x)


@pytest.mark.parametrize("channels", [1, 3])
def test_tanaka_chosen_plaintext_recovers_the_block_key_exactly(rng, channels):
    key = medveil.generate_key("tanaka", block=4, channels=channels)
    s = medveil.from_key(key)
    with BlackBox(key) as box:
        attack = TanakaChosenPlaintext(block=4, channels=channels).fit(oracle_view(box, None))
        queries = box.queries
    perm, flips = s.block_key()
    assert np.array_equal(attack.perm, perm) and np.array_equal(attack.flips, flips)
    assert queries == 1 + math.ceil(math.log2(2 * channels * 16))
    x = rng.integers(0, 256, (3, 16, 16) + ((3,) if channels == 3 else ()), dtype=np.uint8)
    assert np.array_equal(attack.reconstruct(s(x)), x)


def test_leading_bit_recovers_a_smooth_pattern_up_to_the_fold():
    image = ramp(top=255)[None]
    recovered = LeadingBit().reconstruct(scheme("skk")(image))
    assert np.array_equal(recovered, np.minimum(image, 255 - image))


def test_minimum_difference_recovers_a_smooth_dark_pattern():
    image = ramp(top=120)[None]  # no value near the mid-grey mirror point
    assert np.array_equal(MinimumDifference().reconstruct(scheme("skk")(image)), image)


def test_minimum_difference_handles_colour(rng):
    image = np.stack([ramp(top=100), ramp(top=60), 20 + ramp(top=80)], axis=-1)[None]
    recovered = MinimumDifference().reconstruct(scheme("skk", channels=3)(image))
    assert recovered.shape == image.shape
    assert np.abs(recovered.astype(int) - image).mean() < 40
