"""Ciphertext-only attacks on SKK-style encryption (Chang & Case 2020, as described in paper LE).

Neither needs the black box nor any images of the attacker's own: they work on the intercepted
encrypted images alone.

* :class:`LeadingBit` (paper LE, Algorithm 2): flip every channel value whose leading bit is not
  ``b``, so all values share one leading bit; colour is averaged to grayscale. On grayscale SKK
  with ``b = 0`` it returns ``min(p, 255 - p)`` for every original value ``p``: the image folded
  at mid-grey, which keeps its edges.
* :class:`MinimumDifference` (Algorithm 3): scan pixels in raster order and, of the 2^C negations
  times the channel orders, keep the option closest (sum of absolute differences) to the already
  decrypted left neighbour (the one above at a row's start). The first pixel takes the
  leading-bit choice.

Both take ``(n, H, W)`` grayscale or ``(n, H, W, 3)`` colour uint8 and return the same shape.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from medveil.attacks.base import Attack, AttackerView, AttackSpec, register_attack


class CiphertextOnlyAttack(Attack):
    """An attack that needs nothing but the intercepted images: :meth:`fit` reads nothing from its view.

    ``bit`` is the leading bit assumed for the first decision (0: dark stays dark).
    """

    def __init__(self, bit: int = 0):
        self.bit = bit

    def fit(self, view: AttackerView) -> "CiphertextOnlyAttack":
        return self


class LeadingBit(CiphertextOnlyAttack):
    name = "leading-bit"

    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        flip = (obfuscated >> 7) != self.bit
        folded = np.where(flip, obfuscated ^ 255, obfuscated)
        if obfuscated.ndim == 4 and obfuscated.shape[-1] == 3:
            gray = np.rint(folded.mean(axis=-1)).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        return folded.astype(np.uint8)


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


class MinimumDifference(CiphertextOnlyAttack):
    name = "minimum-difference"

    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        colour = obfuscated.ndim == 4 and obfuscated.shape[-1] == 3
        hwc = obfuscated if colour else obfuscated[..., None]
        options = _options(hwc.shape[-1])
        out = np.stack([_scan(np.ascontiguousarray(img), options, self.bit) for img in hwc])
        return out if colour else out[..., 0]


register_attack(AttackSpec("leading-bit", "ciphertext-only", ("none",), ("skk", "skk-smooth"),
                           lambda scheme, params, epochs, progress: LeadingBit(),
                           "give every value one leading bit (Chang & Case; paper LE Algorithm 2)"))
register_attack(AttackSpec("minimum-difference", "ciphertext-only", ("none",), ("skk", "skk-smooth"),
                           lambda scheme, params, epochs, progress: MinimumDifference(),
                           "undo each pixel's negation/shuffle to match its neighbour (paper LE Algorithm 3)"))
