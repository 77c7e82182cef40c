"""Obfuscation schemes. Importing this package registers every built-in scheme; plugins' join on first need."""

from medveil.schemes.base import (
    Scheme,
    available_schemes,
    from_key,
    generate_key,
    register,
    scheme_class,
)
from medveil.schemes.adversarial import AdversarialEncoder
from medveil.schemes.composed import WarpSmooth
from medveil.schemes.intensity import IntensityMapping
from medveil.schemes.learnable import SKK, SKKSmooth, Tanaka
from medveil.schemes.setting import Setting
from medveil.schemes.shuffle import BlockShuffle
from medveil.schemes.structural import StructuralDeidentification
from medveil.schemes.vae import VAEObfuscation

__all__ = [
    "AdversarialEncoder",
    "BlockShuffle",
    "IntensityMapping",
    "SKK",
    "SKKSmooth",
    "Tanaka",
    "VAEObfuscation",
    "WarpSmooth",
    "Scheme",
    "Setting",
    "StructuralDeidentification",
    "available_schemes",
    "from_key",
    "generate_key",
    "register",
    "scheme_class",
]
