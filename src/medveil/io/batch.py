"""Pass a whole folder tree through the gate (:mod:`medveil.io.gate`), safely.

A folder run writes every file it passes into a separate output folder, the folder that is shipped,
under its keyed pseudonym (or, with ``keep_names``, its own relative path), and never writes inside
the source. Every output is written to a temporary name and renamed into place. The run's record,
a JSON-lines manifest of ``source -> output`` with the source's SHA-256, the output's size and
SHA-256 and the key's fingerprint, is the hospital's map back from pseudonyms to sources: it lives
outside the shipped folder (``OUTPUT.manifest.jsonl`` beside it by default), so nothing shipped names
or fingerprints a source. Re-running the same command after an interruption skips what is done
(same source bytes, output present with the recorded size and hash) and does the rest; a run with
another key into the same output folder is refused. Files that fail are reported with a one-line
reason at the end while the others complete.

A killed run (even by SIGKILL) loses nothing: an output is renamed into place whole and its record
appended after. Outputs and records are not synced to disk one by one (that would cost more than
the obfuscation), so a power cut may lose the last ones or leave an output short: the resume
check, which compares each recorded output's size and SHA-256, finds those and does them again.
A record that cannot be appended (a full disk) fails its file, is cut back so no torn line stays,
and the run goes on.
"""

from __future__ import annotations

import os
import stat
from fnmatch import fnmatchcase
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from medveil import parallel
from medveil._files import TMP_PREFIX
from medveil.errors import InputError, MedveilError, RefusedError
from medveil.io.files import obfuscate_in_worker, share_scheme
from medveil.io.gate import ANOTHER_KEY, Gate
from medveil.io.image import first_line, output_name
from medveil.io.manifest import Manifest, Written, default_manifest, run_lock
from medveil.keys import Key
from medveil.schemes import Scheme


@dataclass
class BatchReport:
    """What a folder run did.

    Relative paths done now, already done before, failed with why, hidden ones and ones the include/exclude patterns
    left out; and, by the ``medveil keygen`` command that makes the key they need, the files whose samples this key
    does not map.
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    filtered: list[str] = field(default_factory=list)
    need_key: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no file failed."""
        return not self.failed


def walk(root: Path, problems: list[tuple[str, str]] | None = None, hidden: list[str] | None = None) -> list[Path]:
    """Regular files below ``root`` (relative paths) in a stable order, hidden files and folders left out.

    The hidden files and folders left out are listed (relative paths) in ``hidden``.

    Nothing that could hang or escape a run is opened: FIFOs, sockets and devices, symbolic links
    that dangle, loop or lead to anything but a regular file, symbolic links to folders, and
    folders that cannot be read are left out, each with a one-line reason in ``problems``.
    """
    root = Path(root)
    files = []

    def problem(path: Path, reason: str) -> None:
        if problems is not None:
            problems.append((path.relative_to(root).as_posix(), f"{path}: {reason}"))

    def unreadable(error: OSError) -> None:
        problem(Path(error.filename), f"folder cannot be read ({error.strerror}); skipped")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        if hidden is not None:
            hidden.extend(Path(dirpath, name).relative_to(root).as_posix()
                          for name in sorted(dirnames + filenames) if name.startswith("."))
        folders = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            if Path(dirpath, name).is_symlink():
                problem(Path(dirpath, name), "symbolic link to a folder; not followed")
            else:
                folders.append(name)
        dirnames[:] = folders
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = Path(dirpath, name)
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                problem(path, f"dangling or looping symbolic link ({exc.strerror}); skipped")
                continue
            if stat.S_ISREG(mode):
                files.append(path.relative_to(root))
            else:
                problem(path, "not a regular file (FIFO, socket or device); skipped")
    return files


class Folder:
    """A local folder as a folder run uses it: its files, their digests, and, as the output, the run's manifest.

    :class:`medveil.io.remote.RemoteFolder` is the same for any fsspec URL.
    """

    remote = False

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._folders_resolved: dict[str, Path] = {}

    def __str__(self) -> str:
        return str(self.root)

    @cached_property
    def resolved(self) -> Path:
        """The folder's absolute path, links resolved."""
        return self.root.resolve()

    def is_dir(self) -> bool:
        """Whether the folder exists as a directory."""
        return self.root.is_dir()

    def walk(self, problems: list[tuple[str, str]], hidden: list[str]) -> list[str]:
        """Every file below the folder as a POSIX path relative to it.

        Unreadable entries go to ``problems``, hidden ones to ``hidden``.
        """
        return [rel.as_posix() for rel in walk(self.root, problems, hidden)]

    def location(self, rel: str) -> Path:
        """Where a worker finds ``rel``."""
        return self.root / rel

    def output_name(self, rel: str) -> str:
        """Return the output's relative name for input ``rel`` (its suffix as written)."""
        return output_name(rel, self.root / rel).as_posix()

    def check_disjoint(self, output: "Folder", manifest: Path) -> None:
        """:class:`InputError` if ``output`` is this folder, inside it, or holds it."""
        s, d = self.resolved, output.resolved
        if s == d or s in d.parents or d in s.parents:
            raise InputError(f"output folder {output} must lie outside the input folder {self} (and not contain it)")
        if not {s, d}.isdisjoint(manifest.resolve().parents):
            raise InputError(f"manifest {manifest} must lie outside the input folder and the output folder (it is "
                             "the hospital's map from the shipped names back to the sources)")

    def check_target(self, output: "Folder", out_rel: str) -> None:
        """Refuse an output ``out_rel`` whose folder resolves outside the output tree through a link.

        A link into this source folder, say. Only folders count: an output is renamed into place, which replaces a link
        standing at its own name instead of writing through it.
        """
        folder = output.folder_resolved(PurePosixPath(out_rel).parent.as_posix())
        if folder == self.resolved or self.resolved in folder.parents or not (
                folder == output.resolved or output.resolved in folder.parents):
            raise InputError(f"{output.root / out_rel}: its folder resolves to {folder}, outside the output folder; "
                             "a link in the output tree would write there (into the input, perhaps); remove it")

    def folder_resolved(self, rel: str) -> Path:
        """Return the real path of the folder ``rel`` below this one, resolved once per run and folder."""
        if rel not in self._folders_resolved:
            self._folders_resolved[rel] = (self.root / rel).resolve()
        return self._folders_resolved[rel]

    @contextmanager
    def run(self, key: Key, manifest: Path) -> Iterator["Manifest"]:
        """Return this folder as a run's output: created, locked, cleared of a dead run's temporaries; its manifest."""
        if self.root.exists() and not manifest.exists() and any(self.root.iterdir()):
            raise InputError(f"{self}: output folder is not empty and its manifest {manifest} does not exist; "
                             "choose an empty folder (or give --manifest)")
        self.root.mkdir(parents=True, exist_ok=True)
        with run_lock(manifest, self.root):  # under the lock, temporaries here are a dead run's, never a live one's
            for stale in self.root.rglob(f"{TMP_PREFIX}*"):
                stale.unlink()
            yield Manifest(manifest, key)


def obfuscate_tree(src: Path, dst: Path, scheme: Scheme, workers: int = 1, progress: bool = True,
                   burned_in_text: str = "refuse", scheduler: str | None = None, keep_names: bool = False,
                   manifest: str | os.PathLike | None = None, keep_descriptors: bool = False) -> BatchReport:
    """Pass every supported file below ``src`` through the gate into ``dst``.

    Parameters
    ----------
    src, dst : Path or str
        Input and output folders; they must not overlap. Either may be an fsspec URL
        (``memory://scans``, ``s3://bucket/scans``; ``file://`` is a local path): each file is then
        staged through a local temporary folder where it is processed (see :mod:`medveil.io.remote`).
    scheme : Scheme
        The key-bound scheme to apply.
    workers : int
        Processes to use (1 runs in this process).
    progress : bool
        Show a progress bar on stderr.
    burned_in_text : str
        What to do with text OCR finds in the pixels: ``refuse`` (the file fails), ``mask`` or ``off``
        (see :func:`medveil.io.gate.screen_text`).
    scheduler : str, optional
        Run the files as Dask tasks: ``"local"`` (a LocalCluster of ``workers`` processes) or a
        scheduler's address. Workers read ``src`` and write ``dst`` themselves (a folder they all
        reach); this process alone keeps the manifest, appending each result as it arrives, so an
        interrupted run resumes as a local one does.
    keep_names : bool
        Write each output under its source's relative path instead of its keyed pseudonym
        (:meth:`medveil.io.gate.Gate.name`); names then carry whatever the sources' names carry.
    manifest : path, optional
        The run's record, a local file outside both folders; default ``dst.manifest.jsonl`` beside a
        local ``dst`` (a URL ``dst`` needs one given).
    keep_descriptors : bool
        Keep DICOM free text that the de-identification table does not list (removed by default).
    """
    gate = Gate(scheme, burned_in_text, keep_names, keep_descriptors)  # checks the options before any work
    return gate_tree(src, dst, gate, workers=workers, progress=progress, scheduler=scheduler, manifest=manifest)


def gate_tree(src: str | os.PathLike, dst: str | os.PathLike, gate: Gate, *, workers: int = 1, progress: bool = True,
              scheduler: str | None = None, manifest: str | os.PathLike | None = None,
              include: Sequence[str] = (), exclude: Sequence[str] = ()) -> BatchReport:
    """Pass every supported file below ``src`` through ``gate`` into ``dst``.

    :func:`obfuscate_tree` with the gate's options fixed in one object (a de-identify-only gate, say).

    ``include`` and ``exclude`` are glob patterns on the files' relative POSIX paths (``*`` crosses
    folders: ``*.dcm`` is every DICOM file): with ``include``, only files that match one are taken;
    a file that matches an ``exclude`` pattern is left out.
    """
    scheme = gate.scheme
    source, output = _folders(src, dst)
    manifest = Path(manifest) if manifest is not None else _default_manifest(output)
    if not source.is_dir():
        raise InputError(f"{source}: no such file or folder")
    source.check_disjoint(output, manifest)
    unwalkable: list[tuple[str, str]] = []
    hidden: list[str] = []
    files = source.walk(unwalkable, hidden)
    taken = [(not include or any(fnmatchcase(rel, p) for p in include)) and not any(fnmatchcase(rel, p) for p in exclude)
             for rel in files]
    filtered = [rel for rel, take in zip(files, taken) if not take]
    files = [rel for rel, take in zip(files, taken) if take]
    if not files and filtered:
        raise InputError(f"{source}: --include/--exclude leave none of its {len(filtered)} files")
    if not files and not unwalkable:
        raise InputError(f"{source}: folder holds no files" + (f" but {len(hidden)} hidden ones" if hidden else ""))
    todo: list[tuple[str, str]] = []  # (source rel, output rel); workers skip what is still done
    report = BatchReport(failed=unwalkable, hidden=hidden, filtered=filtered)
    claimed: dict[str, str] = {}
    for rel in files:
        try:
            out_rel = gate.name(source.output_name(rel))
            source.check_target(output, out_rel)
        except InputError as exc:
            report.failed.append((rel, str(exc)))
            continue
        if out_rel in claimed:
            report.failed.append((rel, f"{source.location(rel)}: its output {out_rel} is already that of {claimed[out_rel]}"))
            continue
        claimed[out_rel] = rel
        todo.append((rel, out_rel))
    with output.run(scheme.key, manifest) as record:
        bar = _Bar(total=len(todo), desc="obfuscating" if gate.obfuscate else "de-identifying", unit="file",
                   disable=not progress)
        jobs = [(source.location(rel), output.location(out_rel), _record_for(record.entries.get(rel), out_rel))
                for rel, out_rel in todo]
        work: Callable[..., Written | None] = obfuscate_in_worker
        if source.remote:
            from medveil.io.remote import obfuscate_staged

            work = obfuscate_staged
        share_scheme(scheme)  # a forked worker uses this process's scheme instead of making it again
        for index, written, error in parallel.run(work, (scheme.key, gate.policy), jobs, workers, scheduler):
            rel, out_rel = todo[index]
            if error is None and written is not None:
                try:
                    record.record(rel, out_rel, written)
                except InputError as exc:
                    error = exc
            if error is not None:
                report.failed.append((rel, _reason(error)))
                if isinstance(error, RefusedError) and error.reason.startswith(ANOTHER_KEY):
                    report.need_key.setdefault(error.reason.removeprefix(ANOTHER_KEY), []).append(rel)
            elif written is None:
                report.skipped.append(rel)
            else:
                report.done.append(rel)
            bar.update()
        bar.close()
        return report


def _default_manifest(output) -> Path:
    if output.remote:
        raise InputError(f"{output}: a URL output needs --manifest FILE, a local file for the run's record "
                         "(it stays in the hospital; the output folder is what is shipped)")
    return default_manifest(output.root)


def _record_for(entry: dict | None, out_rel: str) -> dict | None:
    """Return the manifest's record of a file, for its worker's resume check, if it names the output this run writes."""
    return entry if entry is not None and entry.get("output") == out_rel else None


def _folders(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[Any, Any]:
    """Local folders for paths and ``file://`` URLs; fsspec folders, both of them, where either is another URL."""
    from medveil.io.remote import is_url, local_path

    src, dst = local_path(src), local_path(dst)
    if not (is_url(src) or is_url(dst)):
        return Folder(src), Folder(dst)
    from medveil.io.remote import RemoteFolder

    return RemoteFolder(src), RemoteFolder(dst)


class _Bar(tqdm):
    monitor_interval = 0  # no monitor thread, so a folder run can fork its workers (parallel.pool_context)


def _reason(error: BaseException) -> str:
    """One line saying why a file failed (library errors already name the file)."""
    if isinstance(error, MedveilError):
        return str(error)
    return f"{error.__class__.__name__}: {first_line(error)}"
