"""medveil's composition: structural de-identification, then skk-smooth on what it draws.

``warp-smooth`` runs paper SD's pipeline (vectorize, order-preserving encryption of the
coordinates, rasterize; :class:`~medveil.schemes.StructuralDeidentification`) and paper LE's
skk-smooth (per-position negative-positive transform and key-chosen block smoothing;
:class:`~medveil.schemes.SKKSmooth`) on its raster, each stage under a key of its own derived from
this key's secret (:meth:`~medveil.keys.Key.stream`), so one key file holds both.

Why these two: each covers some of what the other leaves.

* structural alone is a picture anyone can look at (SSIM 0.31 to the original for size=32 in
  bench-full); skk-smooth on top hides it from the eye;
* skk-smooth alone gives its image back to a U-Net trained under keys of its own (SSIM 0.24-0.30,
  linking 26-31 % of patients); on top of structural, such a U-Net can at best give back the
  structural drawing: flat, posterized shapes at keyed, slightly warped coordinates, which
  re-identified 20 % of patients where the warp was not undone.

What it does not hide: everything structural keeps (shapes, their layout up to the warp, their
grey levels up to posterization) from an attacker who undoes skk-smooth, and skk-smooth's
per-position key is shared by every image. Deterministic per key. Server model: skk-smooth's
per-position one (``--model matched``), since the raster the service sees is skk-smooth's output.

Images ``(..., H, W)`` uint8 of any size (resized to ``size`` first), output ``(..., raster,
raster)`` uint8, as structural; grayscale only.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from typing_extensions import override

from medveil.errors import ParameterError
from medveil.keys import SECRET_BYTES, Key
from medveil.plugins import Parameter
from medveil.schemes.base import Scheme, check_params, from_key, int_param, register


@register
class WarpSmooth(Scheme):
    """Structural, then skk-smooth (see the module docstring). Params: ``size``, ``raster``, ``block``."""

    name = "warp-smooth"
    designed_here = True
    background_params = frozenset({"raster", "channels"})
    parameters = (Parameter("size", int, 32, "images are resized to size x size before tracing"),
                  Parameter("raster", int, 64, "output size: the raster is raster x raster"),
                  Parameter("block", int, 4, "skk-smooth's block size M"))

    @override
    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        check_params(params, {"size", "raster", "block"}, cls.name)
        valid = {"size": int_param(params, "size", 32, low=8), "raster": int_param(params, "raster", 64, low=8),
                 "block": int_param(params, "block", 4)}
        if valid["raster"] % valid["block"]:
            raise ParameterError(f"raster must be divisible by block, got raster={valid['raster']}, block={valid['block']}")
        return valid

    def __init__(self, key: Key):
        super().__init__(key)
        self.structural = from_key(self.stage_key("structural", {"size": self.params["size"],
                                                                 "raster": self.params["raster"], "channels": 1}))
        self.smooth = from_key(self.stage_key("skk-smooth", {"block": self.params["block"], "channels": 1}))

    @override
    @property
    def channels(self) -> int:
        return 1  # structural and skk-smooth run on one channel here

    def stage_key(self, scheme: str, params: dict[str, Any]) -> Key:
        """Return the key of one stage: its own secret, drawn from this key's stream under the stage's name."""
        return Key.new(scheme, params, self.key.stream(f"stage/{scheme}").read(SECRET_BYTES))

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.smooth(self.structural(images))
