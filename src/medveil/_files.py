"""Writing files: atomic replacement, and the file-name stems outputs are named by.

A file written through :func:`atomic_path` is either absent, its old version, or complete — never half written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".medveil-tmp-"  # what interrupted writes leave behind; safe to delete


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    The temporary name is ``path``'s with a dotted :data:`TMP_PREFIX` (folder walks skip it; its
    suffix is kept, for writers that choose the format by suffix). ``durable`` syncs it to disk
    before it is renamed, and the folder after, so that ``path`` survives a power cut as well as a
    killed process; without it, a power cut may leave ``path`` old, empty or short (folder runs
    check their outputs' digests on resume instead). ``mode`` (e.g. ``0o600`` for key material) is
    set before the file appears under its name. If the block raises, the temporary file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(temporary_name(path.name))
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        if durable:
            _fsync(tmp)  # the bytes reach the disk before the name does
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def temporary_name(name: str) -> str:
    """Return the name a file called ``name`` is written under before it is renamed into place."""
    return f"{TMP_PREFIX}{secrets.token_hex(4)}-{name}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, value) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a cached result is whole or absent, so a resume can trust it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1))


def slug(*parts: str) -> str:
    """Return a file-name stem from ``parts`` (``"intensity", "levels=50;bits=8"`` -> ``"intensity-levels50-bits8"``)."""
    text = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("=", "")).strip("-") or "-"
