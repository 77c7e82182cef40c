"""Folder runs where the source or the output is an fsspec URL: ``memory://``, ``s3://``, ``gs://``, ...

``file://`` URLs are local paths and run as local folders do. For any other URL (and for a local
folder paired with one) each file is staged: the worker copies it into a local temporary folder,
obfuscates it there with the local code (the readers need real files; a suffix-less DICOM is
recognised from its first 132 bytes), uploads the result under a temporary name beside its place
and renames it into place. Where a store's rename is a copy (object stores), a reader still never
sees a part-written object.

The manifest is kept as a local run keeps it, in a local file (``--manifest``): it names the
sources, so it stays in the hospital and is never uploaded beside the outputs. Its lock is local too:
two runs with one manifest are refused, two runs into one remote folder with different manifests are
not. A ``memory://`` folder lives in one process, so it takes ``--workers 1`` and no Dask.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medveil._files import TMP_PREFIX, temporary_name
from medveil.errors import InputError
from medveil.io.files import obfuscate_recorded, worker_scheme
from medveil.io.gate import Gate
from medveil.io.manifest import Manifest, Written, run_lock, sha256_file, sha256_stream, still_done
from medveil.io.image import is_supported, output_name
from medveil.keys import Key

DICOM_HEAD = 132  # the preamble and "DICM": what recognises a suffix-less DICOM file


def is_url(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def local_path(location: str | os.PathLike) -> str | Path:
    """Return a ``file://`` URL or a path as a :class:`Path`; any other URL as it is."""
    if not is_url(location):
        return Path(location)
    protocol, _, rest = str(location).partition("://")
    return Path(rest) if protocol == "file" else str(location)


class RemoteFolder:
    """A folder on any fsspec file system, as a folder run uses it (see :class:`medveil.io.batch.Folder`)."""

    remote = True

    def __init__(self, location: str | os.PathLike):
        import fsspec

        url = location if is_url(location) else Path(location).resolve().as_uri()
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:  # an unknown protocol, or one whose package is missing
            raise InputError(f"{url}: {exc}") from None
        self.root = root.rstrip("/") or "/"
        self.url = str(url).rstrip("/")  # as the user wrote it, in messages and in what workers are handed

    def __str__(self) -> str:
        return self.url

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def is_dir(self) -> bool:
        """Whether the URL names a directory."""
        return self.fs.isdir(self.root)

    def walk(self, problems: list[tuple[str, str]], hidden: list[str]) -> list[str]:
        """Every file below the URL as a path relative to it.

        Unreadable entries go to ``problems``, hidden ones to ``hidden``.
        """
        files = []
        for path, info in sorted(self.fs.find(self.root, detail=True).items()):
            rel = path[len(self.root):].lstrip("/")
            if any(part.startswith(".") for part in rel.split("/")):
                hidden.append(rel)
                continue
            if info.get("islink"):
                problems.append((rel, f"{self.location(rel)}: symbolic link; not followed"))
            elif info.get("type") == "file":
                files.append(rel)
        return files

    def location(self, rel: str) -> str:
        """Return the URL a worker reads ``rel`` from or writes it to."""
        return f"{self.url}/{rel}"

    def output_name(self, rel: str) -> str:
        """Return the output's relative name for input ``rel`` (read to learn its format where the name does not say)."""
        if is_supported(rel):
            return output_name(rel).as_posix()
        with tempfile.TemporaryDirectory(prefix="medveil-") as tmp:
            head = Path(tmp, posixpath.basename(rel))
            head.write_bytes(self.fs.cat_file(self._path(rel), start=0, end=DICOM_HEAD))
            try:
                return output_name(rel, head).as_posix()
            except InputError as exc:
                raise InputError(str(exc).replace(str(head), self.location(rel))) from None

    def check_disjoint(self, output: "RemoteFolder", manifest: Path) -> None:
        """:class:`InputError` if ``output`` is this URL, below it, or above it, on the same filesystem."""
        if self.fs.protocol != output.fs.protocol:
            return
        s, d = self.root.rstrip("/") + "/", output.root.rstrip("/") + "/"
        if s.startswith(d) or d.startswith(s):
            raise InputError(f"output folder {output} must lie outside the input folder {self} (and not contain it)")

    def check_target(self, output: "RemoteFolder", out_rel: str) -> None:
        """Nothing to check.

        A run uses these only where one side is a URL, so at most one side is local, and an output can never
        resolve into a source on another file system.
        """

    @contextmanager
    def run(self, key: Key, manifest: Path) -> Iterator[Manifest]:
        """Return this folder as a run's output: created, cleared of a dead run's temporaries; the local manifest."""
        if self.fs.isdir(self.root) and not manifest.exists() and self.fs.find(self.root):
            raise InputError(f"{self}: output folder is not empty and its manifest {manifest} does not exist; "
                             "choose an empty folder (or give --manifest)")
        self.fs.makedirs(self.root, exist_ok=True)
        with run_lock(manifest, self):
            for path in self.fs.find(self.root):
                if posixpath.basename(path).startswith(TMP_PREFIX):
                    self.fs.rm(path)
            yield Manifest(manifest, key)


def put_atomic(fs, local: Path, path: str) -> None:
    """Upload ``local`` to ``path`` on ``fs`` under a temporary name beside it, then rename it into place."""
    parent = posixpath.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    temporary = posixpath.join(parent, temporary_name(posixpath.basename(path)))
    fs.put_file(str(local), temporary)
    fs.mv(temporary, path)


def obfuscate_staged(key: Key, policy: dict, src: str, dst: str, record: dict | None) -> Written | None:
    """Obfuscate the file at URL ``src`` into URL ``dst`` through a local temporary folder (a folder run's worker).

    Returns None, writing nothing, where the manifest's ``record`` of it is still good.
    """
    from fsspec.core import url_to_fs

    fs_in, path_in = url_to_fs(src)
    fs_out, path_out = url_to_fs(dst)
    with tempfile.TemporaryDirectory(prefix="medveil-") as tmp:
        local_in = Path(tmp, "in", posixpath.basename(path_in))
        local_out = Path(tmp, "out", posixpath.basename(path_out))
        local_in.parent.mkdir()
        try:
            fs_in.get_file(path_in, str(local_in))
        except OSError as exc:
            raise InputError(f"{src}: cannot be read ({exc.__class__.__name__}: {exc})") from None
        source_sha256 = sha256_file(local_in)
        if still_done(record, source_sha256, lambda: _size(fs_out, path_out), lambda: _sha256(fs_out, path_out)):
            return None
        try:
            written = obfuscate_recorded(local_in, local_out, Gate(worker_scheme(key), **policy), name=src,
                                         source_sha256=source_sha256)
        except InputError as exc:
            raise InputError(str(exc).replace(str(local_in), src)) from None
        put_atomic(fs_out, local_out, path_out)
        return written


def _size(fs, path: str) -> int | None:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return info["size"] if info.get("type") == "file" else None


def _sha256(fs, path: str) -> str:
    with fs.open(path, "rb") as fh:
        return sha256_stream(fh)
