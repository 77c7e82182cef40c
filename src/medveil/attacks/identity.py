"""The identity baselines every scheme meets (ciphertext-only): what the obfuscated image itself shows.

:class:`AsIs` is the obfuscated image exactly as the service holds it. :class:`Identity` is the
obfuscated image after the best global, monotone remap of its values the attacker can estimate from
the service's set, matched by quantiles to its plain histogram (``prior``/``public``), or stretched
over 0-255 (``none``). A scheme that keeps shapes where they are (structural) shows them in both;
one that also keeps their grey levels (structural again) shows them best as it is, since any remap
estimated without the originals moves levels that were right.
"""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from medveil.attacks.base import AttackerView, AttackSpec, SingleImageAttack, ValueTableAttack, register_attack

DOMAIN = 256


class AsIs(SingleImageAttack):
    """The obfuscated image as it is (see the module docstring)."""

    name = "as-is"

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        return obfuscated


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
    "the obfuscated image after the best global remap of its values the service's set lets the attacker estimate",
    images_only=True))
register_attack(AttackSpec(
    "as-is", "ciphertext-only", ("none",), None, lambda scheme, params, epochs, progress: AsIs(),
    "the obfuscated image exactly as it is (what anyone holding it sees, with no remap at all)", images_only=True))
