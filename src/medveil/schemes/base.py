"""The protocol every obfuscation scheme follows, and the registry that finds them by name.

A scheme is bound to one :class:`~medveil.keys.Key` at construction and is then a plain callable
on arrays: ``scheme(images) -> obfuscated``. Images are ``(H, W)``, ``(H, W, C)`` or any batch
of those (``(B, H, W[, C])``, volumes, multi-frame); each scheme documents the dtypes and value
ranges it accepts and raises :class:`~medveil.errors.InputError` for anything else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import numpy as np

from medveil.errors import InputError, ParameterError
from medveil.keys import Key
from medveil.plugins import Parameter, Registry

_REGISTRY: Registry[type["Scheme"]] = Registry("scheme", "medveil.schemes")


class Scheme(ABC):
    """An obfuscation bound to one key.

    Subclasses set :attr:`name`, implement :meth:`validate_params` and :meth:`__call__`, and are
    registered with :func:`register`.
    """

    name: ClassVar[str]
    #: Parameters that results name only where they differ from the scheme's default.
    background_params: ClassVar[frozenset[str]] = frozenset({"bits", "signed", "channels"})
    #: Keys are trained on data (not drawn by :func:`generate_key`).
    trained_key: ClassVar[bool] = False
    #: What ``medveil keygen -p name=value`` offers (checked again by :meth:`validate_params`).
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    #: Designed by medveil, not published: its cards say "not yet attacked" until an attack written against
    #: its own structure (an :class:`~medveil.attacks.AttackSpec` whose ``written_for`` names it) has run.
    designed_here: ClassVar[bool] = False

    def __init__(self, key: Key):
        key.require(self.name)
        self.key = key
        self.params: dict[str, Any] = self.validate_params(key.params)
        if self.params != dict(key.params):
            raise ParameterError(
                f"key {key.fingerprint} holds non-canonical parameters {dict(key.params)}; "
                "it was not made by medveil keygen"
            )

    @classmethod
    @abstractmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``params`` and return them complete, with defaults filled in.

        Raises :class:`~medveil.errors.ParameterError` for unknown names or bad values.
        """

    @classmethod
    def params_label(cls, params: Mapping[str, Any]) -> str:
        """How results name a key's settings, e.g. ``levels=50`` or ``block=4``."""
        defaults = cls.validate_params({})
        shown = {k: v for k, v in params.items() if k not in cls.background_params or v != defaults.get(k)}
        return ";".join(f"{k}={v}" for k, v in sorted(shown.items()))

    @abstractmethod
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Obfuscate ``images``; the output has the same shape."""

    @property
    def input_dtype(self) -> np.dtype:
        """The integer type of the samples this key maps (what integral float input is converted to)."""
        return np.dtype(np.uint8)

    @property
    def channels(self) -> int | None:
        """The colour channels this key's images have (1 grayscale, 3 colour).

        None where the scheme maps each value on its own and takes either (intensity).
        """
        return self.params.get("channels")

    @property
    def output_bits(self) -> int | None:
        """Significant bits of the output samples, if narrower than the output dtype."""
        return None

    def describe(self) -> str:
        """One line for people: scheme, parameters and key fingerprint."""
        args = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({args}) key {self.key.fingerprint}"


def register(cls: type[Scheme]) -> type[Scheme]:
    """Class decorator adding a scheme to the registry under ``cls.name``."""
    return _REGISTRY.add(cls.name, cls)


def available_schemes() -> list[str]:
    """Names of every registered scheme (plugins' included), sorted."""
    return _REGISTRY.names()


def scheme_class(name: str) -> type[Scheme]:
    """Return the scheme class registered as ``name``; :class:`~medveil.errors.ParameterError` naming the others if none is."""
    return _REGISTRY[name]


def generate_key(scheme: str, **params: Any) -> Key:
    """Return a new secret key for ``scheme``; ``params`` are checked and completed by the scheme."""
    return Key.new(scheme, scheme_class(scheme).validate_params(params))


def from_key(key: Key) -> Scheme:
    """Return the scheme a key was made for, bound to it."""
    return scheme_class(key.scheme)(key)


def image_shape_8bit(images: np.ndarray, channels: int, scheme: str) -> tuple[int, ...]:
    """``(H, W)`` or ``(H, W, 3)`` of 8-bit ``images`` laid out as a key's ``channels`` say.

    For schemes on 8-bit images, grayscale ``(..., H, W)`` or colour ``(..., H, W, 3)``; raises
    :class:`InputError` for another dtype or layout.
    """
    if images.dtype != np.uint8:
        raise InputError(f"{scheme} takes 8-bit images, got {images.dtype}")
    if channels == 3:
        if images.ndim < 3 or images.shape[-1] != 3:
            raise InputError(f"this {scheme} key is for colour images (..., H, W, 3), got shape {images.shape}")
        return images.shape[-3:]
    if images.ndim < 2:
        raise InputError(f"{scheme} needs images of at least 2 dimensions, got shape {images.shape}")
    return images.shape[-2:]


def int_param(params: Mapping[str, Any], name: str, default: int, low: int = 1, high: int | None = None,
              allowed: tuple[int, ...] | None = None) -> int:
    """``params[name]`` (or ``default``) checked to be an int in ``[low, high]`` (or one of ``allowed``)."""
    value = params.get(name, default)
    ok = isinstance(value, int) and not isinstance(value, bool)
    if allowed:
        ok, wanted = ok and value in allowed, " or ".join(map(str, allowed))
    else:
        ok = ok and value >= low and (high is None or value <= high)
        wanted = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
    if not ok:
        raise ParameterError(f"{name} must be {wanted}, got {value!r}")
    return value


def check_params(params: Mapping[str, Any], allowed: set[str], scheme: str) -> None:
    """Raise :class:`ParameterError` naming any parameter ``scheme`` does not take."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ParameterError(
            f"scheme '{scheme}' takes no parameter {', '.join(unknown)} "
            f"(it takes: {', '.join(sorted(allowed))})"
        )
