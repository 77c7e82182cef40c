"""The data owner's VAE for paper VAE's scheme (:mod:`medveil.schemes.vae`), trained on the one loop.

The trained weights are key material: :func:`medveil.schemes.vae.create_vae_key` writes them beside a
new key.
"""

from __future__ import annotations

import numpy as np

from medveil.data.pipeline import ImagePairs
from medveil.nn import ConvVAE, VAELoss
from medveil.training.loop import fit


def train_vae(images: np.ndarray, config, latent: int = 64, beta: float = 1.0, val_fraction: float = 0.1):
    """Train a :class:`~medveil.nn.ConvVAE` on the owner's uint8 images ``(n, S, S[, 3])``; returns ``(model, history)``.

    The one training loop (:func:`medveil.training.loop.fit`) with the negative ELBO as loss; the model
    kept is the one with the lowest validation loss.
    """
    n_val = max(1, int(len(images) * val_fraction))
    order = np.random.default_rng(config.seed).permutation(len(images))  # data order, not key material
    channels = 3 if images.ndim == 4 else 1
    model = ConvVAE(images.shape[1], channels, latent)
    train, val = images[order[n_val:]], images[order[:n_val]]
    result = fit(model, ImagePairs(train, train), ImagePairs(val, val), VAELoss(model, beta), config)
    model.eval()
    return model, result.history
