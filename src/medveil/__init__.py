"""medveil: obfuscate medical images with a secret key and measure what utility and privacy survive."""

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
