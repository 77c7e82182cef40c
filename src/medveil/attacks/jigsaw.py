"""A jigsaw solver against block-shuffle: put each image's blocks back where they belong.

Block-shuffle keeps every block whole and hides only where it was and how it was turned, so each
intercepted image is a jigsaw puzzle with a known frame (H/M × W/M pieces) and pieces that may be
turned eight ways. With plain images of the hospital's kind (``prior`` or ``public``, at least
:data:`MIN_PRIOR_IMAGES`), the solver learns where pieces go:

1. **a position prior**: a small network (:class:`PositionNet`), trained on the attacker's own
   shuffles of its plain images (the public algorithm; for ``remap``/``noise`` the block disguise
   under a key of the attacker's own), gives each intercepted piece a probability over every
   (position, turn) of the frame;
2. **an assignment**: those probabilities, made doubly stochastic over pieces and positions
   (Sinkhorn), so that every position is filled once and every piece used once;
3. **edge refinement** at a low weight (``edges``): a few mean-field rounds in which each
   (piece, turn, position) is penalised by how badly its edges fit its neighbours' expected
   pieces (the prediction-based edge dissimilarity below);
4. **a weighted reconstruction**: each position gets the probability-weighted mean of the pieces
   that may sit there (``weighted``, default), or the one piece a Hungarian assignment gives it. For
   ``remap`` a piece's values are the key's draw, so each piece is first estimated as plain: its
   values standardised, then given the prior's mean level and contrast at the position it is put.

With no plain data (or too few to learn from), it falls back to edges alone, greedily, as
Gallagher's (CVPR 2012) solver is at heart: every ordered pair of (piece, turn) gets a dissimilarity
for sitting left-right and top-bottom, the squared difference between one piece's edge column and
the other's, each extrapolated one pixel from its own edge gradient (after Pomeranz); the most
compatible pair starts the assembly, and the (piece, turn, place) with the lowest mean
dissimilarity to its placed neighbours is placed next, never letting the assembly outgrow the
frame; a few plain images then choose the assembly's overall turn (the one of eight that
correlates best with their mean).

Linkage needs no solving at all: how each block's values correlate with themselves a few pixels
away, sorted over the blocks, is the same before and after the shuffle, and after the per-block
remaps too; noise only blurs it (:meth:`Jigsaw.linkage_features`). The attack needs nothing but each image, so
it runs under ciphertext-only and, for the known-pairs column, with the leaked plain images as its
data (:func:`medveil.attacks.known_pairs.known_pairs_attack`).
Takes ``(n, H, W)`` uint8, returns the same shape.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from typing_extensions import override

from medveil.attacks.base import Attack, AttackerView, AttackSpec, register_attack
from medveil.errors import InputError
from medveil.keys import Key
from medveil.plugins import Parameter
from medveil.schemes.shuffle import TURNS, BlockShuffle, from_blocks, to_blocks, turn
from medveil.training.loop import TrainConfig, fit

NAME = "jigsaw"
ATTACKER_SECRET = hashlib.sha256(b"jigsaw-attacker").digest()  # any key of the attacker's own; fixed, so runs repeat


def edge_dissimilarities(pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(right, down)``, each ``(P·8, P·8)``: cost of oriented piece ``b`` right of (below) oriented piece ``a``.

    ``pieces`` ``(P, M, M)`` float; oriented piece ``p·8 + t`` is piece ``p`` under ``turn(·, t)``.
    """
    oriented = np.stack([turn(pieces, t) for t in range(TURNS)], axis=1).reshape(-1, *pieces.shape[1:])
    same_piece = np.repeat(np.arange(len(pieces)), TURNS)
    costs = []
    for table in (_predicted_costs(oriented), _predicted_costs(np.swapaxes(oriented, 1, 2))):
        table[same_piece[:, None] == same_piece[None, :]] = np.inf
        costs.append(_confidence_ratio(table))
    return costs[0], costs[1]


def _confidence_ratio(cost: np.ndarray) -> np.ndarray:
    """Each cost over the second-best cost of the same two edges: a match stands out only where it beats the rest.

    Background pieces fit each other perfectly and everything dark almost as well; divided by their
    runner-up they come out near 1, so the solver places the distinctive matches first.
    """
    second_right = np.partition(cost, 1, axis=1)[:, 1:2]  # a's second-best right neighbour
    second_left = np.partition(cost, 1, axis=0)[1:2, :]  # b's second-best left neighbour
    return cost / (np.minimum(second_right, second_left) + 1e-6)


def _predicted_costs(oriented: np.ndarray) -> np.ndarray:
    """Cost of ``b`` to the right of ``a``: each side's edge column against the other's one-pixel extrapolation."""
    last, before_last = oriented[:, :, -1], oriented[:, :, -2]
    first, second = oriented[:, :, 0], oriented[:, :, 1]
    from_a = 2 * last - before_last  # where a says b's first column should be
    from_b = 2 * first - second  # where b says a's last column should be
    cost = ((from_a[:, None] - first[None]) ** 2).sum(-1) + ((from_b[None] - last[:, None]) ** 2).sum(-1)
    return cost / oriented.shape[1]


def assemble(pieces: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Place ``pieces`` ``(P, M, M)`` (P = rows·cols) in a ``rows``×``cols`` frame greedily: ``(rows, cols)`` oriented indices."""
    right, down = edge_dissimilarities(pieces.astype(np.float64))
    n = len(pieces)
    canvas = -np.ones((2 * rows - 1, 2 * cols - 1), dtype=np.int64)  # room to grow either way from the start
    start = np.unravel_index(np.argmin(right), right.shape)
    r0, c0 = rows - 1, cols - 1
    canvas[r0, c0], canvas[r0, c0 + 1] = start
    used = np.zeros(n, dtype=bool)
    used[[start[0] // TURNS, start[1] // TURNS]] = True
    for _ in range(n - 2):
        placed = np.argwhere(canvas >= 0)
        top, left = placed.min(0)
        bottom, right_edge = placed.max(0)
        free = np.repeat(~used, TURNS)
        best: tuple[float, tuple[int, int], int] = (np.inf, (-1, -1), -1)
        for r, c in _frontier(canvas):
            if max(bottom, r) - min(top, r) >= rows or max(right_edge, c) - min(left, c) >= cols:
                continue
            cost, count = np.zeros(n * TURNS), 0
            for neighbour, table, mine_first in ((canvas[r, c - 1] if c > 0 else -1, right, False),
                                                 (canvas[r, c + 1] if c + 1 < canvas.shape[1] else -1, right, True),
                                                 (canvas[r - 1, c] if r > 0 else -1, down, False),
                                                 (canvas[r + 1, c] if r + 1 < canvas.shape[0] else -1, down, True)):
                if neighbour >= 0:
                    cost += table[:, neighbour] if mine_first else table[neighbour]
                    count += 1
            cost = np.where(free, cost / count, np.inf)
            choice = int(np.argmin(cost))
            if cost[choice] < best[0]:
                best = (cost[choice], (r, c), choice)
        (r, c), choice = best[1], best[2]
        canvas[r, c] = choice
        used[choice // TURNS] = True
    placed = np.argwhere(canvas >= 0)
    (top, left), (bottom, right_edge) = placed.min(0), placed.max(0)
    frame = canvas[top:top + rows, left:left + cols]
    if frame.shape != (rows, cols) or (frame < 0).any():
        raise RuntimeError("the greedy assembly did not fill its frame")
    return frame


def _frontier(canvas: np.ndarray) -> list[tuple[int, int]]:
    """Empty cells next to a placed one."""
    filled = canvas >= 0
    near = np.zeros_like(filled)
    near[1:] |= filled[:-1]
    near[:-1] |= filled[1:]
    near[:, 1:] |= filled[:, :-1]
    near[:, :-1] |= filled[:, 1:]
    return [tuple(cell) for cell in np.argwhere(near & ~filled)]


MIN_PRIOR_IMAGES = 50  # fewer plain images than this teach no position prior: edges alone then
SINKHORN_ROUNDS = 30
REFINE_ROUNDS = 3


def _undo_table(block: int) -> np.ndarray:
    """``undo[t]``: the turn that puts a block turned by ``t`` back (the dihedral group's inverses)."""
    probe = np.arange(block * block).reshape(block, block)
    return np.array([next(u for u in range(TURNS) if np.array_equal(turn(turn(probe, t), u), probe))
                     for t in range(TURNS)])


def piece_features(blocks: np.ndarray, per_block: bool) -> np.ndarray:
    """Network input for pieces ``(n, P, M, M)`` uint8.

    ``(n, P, 3, M, M)`` float32, each piece standardised, beside its level and contrast as constant planes.
    Standardised by its whole image, or, where each block's values are the key's draw (``per_block``, for
    ``remap``), by itself.
    """
    values = blocks.astype(np.float32) / 255
    axes = (2, 3) if per_block else (1, 2, 3)
    level, contrast = values.mean(axis=axes, keepdims=True), values.std(axis=axes, keepdims=True) + 1e-2
    standard = (values - level) / contrast
    return np.stack([standard, np.broadcast_to(level, standard.shape), np.broadcast_to(contrast, standard.shape)], axis=2)


class TurnedPieces(Dataset):
    """Upright pieces ``(n, 3, M, M)`` at their ``places``, each under a random turn drawn on every fetch.

    Each comes with the label ``place · 8 + undo-turn`` that :class:`PositionNet` predicts. Batches are turned at
    once (``__getitems__``), not piece by piece.
    """

    def __init__(self, features: np.ndarray, places: np.ndarray, undo: np.ndarray, seed: int):
        self.features, self.places, self.undo = features, places, undo
        self.rng = np.random.default_rng(seed)  # the attacker's augmentation, not key material

    def __len__(self) -> int:
        return len(self.features)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pieces, turns = self.features[indices], self.rng.integers(0, TURNS, len(indices))
        for t in range(1, TURNS):
            pieces[turns == t] = turn(pieces[turns == t], t)
        labels = torch.from_numpy(self.places[indices] * TURNS + self.undo[turns])
        return list(zip(torch.from_numpy(np.ascontiguousarray(pieces)), labels))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def fixed(self) -> TensorDataset:
        """Every piece under one turn drawn now: a validation set that stays the same from epoch to epoch."""
        x, y = zip(*self.__getitems__(list(range(len(self)))))
        return TensorDataset(torch.stack(x), torch.stack(y))


class PositionNet(nn.Module):
    """One piece ``(3, M, M)`` (:func:`piece_features`) to logits over the frame's ``positions × 8`` (position, undo-turn)."""

    def __init__(self, block: int, positions: int):
        super().__init__()
        self.positions = positions
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(64 * block * block, 256), nn.ReLU(),
                                  nn.Linear(256, positions * TURNS))

    @override
    def forward(self, x):
        return self.body(x)


class Jigsaw(Attack):
    """The block-shuffle solver of the module docstring."""

    name = NAME

    def __init__(self, block: int, remap: int = 0, noise: int = 0, config: TrainConfig | None = None,
                 edges: float = 0.3, weighted: bool = True):
        self.block, self.remap, self.noise = block, remap, noise
        self.config = config or TrainConfig(epochs=12, batch_size=512, progress=False)
        self.edges, self.weighted = edges, weighted
        self.reference: np.ndarray | None = None  # the mean of the attacker's plain images, for the overall turn
        self.net: PositionNet | None = None
        self.levels: np.ndarray | None = None  # per position: the prior's mean block level and contrast (remap)

    @classmethod
    def for_key_params(cls, params: Mapping[str, Any], config: TrainConfig | None = None, **options) -> "Jigsaw":
        """Return the solver for a block-shuffle key's public parameters."""
        return cls(params["block"], params.get("remap", 0), params.get("noise", 0), config, **options)

    @override
    def fit(self, view: AttackerView) -> "Jigsaw":
        own = view.pairs[0] if view.pairs is not None else view.own
        self.reference = own.astype(np.float64).mean(0) if len(own) else None
        if len(own) >= MIN_PRIOR_IMAGES:
            self._learn_positions(own)
        return self

    def _attacker_scheme(self) -> BlockShuffle:
        params = BlockShuffle.validate_params({"block": self.block, "remap": self.remap, "noise": self.noise})
        return BlockShuffle(Key.new(BlockShuffle.name, params, ATTACKER_SECRET))

    def _learn_positions(self, own: np.ndarray) -> None:
        """Train :class:`PositionNet` on every piece of ``own`` at its place, under a random turn.

        Where the scheme has a block disguise, the pieces wear it too, drawn under the attacker's own key.
        """
        plain = np.stack([to_blocks(image, self.block) for image in own])
        n, positions = plain.shape[:2]
        blocks = plain
        if self.remap or self.noise:
            scheme = self._attacker_scheme()
            blocks = np.stack([scheme.disguise(b, scheme.key.stream(f"attacker/{i}")) for i, b in enumerate(plain)])
        values = plain.astype(np.float64)
        self.levels = np.stack([values.mean(axis=(2, 3)).mean(0), values.std(axis=(2, 3)).mean(0)])
        features = piece_features(blocks, per_block=bool(self.remap)).reshape(n * positions, 3, self.block, self.block)
        places = np.tile(np.arange(positions), n)
        held = np.isin(np.repeat(np.arange(n), positions),
                       np.random.default_rng(self.config.seed).permutation(n)[:max(1, n // 10)])  # whole images out
        undo = _undo_table(self.block)
        train = TurnedPieces(features[~held], places[~held], undo, self.config.seed)
        val = TurnedPieces(features[held], places[held], undo, self.config.seed).fixed()
        torch.manual_seed(self.config.seed)  # the attacker's initial weights, so that a run repeats
        self.net = PositionNet(self.block, positions)
        fit(self.net, train, val, nn.CrossEntropyLoss(), self.config)
        self.net.eval()

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if obfuscated.ndim != 3:
            raise InputError(f"{self.name} takes grayscale images (n, H, W), got shape {obfuscated.shape}")
        if self.net is None:
            return np.stack([self._assemble_greedily(image) for image in obfuscated])
        pieces = np.stack([to_blocks(image, self.block) for image in obfuscated])
        n, positions = pieces.shape[:2]
        if positions != self.net.positions:
            raise InputError(f"{self.name} learned positions for another image size, got {obfuscated.shape[1:]}")
        features = piece_features(pieces, per_block=bool(self.remap)).reshape(n * positions, 3, self.block, self.block)
        with torch.no_grad():
            logp = torch.cat([torch.log_softmax(self.net(torch.from_numpy(features[k:k + 4096])), -1)
                              for k in range(0, len(features), 4096)]).numpy().reshape(n, positions, positions, TURNS)
        return np.stack([self._solve(image_pieces, lp, obfuscated.shape[1:]) for image_pieces, lp in zip(pieces, logp)])

    def _solve(self, pieces: np.ndarray, logp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """One image from its pieces ``(P, M, M)`` and their log-probabilities ``(piece, position, undo)``."""
        oriented = np.stack([turn(pieces.astype(np.float64), u) for u in range(TURNS)], axis=1)  # (P, 8, M, M)
        standard = (oriented - oriented.mean(axis=(2, 3), keepdims=True)) / (oriented.std(axis=(2, 3), keepdims=True) + 1)
        prior = logp.transpose(1, 0, 2)  # (position, piece, undo)
        joint = _assignment(prior)
        if self.edges:
            right, down = _edge_costs(standard if self.remap else oriented)
            neighbours = _neighbours(shape[0] // self.block, shape[1] // self.block)
            for _ in range(REFINE_ROUNDS):
                field = np.zeros((len(prior), len(pieces) * TURNS))
                flat = joint.reshape(len(prior), -1)
                for a, b, table in ((a, b, right if kind == "right" else down) for a, b, kind in neighbours):
                    field[a] += table @ flat[b]  # a's candidates against b's expected piece
                    field[b] += flat[a] @ table
                joint = _assignment(prior - self.edges * field.reshape(prior.shape))
        if self.remap:  # each piece's values as plain: its standardised shape at the position's level and contrast
            assert self.levels is not None  # fit sets them whenever remap is on
            level, contrast = self.levels
            values = level[:, None, None, None, None] + contrast[:, None, None, None, None] * standard[None]
        else:
            values = np.broadcast_to(oriented[None], (len(prior),) + oriented.shape)
        if self.weighted:
            placed = np.einsum("qpu,qpuxy->qxy", joint, values)
        else:
            where, which = linear_sum_assignment(-np.log(joint.sum(-1) + 1e-12))
            placed = np.stack([values[q, p, joint[q, p].argmax()] for q, p in zip(where, which)])
        return np.clip(np.rint(from_blocks(placed, *shape)), 0, 255).astype(np.uint8)

    def _assemble_greedily(self, image: np.ndarray) -> np.ndarray:
        """Edges alone (no position prior), then the overall turn that best matches the plain images' mean."""
        h, w = image.shape
        pieces = to_blocks(image, self.block)
        frame = assemble(pieces, h // self.block, w // self.block)
        oriented = np.stack([turn(pieces[i // TURNS], i % TURNS) for i in frame.ravel()])
        solved = from_blocks(oriented, h, w)
        if self.reference is None or h != w:
            return solved
        candidates = [turn(solved, t) for t in range(TURNS)]
        scores = [np.corrcoef(c.ravel().astype(np.float64), self.reference.ravel())[0, 1] for c in candidates]
        return candidates[int(np.nanargmax(scores))] if not np.all(np.isnan(scores)) else solved

    def linkage_features(self, images: np.ndarray, plain: bool) -> np.ndarray:
        """Return what block-shuffle leaves (nearly) unchanged, per image ``(n, H, W)``: its blocks' texture, sorted.

        A block's autocorrelation at lags 1 to M - 2, along rows and columns averaged, does not
        change when the block moves or turns, nor under an affine map of its values (``remap``'s
        curves are close to one over a block), so sorted over the blocks it is the same for an image
        and its obfuscation: matched against a plain gallery, it re-identifies without solving
        anything. Noise lowers every autocorrelation by an amount that depends on the block, so
        ``plain`` images (the gallery) first go through the public algorithm with the noise under a
        key of the attacker's own (Kerckhoffs). (The blocks' sorted means and spreads, which
        ``remap`` does change, linked a plain block-shuffle less well on Br35H: top-1 0.56 against
        0.71.)
        """
        if plain and self.noise:
            images = self._attacker_scheme()(images)
        blocks = np.stack([to_blocks(image, self.block) for image in images]).astype(np.float64)
        centred = blocks - blocks.mean(axis=(2, 3), keepdims=True)
        variance = np.maximum((centred**2).mean(axis=(2, 3)), 1e-9)
        features = []
        for lag in range(1, max(2, self.block - 1)):
            rows = (centred[:, :, lag:, :] * centred[:, :, :-lag, :]).mean(axis=(2, 3))
            columns = (centred[:, :, :, lag:] * centred[:, :, :, :-lag]).mean(axis=(2, 3))
            features.append(np.sort((rows + columns) / 2 / variance, axis=1))
        return np.concatenate(features, axis=1)



def _assignment(log_scores: np.ndarray) -> np.ndarray:
    """Turn ``(position, piece, undo)`` log-scores into a doubly stochastic joint probability.

    Its piece × position marginal is made doubly stochastic by Sinkhorn, in logs (a confident network's scores
    underflow as plain weights): each position holds one piece in all, each piece sits in one place.
    """
    turns = logsumexp(log_scores, axis=-1, keepdims=True)
    marginal = turns[..., 0]
    for _ in range(SINKHORN_ROUNDS):
        marginal = marginal - logsumexp(marginal, axis=0, keepdims=True)
        marginal = marginal - logsumexp(marginal, axis=1, keepdims=True)
    return np.exp(marginal[:, :, None] + log_scores - turns)


def _edge_costs(oriented: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_predicted_costs` right and below for oriented pieces ``(P, 8, M, M)``, over their median."""
    flat = oriented.reshape(-1, *oriented.shape[2:])
    right, down = _predicted_costs(flat), _predicted_costs(np.swapaxes(flat, 1, 2))
    scale = max(float(np.median(right)), 1e-9)
    return right / scale, down / scale


def _neighbours(rows: int, cols: int) -> list[tuple[int, int, str]]:
    """Adjacent positions of a ``rows`` × ``cols`` frame, row by row: ``(left or top, right or below, kind)``."""
    return ([(q, q + 1, "right") for q in range(rows * cols) if q % cols + 1 < cols]
            + [(q, q + cols, "down") for q in range(rows * cols - cols)])


register_attack(AttackSpec(
    NAME, "ciphertext-only", ("none", "prior"), ("block-shuffle",),
    lambda scheme, params, epochs, progress, edges=0.3, weighted=True: Jigsaw.for_key_params(
        params, TrainConfig(epochs=epochs, batch_size=512, progress=progress), edges=edges, weighted=weighted),
    "puts each image's shuffled, turned blocks back where a position prior learned from plain images and their "
    "edges say they go (edges alone without plain data)", images_only=True, written_for=("block-shuffle",), trains=True,
    parameters=(Parameter("edges", float, 0.3, "weight of edge fit against the learned position prior"),
                Parameter("weighted", bool, True, "probability-weighted pieces per position (else one assigned piece)"))))
