"""``toy-shift``: adds a fixed offset to every 8-bit value, modulo 256 (no secret at all: a test scheme)."""

import numpy as np

from medveil.plugins import Parameter
from medveil.schemes import Scheme, register
from medveil.schemes.base import check_params, image_shape_8bit, int_param


@register
class ToyShift(Scheme):
    name = "toy-shift"
    parameters = (Parameter("offset", int, 128, "added to every value, modulo 256"),)

    @classmethod
    def validate_params(cls, params):
        check_params(params, {"offset"}, cls.name)
        return {"offset": int_param(params, "offset", 128, low=0, high=255)}

    def __call__(self, images):
        images = np.asarray(images)
        image_shape_8bit(images, 1, self.name)
        return (images + np.uint8(self.params["offset"])).astype(np.uint8)
