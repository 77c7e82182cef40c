"""The errors medveil raises on purpose.

Each carries a one-line message meant for the person at the terminal; the CLI prints it as is
and exits non-zero. Anything else escaping the library is a bug.
"""


class MedveilError(Exception):
    """Base class: a problem with the user's input, key or files, explained in one line."""


class KeyFileError(MedveilError):
    """A key file is missing, malformed, of an unknown version, or fails its fingerprint check."""


class KeyEncryptedError(KeyFileError):
    """A key file's secret is encrypted and no passphrase was given."""


class SchemeMismatchError(MedveilError):
    """A key was made for another scheme or other parameters than the ones asked for."""


class ParameterError(MedveilError):
    """A scheme parameter is unknown or out of range."""


class InputError(MedveilError):
    """An image is unreadable, of an unsupported format, or of a dtype/range the key cannot map."""


class RefusedError(InputError):
    """The gate refused an image (text in its pixels, samples no key maps).

    ``reason`` names the rule in a few words and never quotes the image (an audit log may hold it);
    the message may say what OCR read, for the person at the terminal.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # a worker process sends it back pickled; both arguments must travel
        return type(self), (str(self), self.reason)
