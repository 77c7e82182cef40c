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

Two options go further, each drawn per image and block from the same keyed stream:

* ``remap=1``: each block's values go through a monotone curve of their own, ``lo + (hi - lo) ·
  (x / 255) ** γ`` with γ in [1/2, 2] and an output range ``[lo, hi]`` at least 64 wide. The
  image's histogram, and its blocks' means and spreads (what links a plain block-shuffle to its
  patient) are then the key's draw, not the image's; what stays is each block's inner order of
  values.
* ``noise=σ``: Gaussian noise of σ grey levels on every pixel, after the remap, so that order
  carries less too where a block is smooth.

Both cost the server what they take away: a block's absolute brightness (``remap``) and its
faint texture (``noise``). Neither stops linkage on Br35H: the blocks' texture, sorted, still
re-identifies patients, less the more noise (:meth:`medveil.attacks.jigsaw.Jigsaw.linkage_features`;
figures in docs/results/README.md).

8-bit images ``(..., H, W)`` (``channels=1``) or ``(..., H, W, 3)``, H and W divisible by M; output
``uint8``, same shape.
"""

from __future__ import annotations

import hashlib

import numpy as np
from typing_extensions import override

from medveil.errors import InputError
from medveil.keys import KeyStream
from medveil.plugins import Parameter
from medveil.schemes.base import Scheme, check_params, image_shape_8bit, int_param, register

TURNS = 8  # the dihedral group of the square: 4 rotations, each with or without a mirror
MIN_SPAN = 64  # the narrowest output range a remapped block gets, in grey levels


def turn(blocks: np.ndarray, which: int, colour: bool = False) -> np.ndarray:
    """Blocks ``(..., M, M)`` (or ``(..., M, M, C)`` if ``colour``) under dihedral transform ``which`` in ``0..7``.

    ``which % 4`` quarter turns, then a mirror if ``which >= 4``.
    """
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
    """Per-image keyed block order and block turns, optionally with per-block remaps and noise (see the module docstring).

    Params: ``block`` M, ``channels``, ``remap`` (0 or 1), ``noise`` σ in grey levels.
    """

    designed_here = True

    name = "block-shuffle"
    background_params = Scheme.background_params | {"remap", "noise"}
    parameters = (Parameter("block", int, 8, "block size M"), Parameter("channels", int, 1, "1 (grayscale) or 3 (colour)"),
                  Parameter("remap", int, 0, "1: a keyed monotone curve per image and block"),
                  Parameter("noise", int, 0, "keyed Gaussian noise of this many grey levels per pixel"))

    @override
    @classmethod
    def validate_params(cls, params):
        check_params(params, {"block", "channels", "remap", "noise"}, cls.name)
        valid = {"block": int_param(params, "block", 8, low=2), "channels": int_param(params, "channels", 1, allowed=(1, 3))}
        # Left out at 0, so that keys made before these options existed stay canonical.
        valid.update({name: value for name, value in (("remap", int_param(params, "remap", 0, allowed=(0, 1))),
                                                      ("noise", int_param(params, "noise", 0, low=0, high=64))) if value})
        return valid

    def image_key(self, image: np.ndarray) -> KeyStream:
        """Return the keyed stream of one image, from its content and shape; :meth:`__call__` draws everything from it."""
        digest = hashlib.sha256(np.ascontiguousarray(image).tobytes() + repr(image.shape).encode()).hexdigest()
        return self.key.stream(f"image/{digest}")

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        shape = image_shape_8bit(images, self.params["channels"], self.name)
        m = self.params["block"]
        if shape[0] % m or shape[1] % m:
            raise InputError(f"block-shuffle with block={m} needs height and width divisible by {m}, got "
                             f"{shape[0]}x{shape[1]}")
        flat = images.reshape(-1, *shape)
        out = np.empty_like(flat)
        colour = self.params["channels"] == 3
        count = (shape[0] // m) * (shape[1] // m)
        for index, image in enumerate(flat):
            stream = self.image_key(image)
            order, turns = stream.permutation(count), stream.below(np.full(count, TURNS))
            blocks = to_blocks(image, m)[order]
            for which in range(1, TURNS):
                chosen = turns == which
                blocks[chosen] = turn(blocks[chosen], which, colour=colour)
            if self.params.get("remap") or self.params.get("noise"):
                blocks = self.disguise(blocks, stream)
            out[index] = from_blocks(blocks, *shape[:2])
        return out.reshape(images.shape)

    def disguise(self, blocks: np.ndarray, stream: KeyStream) -> np.ndarray:
        """Apply ``remap`` and ``noise`` to one image's blocks ``(P, M, M[, C])`` uint8.

        Drawn from the image's ``stream`` (public, like the whole algorithm: an attacker simulates it under keys
        of its own).
        """
        values = blocks.astype(np.float64)
        per_block = (len(blocks),) + (1,) * (blocks.ndim - 1)
        if self.params.get("remap"):
            gamma, low, width = (stream.uniform(len(blocks)) for _ in range(3))
            gamma = np.exp2(2 * gamma - 1)  # in [1/2, 2], as likely below 1 as above
            span = MIN_SPAN + width * (255 - MIN_SPAN)
            low = low * (255 - span)
            values = (low.reshape(per_block) + span.reshape(per_block) * (values / 255) ** gamma.reshape(per_block))
        if self.params.get("noise"):
            # A keyed seed for NumPy's generator: the noise is as secret as the stream it comes from.
            noise = np.random.Generator(np.random.PCG64(np.frombuffer(stream.read(32), dtype=np.uint32)))
            values = values + noise.normal(0.0, self.params["noise"], values.shape)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
