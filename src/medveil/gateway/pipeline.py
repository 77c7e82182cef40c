"""Receive, spool, gate, forward or quarantine: what the gateway and ``medveil pull`` share.

A working folder holds the pipeline's state, inside the hospital:

- ``spool/INSTANCE.dcm``: each instance as received, synced to disk before the sender hears
  success; removed once the instance is done;
- ``gated/INSTANCE.dcm``: what passed the gate, until every destination holds it;
- ``quarantine/INSTANCE.dcm`` and ``INSTANCE.txt``: what the gate refused, and the full reason;
- ``journal.jsonl`` (:mod:`medveil.gateway.journal`) and ``audit.jsonl`` (one line per instance and
  action: time, calling AE, keyed study pseudonym, action, PHI-free reason).

``INSTANCE`` is the keyed name of the SOP Instance UID, so the folder names no patient and the same
instance sent twice is the same file (the second is answered with success and not forwarded again).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from medveil._files import TMP_PREFIX, atomic_path
from medveil.errors import InputError, MedveilError, RefusedError
from medveil.gateway.destinations import Destination, ForwardError, Gated
from medveil.gateway.journal import Journal
from medveil.io.dicom_profile import keyed_uid
from medveil.io.gate import Gate, dicom_uid_secret
from medveil.io.manifest import run_lock

log = logging.getLogger("medveil.gateway")
audit = logging.getLogger("medveil.audit")

_NAME_DIGITS = 16


@dataclass
class Pipeline:
    """One working folder, one gate, the destinations; thread-safe :meth:`receive`, one forwarding thread.

    Parameters
    ----------
    gate : Gate
        Its options (obfuscate or de-identify only, the text policy, descriptors) apply to every instance.
    destinations : list of Destination
        Every instance that passes goes to each of them.
    workdir : Path
        The working folder (created); a restarted pipeline on the same folder resumes its journal.
    batch : int
        Instances gated and forwarded together (one association or request per destination).
    """

    gate: Gate
    destinations: list[Destination]
    workdir: Path
    batch: int = 32
    _wake: threading.Condition = field(default_factory=threading.Condition, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        for sub in ("spool", "gated", "quarantine"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        if not self.destinations:
            raise InputError("no destination: give at least one (dicom://AET@HOST:PORT, stow:URL, folder:PATH, "
                             "service:URL?dataset=NAME&label=CLASS&size=N)")
        self._held = ExitStack()  # one gateway or pull per working folder, released by the kernel if it dies
        self._held.enter_context(run_lock(self.workdir / "journal.jsonl", self.workdir))
        self.journal = Journal(self.workdir / "journal.jsonl", [d.name for d in self.destinations])
        self._audit_file = _audit_handler(self.workdir / "audit.jsonl")
        for sub in ("spool", "gated"):  # what a killed process left: temporaries, and copies of done instances
            for path in (self.workdir / sub).iterdir():
                if path.name.startswith(TMP_PREFIX) or self.journal.done(path.name.removesuffix(".dcm")):
                    path.unlink()

    @cached_property
    def _names(self) -> bytes:
        return self.gate.scheme.key.stream("gateway/names").read(32)

    @cached_property
    def _uids(self) -> bytes:  # the secret the gate keys UIDs with, so the audit's study is the one sent on
        return dicom_uid_secret(self.gate.scheme.key)

    def keyed(self, label: str) -> str:
        """Return the keyed pseudonym (16 hex digits) of ``label``, such as ``instance:`` and a SOP Instance UID."""
        return hmac.new(self._names, label.encode(), hashlib.sha256).hexdigest()[:_NAME_DIGITS]

    def receive(self, encoded: bytes, calling_ae: str) -> bool:
        """Spool one instance (DICOM file bytes with their file meta) durably; True once it is safe on disk.

        A duplicate (same SOP Instance UID) is not spooled again. An instance that cannot be read
        far enough to name it is spooled under its bytes' digest and quarantined as unreadable.
        """
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(encoded), stop_before_pixels=True)
            sop, study = str(ds.SOPInstanceUID), str(ds.get("StudyInstanceUID", ""))
        except Exception:
            sop, study = "sha256:" + hashlib.sha256(encoded).hexdigest(), ""
        instance = self.keyed("instance:" + sop)
        if instance in self.journal.received:
            _audit("duplicate", instance, {**self.journal.received[instance], "calling_ae": calling_ae})
            return True
        with atomic_path(self._spooled(instance)) as tmp:  # synced before its name appears
            tmp.write_bytes(encoded)
        study_pseudonym = keyed_uid(study, self._uids) if study else ""
        _audit("received", instance, self.journal.append("received", instance, study=study_pseudonym,
                                                          calling_ae=calling_ae))
        with self._wake:
            self._wake.notify()
        return True

    def _spooled(self, instance: str) -> Path:
        return self.workdir / "spool" / f"{instance}.dcm"

    def run_pending(self) -> int:
        """Gate and forward every pending instance, a batch at a time; how many are still pending after."""
        pending = self.journal.pending()
        for start in range(0, len(pending), self.batch):
            self._forward(self._gate_all(pending[start:start + self.batch]))
        return len(self.journal.pending())

    def serve(self, stop: threading.Event, retry_seconds: float = 5.0) -> None:
        """Forward as instances arrive until ``stop`` is set; while a destination fails, try again every ``retry_seconds``."""
        while not stop.is_set():
            before = set(self.journal.pending())
            if before:
                try:
                    self.run_pending()
                except Exception:  # a bug must not silently stop forwarding: log it, keep the work, try again
                    log.exception("forwarding failed; the instances stay pending")
                if before <= set(self.journal.pending()):  # none of them went anywhere: wait for the destination
                    with self._wake:
                        self._wake.wait(retry_seconds)
                continue
            with self._wake:  # receive() journals, then notifies under this lock: no arrival is missed
                if not self.journal.pending() and not stop.is_set():
                    self._wake.wait()

    def wake(self) -> None:
        """Wake :meth:`serve` (to stop, or to retry now)."""
        with self._wake:
            self._wake.notify_all()

    def _gate_all(self, instances: list[str]) -> list[Gated]:
        """Pass each instance through the gate (again, after a crash); quarantine what it refuses."""
        import pydicom

        passed = []
        for instance in instances:
            spooled, gated = self._spooled(instance), self.workdir / "gated" / f"{instance}.dcm"
            received = self.journal.received[instance]
            try:
                if not spooled.exists():
                    raise InputError(f"{spooled}: missing from the spool")
                if gated.exists():
                    gated.unlink()  # a crash left it; gate again (the same key gives the same bytes)
                self.gate.write(spooled, gated, durable=False)
                header = pydicom.dcmread(gated, stop_before_pixels=True)
            except MedveilError as exc:
                self._quarantine(instance, received, exc)
                continue
            passed.append(Gated(instance, self.keyed("study:" + str(header.get("StudyInstanceUID", ""))),
                                self.keyed("series:" + str(header.get("SeriesInstanceUID", ""))),
                                str(header.SOPClassUID), gated, spooled))
        return passed

    def _quarantine(self, instance: str, received: dict, error: MedveilError) -> None:
        reason = error.reason if isinstance(error, RefusedError) else "unreadable"
        spooled, kept = self._spooled(instance), self.workdir / "quarantine" / f"{instance}.dcm"
        if spooled.exists():
            os.replace(spooled, kept)
        (self.workdir / "quarantine" / f"{instance}.txt").write_text(f"{error}\n")  # the full line, for people
        self.journal.append("quarantined", instance, reason=reason)
        _audit("quarantined", instance, received, reason)

    def _forward(self, items: list[Gated]) -> None:
        for dest in self.destinations:
            todo = [item for item in items if dest.name not in self.journal.sent.get(item.instance, set())]
            if not todo:
                continue
            try:
                held = set(dest.send(todo))
            except (ForwardError, OSError) as exc:
                log.warning("%s: %d instance(s) stay pending: %s", dest.name, len(todo), exc)
                continue
            for item in todo:
                if item.instance in held:
                    self.journal.append("sent", item.instance, to=dest.name)
            if len(held) < len(todo):
                log.warning("%s: held %d of %d instance(s); the others stay pending", dest.name, len(held), len(todo))
        for item in items:
            if self.journal.done(item.instance):
                _audit("forwarded", item.instance, self.journal.received[item.instance])
                item.path.unlink(missing_ok=True)
                self._spooled(item.instance).unlink(missing_ok=True)  # the plain copy goes once it is delivered

    def counts(self) -> dict[str, int]:
        """Instances received, forwarded (to every destination), quarantined and pending, from the journal."""
        return self.journal.counts()

    def close(self) -> None:
        """Close the journal and the audit log and release the working folder's lock."""
        self.journal.close()
        self._held.close()
        audit.removeHandler(self._audit_file)
        self._audit_file.close()


def _audit(action: str, instance: str, received: dict, reason: str | None = None) -> None:
    """One audit line: the action on ``instance``, with the calling AE and keyed study of its ``received`` record."""
    fields = {"calling_ae": received["calling_ae"], "instance": instance, "study": received["study"], "action": action}
    if reason is not None:
        fields["reason"] = reason
    audit.log(logging.WARNING if action == "quarantined" else logging.INFO, action, extra={"audit": fields})


def _audit_handler(path: Path) -> logging.Handler:
    from medveil._logs import JsonFormatter

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    return handler

