"""The privacy cards medveil ships: the committed full benchmark's verdict per setting and threat model.

``cards.csv`` beside this module is a copy of ``docs/results/bench-full/cards.csv`` (a test keeps
them equal), so an installed medveil can say what a key's setting is worth without the benchmark's
outputs: ``keygen``, ``key info`` and ``obfuscate`` print :func:`verdict_lines`, ``keygen`` with no
scheme makes :func:`best_setting`, and a setting :func:`broken_under_service` needs ``--allow-broken``.

A card is about a setting (scheme and the parameters results name, ``Scheme.params_label``) on the
benchmark's data (Br35H, 8-bit grayscale, 64×64); a key of another setting (another bit depth,
colour) has no card, and is said to have none rather than given a neighbour's.
"""

from __future__ import annotations

import csv
import io
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping

from medveil.errors import InputError

# best first: a setting is ranked by its worst verdict, so "links" (no image recovered, patients
# re-identified) beats "partial" (coarse structure recovered)
LEVELS = ("holds", "links", "partial", "weak", "broken", "not yet attacked")  # unattacked: ranked last, unknown
SERVICE = "ciphertext-only"  # the threat model of the service itself: the one --allow-broken is about
TARGET_POINTS = 3  # a setting is worth using when its accuracy is within this many points of plain images'


@dataclass(frozen=True)
class Card:
    """One row of ``cards.csv``: the strongest attack on one setting under one threat model."""

    scheme: str
    params: str
    capability: str
    attack: str
    attacker_data: str
    ssim: float
    gain: float | None  # SSIM beyond the guess of this threat model (None in cards made before guesses were)
    linkage_top1: float | None
    linkage_chance: float | None
    verdict: str
    accuracy: float | None  # the setting's best server model, test accuracy in [0, 1]
    plain_accuracy: float | None  # plain images in the same run

    def line(self) -> str:
        """Return the card as one line.

        ``privacy card, ciphertext-only: links (kerckhoffs-unet, prior data: SSIM 0.24; re-identifies 26% of patients,
        chance 0.9%)``.
        """
        data = "no plain data" if self.attacker_data == "none" else f"{self.attacker_data} data"
        linked = (f"; re-identifies {self.linkage_top1:.0%} of patients, chance {self.linkage_chance:.1%}"
                  if self.linkage_top1 is not None and self.linkage_chance else "")
        over = f", {self.gain:+.2f} over the guess" if self.gain is not None else ""
        return f"privacy card, {self.capability}: {self.verdict} ({self.attack}, {data}: SSIM {self.ssim:.2f}{over}{linked})"


def _number(text: str) -> float | None:
    return float(text) if text else None


@functools.lru_cache(maxsize=1)
def shipped_cards() -> tuple[Card, ...]:
    """Every card in the package's ``cards.csv``, in its order.

    The guesses' rows (verdict ``guess``), which the cards' gains are measured from, are left out.
    """
    text = resources.files("medveil.evaluation").joinpath("cards.csv").read_text(encoding="utf-8")
    with io.StringIO(text, newline="") as fh:
        return tuple(Card(row["scheme"], row["params"], row["capability"], row["attack"], row["attacker_data"],
                          float(row["ssim"]), _number(row.get("gain", "")), _number(row["linkage_top1"]),
                          _number(row["linkage_chance"]),
                          row["verdict"], _number(row.get("accuracy", "")), _number(row.get("plain_accuracy", "")))
                     for row in csv.DictReader(fh) if row["verdict"] != "guess")


def setting_label(scheme: str, params: Mapping[str, Any]) -> str:
    """How the cards name a key's parameters (``levels=50``); ``params`` as a key holds them."""
    from medveil.schemes import scheme_class

    return scheme_class(scheme).params_label(params)


def cards_for(scheme: str, params: Mapping[str, Any]) -> dict[str, Card]:
    """Return the setting's card per threat model (``{}`` where the benchmark did not measure this setting)."""
    if scheme not in {c.scheme for c in shipped_cards()}:  # a plugin's scheme, or one this medveil lacks
        return {}
    label = setting_label(scheme, params)
    return {c.capability: c for c in shipped_cards() if (c.scheme, c.params) == (scheme, label)}


def verdict_lines(scheme: str, params: Mapping[str, Any]) -> list[str]:
    """One line per threat model on what the strongest attack medveil ran recovers under this setting."""
    cards = cards_for(scheme, params)
    if not cards:
        label = ";".join(f"{k}={v}" for k, v in params.items())
        return [f"no privacy card for {scheme} ({label}): the shipped cards (Br35H, 8-bit "
                "grayscale, docs/results/bench-full) did not measure this setting; run `medveil evaluate` or "
                "`medveil attack` on your data"]
    return [cards[cap].line() for cap in cards]


def _rank(cards: Mapping[str, Card]) -> tuple:
    service = cards.get(SERVICE)
    any_card = next(iter(cards.values()))
    return (LEVELS.index(service.verdict) if service else len(LEVELS),
            max(LEVELS.index(c.verdict) for c in cards.values()),
            not _useful(any_card), -(any_card.accuracy or 0.0))


def _useful(card: Card) -> bool:
    return (card.accuracy is not None and card.plain_accuracy is not None
            and card.accuracy >= card.plain_accuracy - TARGET_POINTS / 100)


def best_setting() -> tuple[str, dict[str, Any]]:
    """Return the setting the cards rate best, as ``(scheme, params)`` for ``generate_key``.

    Privacy first: by its verdict under ciphertext-only (the service's view), then its worst verdict under any
    threat model; among equals, one within :data:`TARGET_POINTS` of plain images' accuracy, then the most
    accurate. A setting within the accuracy target whose images the service recovers is not the default when
    one exists whose images it does not.
    """
    from medveil.schemes import Setting

    settings: dict[tuple[str, str], dict[str, Card]] = {}
    for c in shipped_cards():
        settings.setdefault((c.scheme, c.params), {})[c.capability] = c
    if not settings:
        raise InputError("the package's cards.csv is empty: reinstall medveil")
    scheme, params = min(settings, key=lambda s: _rank(settings[s]))
    return scheme, dict(Setting.from_row({"scheme": scheme, "params": params}).params)


def broken_under_service(scheme: str, params: Mapping[str, Any]) -> Card | None:
    """Return the ciphertext-only card when it says "broken" (the service recovers the images), else ``None``."""
    card = cards_for(scheme, params).get(SERVICE)
    return card if card and card.verdict == "broken" else None
