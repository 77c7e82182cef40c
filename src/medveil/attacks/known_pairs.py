"""Known-pairs attacks: what k leaked (plain, obfuscated) pairs give away, one method per scheme family.

* code tables (``intensity``): each code's mean plain value over the pairs; codes the pairs never
  showed get the pairs' mean. A bijective table is read off exactly for every value the pairs
  contain.
* ``tanaka``: every block of every pair is one more sample of the same key, so each output slot
  is matched to the input slot (and negation) it agrees with most often; one 64×64 pair already
  holds 256 blocks, enough to recover the key exactly.
* ``skk``: a position is negated where a pair's obfuscated value differs from its plain one
  (``255 - p == p`` never holds); positions the pairs show only as 127/128 ties keep no negation.
* ``skk-smooth``: per position, the least-squares affine map from the obfuscated value to the
  plain one over the pairs (constant positions get the pairs' mean there).

All take grayscale 8-bit pairs ``(k, H, W)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from medveil.attacks.base import Attack, AttackerView, AttackSpec, ValueTableAttack, register_attack
from medveil.errors import InputError, SchemeMismatchError

DOMAIN = 256
NAME = "known-pairs"


class KnownPairsTable(ValueTableAttack):
    """Each code's mean plain value over the leaked pairs."""

    name = NAME

    def __init__(self, levels: int):
        self.levels = levels

    def fit(self, view: AttackerView) -> "KnownPairsTable":
        plain, codes = view.require_pairs(self.name)
        counts = np.bincount(codes.ravel(), minlength=self.levels).astype(np.float64)
        sums = np.bincount(codes.ravel(), weights=plain.ravel().astype(np.float64), minlength=self.levels)
        self.table = np.where(counts > 0, sums / np.maximum(counts, 1), plain.mean())
        return self


class KnownPairsBlockKey(Attack):
    """Tanaka's slot permutation and negations from the blocks of the leaked pairs."""

    name = NAME

    def __init__(self, block: int):
        self.block = block
        self.perm: np.ndarray | None = None
        self.flips: np.ndarray | None = None

    def fit(self, view: AttackerView) -> "KnownPairsBlockKey":
        from medveil.schemes.learnable import to_slots

        plain, obfuscated = view.require_pairs(self.name)
        given = to_slots(plain, self.block, 1)[0].reshape(-1, 2 * self.block ** 2)
        seen = to_slots(obfuscated, self.block, 1)[0].reshape(-1, 2 * self.block ** 2)
        # agreement[f, j, i]: share of blocks where output slot j equals input slot i, negated if f
        agreement = np.stack([(seen[:, :, None] == (given[:, None, :] ^ (15 * f))).mean(axis=0) for f in (0, 1)])
        best = agreement.max(axis=0)
        outputs, inputs = linear_sum_assignment(-best)
        self.perm = np.empty_like(inputs)
        self.perm[outputs] = inputs
        self.flips = agreement[1, outputs, inputs] > agreement[0, outputs, inputs]
        return self

    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        from medveil.schemes.learnable import undo_block_scramble

        if self.perm is None:
            raise RuntimeError("fit the attack first")
        return undo_block_scramble(obfuscated, self.perm, self.flips, self.block, 1)


class KnownPairsPositions(Attack):
    """Per-position maps from the leaked pairs: exact negations (``affine=False``) or affine fits."""

    name = NAME

    def __init__(self, affine: bool):
        self.affine = affine
        self.slope: np.ndarray | None = None
        self.offset: np.ndarray | None = None

    def fit(self, view: AttackerView) -> "KnownPairsPositions":
        plain, obfuscated = (a.astype(np.float64) for a in view.require_pairs(self.name))
        if not self.affine:
            negated = (plain != obfuscated).any(axis=0)
            self.slope, self.offset = np.where(negated, -1.0, 1.0), np.where(negated, 255.0, 0.0)
            return self
        o_mean, p_mean = obfuscated.mean(axis=0), plain.mean(axis=0)
        variance = ((obfuscated - o_mean) ** 2).mean(axis=0)
        covariance = ((obfuscated - o_mean) * (plain - p_mean)).mean(axis=0)
        self.slope = np.divide(covariance, variance, out=np.zeros_like(variance), where=variance > 0)
        self.offset = p_mean - self.slope * o_mean
        return self

    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.slope is None:
            raise RuntimeError("fit the attack first")
        if obfuscated.shape[-2:] != self.slope.shape:
            raise InputError(f"{self.name} was fitted on {self.slope.shape} images, got {obfuscated.shape[-2:]}")
        return (self.slope * obfuscated + self.offset).clip(0, 255).round().astype(np.uint8)


def known_pairs_attack(scheme: str, params: Mapping[str, Any]) -> Attack:
    """The known-pairs attack for ``scheme`` with its public ``params``."""
    if params.get("channels", 1) != 1 or params.get("bits", 8) != 8:
        raise InputError("the known-pairs attacks handle grayscale 8-bit keys")
    if scheme in ("intensity", "vae"):
        return KnownPairsTable(params.get("levels", DOMAIN))
    if scheme == "tanaka":
        return KnownPairsBlockKey(params["block"])
    if scheme in ("skk", "skk-smooth"):
        return KnownPairsPositions(affine=scheme == "skk-smooth")
    raise SchemeMismatchError(f"no known-pairs attack for the '{scheme}' scheme")


register_attack(AttackSpec(
    NAME, "known-pairs", ("none",), ("intensity", "vae", "tanaka", "skk", "skk-smooth"),
    lambda scheme, params, epochs, progress: known_pairs_attack(scheme, params),
    "reads the key's effect off k leaked (plain, obfuscated) pairs: code table, Tanaka block key, SKK negations"))
