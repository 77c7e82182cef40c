"""Training in one place: the one loop (:mod:`~medveil.training.loop`) and what trains on it.

- :mod:`~medveil.training.loop`: :func:`fit` (Adam, best-on-validation, resumable) and :class:`TrainConfig`;
- :mod:`~medveil.training.classification`: classifiers on images, for the utility evaluation and the service;
- :mod:`~medveil.training.segmentation`: the segmenter the service trains on images with label maps;
- :mod:`~medveil.training.vae`: the data owner's VAE, whose weights a vae key holds.

Attackers' networks (attacks/) and Privacy-Net (privacynet/) train with the same loop.
"""

from medveil.training.loop import TrainConfig, TrainResult, apply_batched, fit, predict, seed_everything

__all__ = ["TrainConfig", "TrainResult", "apply_batched", "fit", "predict", "seed_everything"]
