"""Minimum difference (Chang & Case 2020; paper LE, Algorithm 3), a ciphertext-only attack on SKK.

Scan pixels in raster order and, of the 2^C negations times the channel orders, keep the option
closest (sum of absolute differences) to the already decrypted left neighbour (the one above at a
row's start). The first pixel takes the leading-bit choice (:mod:`medveil.attacks.leading_bit`).
It needs nothing but the intercepted images. Takes ``(n, H, W)`` or ``(n, H, W, 3)`` uint8,
returns the same shape.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit
from typing_extensions import override

from medveil.attacks.base import AttackSpec, SingleImageAttack, register_attack


def _options(channels: int) -> np.ndarray:
    """Every (channel order, negation mask) as ``(n_options, 2, C)``: order indices and 0/255 masks."""
    orders = list(itertools.permutations(range(channels)))
    masks = list(itertools.product((0, 255), repeat=channels))
    return np.array([[order, mask] for order in orders for mask in masks], dtype=np.int64)


@njit(cache=True)
def _scan(image, options, bit):
    h, w, c = image.shape
    out = np.empty_like(image)
    for y in range(h):
        for x in range(w):
            p = image[y, x]
            if y == 0 and x == 0:
                for ch in range(c):
                    out[0, 0, ch] = p[ch] ^ 255 if (p[ch] >> 7) != bit else p[ch]
                continue
            q = out[y, x - 1] if x > 0 else out[y - 1, x]
            best, best_diff = 0, 1 << 30
            for k in range(options.shape[0]):
                diff = 0
                for ch in range(c):
                    diff += abs(int(q[ch]) - int(p[options[k, 0, ch]] ^ options[k, 1, ch]))
                if diff < best_diff:
                    best, best_diff = k, diff
            for ch in range(c):
                out[y, x, ch] = p[options[best, 0, ch]] ^ options[best, 1, ch]
    return out


class MinimumDifference(SingleImageAttack):
    """Minimum-difference decryption of each intercepted image (see the module docstring)."""

    name = "minimum-difference"

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        colour = obfuscated.ndim == 4 and obfuscated.shape[-1] == 3
        hwc = obfuscated if colour else obfuscated[..., None]
        options = _options(hwc.shape[-1])
        out = np.stack([_scan(np.ascontiguousarray(img), options, self.bit) for img in hwc])
        return out if colour else out[..., 0]


register_attack(AttackSpec("minimum-difference", "ciphertext-only", ("none",), ("skk", "skk-smooth"),
                           lambda scheme, params, epochs, progress: MinimumDifference(),
                           "undo each pixel's negation/shuffle to match its neighbour (paper LE Algorithm 3)",
                           images_only=True))
