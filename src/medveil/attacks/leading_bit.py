"""Leading-bit folding (Chang & Case 2020; paper LE, Algorithm 2), a ciphertext-only attack on SKK.

Flip every channel value whose leading bit is not ``b``, so all values share one leading bit;
colour is averaged to grayscale. On grayscale SKK with ``b = 0`` it returns ``min(p, 255 - p)``
for every original value ``p``: the image folded at mid-grey, which keeps its edges. It needs
nothing but the intercepted images. Takes ``(n, H, W)`` or ``(n, H, W, 3)`` uint8, returns the
same shape.
"""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from medveil.attacks.base import AttackSpec, SingleImageAttack, register_attack


class LeadingBit(SingleImageAttack):
    """Leading-bit folding of each intercepted image (see the module docstring)."""

    name = "leading-bit"

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        flip = (obfuscated >> 7) != self.bit
        folded = np.where(flip, obfuscated ^ 255, obfuscated)
        if obfuscated.ndim == 4 and obfuscated.shape[-1] == 3:
            gray = np.rint(folded.mean(axis=-1)).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        return folded.astype(np.uint8)


register_attack(AttackSpec("leading-bit", "ciphertext-only", ("none",), ("skk", "skk-smooth"),
                           lambda scheme, params, epochs, progress: LeadingBit(),
                           "give every value one leading bit (Chang & Case; paper LE Algorithm 2)", images_only=True))
