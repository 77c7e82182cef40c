"""Secret keys: generation, serialisation, fingerprints and deterministic expansion.

A :class:`Key` holds 256 bits from :mod:`secrets` plus the scheme name and parameters it was made
for. Everything a scheme derives from it (permutations, bit masks, choices) comes from
:class:`KeyStream`, an HMAC-SHA256 counter-mode stream keyed by the secret and separated by a
label, so two derivations never share bytes and no NumPy or :mod:`random` generator is involved.

Key files are JSON, written with mode 0600, never silently overwritten, and carry a format version
and a fingerprint that is checked on load (a tampered or truncated key is refused). With a
passphrase the secret is stored encrypted: scrypt (memory-hard, 64 MiB) derives a 256-bit key from
the passphrase and a random salt, and AES-256-GCM encrypts the secret with the key's public part
(version, scheme, parameters) as associated data, so neither the secret nor the parameters can be
changed unnoticed. A copied backup or a synced home folder then holds nothing usable without the
passphrase.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medveil.errors import KeyEncryptedError, KeyFileError, SchemeMismatchError

FORMAT_VERSION = 1
SECRET_BYTES = 32
PASSPHRASE_ENV = "MEDVEIL_KEY_PASSPHRASE"
# scrypt cost: 2**16 x 8 x 128 bytes = 64 MiB and about 0.2 s per load; the salt makes each file's cost its own.
SCRYPT_COST = {"n": 2**16, "r": 8, "p": 1}
_BLOCK = hashlib.sha256().digest_size


class KeyPermissionWarning(UserWarning):
    """A key file others can read (as ssh warns of a private key with loose permissions)."""


warnings.simplefilter("always", KeyPermissionWarning)  # every load of such a key says so, not only the first


class KeyStream:
    """An endless deterministic byte stream: HMAC-SHA256(secret, label || counter), block after block.

    Parameters
    ----------
    secret : bytes
        The key's secret material.
    label : str
        Domain separation: streams with different labels are independent.
    """

    def __init__(self, secret: bytes, label: str):
        self._mac = hmac.new(secret, label.encode() + b"\x00", hashlib.sha256)
        self._counter = 0
        self._buffer = b""

    def read(self, n: int) -> bytes:
        """Return the next ``n`` bytes of the stream."""
        blocks_needed = -(-(n - len(self._buffer)) // _BLOCK)
        chunks = [self._buffer]
        for _ in range(max(blocks_needed, 0)):
            mac = self._mac.copy()
            mac.update(self._counter.to_bytes(8, "big"))
            chunks.append(mac.digest())
            self._counter += 1
        data = b"".join(chunks)
        self._buffer = data[n:]
        return data[:n]

    def uint64(self, n: int) -> np.ndarray:
        """``n`` uniform 64-bit unsigned integers."""
        return np.frombuffer(self.read(8 * n), dtype=">u8").astype(np.uint64)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` uniform floats in [0, 1), 53 random bits each."""
        return (self.uint64(n) >> np.uint64(11)).astype(np.float64) / 2.0**53

    def below(self, bounds: np.ndarray | int) -> np.ndarray:
        """Uniform integers ``0 <= x < bound`` for each bound (int64 array), without modulo bias.

        Rejection sampling: a draw at or above the largest multiple of ``bound`` below 2**64 is
        drawn again.
        """
        bounds = np.atleast_1d(np.asarray(bounds, dtype=np.uint64))
        if (bounds == 0).any():
            raise ValueError("bounds must be positive")
        # 2**64 mod b, computed without overflowing: (2**64 - b) mod b
        limits = np.uint64(0) - ((np.uint64(0) - bounds) % bounds)
        draws = self.uint64(bounds.size)
        rejected = (limits != 0) & (draws >= limits)
        while rejected.any():
            draws[rejected] = self.uint64(int(rejected.sum()))
            rejected = (limits != 0) & (draws >= limits)
        return (draws % bounds).astype(np.int64)

    def permutation(self, n: int) -> np.ndarray:
        """Return a uniform random permutation of ``range(n)`` (Fisher–Yates), as int64."""
        perm = np.arange(n, dtype=np.int64)
        if n < 2:
            return perm
        swaps = self.below(np.arange(n, 1, -1, dtype=np.int64))  # j_i uniform in [0, i] for i = n-1..1
        for i, j in zip(range(n - 1, 0, -1), swaps.tolist()):
            perm[i], perm[j] = perm[j], perm[i]
        return perm

    def bits(self, n: int) -> np.ndarray:
        """``n`` uniform bits as a bool array."""
        raw = np.frombuffer(self.read(-(-n // 8)), dtype=np.uint8)
        return np.unpackbits(raw)[:n].astype(bool)


@dataclass(frozen=True)
class Key:
    """A secret key for one scheme with fixed parameters.

    Attributes
    ----------
    scheme : str
        Registered scheme name, e.g. ``"intensity"``.
    params : Mapping[str, Any]
        JSON-serialisable scheme parameters, already validated by the scheme.
    secret : bytes
        ``SECRET_BYTES`` bytes from :mod:`secrets`. Never printed (``repr`` hides it).
    version : int
        Key file format version.
    origin : Path or None
        The file the key was loaded from (not part of the key): schemes whose key material has a
        companion file, such as trained weights, find it beside the key.
    """

    scheme: str
    params: Mapping[str, Any]
    secret: bytes = field(repr=False)
    version: int = FORMAT_VERSION
    origin: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def new(cls, scheme: str, params: Mapping[str, Any], secret: bytes | None = None) -> "Key":
        """Return a fresh key. Use :func:`medveil.schemes.generate_key`, which validates ``params`` first.

        ``secret`` (default: new bytes from :mod:`secrets`) is for keys a run must be able to make
        again, from :func:`derive_secret`; never for a hospital's key.
        """
        if secret is None:
            secret = secrets.token_bytes(SECRET_BYTES)
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"a key secret is {SECRET_BYTES} bytes, got {len(secret)}")
        return cls(scheme=scheme, params=dict(params), secret=secret)

    @property
    def fingerprint(self) -> str:
        """32 hex characters identifying this key; safe to share (reveals nothing of the secret)."""
        mac = hmac.new(self.secret, b"medveil-fingerprint\x00" + self._public_bytes(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def stream(self, label: str) -> KeyStream:
        """Return an independent deterministic stream for ``label`` (e.g. ``"intensity/permutation"``)."""
        return KeyStream(self.secret, f"{self.scheme}/{label}")

    def require(self, scheme: str) -> None:
        """Raise :class:`SchemeMismatchError` unless this key was made for ``scheme``."""
        if self.scheme != scheme:
            raise SchemeMismatchError(
                f"this key was made for the '{self.scheme}' scheme, not '{scheme}' "
                f"(fingerprint {self.fingerprint})"
            )

    def _public_bytes(self) -> bytes:
        return json.dumps(
            {"version": self.version, "scheme": self.scheme, "params": self.params}, sort_keys=True
        ).encode()

    def to_json(self, passphrase: str | None = None) -> str:
        """Return the key file's text; with ``passphrase``, the secret is stored encrypted (see the module docstring)."""
        doc = {"medveil_key_version": self.version, "scheme": self.scheme, "params": dict(self.params),
               "fingerprint": self.fingerprint}
        if passphrase is None:
            doc["secret"] = base64.b64encode(self.secret).decode()
        else:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
            sealed = AESGCM(_passphrase_key(passphrase, salt, SCRYPT_COST)).encrypt(nonce, self.secret,
                                                                                   self._public_bytes())
            doc["encrypted_secret"] = {"kdf": "scrypt", **SCRYPT_COST, "salt": _b64(salt), "cipher": "AES-256-GCM",
                                       "nonce": _b64(nonce), "ciphertext": _b64(sealed)}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "key", passphrase: str | None = None) -> "Key":
        """Parse and verify a key file's text; an encrypted secret needs its ``passphrase``."""
        doc = public_part(text, source)
        try:
            if "encrypted_secret" in doc:
                secret = _open_secret(doc, source, passphrase)
            else:
                secret = base64.b64decode(doc["secret"], validate=True)
            key = cls(scheme=str(doc["scheme"]), params=dict(doc["params"]), secret=secret)
            stored = str(doc["fingerprint"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFileError(f"{source}: malformed key ({exc.__class__.__name__}: {exc})") from None
        if len(secret) != SECRET_BYTES:
            raise KeyFileError(f"{source}: secret has {len(secret)} bytes, expected {SECRET_BYTES}")
        if not hmac.compare_digest(stored, key.fingerprint):
            raise KeyFileError(f"{source}: fingerprint mismatch: the key file was altered or corrupted")
        return key

    def save(self, path: str | os.PathLike, overwrite: bool = False, passphrase: str | None = None) -> Path:
        """Write the key atomically with mode 0600, its secret encrypted under ``passphrase`` if given.

        Refuses to replace an existing file unless asked.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise KeyFileError(f"{path}: already exists; refusing to overwrite a key (choose another name)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".medveil-key-", dir=path.parent)  # mkstemp creates 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.to_json(passphrase))
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # fails if someone created `path` meanwhile
                os.unlink(tmp)
        except FileExistsError:
            os.unlink(tmp)
            raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, scheme: str | None = None, passphrase: str | None = None) -> "Key":
        """Read and verify a key file; with ``scheme``, also check the key was made for it.

        An encrypted key is opened with ``passphrase``, or else the ``MEDVEIL_KEY_PASSPHRASE``
        environment variable; without either it raises :class:`KeyEncryptedError`.
        """
        path = Path(path)
        text = read_key_text(path)
        passphrase = passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV)
        key = dataclasses.replace(cls.from_json(text, source=str(path), passphrase=passphrase), origin=path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            warnings.warn(KeyPermissionWarning(
                f"{path}: key file is readable by others (mode {mode:04o}); chmod 600 {path}"), stacklevel=2)
        if scheme is not None:
            key.require(scheme)
        return key


def derive_secret(master: bytes, label: str) -> bytes:
    """Key material for ``label`` from a random ``master`` secret (HMAC-SHA256, a PRF).

    Independent per label, and the same on every machine that holds ``master`` (the benchmark's cells).
    """
    return hmac.new(master, b"medveil-derive\x00" + label.encode(), hashlib.sha256).digest()[:SECRET_BYTES]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _passphrase_key(passphrase: str, salt: bytes, cost: Mapping[str, int]) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=int(cost["n"]), r=int(cost["r"]), p=int(cost["p"])).derive(passphrase.encode())


def _open_secret(doc: dict, source: str, passphrase: str | None) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if passphrase is None:
        raise KeyEncryptedError(f"{source}: the key is encrypted; give its passphrase (prompt, or {PASSPHRASE_ENV})")
    sealed = doc["encrypted_secret"]
    if sealed.get("kdf") != "scrypt" or sealed.get("cipher") != "AES-256-GCM":
        raise KeyFileError(f"{source}: unknown key encryption {sealed.get('kdf')!r}/{sealed.get('cipher')!r}")
    if not (2**14 <= int(sealed["n"]) <= 2**20 and 1 <= int(sealed["r"]) <= 16 and 1 <= int(sealed["p"]) <= 4):
        raise KeyFileError(f"{source}: implausible scrypt cost in the key file (altered?)")
    public = json.dumps({"version": doc["medveil_key_version"], "scheme": doc["scheme"], "params": doc["params"]},
                        sort_keys=True).encode()
    key = _passphrase_key(passphrase, base64.b64decode(sealed["salt"], validate=True), sealed)
    try:
        return AESGCM(key).decrypt(base64.b64decode(sealed["nonce"], validate=True),
                                   base64.b64decode(sealed["ciphertext"], validate=True), public)
    except InvalidTag:
        raise KeyFileError(f"{source}: wrong passphrase (or the key file was altered)") from None


def read_key_text(path: str | os.PathLike) -> str:
    """Return a key file's text; :class:`KeyFileError` in one line for a missing, unreadable or binary file (an image, say)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a medveil key (binary, not JSON text)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key ({exc.strerror or exc.__class__.__name__})") from None


def public_part(text: str, source: str = "key") -> dict:
    """Return a key file's parsed JSON, checked to be a key of a version this medveil reads; nothing is decrypted.

    ``medveil key info`` shows its ``scheme``, ``params`` and ``fingerprint`` (as stored: only
    loading the key verifies it) and whether the secret is encrypted.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{source}: not a medveil key (invalid JSON: {exc.msg})") from None
    if not isinstance(doc, dict) or "medveil_key_version" not in doc:
        raise KeyFileError(f"{source}: not a medveil key (no 'medveil_key_version')")
    if doc["medveil_key_version"] != FORMAT_VERSION:
        raise KeyFileError(
            f"{source}: key format version {doc['medveil_key_version']!r} is not supported "
            f"(this medveil reads version {FORMAT_VERSION})"
        )
    return doc
