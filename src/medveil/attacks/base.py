"""The attacker's view: a black box that obfuscates with the hospital's key, and the attack protocol.

Paper NB's threat actor can run the obfuscation tool on any images it likes but never holds the
key. :class:`BlackBox` enforces that: the key lives in a separate process, the attacker's process
holds only a pipe to it, and every image sent through is counted.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod

import numpy as np

from medveil.keys import Key


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
        images = np.asarray(images)
        self._conn.send(images)
        result = self._conn.recv()
        if isinstance(result, Exception):
            raise result
        self.queries += 1 if images.ndim == 2 else len(images)
        return result

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
            self._process.join(timeout=10)
        self._conn.close()

    def __enter__(self) -> "BlackBox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Attack(ABC):
    """Every attack: learn from what the attacker may see, then reconstruct intercepted images.

    Images are 8-bit grayscale ``(n, H, W)`` uint8 arrays; reconstructions are the same shape and
    dtype. ``attacker_images`` are plain images the attacker owns (public data, or data like the
    target's); it may feed any images it likes to ``black_box``.
    """

    name: str

    @abstractmethod
    def fit(self, black_box: BlackBox, attacker_images: np.ndarray) -> "Attack":
        """Prepare the attack; returns ``self``."""

    @abstractmethod
    def reconstruct(self, obfuscated: np.ndarray) -> np.ndarray:
        """Estimate the originals of intercepted obfuscated images."""
