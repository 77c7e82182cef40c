"""VAE + intensity mapping (paper VAE): a variational autoencoder's reconstruction, then a secret intensity map.

Only paper VAE's abstract is available to us; it names the two stages and trains nothing else.
Our reading, where the abstract is silent:

* The data owner trains a small convolutional VAE (:class:`medveil.nn.ConvVAE`) on its own
  images, unsupervised, with the one training loop (:func:`medveil.training.vae.train_vae`).
* Obfuscation reconstructs each image through the VAE with the *mean* latent code (no sampling,
  so the output is deterministic), rounds it to 8 bits, and maps it with the non-bijective
  intensity mapping of paper NB (``levels`` N). The mapping's secret is derived from the key.
* The trained weights are key material: an attacker holding them could undo half the pipeline.
  They are written beside the key file (``<key>.vae.pt``; :mod:`medveil.schemes._weights`).

Images: ``(..., size, size)`` uint8 (``channels=1``) or ``(..., size, size, 3)`` (``channels=3``).
Output: uint8 of the same shape, values in ``[0, levels)``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from typing_extensions import override

from medveil.errors import InputError, ParameterError
from medveil.keys import SECRET_BYTES, Key
from medveil.schemes._weights import WEIGHT_PARAMS, check_weight_params, load_weights, save_key_with_weights
from medveil.schemes.base import Scheme, check_params, image_shape_8bit, int_param, register
from medveil.schemes.intensity import IntensityMapping

WEIGHTS_SUFFIX = ".vae.pt"


@register
class VAEObfuscation(Scheme):
    """Mean VAE reconstruction followed by a keyed intensity mapping (see the module docstring).

    Params: ``levels`` N (2–256), ``size`` (image side, divisible by 8), ``channels`` 1 or 3,
    ``latent`` (code size), ``weights`` (file name beside the key) and ``weights_sha256``.
    Keys come from :func:`create_vae_key` (``medveil vae train``), never from ``keygen``.
    """

    name = "vae"
    trained_key = True

    @override
    @classmethod
    def params_label(cls, params: Mapping[str, Any]) -> str:
        return f"levels={params['levels']}"  # the rest is architecture and key material

    @override
    def describe(self) -> str:
        p = self.params
        return (f"vae(levels={p['levels']}, size={p['size']}, channels={p['channels']}, latent={p['latent']}) "
                f"key {self.key.fingerprint}, weights {p['weights']}")

    @override
    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        check_params(params, {"levels", "size", "channels", "latent"} | WEIGHT_PARAMS, cls.name)
        weights = check_weight_params(params, cls.name, "`medveil vae train`")
        size = int_param(params, "size", 64, 8, 4096)
        if size % 8:
            raise ParameterError(f"size must be divisible by 8, got {size}")
        return {"levels": int_param(params, "levels", 256, 2, 256), "size": size,
                "channels": int_param(params, "channels", 1, allowed=(1, 3)),
                "latent": int_param(params, "latent", 64, 1, 4096), **weights}

    def __init__(self, key: Key):
        from medveil.nn import ConvVAE

        super().__init__(key)
        self.model = ConvVAE(self.params["size"], self.params["channels"], self.params["latent"])
        self.model.load_state_dict(load_weights(key))
        self.model.eval()
        self.mapping = IntensityMapping(_mapping_key(key))

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Return the VAE's mean reconstruction of ``images`` as uint8, same shape (the first stage alone)."""
        import torch

        from medveil.data.pipeline import channels_first
        from medveil.training.loop import apply_batched

        images = np.asarray(images)
        shape = self._image_shape(images)
        # On the CPU whatever --device says: a key must give the same bytes on every machine.
        recon = apply_batched(self.model, channels_first(images.reshape((-1, *shape))),
                              call=lambda model, x: torch.sigmoid(model(x)), device="cpu")
        recon = (recon * 255).round().astype(np.uint8)
        recon = recon[:, 0] if self.params["channels"] == 1 else recon.transpose(0, 2, 3, 1)
        return recon.reshape(images.shape)

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.mapping(self.reconstruct(images))

    def _image_shape(self, images: np.ndarray) -> tuple[int, ...]:
        side, channels = self.params["size"], self.params["channels"]
        shape = image_shape_8bit(images, channels, self.name)
        if shape[:2] != (side, side):
            layout = f"(..., {side}, {side})" if channels == 1 else f"(..., {side}, {side}, 3)"
            raise InputError(f"this vae key takes images {layout}, got shape {images.shape}")
        return shape


def _mapping_key(key: Key) -> Key:
    """Return the intensity-mapping key inside a vae key: its secret is derived from the vae key's stream."""
    params = {"bits": 8, "signed": False, "levels": key.params["levels"]}
    return Key("intensity", IntensityMapping.validate_params(params), key.stream("intensity-secret").read(SECRET_BYTES))


def create_vae_key(model, path: str | os.PathLike, levels: int, size: int, channels: int) -> Key:
    """Save ``model``'s weights beside ``path`` and a new vae key for them at ``path``; returns the loaded key.

    Both files are written with mode 0600; an existing key or weights file is never replaced.
    """
    return save_key_with_weights(model, path, VAEObfuscation.name, WEIGHTS_SUFFIX, VAEObfuscation.validate_params,
                                 {"levels": levels, "size": size, "channels": channels, "latent": model.mu.out_features})
