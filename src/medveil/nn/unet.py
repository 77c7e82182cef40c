"""U-Net in plain ``torch.nn``."""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    # Batch norm is not in paper NB's description; without it the attacker's training stalls at
    # the mean image for some keys, which would understate what an attacker recovers.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` down/up levels; ``depth=1`` is paper NB's attacker.

    Paper NB: conv block, max-pool, conv block, transposed conv, concatenation with the first block,
    per-pixel output. Each conv block is two 3×3 convolutions with batch norm and ReLU. Input ``(B, in_channels, H, W)`` with ``H, W`` divisible by ``2**depth``;
    output ``(B, out_channels, H, W)`` logits (apply a sigmoid for ``[0, 1]`` images).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16, depth: int = 1):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_conv_block(in_channels, widths[0])] +
                                  [_conv_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)
