"""A setting: one scheme with its public parameters, as the utility evaluation and the benchmark compare them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from medveil._files import slug
from medveil.keys import Key
from medveil.schemes.base import Scheme, from_key, scheme_class


@dataclass(frozen=True)
class Setting:
    """``scheme="plain"`` (no obfuscation), a registered scheme with its key parameters, or one given key.

    Without ``key`` every run draws a fresh key; with it every run uses that key (schemes whose
    keys must be trained, such as ``vae``, are evaluated this way).
    """

    scheme: str
    params: tuple[tuple[str, Any], ...] = ()
    key: Key | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_key(cls, key: Key) -> "Setting":
        """Return the setting ``key`` instantiates, holding the key."""
        setting = cls.from_row({"scheme": key.scheme, "params": scheme_class(key.scheme).params_label(key.params)})
        return replace(setting, key=key)

    @classmethod
    def from_row(cls, row: dict) -> "Setting":
        """Return the setting a CSV row names (``scheme`` and ``params`` as ``k=v;k=v``)."""
        params = tuple((k, int(v) if v.lstrip("-").isdigit() else v)
                       for k, v in (part.split("=", 1) for part in row["params"].split(";") if part))
        return cls(row["scheme"], params)

    @property
    def params_text(self) -> str:
        """The parameters as ``k=v;k=v``."""
        return ";".join(f"{k}={v}" for k, v in self.params)

    @property
    def slug(self) -> str:
        """One file-name stem for the setting (``intensity-levels50``), the same in every report."""
        return slug(self.scheme, self.params_text.replace(";", "-"))

    @property
    def label(self) -> str:
        """The scheme and its parameters, for tables and figures."""
        return self.scheme if not self.params else f"{self.scheme} {self.params_text}"

    def build_scheme(self, channels: int = 1) -> Scheme | None:
        """Return a scheme with a fresh in-memory key for images of ``channels`` channels, or ``None`` for plain.

        Schemes with a ``channels`` parameter get it from the data unless the setting fixes it.
        """
        if self.scheme == "plain":
            return None
        return from_key(self.key if self.key is not None else self.new_key(channels))

    def new_key(self, channels: int = 1, secret: bytes | None = None) -> Key:
        """Return a fresh in-memory key of this setting for images of ``channels`` channels (see :meth:`build_scheme`).

        ``secret``: the key's material, when the run must be able to make the same key again
        (:func:`medveil.keys.derive_secret`); default new bytes from :mod:`secrets`.
        """
        params = dict(self.params)
        cls = scheme_class(self.scheme)
        if "channels" in cls.validate_params({}):
            params.setdefault("channels", channels)
        return Key.new(self.scheme, cls.validate_params(params), secret)
