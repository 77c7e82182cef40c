"""Server models that learn an obfuscation's structure, each from the scheme's public name and parameters.

Paper NB's CNN treats codes as intensities: for a keyed LUT, neighbouring codes mean nothing, and
for SKK a negated pixel looks bright where the tissue is dark. These models put one layer in front
of the CNN that can absorb the scheme's keyed structure exactly, so that what is left is what the
scheme really destroys:

* :class:`CodeEmbeddingCNN` (intensity, vae): each code is a category; a per-pixel
  ``nn.Embedding`` over the key's ``levels`` codes lets the model learn any code-to-feature map;
* :class:`PerPositionCNN` (skk, skk-smooth): a learnable affine map per pixel position and
  channel, which undoes a per-position negation ``x -> 1 - x`` with weight -1 and bias 1;
* :class:`PatchEmbeddingNet` (tanaka): each pixel split into its two 4-bit nibbles, then a
  convolution with kernel = stride = the block size over the nibble planes. Tanaka's key
  permutes and negates the nibble slots of every block alike, an affine map of the patch that
  such a layer absorbs exactly (:func:`absorb_block_key`): the reason block-wise encryption
  pairs with ViT-style models in the literature;
* :class:`BlockBagNet` (block-shuffle): the image as a bag of blocks, each read whichever way
  it is turned, exactly invariant to medveil's per-image block shuffle.

All take ``(B, C, H, W)`` float codes scaled by the stored type's largest value (``input="codes"``
in their :class:`~medveil.nn.classifiers.ModelSpec`, not paper NB's per-image min-max, which
would move every code) and give one logit per image as :class:`SeedCNN` does.
"""

from __future__ import annotations

from typing import Any, Mapping, cast

import numpy as np
import torch
from torch import nn
from typing_extensions import override

from medveil.nn.classifiers import ModelSpec, SeedCNN, register_model

CODE_SCALE = 255  # 8-bit codes: the models round x * 255 back to the code


class CodeEmbeddingCNN(nn.Module):
    """A learned ``dim``-vector per code (``levels`` codes), per pixel and channel, then paper NB's CNN."""

    def __init__(self, levels: int, size: int = 64, in_channels: int = 1, dim: int = 8, num_outputs: int = 1):
        super().__init__()
        if levels > CODE_SCALE + 1:
            raise ValueError(f"code embeddings take 8-bit codes (levels <= 256), got levels={levels}")
        self.levels = levels
        self.embedding = nn.Embedding(levels, dim)
        self.cnn = SeedCNN(size, in_channels * dim, num_outputs=num_outputs)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``(B, C, H, W)`` of float input scaled by 255."""
        return (x * CODE_SCALE).round().long().clamp_(0, self.levels - 1)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.embedding(self.codes(x))  # (B, C, H, W, dim)
        b, c, h, w, d = features.shape
        return self.cnn(features.permute(0, 1, 4, 2, 3).reshape(b, c * d, h, w))


class PerPositionCNN(nn.Module):
    """A learnable ``x * weight + bias`` per pixel position and channel (identity at start), then paper NB's CNN."""

    def __init__(self, size: int = 64, in_channels: int = 1, num_outputs: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(in_channels, size, size))
        self.bias = nn.Parameter(torch.zeros(in_channels, size, size))
        self.cnn = SeedCNN(size, in_channels, num_outputs=num_outputs)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(x * self.weight + self.bias)


def nibble_planes(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` float codes scaled by 255 as ``(B, 2C, H, W)`` nibbles scaled by 15, planes ``(c, upper/lower)``."""
    codes = (x * CODE_SCALE).round().long()
    nibbles = torch.stack([codes >> 4, codes & 15], dim=2)  # (B, C, 2, H, W)
    return nibbles.flatten(1, 2).to(x.dtype) / 15


class PatchEmbeddingNet(nn.Module):
    """Nibble planes, a ``block``×``block`` stride-``block`` patch embedding, then convolutions over the patch grid.

    The patch grid of a 64×64 image at block 4 is 16×16: two 3×3 convolution stages with pooling
    and a linear head, SELU as in paper NB's CNN.
    """

    def __init__(self, block: int, size: int = 64, in_channels: int = 1, dim: int = 64, num_outputs: int = 1):
        super().__init__()
        if size % block:
            raise ValueError(f"patch embedding needs a size divisible by the block {block}, got {size}")
        self.block = block
        self.embed = nn.Conv2d(2 * in_channels, dim, block, stride=block)
        self.body = nn.Sequential(
            nn.SELU(), nn.Conv2d(dim, dim, 3, padding=1), nn.SELU(), nn.AdaptiveAvgPool2d(max(1, size // block // 2)),
            nn.Conv2d(dim, dim, 3, padding=1), nn.SELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(dim, num_outputs))
        self.num_outputs = num_outputs

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.embed(nibble_planes(x)))
        return out.squeeze(1) if self.num_outputs == 1 else out


def absorb_block_key(embedding: nn.Conv2d, perm: np.ndarray, flips: np.ndarray, channels: int) -> nn.Conv2d:
    """Return the patch embedding that gives on Tanaka-encrypted input what ``embedding`` gives on plain input.

    ``perm`` and ``flips`` are Tanaka's block key over the ``2·C·M²`` nibble slots, slot order
    ``(y, x, channel, nibble)`` (:meth:`medveil.schemes.Tanaka.block_key`): encrypted slot ``j``
    holds plain slot ``perm[j]``, negated (``n -> 1 - n`` in nibble units) where ``flips[j]``. So
    the weight of encrypted slot ``j`` is plain slot ``perm[j]``'s, sign-flipped where negated,
    and each negated slot adds its plain weight to the bias. What a key holder uses to run a
    plain-trained model on encrypted images, and what shows that the layer loses nothing.
    """
    m = embedding.kernel_size[0]
    # (D, 2C, M, M) as (D, slot) in slot order (y, x, channel, nibble)
    plain = embedding.weight.detach().reshape(-1, channels, 2, m, m).permute(0, 3, 4, 1, 2).reshape(-1, 2 * channels * m * m)
    sign = torch.from_numpy(np.where(flips, -1.0, 1.0)).to(plain.dtype)
    encrypted = plain[:, torch.from_numpy(perm)] * sign
    assert embedding.bias is not None  # the plain embedding is built with one
    bias = embedding.bias.detach() + plain[:, torch.from_numpy(perm[flips.astype(bool)])].sum(1)
    out = nn.Conv2d(embedding.in_channels, embedding.out_channels, m, stride=m)
    with torch.no_grad():
        out.weight.copy_(encrypted.reshape(-1, m, m, channels, 2).permute(0, 3, 4, 1, 2).reshape(embedding.weight.shape))
        cast(torch.Tensor, out.bias).copy_(bias)
    return out


class BlockBagNet(nn.Module):
    """An image as a bag of ``block``×``block`` blocks, each read whichever way it is turned: what block-shuffle keeps.

    Each block goes through a small CNN under all eight dihedral transforms and the eight feature
    vectors are averaged, so a block's feature does not depend on its turn; the blocks' features
    are pooled by mean and maximum over the bag, so the order does not matter either; then a
    two-layer head. Exactly invariant to :class:`~medveil.schemes.BlockShuffle` (a property test).

    ``standardise`` (for block-shuffle's ``remap``, whose per-block curves leave a block's level and
    contrast meaningless): each block is centred and divided by ``sqrt(variance + standardise**2)``
    first, ``standardise`` being the noise's spread in input units, so a block that holds only
    noise stays faint instead of being blown up to the contrast of one with content.
    """

    def __init__(self, block: int, size: int = 64, in_channels: int = 1, width: int = 16, num_outputs: int = 1,
                 standardise: float | None = None):
        super().__init__()
        if size % block:
            raise ValueError(f"a block bag needs a size divisible by the block {block}, got {size}")
        self.block = block
        self.standardise = standardise
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.SELU(), nn.Conv2d(width, width, 3, padding=1), nn.SELU(),
            nn.AvgPool2d(2) if block >= 4 else nn.Identity(), nn.Conv2d(width, 2 * width, 3, padding=1), nn.SELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 * width, 64), nn.SELU(), nn.Linear(64, num_outputs))
        self.num_outputs = num_outputs

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        m = self.block
        blocks = x.unfold(2, m, m).unfold(3, m, m).permute(0, 2, 3, 1, 4, 5).reshape(-1, c, m, m)
        if self.standardise is not None:
            centred = blocks - blocks.mean(dim=(1, 2, 3), keepdim=True)
            blocks = centred / (centred.square().mean(dim=(1, 2, 3), keepdim=True) + self.standardise**2 + 1e-6).sqrt()
        turned = [torch.rot90(blocks, k, (2, 3)) for k in range(4)]
        turned += [t.flip(3) for t in turned]
        features = torch.stack([self.encoder(t) for t in turned]).mean(0).reshape(b, (h // m) * (w // m), -1)
        out = self.head(torch.cat([features.mean(1), features.amax(1)], dim=1))
        return out.squeeze(1) if self.num_outputs == 1 else out


def _code_embedding(size, channels, outputs, scheme, params) -> nn.Module:
    return CodeEmbeddingCNN(params.get("levels", 256), size, channels, num_outputs=outputs)


def _per_position(size, channels, outputs, scheme, params) -> nn.Module:
    return PerPositionCNN(size, channels, num_outputs=outputs)


def _patch_embedding(size, channels, outputs, scheme, params) -> nn.Module:
    return PatchEmbeddingNet(params.get("block", 4), size, channels, num_outputs=outputs)


def _block_bag(size, channels, outputs, scheme, params) -> nn.Module:
    standardise = params.get("noise", 0) / 255 if params.get("remap") else None
    return BlockBagNet(params.get("block", 8), size, channels, num_outputs=outputs, standardise=standardise)


# Each family's model: ``build(size, channels, outputs, scheme, params)`` from the public parameters.
FAMILY_MODELS = {"intensity": _code_embedding, "vae": _code_embedding, "skk": _per_position, "skk-smooth": _per_position,
                 "warp-smooth": _per_position, "tanaka": _patch_embedding, "block-shuffle": _block_bag}


def matched_model(size: int, channels: int, outputs: int, scheme: str | None, params: Mapping[str, Any]) -> nn.Module:
    """Return the structure-aware model for a scheme's family, from its public name and parameters only.

    Paper NB's CNN on codes for 16-bit codes or a scheme outside :data:`FAMILY_MODELS`.
    """
    build = FAMILY_MODELS.get(scheme) if scheme is not None and params.get("bits", 8) <= 8 else None
    return build(size, channels, outputs, scheme, params) if build else SeedCNN(size, channels, num_outputs=outputs)


register_model(ModelSpec(
    "matched", matched_model, "the structure-aware model for the scheme's family: code embedding (intensity, vae), "
    "per-position affine (skk, skk-smooth, warp-smooth), nibble patch embedding (tanaka), bag of turned blocks (block-shuffle), "
    "else paper NB's CNN on codes",
    input="codes", uses_scheme=True, schemes=tuple(FAMILY_MODELS)))
for _name, _build, _summary in (
        ("code-embedding", _code_embedding, "a learned vector per code (the key's levels), then paper NB's CNN"),
        ("per-position", _per_position, "a learned affine map per pixel position, then paper NB's CNN"),
        ("patch-embedding", _patch_embedding, "nibble planes, a block-sized patch embedding, convolutions over the patch grid")):
    register_model(ModelSpec(_name, _build, _summary, input="codes", uses_scheme=True,
                             schemes=tuple(f for f, b in FAMILY_MODELS.items() if b is _build)))
