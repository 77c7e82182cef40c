"""Siamese same-subject discriminator (paper PN's D, and the re-identification attacker's D_new)."""

from __future__ import annotations

import torch
from torch import nn
from typing_extensions import override

from medveil.nn.unet import layers


class SiameseDiscriminator(nn.Module):
    """A Siamese discriminator: whether a pair of images shows the same subject.

    One CNN backbone embeds each image (four 3×3 conv + batch norm + ReLU + max-pool stages, global
    average pooling, a linear layer to ``embedding`` features); two fully connected layers on
    ``|e_i - e_j|`` and ``e_i * e_j`` give one logit. Paper PN uses a 3-D DenseNet backbone; this
    small one trains on a CPU, on images (``dims=2``) or volumes (``dims=3``: every shape below
    gains a depth axis, ``(B, 2, D, H, W)``).

    ``forward`` takes a pair packed as two channels, ``(B, 2, H, W)`` in ``[0, 1]`` (so the one
    training loop can feed it like any image model), and returns ``(B,)`` logits (sigmoid: the
    probability of "same subject"). :meth:`embed` maps ``(B, 1, H, W)`` to ``(B, embedding)``.
    """

    def __init__(self, width: int = 16, embedding: int = 64, dims: int = 2):
        super().__init__()
        conv, norm, pool, _ = layers(dims)
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        stages = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            stages += [conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True), pool(2)]
        average = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.dims = dims
        self.backbone = nn.Sequential(*stages, average, nn.Flatten(), nn.Linear(chans[-1], embedding))
        self.head = nn.Sequential(nn.Linear(2 * embedding, embedding), nn.ReLU(inplace=True), nn.Linear(embedding, 1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Return the backbone's features of a batch of images ``(B, C, H, W)`` (or volumes)."""
        return self.backbone(x)

    def compare(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits for pairs of ``(B, 1, H, W)`` (or ``(B, 1, D, H, W)``) batches."""
        both = self.embed(torch.cat([a, b]))
        ea, eb = both[: len(a)], both[len(a):]
        return self.head(torch.cat([(ea - eb).abs(), ea * eb], dim=1)).squeeze(1)

    @override
    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.compare(pairs[:, :1], pairs[:, 1:2])


def pair_accuracy(logits: torch.Tensor, same: torch.Tensor) -> float:
    """Share of pairs whose ``same`` (0/1) label the discriminator's ``logits`` get right (logit > 0: same)."""
    return float(((logits > 0).float() == same).float().mean())
