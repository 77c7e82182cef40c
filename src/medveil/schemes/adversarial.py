"""Adversarial identity-obfuscating encoder (paper PN, Privacy-Net) as a scheme.

The encoder E is trained in :mod:`medveil.privacynet` (against a Siamese same-subject
discriminator while a U-Net still segments its output). At test time the hospital keeps E: its
weights are the key (written beside the key file, :mod:`medveil.schemes._weights`), and
:class:`AdversarialEncoder` is E as a plain function on 8-bit images. The service receives
encoded images and runs the segmenter.

torch is imported only when a key is used, so ``import medveil`` stays light.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from medveil.errors import InputError, ParameterError
from medveil.keys import Key
from medveil.schemes._weights import WEIGHT_PARAMS, check_weight_params, load_weights, save_key_with_weights
from medveil.schemes.base import Scheme, check_params, image_shape_8bit, int_param, register

WEIGHTS_SUFFIX = ".encoder.pt"


@register
class AdversarialEncoder(Scheme):
    """A trained Privacy-Net encoder applied to 8-bit grayscale images.

    Params: ``size`` (image side, divisible by ``2**depth``), ``width`` and ``depth`` of the U-Net,
    ``lam`` (the λ it was trained with; informative), ``weights`` and ``weights_sha256``. Keys come
    from :func:`create_adversarial_key` (``medveil evaluate privacynet``), never from ``keygen``.

    Images ``(..., size, size)`` uint8; output uint8 of the same shape (the encoding, scaled to 0-255).
    """

    name = "adversarial"
    trained_key = True

    @classmethod
    def params_label(cls, params: Mapping[str, Any]) -> str:
        return f"lambda={params['lam']:g}"

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        check_params(params, {"size", "width", "depth", "lam"} | WEIGHT_PARAMS, cls.name)
        weights = check_weight_params(params, cls.name, "`medveil evaluate privacynet`")
        depth = int_param(params, "depth", 2, 1, 5)
        size = int_param(params, "size", 64, 8, 4096)
        if size % 2**depth:
            raise ParameterError(f"size must be divisible by 2**depth = {2**depth}, got {size}")
        lam = params.get("lam", 1.0)
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam) or lam < 0:
            raise ParameterError(f"lam must be a number of at least 0, got {lam!r}")
        return {"size": size, "width": int_param(params, "width", 16, 1, 256), "depth": depth, "lam": float(lam),
                **weights}

    def __init__(self, key: Key):
        from medveil.nn import UNet

        super().__init__(key)
        self.encoder = UNet(1, 1, self.params["width"], self.params["depth"])
        self.encoder.load_state_dict(load_weights(key))
        self.encoder.eval()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from medveil.train import apply_batched

        images = np.asarray(images)
        side = self.params["size"]
        if image_shape_8bit(images, 1, self.name) != (side, side):
            raise InputError(f"this adversarial key takes images (..., {side}, {side}), got shape {images.shape}")
        # On the CPU whatever --device says: a key must give the same bytes on every machine.
        encoded = apply_batched(self.encoder, images.reshape(-1, 1, side, side), call=encode, device="cpu")
        return (encoded * 255).round().astype(np.uint8).reshape(images.shape)


def create_adversarial_key(encoder, path: str | os.PathLike, size: int, lam: float) -> Key:
    """Save ``encoder``'s (a :class:`~medveil.nn.UNet`) weights beside ``path`` and a new adversarial key at ``path``.

    Returns the key as loaded from ``path``.
    """
    params = {"size": size, "width": encoder.out.in_channels, "depth": len(encoder.up), "lam": float(lam)}
    return save_key_with_weights(encoder, path, AdversarialEncoder.name, WEIGHTS_SUFFIX,
                                 AdversarialEncoder.validate_params, params)


def encode(encoder, x):
    """The encoding of ``(B, 1, H, W)`` float images in ``[0, 1]`` by a U-Net ``encoder``: its sigmoid output, same shape."""
    return encoder(x).sigmoid()
