"""Trained weights as key material: written beside the key file, bound to it by their SHA-256.

Schemes whose secret is a trained network (VAE, adversarial encoder) keep the weights in
``<key file><suffix>`` (mode 0600) and the key's parameters carry ``weights`` (that file's name)
and ``weights_sha256``, so the key's fingerprint covers the weights and a key loaded with any
other weights file is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from medveil._files import atomic_path
from medveil.errors import KeyFileError, ParameterError, SchemeMismatchError
from medveil.keys import Key

WEIGHT_PARAMS = {"weights", "weights_sha256"}


def check_weight_params(params: Mapping[str, Any], scheme: str, how: str) -> dict[str, str]:
    """Return the ``weights`` and ``weights_sha256`` parameters, or a :class:`ParameterError` saying ``how`` to make a key."""
    for name in WEIGHT_PARAMS:
        if not isinstance(params.get(name), str):
            raise ParameterError(f"{scheme} keys hold trained weights: make one with {how}, not keygen")
    return {"weights": params["weights"], "weights_sha256": params["weights_sha256"]}


def load_weights(key: Key) -> dict:
    """Return the state dict stored beside ``key``'s file, checked against the key's ``weights_sha256``."""
    import torch

    if key.origin is None:
        raise KeyFileError(f"a {key.scheme} key must be loaded from its file (Key.load): its weights lie beside it")
    path = Path(key.origin).parent / key.params["weights"]
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: the weights of key {key.fingerprint} are missing") from None
    if hashlib.sha256(blob).hexdigest() != key.params["weights_sha256"]:
        raise SchemeMismatchError(f"{path}: these weights do not belong to key {key.fingerprint}")
    return torch.load(io.BytesIO(blob), weights_only=True)


def save_key_with_weights(model, path: str | os.PathLike, scheme: str, suffix: str,
                          validate: Callable[[Mapping[str, Any]], dict], params: Mapping[str, Any]) -> Key:
    """Write ``model``'s weights to ``<path><suffix>`` and a new ``scheme`` key for them at ``path``.

    ``params`` are the key's parameters other than the weights'; ``validate`` completes and checks
    them. Both files get mode 0600; an existing key or weights file is never replaced. Returns the
    key as loaded from ``path``.
    """
    import torch

    path = Path(path)
    weights = path.with_name(path.name + suffix)
    if path.exists() or weights.exists():
        raise KeyFileError(f"{path if path.exists() else weights}: already exists; refusing to overwrite key material")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    blob = buffer.getvalue()
    params = validate({**params, "weights": weights.name, "weights_sha256": hashlib.sha256(blob).hexdigest()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights, mode=0o600) as tmp:
        tmp.touch(mode=0o600)  # private from the first byte, not only once renamed
        tmp.write_bytes(blob)
    Key.new(scheme, params).save(path)
    return Key.load(path)
