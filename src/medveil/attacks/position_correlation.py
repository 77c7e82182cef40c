"""Ciphertext-only key recovery for SKK's pixel-wise negation from correlations over the whole set.

SKK negates (``p -> 255 - p``) the pixels at key-chosen positions, the same positions in every
image. Across the service's thousands of images, the values at two neighbouring positions
correlate strongly; negating one of them reverses the correlation's sign. So the signed
correlations of the 4-neighbour grid are, up to noise, ``s_i · s_j · |c_ij|`` for the unknown
signs ``s``, and the leading eigenvector of that sparse matrix has the signs of ``s`` (the grid's
Perron vector is positive everywhere). This uses every edge at once, so one weak correlation does
not flip a region. Positions that never vary are negated where their value is bright. The
remaining global sign makes the set darker on average (background is dark) or, with plain data,
makes its mean closest to the attacker's.

On Br35H 64×64 this recovers every position's negation from the obfuscated set alone; decryption
is then exact. Grayscale only (colour SKK also shuffles channels per pixel).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import eigsh
from typing_extensions import override

from medveil.attacks.base import AttackerView, AttackSpec, PositionMapAttack, register_attack
from medveil.errors import InputError


def negation_signs(codes: np.ndarray) -> np.ndarray:
    """Estimated per-position negation ``(H, W)`` bool, up to one global flip, from ``(n, H, W)`` images."""
    n, h, w = codes.shape
    values = codes.reshape(n, -1).astype(np.float64)
    values -= values.mean(axis=0)
    spread = values.std(axis=0)
    values /= np.maximum(spread, 1e-12)
    grid = np.arange(h * w).reshape(h, w)
    a = np.concatenate([grid[:, :-1].ravel(), grid[:-1].ravel()])
    b = np.concatenate([grid[:, 1:].ravel(), grid[1:].ravel()])
    weights = (values[:, a] * values[:, b]).mean(axis=0)
    graph = coo_matrix((np.r_[weights, weights], (np.r_[a, b], np.r_[b, a])), shape=(h * w, h * w)).tocsr()
    leading = eigsh(graph, k=1, which="LA")[1][:, 0]
    negated = leading < 0
    constant = spread == 0
    negated[constant] = codes.reshape(n, -1)[0, constant] > 127
    return negated.reshape(h, w)


class PositionCorrelation(PositionMapAttack):
    """Recover SKK's per-position negation from the service's set (see the module docstring)."""

    name = "position-correlation"

    @override
    def fit(self, view: AttackerView) -> "PositionCorrelation":
        codes = view.require_obfuscated_set(self.name)
        if codes.ndim != 3:
            raise InputError(f"{self.name} handles grayscale images (n, H, W), got shape {codes.shape}")
        negated = negation_signs(codes)
        target = float(view.own.mean()) if view.own.size else 0.0
        means = [float(np.where(option, 255 - codes, codes).mean()) for option in (negated, ~negated)]
        self.undo_negations(negated if abs(means[0] - target) <= abs(means[1] - target) else ~negated)
        return self


def _create(scheme: str, params: Mapping[str, Any], epochs: int, progress: bool) -> PositionCorrelation:
    if params.get("channels", 1) != 1:
        raise InputError("the position-correlation attack handles grayscale (channels=1) keys")
    return PositionCorrelation()


register_attack(AttackSpec(
    "position-correlation", "ciphertext-only", ("none",), ("skk",), _create,
    "recovers SKK's per-position negation from neighbour correlations across the service's set; no query"))
