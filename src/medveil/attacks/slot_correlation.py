"""Ciphertext-only key recovery for Tanaka's block scrambling from slot statistics over the whole set.

Tanaka applies one nibble-slot permutation and one set of nibble negations to every M×M block of
every image. The service holds thousands of images, so it sees the same key act on hundreds of
thousands of blocks, and three statistics of plain images give the key away:

1. **Upper nibbles correlate strongly** with each other across blocks (neighbouring pixels have
   similar values); lower nibbles far less. The ``M²`` slots with the highest mean absolute
   correlation with all others are the upper nibbles.
2. **Negation reverses a correlation's sign.** The upper slots are oriented so that they
   correlate positively with the strongest one, then every slot so that it correlates positively
   with the oriented upper slots' sum; the whole orientation is then chosen so that the
   commonest upper value (the background) is dark, or, with plain data, matches the attacker's
   commonest upper nibble.
3. **Adjacent pixels correlate most**, and blocks sit next to blocks: a slot in a block's right
   column correlates with the slot in the left column of the block to its right. Each nibble
   kind is laid out on the M×M grid by simulated annealing over the sum of correlations of
   adjacent positions, within blocks (non-constant blocks only) and across block boundaries
   (directed, which fixes the layout's mirror images and transposes).

With the permutation and negations recovered, every image decrypts exactly. On Br35H 64×64 with
M=4 this recovers the key from the obfuscated set alone, with no query and no plain data.
Grayscale only.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from typing_extensions import override

from medveil.attacks.base import Attack, AttackerView, AttackSpec, register_attack
from medveil.errors import InputError

ANNEALING_RESTARTS = 4
ANNEALING_STEPS = 20_000


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``a`` with every column of ``b`` (rows: samples)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    scale = np.sqrt(np.outer((a * a).sum(axis=0), (b * b).sum(axis=0)))
    return (a.T @ b) / np.maximum(scale, 1e-12)


def _adjacent_positions(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position pairs (index ``y·M + x``) adjacent inside a block, and across its right and lower edges."""
    grid = np.arange(m * m).reshape(m, m)
    inside = np.concatenate([np.stack([grid[:, :-1].ravel(), grid[:, 1:].ravel()], 1),
                             np.stack([grid[:-1].ravel(), grid[1:].ravel()], 1)])
    right = np.stack([grid[:, -1], grid[:, 0]], 1)
    down = np.stack([grid[-1], grid[0]], 1)
    return inside, right, down


def arrange(slots: np.ndarray, within: np.ndarray, across_right: np.ndarray, across_down: np.ndarray, m: int,
            rng: np.random.Generator) -> np.ndarray:
    """Return the layout of ``slots`` (one per position of an M×M block) with the highest adjacent correlation.

    ``within[a, b]``: correlation of slots a and b in one block; ``across_right[a, b]`` of slot a
    with slot b of the block to the right; ``across_down`` likewise below. Returns the slot at
    each position, ``(M²,)``.
    """
    inside, right, down = _adjacent_positions(m)

    def score(layout: np.ndarray) -> float:
        return (within[layout[inside[:, 0]], layout[inside[:, 1]]].sum()
                + across_right[layout[right[:, 0]], layout[right[:, 1]]].sum()
                + across_down[layout[down[:, 0]], layout[down[:, 1]]].sum())

    best_layout, best_score = slots, -np.inf
    for _ in range(ANNEALING_RESTARTS):
        layout = rng.permutation(slots)
        current = score(layout)
        for step in range(ANNEALING_STEPS):
            temperature = 0.5 * (1 - step / ANNEALING_STEPS) + 1e-3
            i, j = rng.choice(len(layout), 2, replace=False)
            layout[[i, j]] = layout[[j, i]]
            proposed = score(layout)
            if proposed >= current or rng.random() < np.exp((proposed - current) / temperature):
                current = proposed
            else:
                layout[[i, j]] = layout[[j, i]]
            if current > best_score:
                best_layout, best_score = layout.copy(), current
    return best_layout


class SlotCorrelation(Attack):
    """Recover Tanaka's block key from the service's set (see the module docstring)."""

    name = "slot-correlation"

    def __init__(self, block: int):
        self.block = block
        self.perm: np.ndarray | None = None
        self.flips: np.ndarray | None = None

    @override
    def fit(self, view: AttackerView) -> "SlotCorrelation":
        from medveil.schemes.learnable import to_slots

        codes = view.require_obfuscated_set(self.name)
        if codes.ndim != 3:
            raise InputError(f"{self.name} handles grayscale images (n, H, W), got shape {codes.shape}")
        m = self.block
        slots = to_slots(codes, m, 1)[0]  # (n, H/M, W/M, 2M²)
        count = slots.shape[-1]
        flat = slots.reshape(-1, count).astype(np.float32)
        strength = np.abs(_correlation(flat, flat))
        np.fill_diagonal(strength, 0)
        upper = np.sort(np.argsort(-strength.mean(axis=1))[: count // 2])
        lower = np.setdiff1d(np.arange(count), upper)
        reference = upper[np.argmax(strength[upper][:, upper].mean(axis=1))]
        signed = _correlation(flat, flat[:, [reference]])[:, 0]
        upper_sum = (np.where(signed[upper] < 0, 15 - flat[:, upper], flat[:, upper])).sum(axis=1, keepdims=True)
        flips = _correlation(flat, upper_sum)[:, 0] < 0
        dark = 0
        if view.own.size:
            dark = int(np.bincount((view.own >> 4).ravel(), minlength=16).argmax())
        commonest = int(np.bincount(slots[..., reference].ravel(), minlength=16).argmax())
        commonest = 15 - commonest if flips[reference] else commonest
        if abs(15 - commonest - dark) < abs(commonest - dark):
            flips = ~flips
        oriented = (slots ^ (flips.astype(np.uint8) * 15)).astype(np.float32)
        blocks = oriented.reshape(-1, count)
        textured = blocks[blocks.std(axis=1) > 0]
        within = _correlation(textured, textured)
        across_right = _correlation(oriented[:, :, :-1].reshape(-1, count), oriented[:, :, 1:].reshape(-1, count))
        across_down = _correlation(oriented[:, :-1].reshape(-1, count), oriented[:, 1:].reshape(-1, count))
        rng = np.random.default_rng(0)  # the search's own randomness, not key material
        perm = np.empty(count, np.int64)
        for nibble, kind in ((0, upper), (1, lower)):
            layout = arrange(kind, within, across_right, across_down, m, rng)
            perm[layout] = 2 * np.arange(m * m) + nibble  # slot order (y, x, nibble), one channel
        self.perm, self.flips = perm, flips
        return self

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        from medveil.schemes.learnable import undo_block_scramble

        if self.perm is None or self.flips is None:
            raise RuntimeError("fit the attack first")
        return undo_block_scramble(obfuscated, self.perm, self.flips, self.block, 1)


def _create(scheme: str, params: Mapping[str, Any], epochs: int, progress: bool) -> SlotCorrelation:
    if params.get("channels", 1) != 1:
        raise InputError("the slot-correlation attack handles grayscale (channels=1) keys")
    return SlotCorrelation(params["block"])


register_attack(AttackSpec(
    "slot-correlation", "ciphertext-only", ("none",), ("tanaka",), _create,
    "recovers Tanaka's block key from nibble-slot correlations across the service's set; no query"))
