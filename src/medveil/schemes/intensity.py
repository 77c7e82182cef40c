"""Non-bijective intensity mapping (paper NB): a secret permutation of the intensity domain, then ``mod N``.

Every stored value ``v`` of the domain is replaced by ``perm[v - lo] mod levels``, where ``perm``
is a key-derived uniform permutation of ``range(2**bits)``. With ``levels == 2**bits`` the map is
a bijection (invertible by the key holder, and by anyone who can query it on every value); with
fewer levels it is many-to-one: each output value has ``2**bits / levels`` pre-images on average.

One key maps a whole dataset, so a model trained on mapped images applies to mapped inference
images. The map acts on the stored integers at their real bit depth (8-bit PNG/JPEG; 12- or
16-bit DICOM CT/MR/CR, signed CT included) rather than on a lossy 8-bit rescale.

Output: unsigned integers of the input's width (``uint8`` for keys of up to 8 bits, ``uint16``
above), values in ``[0, levels)``, same shape as the input.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from typing_extensions import override

from medveil.schemes._lut import apply_lut
from medveil.errors import InputError, ParameterError
from medveil.plugins import Parameter
from medveil.schemes.base import Scheme, check_params, register


def bits_covering(lo: int, hi: int) -> tuple[int, bool]:
    """Return the narrowest ``(bits, signed)`` domain that holds every integer in ``[lo, hi]``."""
    signed = lo < 0
    bits = 1
    while True:
        dom_lo, dom_hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if dom_lo <= lo and hi <= dom_hi:
            return bits, signed
        bits += 1


@register
class IntensityMapping(Scheme):
    """Permutation LUT over ``bits``-bit stored values followed by ``mod levels``.

    Key parameters
    --------------
    bits : int, 1..16, default 8
        Bit depth of the stored values the key maps.
    signed : bool, default False
        Domain is ``[-2**(bits-1), 2**(bits-1))`` (e.g. CT in two's complement) instead of
        ``[0, 2**bits)``.
    levels : int, 2..2**bits, default 2**bits
        ``N`` of paper NB: the number of distinct output values. ``2**bits`` is bijective.

    Accepted input: integer arrays whose item size matches the key (1 byte for ``bits <= 8``,
    2 bytes above) and whose values all lie in the key's domain.
    """

    name = "intensity"
    parameters = (Parameter("bits", int, 8, "bit depth of the stored values: 8 for PNG/JPEG, 12 or 16 for CT/MR"),
                  Parameter("signed", bool, False, "the stored values are signed (CT)"),
                  Parameter("levels", int, None, "N distinct output values (default 2**bits: bijective)"))

    @override
    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        check_params(params, {"bits", "signed", "levels"}, cls.name)
        bits = params.get("bits", 8)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ParameterError(f"bits must be an integer from 1 to 16, got {bits!r}")
        signed = params.get("signed", False)
        if not isinstance(signed, bool):
            raise ParameterError(f"signed must be true or false, got {signed!r}")
        levels = params.get("levels", 1 << bits)
        if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 1 << bits:
            raise ParameterError(f"levels must be an integer from 2 to {1 << bits} for a {bits}-bit key, got {levels!r}")
        return {"bits": bits, "signed": signed, "levels": levels}

    def __init__(self, key):
        super().__init__(key)
        bits, levels = self.params["bits"], self.params["levels"]
        self.domain_size = 1 << bits
        self.low = -(self.domain_size >> 1) if self.params["signed"] else 0
        self.high = self.low + self.domain_size - 1
        self.itemsize = 1 if bits <= 8 else 2
        self.out_dtype = np.dtype(f"u{self.itemsize}")
        perm = key.stream("permutation").permutation(self.domain_size)
        self._mapping = (perm % levels).astype(self.out_dtype)
        self._mapping.setflags(write=False)
        # Table indexed by the raw (two's complement) bits of the container, so signed input is a
        # free view and the hot loop has no offset or branch. Where the key's domain is narrower than
        # the container, the rest of the table holds a value no key maps to (levels <= 2**bits < the
        # container's range), and the look-up itself finds out-of-domain input: no separate min/max pass.
        self._outside = None if bits == 8 * self.itemsize else int(np.iinfo(self.out_dtype).max)
        self._raw_lut = np.full(1 << (8 * self.itemsize), self._outside or 0, dtype=self.out_dtype)
        self._raw_lut[self._raw_index(np.arange(self.low, self.high + 1))] = self._mapping

    @property
    def bijective(self) -> bool:
        """Whether every input value has its own code (``levels`` equals the domain size)."""
        return self.params["levels"] == self.domain_size

    @override
    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(f"{'i' if self.params['signed'] else 'u'}{self.itemsize}")

    @override
    @property
    def output_bits(self) -> int:
        return self.params["bits"]

    @property
    def mapping(self) -> np.ndarray:
        """Read-only table: ``mapping[v - low]`` is the output for stored value ``v``."""
        return self._mapping

    def _raw_index(self, values: np.ndarray) -> np.ndarray:
        return values.astype(np.int64) & ((1 << (8 * self.itemsize)) - 1)

    def _domain_text(self) -> str:
        kind = "signed" if self.params["signed"] else "unsigned"
        return f"[{self.low}, {self.high}] ({self.params['bits']}-bit {kind})"

    def check_input(self, images: np.ndarray) -> None:
        """Raise :class:`InputError` unless every value of ``images`` lies in the key's domain."""
        dtype = images.dtype
        if dtype.kind not in "iu":
            raise InputError(
                f"intensity mapping needs integer stored values, got {dtype} "
                "(convert floating-point data to its stored integers first)"
            )
        if dtype.itemsize != self.itemsize:
            raise InputError(
                f"{8 * dtype.itemsize}-bit data ({dtype}) cannot be mapped with this "
                f"{self.params['bits']}-bit key; make a key for the data's bit depth "
                f"(medveil keygen --bits N [--signed])"
            )
        if images.size == 0:
            raise InputError("empty image")
        info = np.iinfo(dtype)
        if info.min >= self.low and info.max <= self.high:
            return
        lo, hi = int(images.min()), int(images.max())
        if lo < self.low or hi > self.high:
            bits, signed = bits_covering(lo, hi)
            hint = f"--bits {bits}" + (" --signed" if signed else "")
            raise InputError(
                f"values span [{lo}, {hi}] but this key maps {self._domain_text()}; "
                f"the data needs a key made with {hint}"
            )

    def __call__(self, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Map ``images`` (any shape, integer dtype of the key's width) to ``out_dtype`` in ``[0, levels)``.

        ``out``, a contiguous array of the input's shape and ``out_dtype``, receives the result
        (as with NumPy ufuncs), saving an allocation when mapping many batches.
        """
        images = np.asarray(images)
        if not images.dtype.isnative:  # the table is indexed by the stored value, not its bytes
            images = images.astype(images.dtype.newbyteorder("="))
        if images.dtype.kind not in "iu" or images.dtype.itemsize != self.itemsize or images.size == 0:
            self.check_input(images)  # raises, saying which
        if out is not None and (out.shape != images.shape or out.dtype != self.out_dtype or not out.flags.c_contiguous):
            raise InputError(f"out must be a contiguous {self.out_dtype} array of shape {images.shape}")
        raw = np.ascontiguousarray(images).view(self.out_dtype)
        try:
            return apply_lut(raw, self._raw_lut, out, invalid=self._outside)
        except LookupError:
            self.check_input(images)  # names the values' span and the key the data needs
            raise

    def inverse(self, mapped: np.ndarray) -> np.ndarray:
        """Undo a bijective mapping: the key holder's way back to the stored values.

        Returns the stored values in the key's container dtype (``int8/int16`` for signed keys).
        Raises :class:`InputError` for a many-to-one key, where no inverse exists.
        """
        if not self.bijective:
            raise InputError(
                f"a key with levels={self.params['levels']} < {self.domain_size} is many-to-one and has no inverse"
            )
        mapped = np.asarray(mapped)
        if mapped.dtype != self.out_dtype:
            raise InputError(f"mapped images must be {self.out_dtype}, got {mapped.dtype}")
        if mapped.size and int(mapped.max()) >= self.domain_size:
            raise InputError(f"mapped values must lie in [0, {self.domain_size}), got up to {int(mapped.max())}")
        inverse = np.zeros(1 << (8 * self.itemsize), dtype=np.int64)
        inverse[self._mapping.astype(np.int64)] = np.arange(self.low, self.high + 1)
        stored = np.dtype(f"{'i' if self.params['signed'] else 'u'}{self.itemsize}")
        return apply_lut(np.ascontiguousarray(mapped), inverse.astype(stored))
