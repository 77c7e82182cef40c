"""Losses that are not in ``torch.nn``."""

from __future__ import annotations

import torch
from torch import nn


class GeneralisedDiceLoss(nn.Module):
    """Generalised Dice loss (Sudre et al. 2017), paper PN's segmentation loss.

    ``1 - 2 Σ_l w_l Σ_p y_lp ŷ_lp / Σ_l w_l Σ_p (y_lp + ŷ_lp)`` with ``w_l = 1 / (Σ_p y_lp)²``, over
    the whole batch, so that small classes count as much as large ones. ``logits`` ``(B, L, H, W)``
    (softmax inside); ``target`` ``(B, H, W)`` integer class indices in ``[0, L)``.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(logits, dim=1)
        onehot = nn.functional.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
        dims = (0, 2, 3)
        weights = 1.0 / (onehot.sum(dims) ** 2).clamp_min(1.0)  # a class absent from the batch gets weight 1
        intersection = (weights * (probabilities * onehot).sum(dims)).sum()
        total = (weights * (probabilities + onehot).sum(dims)).sum()
        return 1 - 2 * intersection / (total + self.eps)
