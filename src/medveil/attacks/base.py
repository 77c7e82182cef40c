"""Threat models, the attacker's view, the attack protocol and the attack registry.

An attack declares what the attacker can do (its *capability*) and which plain data it is run
with; the protocol hands it exactly that and nothing more, in an :class:`AttackerView`:

- ``ciphertext-only``: the service itself. Every image it holds under the one key (the hospital's
  whole obfuscated set, training and test), their labels, and the scheme's public name and
  parameters (Kerckhoffs), but no oracle: the view has no black box at all.
- ``known-pairs``: k leaked (plain, obfuscated) pairs.
- ``oracle``: black-box queries to the obfuscation with the key (an insider, a shared tool).
  :class:`BlackBox` keeps the key in a separate process and counts every image sent through.

Attacker plain data: ``none``, ``public`` (other medical images) or ``prior`` (images like the
hospital's, never its test images). Attacks register with :func:`register_attack`; the CLI, the
privacy evaluation and the benchmark grid are all built from the registry.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from typing_extensions import override

from medveil.errors import InputError
from medveil.keys import Key
from medveil.plugins import Parameter, Registry

CAPABILITIES = ("ciphertext-only", "known-pairs", "oracle")
ATTACKER_DATA = ("none", "public", "prior")


def _serve(key: Key, conn) -> None:
    from medveil.schemes import from_key

    scheme = from_key(key)
    del key
    while True:
        images = conn.recv()
        if images is None:
            return
        try:
            conn.send(scheme(images))
        except Exception as exc:  # report to the caller instead of dying silently
            conn.send(exc)


class BlackBox:
    """Obfuscate arrays with a key that stays in another process.

    ``black_box(images) -> obfuscated`` for ``(n, H, W)`` or ``(H, W)`` arrays of the key's dtype.
    :attr:`queries` counts the images fed so far (a 2-D array counts as one). Use as a context
    manager, or call :meth:`close`.
    """

    __slots__ = ("_conn", "_process", "queries")

    def __init__(self, key: Key):
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(target=_serve, args=(key, theirs), daemon=True)
        self._process.start()  # start() drops its reference to the arguments, key included
        theirs.close()
        self._conn = ours
        self.queries = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Return the obfuscation of ``images`` (any shape the scheme takes), computed by the key's process."""
        images = np.asarray(images)
        self._conn.send(images)
        result = self._conn.recv()
        if isinstance(result, Exception):
            raise result
        self.queries += 1 if images.ndim == 2 else len(images)
        return result

    def close(self) -> None:
        """Ask the key's process to stop (waiting up to 10 s for it) and close the pipe to it."""
        if self._process.is_alive():
            self._conn.send(None)
            self._process.join(timeout=10)
        self._conn.close()

    def __enter__(self) -> "BlackBox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class AttackerView:
    """What one threat model grants an attacker; anything it does not grant is ``None``.

    Attributes
    ----------
    scheme, params : str, dict
        The scheme's public name and parameters (never the key).
    own : ndarray
        The attacker's own plain images ``(n, H, W[, C])`` uint8 (empty for ``none``).
    own_labels : ndarray or None
        Their labels ``(n,)``, where the attacker's data are labelled (``prior``).
    obfuscated_set, labels : ndarray or None
        ciphertext-only: every image the service holds under the key, and their labels. The set
        may be given as a function that computes it, called when an attack first asks for it
        (:meth:`require_obfuscated_set`): the prior-mean guess never does.
    pairs : (ndarray, ndarray) or None
        known-pairs: leaked plain images and their obfuscated versions.
    oracle : BlackBox or None
        oracle: the obfuscation with the key, as a black box.
    """

    scheme: str
    params: dict[str, Any]
    own: np.ndarray
    obfuscated_set: np.ndarray | Callable[[], np.ndarray] | None = None
    labels: np.ndarray | None = None
    pairs: tuple[np.ndarray, np.ndarray] | None = None
    oracle: BlackBox | None = field(default=None, repr=False)
    own_labels: np.ndarray | None = None

    def require_oracle(self, attack: str) -> BlackBox:
        """Return the black box, or :class:`InputError` naming ``attack`` where this threat model grants none."""
        if self.oracle is None:
            raise InputError(f"{attack} needs oracle access to the obfuscation, which this threat model does not grant")
        return self.oracle

    def require_pairs(self, attack: str) -> tuple[np.ndarray, np.ndarray]:
        """Return the leaked ``(plain, obfuscated)`` pairs, or :class:`InputError` naming ``attack`` where none are granted."""
        if self.pairs is None:
            raise InputError(f"{attack} needs leaked (plain, obfuscated) pairs, which this threat model does not grant")
        return self.pairs

    def require_obfuscated_set(self, attack: str) -> np.ndarray:
        """Return the service's obfuscated images, or :class:`InputError` naming ``attack`` where they are not granted."""
        if self.obfuscated_set is None:
            raise InputError(f"{attack} needs the service's obfuscated set, which this threat model does not grant")
        if callable(self.obfuscated_set):
            self.obfuscated_set = self.obfuscated_set()
        return self.obfuscated_set


def oracle_view(black_box: BlackBox, own: np.ndarray | None) -> AttackerView:
    """Return the view of an attacker with oracle access and ``own`` plain images (the papers' threat actor)."""
    own = np.zeros((0, 1, 1), np.uint8) if own is None else own
    return AttackerView("", {}, own, oracle=black_box)


class Attack(ABC):
    """Every attack: learn from what its threat model grants, then reconstruct intercepted images.

    Images are 8-bit ``(n, H, W)`` or ``(n, H, W, 3)`` uint8 arrays; reconstructions are the same
    shape and dtype.
    """

    name: str

    @abstractmethod
    def fit(self, view: AttackerView) -> "Attack":
        """Prepare the attack from what ``view`` grants; returns ``self``."""

    @abstractmethod
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        """Estimate the originals of intercepted obfuscated images."""


class SingleImageAttack(Attack):
    """An attack that needs nothing but each intercepted image: :meth:`fit` reads nothing from its view.

    ``bit`` is the leading bit assumed where the attack must guess a pixel's sign (0: dark stays dark).
    """

    def __init__(self, bit: int = 0):
        self.bit = bit

    @override
    def fit(self, view: AttackerView) -> "SingleImageAttack":
        return self


class ValueTableAttack(Attack):
    """An attack that ends in one table from each obfuscated value to an estimated plain value.

    :meth:`fit` sets :attr:`table` (float, one entry per obfuscated value); :meth:`reconstruct`
    looks every pixel up in it.
    """

    table: np.ndarray | None = None

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.table is None:
            raise RuntimeError("fit the attack first")
        return self.table[obfuscated].clip(0, 255).round().astype(np.uint8)


class PositionMapAttack(Attack):
    """An attack that ends in one affine map per pixel position, ``slope * obfuscated + offset``.

    :meth:`fit` sets :attr:`slope` and :attr:`offset` (float ``(H, W)``, e.g. with
    :meth:`undo_negations`); :meth:`reconstruct` applies them to images of that size.
    """

    slope: np.ndarray | None = None
    offset: np.ndarray | None = None

    def undo_negations(self, negated: np.ndarray) -> None:
        """Return the map that undoes negating the positions where ``negated`` (bool ``(H, W)``) is set."""
        self.slope, self.offset = np.where(negated, -1.0, 1.0), np.where(negated, 255.0, 0.0)

    @override
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        if self.slope is None:
            raise RuntimeError("fit the attack first")
        if obfuscated.shape[-2:] != self.slope.shape:
            raise InputError(f"{self.name} was fitted on {self.slope.shape} images, got {obfuscated.shape[-2:]}")
        return (self.slope * obfuscated + self.offset).clip(0, 255).round().astype(np.uint8)


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: its threat model, where it applies, and how to make it.

    Attributes
    ----------
    name : str
        What the CLI, rows and reports call it.
    capability : str
        One of :data:`CAPABILITIES`: what the protocol hands it.
    attacker_data : tuple of str
        The plain data (:data:`ATTACKER_DATA`) the benchmark runs it with.
    schemes : tuple of str, or None
        The schemes it applies to (None: every scheme).
    create : callable
        ``create(scheme, params, epochs, progress, **options) -> Attack`` from public information
        only; ``options`` are values of the declared ``parameters``, passed only when given.
    summary : str
        One line for ``medveil attack list``.
    parameters : tuple of Parameter
        The attack's own options (``medveil attack NAME -p name=value``).
    images_only : bool
        It needs nothing but the intercepted images (and its plain data), so an attacker of any
        threat model can run it: verdicts count it in every threat model's column.
    baseline : bool
        A guess, not an attack (:mod:`medveil.attacks.baselines`): verdicts count the other attacks
        by how much they recover beyond the strongest guess of their threat model.
    written_for : tuple of str
        The schemes whose own structure it was written against (the jigsaw for block-shuffle), as
        opposed to the generic attacks that apply to many. A scheme designed here
        (:attr:`~medveil.schemes.Scheme.designed_here`) needs one of its own before its cards judge it.
    trains : bool
        It trains a network for the ``epochs`` it is made with: minutes where the others take
        seconds, so a grid whose cells run side by side starts these first.
    """

    name: str
    capability: str
    attacker_data: tuple[str, ...]
    schemes: tuple[str, ...] | None
    create: Callable[..., Attack]
    summary: str
    parameters: tuple[Parameter, ...] = ()
    images_only: bool = False
    baseline: bool = False
    written_for: tuple[str, ...] = ()
    trains: bool = False

    def applies_to(self, scheme: str, params: Mapping[str, Any] | None = None) -> bool:
        """Whether this attack runs against ``scheme`` (never against the plain baseline)."""
        return scheme != "plain" and (self.schemes is None or scheme in self.schemes)


_ATTACKS: Registry[AttackSpec] = Registry("attack", "medveil.attacks", InputError)


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Add ``spec`` to the registry; a name is taken once, and the threat model must be a known one."""
    if spec.capability not in CAPABILITIES:
        raise ValueError(f"attack {spec.name!r}: capability must be one of {', '.join(CAPABILITIES)}")
    if not spec.attacker_data or not set(spec.attacker_data) <= set(ATTACKER_DATA):
        raise ValueError(f"attack {spec.name!r}: attacker data must be among {', '.join(ATTACKER_DATA)}")
    return _ATTACKS.add(spec.name, spec)


def unregister_attack(name: str) -> None:
    """Remove an attack (tests, and plugins that replace one)."""
    _ATTACKS.remove(name)


def available_attacks() -> list[AttackSpec]:
    """Every registered attack, ordered by capability, then name."""
    return sorted(_ATTACKS, key=lambda a: (CAPABILITIES.index(a.capability), a.name))


def attack_spec(name: str) -> AttackSpec:
    """Return the registered attack ``name``'s spec (its threat model, data, schemes); an unknown name is one line."""
    return _ATTACKS[name]


def applicable_attacks(scheme: str, params: Mapping[str, Any] | None = None) -> list[AttackSpec]:
    """Return the registered attacks that apply to ``scheme`` with ``params``."""
    return [a for a in available_attacks() if a.applies_to(scheme, params)]
