"""medveil's block shuffle: each image's blocks in an order of its own, each block turned its own way.

``block-shuffle`` cuts an image into M×M blocks (``block``, default 8), puts them in a new order
and applies one of the eight dihedral transforms (rotations by quarter turns, with or without a
mirror) to each. The order and the turns come from the key *and the image itself*: a keyed
pseudo-random function (:meth:`~medveil.keys.Key.stream`) of the image's SHA-256 seeds them.

What it hides: where each block was and which way it was turned. Nothing else: every block is
an original block, pixel for pixel. What that buys:

* no key part is shared across images, so the per-position statistics and correlations over the
  service's set that break Tanaka and SKK carry nothing; neither do leaked pairs or oracle answers
  about any other image (a keyed PRF per image);
* a server model that treats an image as a bag of blocks, each read up to its turn
  (:class:`~medveil.nn.structured.BlockBagNet`, ``--model matched``), is exactly invariant to it.

What it does not hide: the blocks' content, and how their edges fit. A jigsaw solver
(:mod:`medveil.attacks.jigsaw`) puts them back where edges allow; the smaller the block, the more
pieces and the harder that is, and the less a block shows. Deterministic per key and image: the
same image gives the same output; a changed pixel gives an unrelated shuffle. Not invertible,
even by the key holder (nobody needs to: the service predicts on shuffled images).

8-bit images ``(..., H, W)`` (``channels=1``) or ``(..., H, W, 3)``, H and W divisible by M; output
``uint8``, same shape.
"""

from __future__ import annotations

import hashlib

import numpy as np

from medveil.errors import InputError
from medveil.plugins import Parameter
from medveil.schemes.base import Scheme, check_params, image_shape_8bit, int_param, register

TURNS = 8  # the dihedral group of the square: 4 rotations, each with or without a mirror


def turn(blocks: np.ndarray, which: int, colour: bool = False) -> np.ndarray:
    """Blocks ``(..., M, M)`` (or ``(..., M, M, C)`` if ``colour``) under dihedral transform ``which`` in ``0..7``:
    ``which % 4`` quarter turns, then a mirror if ``which >= 4``."""
    spatial = (-3, -2) if colour else (-2, -1)
    out = np.rot90(blocks, which % 4, axes=spatial)
    return np.flip(out, axis=spatial[1]) if which >= 4 else out


def to_blocks(image: np.ndarray, block: int) -> np.ndarray:
    """One image ``(H, W[, C])`` as its blocks ``(H/M · W/M, M, M[, C])``, row by row."""
    h, w = image.shape[:2]
    grid = image.reshape(h // block, block, w // block, block, *image.shape[2:])
    return np.moveaxis(grid, 1, 2).reshape(-1, block, block, *image.shape[2:])


def from_blocks(blocks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`to_blocks`."""
    m = blocks.shape[1]
    grid = blocks.reshape(height // m, width // m, m, m, *blocks.shape[3:])
    return np.moveaxis(grid, 2, 1).reshape(height, width, *blocks.shape[3:])


@register
class BlockShuffle(Scheme):
    """Per-image keyed block order and block turns (see the module docstring). Params: ``block`` M, ``channels``."""

    name = "block-shuffle"
    parameters = (Parameter("block", int, 8, "block size M"), Parameter("channels", int, 1, "1 (grayscale) or 3 (colour)"))

    @classmethod
    def validate_params(cls, params):
        check_params(params, {"block", "channels"}, cls.name)
        return {"block": int_param(params, "block", 8, low=2), "channels": int_param(params, "channels", 1, allowed=(1, 3))}

    def image_key(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(order, turns)`` for one image: output block ``i`` is input block ``order[i]`` under ``turn(·, turns[i])``."""
        m = self.params["block"]
        blocks = (image.shape[0] // m) * (image.shape[1] // m)
        digest = hashlib.sha256(np.ascontiguousarray(image).tobytes() + repr(image.shape).encode()).hexdigest()
        stream = self.key.stream(f"image/{digest}")
        return stream.permutation(blocks), stream.below(np.full(blocks, TURNS))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        shape = image_shape_8bit(images, self.params["channels"], self.name)
        m = self.params["block"]
        if shape[0] % m or shape[1] % m:
            raise InputError(f"block-shuffle with block={m} needs height and width divisible by {m}, got "
                             f"{shape[0]}x{shape[1]}")
        flat = images.reshape(-1, *shape)
        out = np.empty_like(flat)
        for index, image in enumerate(flat):
            order, turns = self.image_key(image)
            blocks = to_blocks(image, m)[order]
            for which in range(1, TURNS):
                chosen = turns == which
                blocks[chosen] = turn(blocks[chosen], which, colour=self.params["channels"] == 3)
            out[index] = from_blocks(blocks, *shape[:2])
        return out.reshape(images.shape)
