"""Where the gateway and ``medveil pull`` deliver what passed the gate: a registry of destination kinds.

A destination is written as one string, in a config file and on the command line alike:

- ``dicom://AET@HOST:PORT``: a DICOM node, by C-STORE (pynetdicom), one association per batch;
- ``stow:URL``: a DICOMweb server's STOW-RS (``URL/studies``), one request per batch;
- ``folder:PATH``: a local folder, ``STUDY/SERIES/INSTANCE.dcm`` under keyed names;
- ``service:URL?dataset=NAME&label=CLASS&size=N``: the medveil service, as ``medveil client upload``
  sends to it: each instance read through the gate (:meth:`medveil.io.Gate.read`), resized to ``N``,
  obfuscated by the client, and added as ``CLASS/INSTANCE.png`` to the tenant's dataset ``NAME``
  (created under this key by the first batch), one request per series. The token comes from the
  ``MEDVEIL_TOKEN`` environment variable, never from the spec, which is logged and journaled.

Every destination receives only gated files or pixels, named by keyed pseudonyms. Sending an instance
again (after a crash between a destination's answer and the journal's line) is harmless at each of
them: its keyed SOP Instance UID is the same, so a PACS keeps one copy, a folder one file, and the
service skips an image name its dataset holds.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

from medveil._files import atomic_path
from medveil.errors import InputError, MedveilError
from medveil.plugins import Registry

if TYPE_CHECKING:
    from medveil.io.gate import Gate

log = logging.getLogger("medveil.gateway")

# The gateway's own AE title when it calls a destination or a PACS.
CALLING_AE = "MEDVEIL"
# C-STORE statuses that mean the destination holds the instance: success and the warnings
# (coercion of data elements, elements discarded, data set does not match the SOP class).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class ForwardError(MedveilError):
    """A destination could not be reached or refused what was sent; the instances stay pending."""


@dataclass(frozen=True)
class Gated:
    """One instance that passed the gate.

    Its keyed names, its SOP class, the gated file, and the file as received (for a destination that reads its
    pixels through the gate itself, the service's).
    """

    instance: str
    study: str
    series: str
    sop_class: str
    path: Path
    source: Path


class Destination(Protocol):
    """What the gateway forwards to: a name to journal sends under, and ``send``."""

    name: str  # the spec it was made from: a node or a place, never a patient's

    def send(self, items: list[Gated]) -> list[str]:
        """Deliver ``items``; the instances the destination now holds (raise ForwardError if none could go)."""


# A kind is made from its spec and the pipeline's gate (None when a config file is only checked).
DESTINATIONS: Registry[Callable[[str, "Gate | None"], Destination]] = Registry("destination kind",
                                                                              "medveil.destinations", missing=InputError)


def destination(spec: str, gate: Gate | None = None) -> Destination:
    """Return the destination ``spec`` names, for a pipeline through ``gate``.

    ``spec`` is ``dicom://AET@HOST:PORT``, ``stow:URL``, ``folder:PATH`` or ``service:URL?...``; without a gate, it
    is only checked.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise InputError(f"destination {spec!r}: write KIND:WHERE, KIND one of {', '.join(DESTINATIONS.names())}")
    return DESTINATIONS[kind](spec, gate)


def dicom_node(spec: str) -> tuple[str, str, int]:
    """``dicom://AET@HOST:PORT`` -> (AET, HOST, PORT); one line naming ``spec`` if it is not one."""
    parts = urlsplit(spec)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "dicom" or not parts.username or not parts.hostname or port is None:
        raise InputError(f"DICOM node {spec!r}: write dicom://AET@HOST:PORT")
    if len(parts.username) > 16:
        raise InputError(f"DICOM node {spec!r}: an AE title has at most 16 characters")
    return parts.username, parts.hostname, port


class DicomNode:
    """A DICOM destination by C-STORE: one association per batch, a context per SOP class in it."""

    def __init__(self, spec: str, gate: Gate | None = None):
        self.name = spec
        self.ae_title, self.host, self.port = dicom_node(spec)

    def send(self, items: list[Gated]) -> list[str]:
        """C-STORE ``items`` over one association; the instances the node answered with success or a warning."""
        from pydicom.uid import ExplicitVRLittleEndian
        from pynetdicom import AE

        ae = AE(ae_title=CALLING_AE)
        for sop_class in sorted({item.sop_class for item in items})[:128]:  # an association has 128 contexts
            ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            raise ForwardError(f"{self.name}: no association (unreachable, or it refused {CALLING_AE})")
        held = []
        try:
            for item in items:
                try:
                    status = assoc.send_c_store(item.path)
                except (ValueError, RuntimeError) as exc:  # no context accepted for its SOP class, say
                    log.warning("%s: instance %s not sent (%s)", self.name, item.instance, exc.__class__.__name__)
                    continue
                if status and status.Status in STORED:
                    held.append(item.instance)
                elif status:
                    log.warning("%s: instance %s answered 0x%04X", self.name, item.instance, status.Status)
        finally:
            assoc.release()
        return held


class StowRs:
    """A DICOMweb destination by STOW-RS: one multipart/related POST of a batch to ``URL/studies``."""

    def __init__(self, spec: str, gate: Gate | None = None):
        self.name = spec
        self.url = spec.partition(":")[2].rstrip("/")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise InputError(f"STOW-RS destination {spec!r}: write stow:http(s)://HOST/PATH")

    def send(self, items: list[Gated]) -> list[str]:
        """POST ``items`` in one multipart/related request; all of them, or :class:`ForwardError` if any was refused."""
        import httpx

        boundary = uuid.uuid4().hex
        body = bytearray()
        for item in items:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += item.path.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json"}
        try:
            response = httpx.post(f"{self.url}/studies", content=bytes(body), headers=headers, timeout=120)
        except httpx.HTTPError as exc:
            raise ForwardError(f"{self.name}: {exc.__class__.__name__}") from None
        if response.status_code not in (200, 202):
            raise ForwardError(f"{self.name}: answered {response.status_code}")
        refused = _stow_refused(response)
        if refused:  # the answer names keyed UIDs, not our instances: the batch stays pending and goes again
            raise ForwardError(f"{self.name}: refused {refused} of {len(items)} instances")
        return [item.instance for item in items]


def _stow_refused(response) -> int:
    """How many instances the STOW-RS answer lists in its FailedSOPSequence (0008,1198)."""
    try:
        return len(response.json().get("00081198", {}).get("Value", []))
    except ValueError:
        return 0


class Folder:
    """A local folder: ``STUDY/SERIES/INSTANCE.dcm`` under the keyed names, each written atomically."""

    def __init__(self, spec: str, gate: Gate | None = None):
        self.name = spec
        self.root = Path(spec.partition(":")[2])

    def send(self, items: list[Gated]) -> list[str]:
        """Copy each gated file to ``STUDY/SERIES/INSTANCE.dcm`` (atomically); all of ``items``."""
        for item in items:
            target = self.root / item.study / item.series / f"{item.instance}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(item.path, tmp)
        return [item.instance for item in items]


class Service:
    """The medveil service (see the module's docstring): a dataset grows by one request per series."""

    _LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

    def __init__(self, spec: str, gate: Gate | None = None):
        self.name = spec
        parts = urlsplit(spec.partition(":")[2])
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        usage = f"service destination {spec!r}: write service:http(s)://HOST:PORT?dataset=NAME&label=CLASS&size=N"
        if parts.scheme not in ("http", "https") or not parts.netloc or set(query) != {"dataset", "label", "size"}:
            raise InputError(usage)
        if not self._LABEL.match(query["label"]) or not self._LABEL.match(query["dataset"]):
            raise InputError(f"{usage} (dataset and label: letters, digits, '-' and '_'; they reach the server)")
        if not query["size"].isdigit() or not 8 <= int(query["size"]) <= 1024:
            raise InputError(f"{usage} (size: the images' side in pixels, 8 to 1024)")
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.dataset, self.label, self.size = query["dataset"], query["label"], int(query["size"])
        self.gate = gate
        if gate is not None and not os.environ.get("MEDVEIL_TOKEN"):
            raise InputError(f"{spec}: set MEDVEIL_TOKEN to the service token (medveil token create)")

    def send(self, items: list[Gated]) -> list[str]:
        """Add ``items`` to the dataset, a request per series.

        The instances it now holds (:class:`ForwardError` if none).
        """
        from medveil.service.client import Client, ServiceError

        assert self.gate is not None, "a destination made without a gate only checks its spec"
        held: list[str] = []
        with Client(self.url, os.environ["MEDVEIL_TOKEN"], self.gate.scheme.key,
                    burned_in_text=self.gate.burned_in_text) as client:
            for _, series in itertools.groupby(sorted(items, key=lambda i: i.series), key=lambda i: i.series):
                group = list(series)
                try:
                    held += self._add(client, group)
                except ServiceError as exc:
                    if not held:
                        raise ForwardError(f"{self.name}: {exc}") from None
                    log.warning("%s: a series stays pending: %s", self.name, exc)
                    break
        return held

    def _add(self, client, group: list[Gated]) -> list[str]:
        """Add ``group`` in one request.

        If the gate refuses a file of it, each file alone (the refused stay pending, said once per try). The
        instances the dataset now holds.
        """
        def add(batch: list[Gated]) -> list[str]:
            client.add_files([i.source for i in batch], [i.instance for i in batch], self.label, self.size, self.dataset)
            return [i.instance for i in batch]

        try:
            return add(group)
        except InputError:
            held = []
            for item in group:
                try:
                    held += add([item])
                except InputError as exc:
                    log.warning("%s: instance %s not sent (%s)", self.name, item.instance, exc.__class__.__name__)
            return held


DESTINATIONS.add("dicom", DicomNode)
DESTINATIONS.add("stow", StowRs)
DESTINATIONS.add("folder", Folder)
DESTINATIONS.add("service", Service)
