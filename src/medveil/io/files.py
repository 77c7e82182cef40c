"""One file through the gate as a folder run's worker does it: resumable, with its digests.

Used by the local pool, Dask workers and the staged (fsspec) worker alike; each worker process makes
a key's scheme once.
"""

from __future__ import annotations

from pathlib import Path

from medveil.errors import InputError
from medveil.io.gate import Gate
from medveil.io.image import first_line
from medveil.io.manifest import Written, sha256_file, still_done
from medveil.keys import Key
from medveil.schemes import Scheme, from_key


def obfuscate_recorded(src: Path, dst: Path, gate: Gate, record: dict | None = None,
                       name: str | None = None, source_sha256: str | None = None) -> Written | None:
    """:meth:`Gate.write` as a folder run's worker does it, overwriting ``dst`` and not syncing it.

    Returns None, writing nothing, where the manifest's ``record`` of this file is still good (see
    :func:`still_done`). The digests are taken here, so they spread over the workers with the rest
    of the work, and the process that keeps the manifest reads no file; ``name`` (default ``src``)
    is what an unreadable file's error calls it; ``source_sha256`` is ``src``'s digest where the
    caller took it already.
    """
    try:
        source_sha256 = source_sha256 or sha256_file(src)
    except OSError as exc:
        raise InputError(f"{name or src}: cannot be read ({exc.strerror or first_line(exc)})") from None
    if still_done(record, source_sha256, lambda: dst.stat().st_size if dst.is_file() else None,
                  lambda: sha256_file(dst)):
        return None
    gate.write(src, dst, overwrite=True, durable=False)
    return Written(source_sha256, dst.stat().st_size, sha256_file(dst))


_worker_schemes: dict[str, Scheme] = {}  # per worker process (pool or Dask): each key's scheme, made once


def worker_scheme(key: Key) -> Scheme:
    """``key``'s scheme, made once per worker process."""
    if key.fingerprint not in _worker_schemes:
        _worker_schemes[key.fingerprint] = from_key(key)
    return _worker_schemes[key.fingerprint]


def share_scheme(scheme: Scheme) -> None:
    """Let this process, and the workers forked from it, use ``scheme`` for its key instead of making it again."""
    _worker_schemes.setdefault(scheme.key.fingerprint, scheme)


def obfuscate_in_worker(key: Key, policy: dict, src: str | Path, dst: str | Path,
                        record: dict | None) -> Written | None:
    """One file of a folder run in a worker: ``policy`` is the run's :attr:`Gate.policy`."""
    return obfuscate_recorded(Path(src), Path(dst), Gate(worker_scheme(key), **policy), record)
