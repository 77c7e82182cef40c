"""medveil: obfuscate medical images with a secret key and measure what utility and privacy survive.

Here: keys (:class:`Key`), schemes (:func:`generate_key`, :func:`from_key`) and the errors. The packages:

- `medveil.io`: reading and writing every format, the one gate out of the hospital, folder runs;
- `medveil.gateway`: the DICOM gateway, pull from a PACS, destinations, the pipeline's config;
- `medveil.schemes`: the obfuscation schemes and their registry;
- `medveil.attacks`: threat models, the attacker's view, every attack and the guesses they are measured against;
- `medveil.data`: datasets (Br35H, folders, simulated volumes) and `ObfuscatedFolder`;
- `medveil.evaluation`: utility and privacy evaluations, the shipped privacy cards, figures;
- `medveil.bench`: the privacy-utility grid and its report;
- `medveil.nn`, `medveil.training`, `medveil.privacynet`: networks, the one training loop, Privacy-Net;
- `medveil.service`: the ML service and the hospital's client;
- `medveil.transforms`, `medveil.metrics`: MONAI/torch transforms and the metrics.

The command line (``medveil --help``) is a thin layer over these.
"""

from medveil.errors import InputError, KeyFileError, MedveilError, ParameterError, SchemeMismatchError
from medveil.keys import Key
from medveil.schemes import Scheme, available_schemes, from_key, generate_key

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "Key",
    "KeyFileError",
    "MedveilError",
    "ParameterError",
    "Scheme",
    "SchemeMismatchError",
    "available_schemes",
    "from_key",
    "generate_key",
]
