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
* ``structural``: the keyed warp moves every boundary along both axes by one monotone map, so the
  pairs' row and column intensity profiles (plain, resized to the input size, against obfuscated)
  are aligned by dynamic time warping; the alignment is the map, and resampling through its
  inverse undoes it (as the chosen-plaintext attack does with crafted images).
* ``warp-smooth``: skk-smooth's per-position affine fits, from the obfuscated value straight to the
  plain one: structural's warp is close to a stretch, so a position of the raster keeps showing
  nearly the same place of the plain image.
* ``block-shuffle``: a keyed shuffle per image, so pairs say nothing about another image's; the
  jigsaw solver (:mod:`medveil.attacks.jigsaw`) with the leaked plain images to orient its result.

All take grayscale 8-bit pairs ``(k, H, W)``, structural colour too.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from typing_extensions import override

from medveil.attacks.base import Attack, AttackerView, AttackSpec, PositionMapAttack, ValueTableAttack, register_attack
from medveil.errors import InputError, SchemeMismatchError

DOMAIN = 256
NAME = "known-pairs"


class KnownPairsTable(ValueTableAttack):
    """Each code's mean plain value over the leaked pairs."""

    name = NAME

    def __init__(self, levels: int):
        self.levels = levels

    @override
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

    @override
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

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        from medveil.schemes.learnable import undo_block_scramble

        if self.perm is None or self.flips is None:
            raise RuntimeError("fit the attack first")
        return undo_block_scramble(obfuscated, self.perm, self.flips, self.block, 1)


def monotone_alignment(cost: np.ndarray) -> np.ndarray:
    """Return, for each row ``i`` of ``cost`` ``(n, m)``, the mean column of a least-cost monotone path.

    The path runs from ``(0, 0)`` to ``(n-1, m-1)`` (dynamic time warping).
    """
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            total[i, j] = cost[i - 1, j - 1] + min(total[i - 1, j], total[i, j - 1], total[i - 1, j - 1])
    i, j = n, m
    visited: list[list[int]] = [[] for _ in range(n)]
    while i > 0 and j > 0:
        visited[i - 1].append(j - 1)
        step = int(np.argmin([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]]))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return np.array([np.mean(columns) for columns in visited])


class KnownPairsWarp(Attack):
    """The structural scheme's coordinate warp from the leaked pairs' intensity profiles (see the module docstring)."""

    name = NAME

    def __init__(self, size: int, raster: int):
        self.size, self.raster = size, raster
        self.positions: np.ndarray | None = None

    @override
    def fit(self, view: AttackerView) -> "KnownPairsWarp":
        from medveil.data import resize_images

        plain, obfuscated = view.require_pairs(self.name)

        def profiles(images: np.ndarray) -> np.ndarray:  # row and column means, standardised
            gray = images.mean(axis=-1) if images.ndim == 4 else images.astype(np.float64)
            both = np.concatenate([gray.mean(axis=1), gray.mean(axis=2)])
            return (both - both.mean(axis=1, keepdims=True)) / (both.std(axis=1, keepdims=True) + 1e-9)

        given, seen = profiles(resize_images(plain, self.size)), profiles(obfuscated)
        centres = monotone_alignment(((given[:, :, None] - seen[:, None, :]) ** 2).sum(axis=0)) + 0.5
        positions = np.interp(np.arange(self.size + 1), np.arange(self.size) + 0.5, centres)
        positions[0], positions[-1] = 0.0, float(self.raster)
        self.positions = np.maximum.accumulate(positions)
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        from medveil.attacks.chosen_plaintext import undo_warp

        if self.positions is None:
            raise RuntimeError("fit the attack first")
        return undo_warp(obfuscated, self.positions, self.size, self.raster)


class KnownPairsPositions(PositionMapAttack):
    """Per-position maps from the leaked pairs: exact negations (``affine=False``) or affine fits."""

    name = NAME

    def __init__(self, affine: bool):
        self.affine = affine

    @override
    def fit(self, view: AttackerView) -> "KnownPairsPositions":
        plain, obfuscated = (a.astype(np.float64) for a in view.require_pairs(self.name))
        if plain.shape != obfuscated.shape:
            raise InputError(f"per-position maps need plain and obfuscated images of one shape, got {plain.shape[1:]} "
                             f"and {obfuscated.shape[1:]}")
        if not self.affine:
            self.undo_negations((plain != obfuscated).any(axis=0))
            return self
        o_mean, p_mean = obfuscated.mean(axis=0), plain.mean(axis=0)
        variance = ((obfuscated - o_mean) ** 2).mean(axis=0)
        covariance = ((obfuscated - o_mean) * (plain - p_mean)).mean(axis=0)
        self.slope = np.divide(covariance, variance, out=np.zeros_like(variance), where=variance > 0)
        self.offset = p_mean - self.slope * o_mean
        return self


def known_pairs_attack(scheme: str, params: Mapping[str, Any]) -> Attack:
    """Return the known-pairs attack for ``scheme`` with its public ``params``."""
    if scheme == "structural":
        return KnownPairsWarp(params["size"], params["raster"])
    if scheme == "block-shuffle":
        from medveil.attacks.jigsaw import Jigsaw

        return Jigsaw.for_key_params(params)  # pairs say nothing of another image's shuffle; their plain side orients it
    if params.get("channels", 1) != 1 or params.get("bits", 8) != 8:
        raise InputError("the known-pairs attacks handle grayscale 8-bit keys")
    if scheme in ("intensity", "vae"):
        return KnownPairsTable(params.get("levels", DOMAIN))
    if scheme == "tanaka":
        return KnownPairsBlockKey(params["block"])
    if scheme in ("skk", "skk-smooth", "warp-smooth"):
        return KnownPairsPositions(affine=scheme != "skk")
    raise SchemeMismatchError(f"no known-pairs attack for the '{scheme}' scheme")


register_attack(AttackSpec(
    NAME, "known-pairs", ("none",), ("intensity", "vae", "tanaka", "skk", "skk-smooth", "structural", "block-shuffle",
                                        "warp-smooth"),
    lambda scheme, params, epochs, progress: known_pairs_attack(scheme, params),
    "reads the key's effect off k leaked (plain, obfuscated) pairs: code table, Tanaka block key, SKK negations, "
    "structural warp"))
