"""Ciphertext-only attack on code tables (``intensity``, ``vae``): code co-occurrence over the whole set.

A code table maps every stored value ``v`` to ``perm[v] mod N``, the same way in every pixel of
every image. Neighbouring pixels have neighbouring intensities, so in the service's obfuscated set
codes whose values are close sit next to each other far more often than others. The attack:

1. counts, over every horizontally and vertically adjacent pixel pair of every obfuscated image,
   how often each pair of codes meets (a symmetric ``N x N`` matrix), normalised by the codes'
   frequencies;
2. orders the codes along a line by spectral seriation (the Fiedler vector of the normalised graph
   Laplacian), then refines the order a few times by giving each code the mean value of the codes
   it meets and re-sorting;
3. gives the ordered codes intensities by matching quantiles: code frequencies, accumulated in
   order, against the attacker's plain histogram (``prior`` or ``public``), or spread evenly over
   0-255 with no data (``none``);
4. resolves the order's direction: with a histogram, the direction in which each code's frequency
   best matches the histogram at its value; with none, the direction that makes the most frequent
   code (background) dark.

No query, no pair: only what the service holds and the scheme's public ``levels``. For a bijective
table (N = 256) on Br35H with the prior histogram this recovers the images essentially exactly.
For N < 256 each code stands for about 256/N scattered values; the order then says only which
code's values are brighter on average.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.sparse.csgraph import laplacian
from typing_extensions import override

from medveil.attacks.base import AttackerView, AttackSpec, ValueTableAttack, register_attack
from medveil.errors import InputError

DOMAIN = 256
REFINEMENTS = 5


def code_cooccurrence(codes: np.ndarray, levels: int) -> np.ndarray:
    """Symmetric ``(levels, levels)`` counts of codes meeting as horizontal or vertical neighbours.

    ``codes``: ``(n, H, W)`` integer codes in ``[0, levels)``.
    """
    codes = codes.astype(np.int64)
    flat = np.zeros(levels * levels, np.int64)
    for a, b in ((codes[:, :, :-1], codes[:, :, 1:]), (codes[:, :-1, :], codes[:, 1:, :])):
        flat += np.bincount((a * levels + b).ravel(), minlength=levels * levels)
    counts = flat.reshape(levels, levels)
    return counts + counts.T


def _spread(order: np.ndarray, frequency: np.ndarray, cdf: np.ndarray, levels: int) -> np.ndarray:
    """Values for codes in ``order`` whose accumulated frequencies meet the plain CDF."""
    middle = np.cumsum(frequency[order]) - frequency[order] / 2
    table = np.zeros(levels)
    table[order] = np.searchsorted(cdf, middle / frequency.sum()).clip(0, DOMAIN - 1)
    return table


class CodeCooccurrence(ValueTableAttack):
    """Recover a code table's order from code co-occurrence across the service's set (see module docstring)."""

    name = "code-cooccurrence"

    def __init__(self, levels: int):
        self.levels = levels

    @override
    def fit(self, view: AttackerView) -> "CodeCooccurrence":
        codes = view.require_obfuscated_set(self.name)
        if codes.ndim != 3:
            raise InputError(f"{self.name} handles grayscale code images (n, H, W), got shape {codes.shape}")
        pairs = code_cooccurrence(codes, self.levels).astype(np.float64)
        frequency = np.bincount(codes.ravel(), minlength=self.levels).astype(np.float64)
        seen = np.flatnonzero(frequency > 0)
        weights = pairs[np.ix_(seen, seen)] / np.sqrt(np.outer(frequency[seen], frequency[seen]))
        np.fill_diagonal(weights, 0)
        fiedler = np.linalg.eigh(laplacian(weights, normed=True))[1][:, 1]
        neighbours = pairs.copy()
        np.fill_diagonal(neighbours, 0)
        neighbours /= np.maximum(neighbours.sum(axis=1, keepdims=True), 1)
        plain = view.own
        histogram = (np.bincount(plain.ravel(), minlength=DOMAIN) + 1.0) if plain.size else np.ones(DOMAIN)
        cdf = np.cumsum(histogram) / histogram.sum()
        candidates = []
        for order in (seen[np.argsort(fiedler)], seen[np.argsort(-fiedler)]):
            table = _spread(order, frequency, cdf, self.levels)
            for _ in range(REFINEMENTS):
                order = seen[np.argsort((neighbours @ table)[seen], kind="stable")]
                table = _spread(order, frequency, cdf, self.levels)
            candidates.append(table)
        if plain.size:
            expected = histogram / histogram.sum()
            mismatch = [np.abs(frequency[seen] / frequency.sum() - expected[t[seen].astype(int)]).sum()
                        for t in candidates]
            self.table = candidates[int(np.argmin(mismatch))]
        else:
            background = int(np.argmax(frequency))
            self.table = min(candidates, key=lambda t: t[background])
        return self


def _create(scheme: str, params: Mapping[str, Any], epochs: int, progress: bool) -> CodeCooccurrence:
    if params.get("bits", 8) != 8:
        raise InputError("the code co-occurrence attack handles 8-bit keys")
    return CodeCooccurrence(params.get("levels", DOMAIN))


register_attack(AttackSpec(
    "code-cooccurrence", "ciphertext-only", ("prior", "public", "none"), ("intensity", "vae"), _create,
    "orders a code table's codes by how often they meet in the service's own obfuscated set; no query"))
