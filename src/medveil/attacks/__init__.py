"""Attacks by threat model: one protocol, one registry (see :mod:`medveil.attacks.base`), one file per attack.

Importing this package registers every built-in attack:

- the guesses every attack is measured against (baselines): prior-mean, label-mean;
- ciphertext-only: as-is, identity, code-cooccurrence, slot-correlation, position-correlation,
  kerckhoffs-unet, leading-bit, minimum-difference, jigsaw, smooth-unmix;
- known-pairs: known-pairs;
- oracle: chosen-plaintext (and its U-Net refinement), learned-reconstruction;

then, on first need, those of installed plugins (entry point group ``medveil.attacks``).
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
from medveil.attacks.baselines import LabelMean, PriorMean
from medveil.attacks.chosen_plaintext import (
    ChosenPlaintext,
    StructuralChosenPlaintext,
    TanakaChosenPlaintext,
    chosen_plaintext_attack,
)
from medveil.attacks.cooccurrence import CodeCooccurrence
from medveil.attacks.identity import AsIs, Identity
from medveil.attacks.jigsaw import Jigsaw
from medveil.attacks.kerckhoffs import Kerckhoffs
from medveil.attacks.known_pairs import (
    KnownPairsBlockKey,
    KnownPairsPositions,
    KnownPairsTable,
    known_pairs_attack,
)
from medveil.attacks.leading_bit import LeadingBit
from medveil.attacks.minimum_difference import MinimumDifference
from medveil.attacks.position_correlation import PositionCorrelation
from medveil.attacks.reconstruction import LearnedReconstruction, attacker_training
from medveil.attacks.slot_correlation import SlotCorrelation
from medveil.attacks.unmix import SmoothUnmix

__all__ = [
    "ATTACKER_DATA",
    "CAPABILITIES",
    "Attack",
    "AttackSpec",
    "AttackerView",
    "BlackBox",
    "ChosenPlaintext",
    "CodeCooccurrence",
    "AsIs",
    "Identity",
    "Jigsaw",
    "Kerckhoffs",
    "KnownPairsBlockKey",
    "KnownPairsPositions",
    "KnownPairsTable",
    "LabelMean",
    "LeadingBit",
    "LearnedReconstruction",
    "MinimumDifference",
    "PositionCorrelation",
    "PriorMean",
    "SlotCorrelation",
    "SmoothUnmix",
    "StructuralChosenPlaintext",
    "TanakaChosenPlaintext",
    "applicable_attacks",
    "attack_spec",
    "attacker_training",
    "available_attacks",
    "chosen_plaintext_attack",
    "known_pairs_attack",
    "oracle_view",
    "register_attack",
    "unregister_attack",
]
