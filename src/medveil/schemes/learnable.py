"""Learnable image encryption (paper LE): Tanaka block-wise, SKK pixel-wise, and SKK + block smoothing.

All three act on 8-bit images with the same key for every image, tied to pixel positions, so a
network can learn from the encrypted images. Images are ``(..., H, W)`` for ``channels=1`` keys
and ``(..., H, W, 3)`` for ``channels=3``; leading axes are a batch. Key material for each pixel
position is drawn from the key stream under a label that includes the image shape, so one key
serves any size (consistently per size).

* ``tanaka`` (Tanaka 2018): each M×M block's values are split into upper and lower 4-bit nibbles
  (``2C`` nibble channels per pixel); the ``2C·M²`` nibble slots of a block are shuffled by one
  key permutation and each slot is negated (``x -> 15 - x``) by one key bit; the same for every
  block. (The original splits colour into 6 nibble channels and shuffles them; shuffling all slots
  of the block includes that and the within-block pixel shuffle.)
* ``skk`` (Sirichotedumrong, Kinoshita, Kiya): each pixel's channel values are negated
  (``p xor 255``) by independent key bits and its channels permuted by one of the six orders.
  On grayscale only the negation applies: colour shuffling is a no-op with one channel.
* ``skk-smooth`` (paper LE): SKK, then every M×M block (edge blocks smaller) is replaced by its
  mean, median, maximum or minimum, chosen per block position by the key. ``block=1`` is SKK.

Output: ``uint8``, same shape.
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import numpy as np
from typing_extensions import override

from medveil.errors import InputError
from medveil.plugins import Parameter
from medveil.schemes.base import Scheme, check_params, image_shape_8bit, int_param, register

CHANNEL_ORDERS = np.array(list(itertools.permutations(range(3))))  # paper LE, Table 1
SMOOTHING = ("mean", "median", "max", "min")


class _LearnableScheme(Scheme):
    """Shared input handling: 8-bit images laid out as the key's ``channels`` say."""

    def __init__(self, key):
        super().__init__(key)
        self._cache: dict = {}  # key-derived arrays per image shape

    def image_shape(self, images: np.ndarray) -> tuple[int, ...]:
        """``(H, W)`` or ``(H, W, 3)`` of ``images``; :class:`InputError` if they do not fit the key."""
        return image_shape_8bit(images, self.params["channels"], self.name)

    def _stream(self, what: str, shape: tuple[int, ...]):
        return self.key.stream(f"{what}/{'x'.join(map(str, shape))}")

    def _per_shape(self, what: str, shape: tuple[int, ...], make):
        """Key-derived arrays for one image shape, computed once (datasets use one size)."""
        if (what, shape) not in self._cache:
            self._cache[(what, shape)] = make()
        return self._cache[(what, shape)]

    @staticmethod
    def _as_hwc(images: np.ndarray, channels: int) -> np.ndarray:
        return images if channels == 3 else images[..., None]


def to_slots(images: np.ndarray, block: int, channels: int) -> tuple[np.ndarray, tuple]:
    """Split 8-bit images into blocks of nibble slots: ``(..., H/M, W/M, 2·C·M²)`` and a layout for :func:`from_slots`.

    Slot order inside a block is ``(y, x, channel, upper/lower nibble)``.
    """
    hwc = images if channels == 3 else images[..., None]
    *lead, h, w, c = hwc.shape
    if h % block or w % block:
        raise InputError(f"tanaka with block={block} needs height and width divisible by {block}, got {h}x{w}")
    x = np.moveaxis(hwc.reshape(*lead, h // block, block, w // block, block, c), -4, -3)
    nibbles = np.stack([x >> 4, x & 15], axis=-1)
    return nibbles.reshape(*nibbles.shape[:-4], -1), (tuple(lead), h, w, block, c)


def from_slots(slots: np.ndarray, layout: tuple) -> np.ndarray:
    """Inverse of :func:`to_slots`."""
    lead, h, w, m, c = layout
    nibbles = slots.reshape(*slots.shape[:-1], m, m, c, 2)
    x = np.moveaxis((nibbles[..., 0] << 4) | nibbles[..., 1], -3, -4).reshape(*lead, h, w, c)
    return (x if c == 3 else x[..., 0]).astype(np.uint8)


def undo_block_scramble(encrypted: np.ndarray, perm: np.ndarray, flips: np.ndarray, block: int, channels: int) -> np.ndarray:
    """Invert Tanaka's block transform given its slot permutation and flips."""
    slots, layout = to_slots(encrypted, block, channels)
    out = np.empty_like(slots)
    out[..., perm] = slots ^ (flips.astype(np.uint8) * 15)
    return from_slots(out, layout)


class _BlockParams:
    """Parameters of the block-wise schemes: ``block`` M (default 4) and ``channels`` 1 or 3."""

    parameters: ClassVar[tuple[Parameter, ...]] = (Parameter("block", int, 4, "block size M"),
                                                   Parameter("channels", int, 1, "1 (grayscale) or 3 (colour)"))

    @classmethod
    def validate_params(cls, params):
        check_params(params, {"block", "channels"}, cls.name)
        return {"block": int_param(params, "block", 4), "channels": int_param(params, "channels", 1, allowed=(1, 3))}


@register
class Tanaka(_BlockParams, _LearnableScheme):
    """Block-wise scrambling of 4-bit nibbles (see the module docstring). Params: ``block`` M, ``channels``."""

    name = "tanaka"

    def block_key(self) -> tuple[np.ndarray, np.ndarray]:
        """``(permutation, flips)`` over the ``2C·M²`` nibble slots of a block, slot order ``(y, x, channel, nibble)``."""
        slots = 2 * self.params["channels"] * self.params["block"] ** 2
        stream = self.key.stream("block")
        return stream.permutation(slots), stream.bits(slots)

    def keyspace_bits(self, shape: tuple[int, ...]) -> float:
        """log2 of the number of keys for images of ``shape``: a permutation and flips of one block's slots."""
        slots = 2 * self.params["channels"] * self.params["block"] ** 2
        return math.lgamma(slots + 1) / math.log(2) + slots

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        self.image_shape(images)
        slots, layout = to_slots(images, self.params["block"], self.params["channels"])
        perm, flips = self.block_key()
        return from_slots(slots[..., perm] ^ (flips.astype(np.uint8) * 15), layout)

    def decrypt(self, encrypted: np.ndarray) -> np.ndarray:
        """Return the key holder's inverse."""
        perm, flips = self.block_key()
        return undo_block_scramble(np.asarray(encrypted), perm, flips, self.params["block"], self.params["channels"])


@register
class SKK(_LearnableScheme):
    """Pixel-wise negative-positive transform and colour-channel shuffle. Param: ``channels``."""

    name = "skk"
    parameters: ClassVar[tuple[Parameter, ...]] = (Parameter("channels", int, 1, "1 (grayscale) or 3 (colour)"),)

    @override
    @classmethod
    def validate_params(cls, params):
        check_params(params, {"channels"}, cls.name)
        return {"channels": int_param(params, "channels", 1, allowed=(1, 3))}

    def pixel_keys(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(negate, order)``: bool ``(H, W, C)`` and channel-order index ``(H, W)`` in ``0..5``."""
        h, w = shape[0], shape[1]
        c = self.params["channels"]

        def make():
            negate = self._stream("negate", shape).bits(h * w * c).reshape(h, w, c)
            order = (self._stream("shuffle", shape).below(np.full(h * w, 6)).reshape(h, w) if c == 3
                     else np.zeros((h, w), dtype=np.int64))
            return negate, order

        return self._per_shape("pixel", shape, make)

    def keyspace_bits(self, shape: tuple[int, ...]) -> float:
        """Paper LE eq. 1-2: ``2^(C·U·V) · 6^(U·V)`` (no shuffle factor for one channel)."""
        u, v, c = shape[0], shape[1], self.params["channels"]
        return c * u * v + (u * v * math.log2(6) if c == 3 else 0.0)

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        shape = self.image_shape(images)
        negate, order = self.pixel_keys(shape)
        c = self.params["channels"]
        x = self._as_hwc(images, c) ^ (negate.astype(np.uint8) * 255)
        if c == 3:
            x = np.take_along_axis(x, np.broadcast_to(CHANNEL_ORDERS[order], x.shape), axis=-1)
        return x if c == 3 else x[..., 0]


@register
class SKKSmooth(_BlockParams, SKK):
    """SKK followed by key-chosen block smoothing (paper LE). Params: ``block`` M, ``channels``."""

    name = "skk-smooth"

    def block_filters(self, shape: tuple[int, ...]) -> np.ndarray:
        """Index into ``SMOOTHING`` for each block position, ``(ceil(H/M), ceil(W/M))``."""
        m = self.params["block"]
        bh, bw = -(-shape[0] // m), -(-shape[1] // m)
        return self._per_shape("smoothing", shape, lambda: self._stream("smoothing", shape)
                               .below(np.full(bh * bw, len(SMOOTHING))).reshape(bh, bw))

    def keyspace_bits(self, shape: tuple[int, ...]) -> float:
        """Paper LE eq. 4: SKK's keyspace times ``4^(ceil(U/M)·ceil(V/M))``."""
        m = self.params["block"]
        return super().keyspace_bits(shape) + 2 * (-(-shape[0] // m)) * (-(-shape[1] // m))

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        encrypted = super().__call__(images)
        m = self.params["block"]
        shape = self.image_shape(encrypted)
        filters = self.block_filters(shape)
        x = self._as_hwc(encrypted, self.params["channels"]).astype(np.float32)
        *lead, h, w, c = x.shape
        bh, bw = filters.shape
        # NaN padding makes edge blocks smaller rather than diluted: the nan-statistics skip it.
        padded = np.full((*lead, bh * m, bw * m, c), np.nan, dtype=np.float32)
        padded[..., :h, :w, :] = x
        blocks = padded.reshape(*lead, bh, m, bw, m, c)
        blocks = np.moveaxis(blocks, -4, -3).reshape(*lead, bh, bw, m * m, c)
        stats = np.stack([np.rint(np.nanmean(blocks, axis=-2)), np.rint(np.nanmedian(blocks, axis=-2)),
                          np.nanmax(blocks, axis=-2), np.nanmin(blocks, axis=-2)])  # order of SMOOTHING
        chosen = np.take_along_axis(stats, filters[None, ..., None].reshape(1, *([1] * len(lead)), bh, bw, 1), axis=0)[0]
        out = chosen.repeat(m, axis=-3).repeat(m, axis=-2)[..., :h, :w, :].astype(np.uint8)
        return out if self.params["channels"] == 3 else out[..., 0]
