"""Attacks: one protocol (fit on what the attacker may see, then reconstruct), black-box access only."""

from medveil.attacks.base import Attack, BlackBox
from medveil.attacks.chosen_plaintext import (
    ChosenPlaintext,
    StructuralChosenPlaintext,
    TanakaChosenPlaintext,
    chosen_plaintext_attack,
)
from medveil.attacks.ciphertext_only import LeadingBit, MinimumDifference
from medveil.attacks.reconstruction import LearnedReconstruction, attacker_training

__all__ = [
    "Attack",
    "BlackBox",
    "ChosenPlaintext",
    "LeadingBit",
    "LearnedReconstruction",
    "MinimumDifference",
    "StructuralChosenPlaintext",
    "attacker_training",
    "TanakaChosenPlaintext",
    "chosen_plaintext_attack",
]
