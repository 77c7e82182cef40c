"""Adversarial identity-obfuscating encoder (paper PN, Privacy-Net) as a scheme.

The encoder E is trained in :mod:`medveil.privacynet.train` (against a Siamese same-subject
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
from typing_extensions import override

from medveil.errors import InputError, ParameterError
from medveil.keys import Key
from medveil.schemes._weights import WEIGHT_PARAMS, check_weight_params, load_weights, save_key_with_weights
from medveil.schemes.base import Scheme, check_params, image_shape_8bit, int_param, register

WEIGHTS_SUFFIX = ".encoder.pt"


@register
class AdversarialEncoder(Scheme):
    """A trained Privacy-Net encoder applied to 8-bit grayscale images or volumes.

    Params: ``dims`` (2: images, the default; 3: volumes), ``width`` and ``depth`` of the U-Net,
    ``lam`` (the λ it was trained with; informative), ``weights`` and ``weights_sha256``; for
    images ``size`` (the side, divisible by ``2**depth``), for volumes ``patch`` (the side of the
    sliding windows it runs in, as trained). Keys come from :func:`create_adversarial_key`
    (``medveil evaluate privacynet``), never from ``keygen``.

    Images ``(..., size, size)`` or volumes ``(..., D, H, W)`` of any size (a NIfTI volume's stored
    array) uint8; output uint8 of the same shape (the encoding, scaled to 0-255).
    """

    name = "adversarial"
    trained_key = True

    @override
    @classmethod
    def params_label(cls, params: Mapping[str, Any]) -> str:
        return f"lambda={params['lam']:g}" + ("-3d" if params.get("dims", 2) == 3 else "")

    @override
    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        check_params(params, {"size", "patch", "dims", "width", "depth", "lam"} | WEIGHT_PARAMS, cls.name)
        weights = check_weight_params(params, cls.name, "`medveil evaluate privacynet`")
        depth = int_param(params, "depth", 2, 1, 5)
        dims = int_param(params, "dims", 2, 2, 3)
        side_name = "size" if dims == 2 else "patch"
        side = int_param(params, side_name, 64 if dims == 2 else 32, 8, 4096)
        if side % 2**depth:
            raise ParameterError(f"{side_name} must be divisible by 2**depth = {2**depth}, got {side}")
        lam = params.get("lam", 1.0)
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam) or lam < 0:
            raise ParameterError(f"lam must be a number of at least 0, got {lam!r}")
        # 2-D keys written before volumes existed carry no dims; they must load unchanged.
        return {**({"dims": 3} if dims == 3 else {}), side_name: side, "width": int_param(params, "width", 16, 1, 256),
                "depth": depth, "lam": float(lam), **weights}

    def __init__(self, key: Key):
        from medveil.nn import UNet

        super().__init__(key)
        self.dims = self.params.get("dims", 2)
        self.encoder = UNet(1, 1, self.params["width"], self.params["depth"], self.dims)
        self.encoder.load_state_dict(load_weights(key))
        self.encoder.eval()

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        from medveil.nn.patches import whole_volume
        from medveil.training.loop import apply_batched

        images = np.asarray(images)
        if self.dims == 3:
            if images.ndim < 3 or images.dtype != np.uint8:
                raise InputError(f"this adversarial key takes 8-bit volumes (..., D, H, W), got {images.dtype} "
                                 f"of shape {images.shape}")
            shape, patch = images.shape[-3:], self.params["patch"]
            call = lambda m, x: whole_volume(m, x, patch).sigmoid()
        else:
            side = self.params["size"]
            if image_shape_8bit(images, 1, self.name) != (side, side):
                raise InputError(f"this adversarial key takes images (..., {side}, {side}), got shape {images.shape}")
            shape, call = (side, side), encode
        # On the CPU whatever --device says: a key must give the same bytes on every machine.
        encoded = apply_batched(self.encoder, images.reshape(-1, 1, *shape), batch_size=256 if self.dims == 2 else 2,
                                call=call, device="cpu")
        return (encoded * 255).round().astype(np.uint8).reshape(images.shape)


def create_adversarial_key(encoder, path: str | os.PathLike, size: int, lam: float) -> Key:
    """Save ``encoder``'s (a :class:`~medveil.nn.UNet`) weights beside ``path`` and a new adversarial key at ``path``.

    ``size``: the image side for a 2-D encoder, the sliding-window side for a 3-D one. Returns the
    key as loaded from ``path``.
    """
    params = {"dims": encoder.dims, "size" if encoder.dims == 2 else "patch": size, "width": encoder.out.in_channels,
              "depth": len(encoder.up), "lam": float(lam)}
    return save_key_with_weights(encoder, path, AdversarialEncoder.name, WEIGHTS_SUFFIX,
                                 AdversarialEncoder.validate_params, params)


def encode(encoder, x):
    """Return the encoding of ``(B, 1, H, W)`` float images in ``[0, 1]`` by a U-Net ``encoder``: its sigmoid output, same shape."""
    return encoder(x).sigmoid()
