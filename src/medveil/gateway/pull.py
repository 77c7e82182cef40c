"""``medveil pull``: ask a PACS for studies (C-FIND), fetch them (C-GET) into the pipeline, deliver.

C-GET brings the instances back on the association that asked for them, so the PACS needs no
route back to medveil (C-MOVE would). Query values (a patient ID, an accession number) are PHI:
they go to the PACS and nowhere else, not into any log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from medveil.errors import InputError
from medveil.gateway.destinations import CALLING_AE, ForwardError, dicom_node
from medveil.gateway.pipeline import Pipeline

log = logging.getLogger("medveil.gateway")

_PENDING = {0xFF00, 0xFF01}
# The Study Root query/retrieve models (PS3.4 C.6.2), by UID: pynetdicom makes its named constants at import.
Find = "1.2.840.10008.5.1.4.1.2.2.1"
Get = "1.2.840.10008.5.1.4.1.2.2.3"


@dataclass(frozen=True)
class Query:
    """What to pull, at study level; each field given narrows it (``dates`` as ``YYYYMMDD-YYYYMMDD``)."""

    study: str | None = None
    patient: str | None = None
    dates: str | None = None
    accession: str | None = None

    def dataset(self):
        """Return the C-FIND identifier at study level: the fields given, the rest empty (asked back)."""
        from pydicom import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = self.study or ""
        ds.PatientID = self.patient or ""
        ds.StudyDate = self.dates or ""
        ds.AccessionNumber = self.accession or ""
        return ds


def _retrieve(study: str):
    """Return a C-GET identifier: the level and the study's UID, nothing else (Orthanc reads an empty key as the one asked for)."""
    from pydicom import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    return ds


def find_studies(source: str, queries: list[Query]) -> list[str]:
    """Return the Study Instance UIDs the PACS ``source`` (``dicom://AET@HOST:PORT``) answers ``queries`` with."""
    from pynetdicom import AE

    if not queries or any(q == Query() for q in queries):
        raise InputError("pull: say what to pull (--study, --patient, --dates or --accession); refusing a whole PACS")
    ae_title, host, port = dicom_node(source)
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Find)
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        raise ForwardError(f"{source}: no association for C-FIND (unreachable, or it refused {CALLING_AE})")
    studies: list[str] = []
    try:
        for query in queries:
            for status, answer in assoc.send_c_find(query.dataset(), Find):
                if status and status.Status in _PENDING and answer is not None and answer.get("StudyInstanceUID"):
                    uid = str(answer.StudyInstanceUID)
                    if uid not in studies:
                        studies.append(uid)
                elif status and status.Status not in _PENDING | {0x0000}:
                    raise ForwardError(f"{source}: C-FIND answered status 0x{status.Status:04X}")
    finally:
        assoc.release()
    return studies


def pull(pipeline: Pipeline, source: str, queries: list[Query]) -> dict[str, int]:
    """Fetch every study ``queries`` find on ``source`` into ``pipeline`` by C-GET, then gate and deliver it.

    Returns the pipeline's counts (received, forwarded, quarantined, pending). Pulling the same
    study again fetches it again but forwards nothing twice (the journal knows each instance).
    """
    from pynetdicom import AE, StoragePresentationContexts, build_role, evt

    studies = find_studies(source, queries)
    log.info("pull: %d stud(ies) found", len(studies))
    ae_title, host, port = dicom_node(source)
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Get)
    roles: list[Any] = []
    for context in StoragePresentationContexts[:127]:  # 128 contexts in all, one of them the C-GET's
        ae.add_requested_context(str(context.abstract_syntax))
        roles.append(build_role(str(context.abstract_syntax), scp_role=True))

    def store(event) -> int:
        pipeline.receive(event.encoded_dataset(), ae_title)
        return 0x0000

    for number, study in enumerate(studies, 1):
        assoc = ae.associate(host, port, ae_title=ae_title, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, store)])
        if not assoc.is_established:
            raise ForwardError(f"{source}: no association for C-GET (unreachable, or it refused {CALLING_AE})")
        try:
            final = None
            for status, _ in assoc.send_c_get(_retrieve(study), Get):
                final = status
        finally:
            assoc.release()
        if final is None or final.Status not in (0x0000, 0xB000):
            code = "none" if final is None or "Status" not in final else f"0x{final.Status:04X}"
            raise ForwardError(f"{source}: C-GET of study {number} of {len(studies)} ended with status {code}")
        log.info("pull: study %d of %d fetched", number, len(studies))
    pipeline.run_pending()
    return pipeline.counts()
