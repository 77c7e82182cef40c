"""``toy-unshift`` (ciphertext-only): the offset is public, so subtracting it undoes toy-shift."""

import numpy as np

from medveil.attacks import Attack, AttackSpec, register_attack


class Unshift(Attack):
    name = "toy-unshift"

    def __init__(self, offset):
        self.offset = offset

    def fit(self, view):
        view.require_obfuscated_set(self.name)
        return self

    def reconstruct(self, obfuscated):
        return (obfuscated - np.uint8(self.offset)).astype(np.uint8)


register_attack(AttackSpec("toy-unshift", "ciphertext-only", ("none",), ("toy-shift",),
                           lambda scheme, params, epochs, progress: Unshift(params["offset"]),
                           "subtracts the public offset"))
