"""The identity baseline every scheme meets (ciphertext-only): what the obfuscated image itself shows.

:class:`Identity` is the obfuscated image after the best global, monotone remap of its values the
attacker can estimate from the service's set, matched by quantiles to its plain histogram
(``prior``/``public``), or stretched over 0-255 (``none``). A scheme that keeps shapes where they
are (structural) shows them here.
"""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from medveil.attacks.base import AttackerView, AttackSpec, ValueTableAttack, register_attack

DOMAIN = 256


class Identity(ValueTableAttack):
    """The obfuscated image, globally remapped (see the module docstring)."""

    name = "identity"

    @override
    def fit(self, view: AttackerView) -> "Identity":
        codes = view.require_obfuscated_set(self.name)
        frequency = np.bincount(codes.ravel(), minlength=DOMAIN).astype(np.float64)
        if view.own.size:
            plain = np.bincount(view.own.ravel(), minlength=DOMAIN) + 1.0
            middle = (np.cumsum(frequency) - frequency / 2) / frequency.sum()
            self.table = np.searchsorted(np.cumsum(plain) / plain.sum(), middle).clip(0, DOMAIN - 1).astype(np.float64)
        else:
            low, high = int(codes.min()), int(codes.max())
            self.table = (np.arange(len(frequency)) - low) * 255.0 / max(high - low, 1)
        return self


register_attack(AttackSpec(
    "identity", "ciphertext-only", ("none", "prior"), None, lambda scheme, params, epochs, progress: Identity(),
    "the obfuscated image itself after the best global remap of its values (what anyone holding it sees)",
    images_only=True))
