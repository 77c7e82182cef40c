import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medveil
from medveil.errors import InputError


def scheme(**params):
    return medveil.from_key(medveil.generate_key("intensity", **params))


@settings(max_examples=25, deadline=None)
@given(levels=st.integers(2, 256), shape=st.sampled_from([(8, 8), (3, 16, 16), (2, 4, 10, 10), (12, 12, 3)]))
def test_same_key_same_output_and_shape(levels, shape):
    s = scheme(levels=levels)
    x = np.random.default_rng(levels).integers(0, 256, shape, dtype=np.uint8)
    y = s(x)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert np.array_equal(y, s(x))
    assert np.array_equal(y, medveil.from_key(s.key)(x))
    assert y.max() < levels


def test_output_is_the_mapping_applied_per_pixel(rng):
    s = scheme(levels=37)
    x = rng.integers(0, 256, (5, 20, 20), dtype=np.uint8)
    assert np.array_equal(s(x), s.mapping[x])


def test_batch_equals_images_one_by_one(rng):
    s = scheme(levels=100)
    batch = rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)
    assert np.array_equal(s(batch), np.stack([s(img) for img in batch]))


def test_different_keys_give_different_mappings():
    mappings = {scheme().mapping.tobytes() for _ in range(5)}
    assert len(mappings) == 5


@pytest.mark.parametrize("bits, signed", [(8, False), (12, False), (12, True), (16, True), (16, False)])
def test_full_levels_is_a_bijection_that_inverts(bits, signed):
    s = scheme(bits=bits, signed=signed)
    assert s.bijective
    values = np.arange(s.low, s.high + 1).astype(f"{'i' if signed else 'u'}{s.itemsize}")
    mapped = s(values.reshape(1, -1))
    assert len(np.unique(mapped)) == s.domain_size
    assert np.array_equal(s.inverse(mapped).ravel(), values)


@settings(max_examples=20, deadline=None)
@given(levels=st.integers(2, 255), present=st.integers(1, 256))
def test_fewer_levels_is_many_to_one(levels, present):
    s = scheme(levels=levels)
    full = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert len(np.unique(s(full))) == levels  # perm mod N hits every residue
    subset = np.random.default_rng(present).permutation(256)[:present].astype(np.uint8).reshape(1, -1)
    assert len(np.unique(s(subset))) <= min(levels, present)
    sizes = np.bincount(s.mapping, minlength=levels)
    assert sizes.max() >= 2  # some output value has several pre-images
    with pytest.raises(InputError, match="many-to-one"):
        s.inverse(s(full))


def test_signed_ct_values_map_over_their_real_depth():
    s = scheme(bits=12, signed=True, levels=4096)
    ct = np.array([[-2048, -1024, 0, 2047]], dtype=np.int16)
    out = s(ct)
    assert out.dtype == np.uint16 and out.max() < 4096
    assert np.array_equal(s.inverse(out), ct)


def test_sixteen_bit_data_with_an_eight_bit_key_is_refused():
    with pytest.raises(InputError, match="16-bit data .* 8-bit key"):
        scheme()(np.zeros((4, 4), dtype=np.uint16))


def test_values_outside_the_domain_are_refused_with_a_hint():
    with pytest.raises(InputError, match=r"values span \[-1024, 3071\].*--bits 13 --signed"):
        scheme(bits=12)(np.array([[-1024, 3071]], dtype=np.int16))


def test_float_input_is_refused():
    with pytest.raises(InputError, match="integer stored values"):
        scheme()(np.zeros((4, 4), dtype=np.float32))


def test_out_buffer_receives_the_result_and_is_checked(rng):
    s = scheme(levels=60)
    x = rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)
    buf = np.empty_like(x)
    assert s(x, out=buf) is buf and np.array_equal(buf, s(x))
    with pytest.raises(InputError, match="out must be"):
        s(x, out=np.empty((4, 16), np.uint8))


def test_big_endian_input_maps_like_native():
    scheme = medveil.from_key(medveil.generate_key("intensity", bits=12, levels=100))
    values = np.arange(4096, dtype="<u2").reshape(64, 64)
    assert np.array_equal(scheme(values.astype(">u2")), scheme(values))


def test_the_compiled_look_up_for_volumes_matches_numpy(rng):
    from medveil.schemes._lut import KERNEL_MIN_SIZE, apply_lut

    lut = rng.integers(0, 2**16, 2**16).astype(np.uint16)
    volume = rng.integers(0, 2**16, KERNEL_MIN_SIZE + 7).astype(np.uint16)  # large enough for the numba kernel
    assert np.array_equal(apply_lut(volume, lut), lut[volume])
    small = volume[:1000]
    assert np.array_equal(apply_lut(small, lut), lut[small])


@pytest.mark.parametrize("path", ["translate", "pair kernel", "permuting kernel"])
def test_each_8_bit_path_matches_numpy_at_odd_sizes_and_offsets(rng, path, monkeypatch):
    from medveil.schemes import _lut_kernels
    from medveil.schemes._lut import KERNEL_MIN_SIZE, apply_lut, pair_table

    if path == "permuting kernel" and not _lut_kernels.PERMUTES_BYTES:
        pytest.skip("this CPU has no AVX-512 VBMI (the pair kernel runs instead)")
    monkeypatch.setattr(_lut_kernels, "PERMUTES_BYTES", path == "permuting kernel")
    lut = rng.integers(0, 256, 256).astype(np.uint8)
    pairs = pair_table(lut)
    two = np.array([3, 250], np.uint8)
    assert np.array_equal(pairs[two.view(np.uint16)].view(np.uint8), lut[two])
    size = KERNEL_MIN_SIZE + 7 if "kernel" in path else 2048 * 2048 + 7  # odd: the tail maps value by value
    volume = rng.integers(0, 256, size).astype(np.uint8)
    assert np.array_equal(apply_lut(volume, lut), lut[volume])
    shifted = volume[1:]  # an odd address: one value at a time
    out = np.empty_like(shifted)
    assert np.array_equal(apply_lut(shifted, lut, out=out), lut[shifted]) and np.array_equal(out, lut[shifted])
    assert np.array_equal(apply_lut(volume[:1], lut), lut[volume[:1]])
    image = volume[:4096 * 3].reshape(64, 192)[:, ::3]  # not contiguous
    mapped = apply_lut(image, lut)
    assert mapped.shape == image.shape and mapped.flags.writeable and np.array_equal(mapped, lut[image])


def test_values_outside_a_narrow_key_are_refused_on_the_volume_path_too(rng):
    from medveil.schemes._lut import KERNEL_MIN_SIZE

    scheme = medveil.from_key(medveil.generate_key("intensity", bits=12, signed=True, levels=300))
    volume = rng.integers(-2048, 2048, KERNEL_MIN_SIZE + 1).astype(np.int16)
    mapped = scheme(volume)
    assert mapped.max() < 300 and np.array_equal(mapped[:1000], scheme(volume[:1000]))
    volume[12345] = 2048
    with pytest.raises(InputError, match=r"values span \[-2048, 2048\]"):
        scheme(volume)
