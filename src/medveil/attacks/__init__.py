"""Attacks by threat model: one protocol, one registry (see :mod:`medveil.attacks.base`).

Importing this package registers every built-in attack.
"""

from medveil.attacks.base import (
    ATTACKER_DATA,
    CAPABILITIES,
    Attack,
    AttackerView,
    AttackSpec,
    BlackBox,
    applicable_attacks,
    attack_spec,
    available_attacks,
    oracle_view,
    register_attack,
    unregister_attack,
)
from medveil.attacks.baselines import Identity, KnownPairsTable
from medveil.attacks.chosen_plaintext import (
    ChosenPlaintext,
    StructuralChosenPlaintext,
    TanakaChosenPlaintext,
    chosen_plaintext_attack,
)
from medveil.attacks.ciphertext_only import LeadingBit, MinimumDifference
from medveil.attacks.cooccurrence import CodeCooccurrence
from medveil.attacks.reconstruction import LearnedReconstruction, attacker_training

__all__ = [
    "ATTACKER_DATA",
    "CAPABILITIES",
    "Attack",
    "AttackSpec",
    "AttackerView",
    "BlackBox",
    "ChosenPlaintext",
    "CodeCooccurrence",
    "Identity",
    "KnownPairsTable",
    "LeadingBit",
    "LearnedReconstruction",
    "MinimumDifference",
    "StructuralChosenPlaintext",
    "TanakaChosenPlaintext",
    "applicable_attacks",
    "attack_spec",
    "attacker_training",
    "available_attacks",
    "chosen_plaintext_attack",
    "oracle_view",
    "register_attack",
    "unregister_attack",
]
