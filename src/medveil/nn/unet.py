"""U-Net in plain ``torch.nn``, on images (2-D) or volumes (3-D)."""

from __future__ import annotations

import torch
from torch import nn
from typing_extensions import override


def layers(dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    """``(Conv, BatchNorm, MaxPool, ConvTranspose)`` classes for ``dims`` = 2 or 3 spatial dimensions."""
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d
    if dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d
    raise ValueError(f"dims must be 2 or 3, got {dims}")


def _conv_block(cin: int, cout: int, dims: int) -> nn.Sequential:
    # Batch norm is not in paper NB's description; without it the attacker's training stalls at
    # the mean image for some keys, which would understate what an attacker recovers.
    conv, norm, _, _ = layers(dims)
    return nn.Sequential(
        conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` down/up levels; ``depth=1`` is paper NB's attacker.

    Paper NB: conv block, max-pool, conv block, transposed conv, concatenation with the first block,
    per-pixel output. Each conv block is two 3×3 convolutions with batch norm and ReLU. Input
    ``(B, in_channels, H, W)`` with ``H, W`` divisible by ``2**depth``; output ``(B, out_channels,
    H, W)`` logits (apply a sigmoid for ``[0, 1]`` images). With ``dims=3`` (paper PN's 3-D U-Net)
    every layer is its 3-D twin and the shapes gain a depth axis: ``(B, C, D, H, W)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16, depth: int = 1, dims: int = 2):
        super().__init__()
        conv, _, pool, up = layers(dims)
        widths = [width * 2**i for i in range(depth + 1)]
        self.dims = dims
        self.down = nn.ModuleList([_conv_block(in_channels, widths[0], dims)] +
                                  [_conv_block(widths[i], widths[i + 1], dims) for i in range(depth)])
        self.pool = pool(2)
        self.up = nn.ModuleList([up(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_conv_block(2 * widths[i], widths[i], dims) for i in reversed(range(depth))])
        self.out = conv(widths[0], out_channels, 1)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)
