"""Attacks every scheme meets: what the obfuscated image itself shows, and what k leaked pairs give away.

* :class:`Identity` (ciphertext-only): the obfuscated image after the best global, monotone remap of
  its values the attacker can estimate from the service's set, matched by quantiles to its plain
  histogram (``prior``/``public``), or stretched over 0-255 (``none``). A scheme that keeps shapes
  where they are (structural) shows them here.
* :class:`KnownPairsTable` (known-pairs): for code tables, each code's mean plain value over the k
  leaked pairs; codes the pairs never showed get the pairs' mean. A bijective table is read off
  exactly for every value the pairs contain.
"""

from __future__ import annotations

import numpy as np

from medveil.attacks.base import AttackerView, AttackSpec, ValueTableAttack, register_attack

DOMAIN = 256


class Identity(ValueTableAttack):
    """The obfuscated image, globally remapped (see the module docstring)."""

    name = "identity"

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


class KnownPairsTable(ValueTableAttack):
    """Read a code table off k leaked (plain, obfuscated) pairs (see the module docstring)."""

    name = "known-pairs-table"

    def __init__(self, levels: int):
        self.levels = levels

    def fit(self, view: AttackerView) -> "KnownPairsTable":
        plain, codes = view.require_pairs(self.name)
        counts = np.bincount(codes.ravel(), minlength=self.levels).astype(np.float64)
        sums = np.bincount(codes.ravel(), weights=plain.ravel().astype(np.float64), minlength=self.levels)
        self.table = np.where(counts > 0, sums / np.maximum(counts, 1), plain.mean())
        return self


register_attack(AttackSpec(
    "identity", "ciphertext-only", ("none", "prior"), None, lambda scheme, params, epochs, progress: Identity(),
    "the obfuscated image itself after the best global remap of its values (what anyone holding it sees)"))
register_attack(AttackSpec(
    "known-pairs-table", "known-pairs", ("none",), ("intensity",),
    lambda scheme, params, epochs, progress: KnownPairsTable(params.get("levels", DOMAIN)),
    "each code's mean plain value over k leaked (plain, obfuscated) pairs"))
