"""A folder run's record, kept on the hospital's side: the manifest, its lock and the digests it holds.

The manifest is a JSON-lines file beside the output folder (``OUTPUT.manifest.jsonl``): one header
line (scheme, parameters, key fingerprint), then one line per finished file with the source's
relative path and SHA-256 and the output's pseudonym, size and SHA-256. It maps the shipped names back
to the sources, so it never goes into the folder that is shipped. See :mod:`medveil.io.batch` for how
a run uses it to resume.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from medveil._files import atomic_path
from medveil.errors import InputError
from medveil.io.image import first_line
from medveil.keys import Key

MANIFEST_SUFFIX = ".manifest.jsonl"  # the record beside the output folder: OUTPUT.manifest.jsonl
LOCK_SUFFIX = ".lock"  # and its lock, MANIFEST.lock
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Written:
    """What a folder run's worker reports for one file: digests of the bytes it read and wrote."""

    source_sha256: str
    output_size: int
    output_sha256: str


def still_done(record: dict | None, source_sha256: str, output_size, output_sha256) -> bool:
    """Tell whether a manifest ``record`` covers these source bytes, and its output is still there, whole and unchanged.

    ``output_size()`` (None where the output is missing) and ``output_sha256()`` read the output
    only if the record matches the source.
    """
    return (record is not None and record["sha256"] == source_sha256 and "output_sha256" in record
            and output_size() == record["output_size"] and output_sha256() == record["output_sha256"])


def sha256_file(path: Path) -> str:
    """Return the SHA-256 (hex) of the file at ``path``, read a megabyte at a time."""
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def sha256_stream(fh) -> str:
    """Return the SHA-256 (hex) of what a binary file object holds from where it stands, read a megabyte at a time."""
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def default_manifest(output: str | os.PathLike) -> Path:
    """Where a folder run into the local folder ``output`` keeps its record: ``OUTPUT.manifest.jsonl`` beside it."""
    output = Path(output).absolute()
    return output.parent / (output.name + MANIFEST_SUFFIX)


class Manifest:
    """The JSON-lines record of a folder run: one header line, then one line per finished file.

    It stays on the hospital's side: it names every source and holds its digest.
    """

    def __init__(self, path: Path, key: Key):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        header = {
            "medveil_manifest": MANIFEST_VERSION,
            "scheme": key.scheme,
            "params": dict(key.params),
            "key_fingerprint": key.fingerprint,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load(header)
        else:  # an empty manifest (a disk full before its header was written) records nothing
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(header, sort_keys=True) + "\n")

    def _load(self, header: dict) -> None:
        found, self.entries, torn = read_manifest(self.path)
        if found.get("key_fingerprint") != header["key_fingerprint"]:
            raise InputError(
                f"{self.path} records a run with key {found.get('key_fingerprint')}, not "
                f"{header['key_fingerprint']}; use that key or another output folder"
            )
        if torn:  # rewrite it without the torn line, so none survives a resume
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(line, sort_keys=True) + "\n"
                                       for line in [found, *self.entries.values()]))

    def record(self, rel: str, out_rel: str, written: Written) -> None:
        """Append that ``rel`` is done as ``out_rel``; an output lost to a power cut fails :func:`still_done` later.

        A line that cannot be written whole (a full disk) is cut back off and the file fails with
        one :class:`InputError` line; its output is written again on resume.
        """
        entry = {"source": rel, "sha256": written.source_sha256, "output": out_rel,
                 "output_size": written.output_size, "output_sha256": written.output_sha256}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            end = os.fstat(fd).st_size
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(28, os.strerror(28))
            except OSError as exc:
                os.ftruncate(fd, end)
                raise InputError(f"{rel}: its record could not be written to {self.path} "
                                 f"({exc.strerror or first_line(exc)}); the file is done again on resume") from None
        finally:
            os.close(fd)
        self.entries[rel] = entry


def read_manifest(path: Path) -> tuple[dict, dict[str, dict], bool]:
    """Return a manifest's header, its latest record of each source, and whether a line was torn.

    A line is torn when a power cut or a full disk cut it short, or left it without its newline; :class:`InputError`
    if it has no header.
    """
    text = Path(path).read_text()
    lines = text.splitlines()
    try:
        header = json.loads(lines[0])
    except (IndexError, json.JSONDecodeError):
        raise InputError(f"{path}: corrupt manifest; move it and the output folder aside and start again") from None
    entries, torn = {}, not text.endswith("\n")
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            torn = True
            continue
        entries[entry["source"]] = entry
    return header, entries, torn


@contextmanager
def run_lock(manifest: Path, output) -> Iterator[None]:
    """Hold a run's lock (``MANIFEST.lock``, beside the manifest); a second run into it is refused, not interleaved.

    An OS file lock (flock) is released by the kernel when its process dies, even by SIGKILL.
    """
    lock = manifest.with_name(manifest.name + LOCK_SUFFIX)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise InputError(f"{output}: another medveil run (pid {holder}) is writing to this folder; "
                             "wait for it to finish or choose another output folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
