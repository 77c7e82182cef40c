"""A small convolutional variational autoencoder (paper VAE's first stage)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override


class ConvVAE(nn.Module):
    """Three stride-2 convolutions down to a Gaussian latent code, three transposed convolutions up.

    Input ``(B, channels, size, size)`` float in ``[0, 1]``, ``size`` divisible by 8; output
    ``(B, channels, size, size)`` logits of the reconstruction (a sigmoid gives ``[0, 1]``). In
    training mode the code is sampled (reparameterisation); in eval mode the mean code is decoded,
    so the reconstruction is deterministic. After each forward pass :attr:`kl` holds the batch's
    mean KL divergence from the unit Gaussian prior, per latent dimension.
    """

    def __init__(self, size: int = 64, channels: int = 1, latent: int = 64, width: int = 32):
        super().__init__()
        if size % 8:
            raise ValueError(f"ConvVAE needs a size divisible by 8, got {size}")
        w, side = [width, 2 * width, 4 * width], size // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w[0], 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w[0], w[1], 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w[1], w[2], 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
        )
        flat = w[2] * side * side
        self.mu, self.logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, flat), nn.Unflatten(1, (w[2], side, side)), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(w[2], w[1], 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(w[1], w[0], 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(w[0], channels, 4, 2, 1),
        )
        self.kl = torch.zeros(())

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
        self.kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decoder(z)


class VAELoss(nn.Module):
    """Negative evidence lower bound per pixel: binary cross-entropy of the reconstruction plus ``beta`` × KL.

    Reads the KL term that ``model``'s last forward pass left in :attr:`ConvVAE.kl`, so the one
    training loop can call it as ``loss(outputs, targets)``. The KL is scaled from per latent
    dimension to per pixel so ``beta = 1`` is the plain ELBO.
    """

    def __init__(self, model: ConvVAE, beta: float = 1.0):
        super().__init__()
        self.model, self.beta = model, beta

    @override
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        reconstruction = F.binary_cross_entropy_with_logits(logits, targets)
        latent, pixels = self.model.mu.out_features, targets[0].numel()
        return reconstruction + self.beta * self.model.kl.to(reconstruction.device) * latent / pixels
