"""DICOM header de-identification: PS3.15 Annex E at every depth, keyed UIDs, keyed date shifts.

What is done to each attribute comes from PS3.15 Table E.1-1 (Basic Application Level
Confidentiality Profile), as the dicom-anonymizer package ships it for the 2026c edition. Its engine
applies the table to top-level attributes only, and emptied dates become ``00010101`` (invalid DA),
so the walk is medveil's own: every attribute of every sequence item, at any depth, gets its action.

Options, recorded in DeidentificationMethodCodeSequence (CID 7050):

- Basic profile (113100), with private attributes, overlays and curves removed whole.
- Retain Longitudinal Temporal Information with Modified Dates (113107): every date and date-time,
  wherever it is, moves back by one keyed offset per patient (1 to 10 years, whole days), so
  intervals within a patient's studies survive, times of day are kept, and every date stays valid.
  The patient's birth date and time are removed.
- Clean Pixel Data (113101), only when burned-in text was masked (:mod:`medveil.io.burned_in`).
- Clean Descriptors (113105), by default: free text the table does not list (LT, ST and UT
  values such as an SR or image's TextValue, and the per-frame FrameLabel) is removed, as
  nothing says what a site wrote there. ``clean_descriptors=False`` keeps it.

Elements whose VR is UN (read from an implicit-VR file, or written as UN by a system that did not
know them) are read as what they are before their action is taken: as the dictionary's VR where the
tag is known, as a sequence where their bytes hold one (so every item inside is walked), and are
removed where neither says what they hold.

Every UID that is not a standard one (SOP classes, transfer syntaxes, coding schemes) is replaced by
a keyed ``2.25.`` UID, wherever it occurs, so references inside a study stay consistent under one key
(a SEG's ReferencedSOPInstanceUID is the keyed SOPInstanceUID of its source image) and cannot be
linked to the originals without the key. Person names anywhere are removed or emptied, except the
patient's, which becomes a keyed pseudonym (as does the patient ID), so one patient's files stay
together.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
from typing import Sequence, cast

import pydicom
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID_dictionary

PROFILE_VERSION = "dicomfields_2026c"

# Table E.1-1's action codes, as the table names its lists, and what medveil does for each.
_ACTIONS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "D", "X_Z_TAGS": "Z",
            "X_D_TAGS": "D", "X_Z_D_TAGS": "D", "X_Z_U_STAR_TAGS": "U"}
_BIRTH = {0x00100030, 0x00100032, 0x00100033, 0x00100034, 0x00100035}  # date, time, alternative calendar
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_STRING_VRS = {"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT", "PN"}
_NUMBER_VRS = {"FD", "FL", "SS", "US", "SL", "UL", "SV", "UV"}
_MIN_SHIFT_DAYS, _SHIFT_SPAN_DAYS = 365, 9 * 365
_FREE_TEXT_VRS = {"LT", "ST", "UT"}
_DESCRIPTORS = {0x00209453}  # FrameLabel: an LO a site fills with whatever it likes, per frame
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: a sequence's first item

METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean-pixels": ("113101", "Clean Pixel Data Option"),
    "modified-dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean-descriptors": ("113105", "Clean Descriptors Option"),
}


def _load_table() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []  # (value, mask, action) for repeating groups such as 60xx
    for category, tags in dicom_anonymization_database_selector(PROFILE_VERSION).items():
        action = _ACTIONS.get(category)
        if action is None:
            continue
        for tag in tags:
            if len(tag) == 2:
                exact[(tag[0] << 16) | tag[1]] = action
            else:
                masked.append(((tag[0] << 16) | tag[1], (tag[2] << 16) | tag[3], action))
    return exact, masked


_EXACT, _MASKED = _load_table()


def profile_action(tag: int) -> str | None:
    """Medveil's action for ``tag``: ``X`` remove, ``Z`` empty, ``D`` dummy, ``U`` keyed UID; None keeps."""
    action = _EXACT.get(tag)
    if action is None:
        action = next((a for value, mask, a in _MASKED if tag & mask == value & mask), None)
    return action


def keyed_uid(uid: str, secret: bytes) -> str:
    """Return a DICOM UID derived from ``uid`` under ``secret`` (``2.25.<128-bit integer>``)."""
    digest = hmac.new(secret, uid.encode(), hashlib.sha256).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def _keyed_int(secret: bytes, label: str) -> int:
    return int.from_bytes(hmac.new(secret, label.encode(), hashlib.sha256).digest()[:8], "big")


def patient_pseudonym(patient: str, secret: bytes) -> str:
    """Return the keyed stand-in for a patient's ID and name: ``MV`` and 12 hex digits."""
    return f"MV{_keyed_int(secret, 'patient:' + patient):016X}"[:14]


def date_shift_days(patient: str, secret: bytes) -> int:
    """Return the keyed per-patient shift, -10 to -1 years in whole days."""
    return -(_MIN_SHIFT_DAYS + _keyed_int(secret, "date-shift:" + patient) % _SHIFT_SPAN_DAYS)


def _shift_date(value: str, days: int, vr: str) -> str:
    """``value`` (DA ``YYYYMMDD`` or DT ``YYYYMMDD...``) moved by ``days``; '' where it is no full date."""
    text = str(value).strip()
    try:
        day = datetime.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    moved = (day + datetime.timedelta(days=days)).strftime("%Y%m%d")
    return moved if vr == "DA" else moved + text[8:]


def _is_standard_uid(uid: str) -> bool:
    return str(uid) in UID_dictionary


def _dummy(vr: str):
    if vr in _STRING_VRS:
        return "ANONYMIZED"
    if vr in ("DS", "IS"):
        return "0"
    if vr in _NUMBER_VRS:
        return 0
    return None  # OB, OW, UN, UR, AS, ...: zero length


def _sequence(ds: Dataset, raw) -> bool:
    """Replace the UN element ``raw`` of ``ds`` by the sequence its bytes hold.

    PS3.5 6.2.2: implicit VR little endian inside. False, changing nothing, where they hold none.
    """
    value = raw.value if raw.is_raw else ds[raw.tag].value
    if not isinstance(value, bytes) or not value.startswith(_ITEM):
        return False
    try:
        element = convert_raw_data_element(RawDataElement(raw.tag, "SQ", len(value), value, 0, True, True))
    except Exception:  # bytes that only start like a sequence
        return False
    ds[raw.tag] = element
    return True


class _Walker:
    def __init__(self, secret: bytes, patient: str, clean_descriptors: bool = True):
        self.secret = secret
        self.clean_descriptors = clean_descriptors
        self.pseudonym = patient_pseudonym(patient, secret)
        self.days = date_shift_days(patient, secret)

    def uid(self, value):
        if isinstance(value, MultiValue):
            return [self.uid(v) for v in value]
        return value if not value or _is_standard_uid(value) else keyed_uid(str(value), self.secret)

    def date(self, value, vr: str):
        if isinstance(value, MultiValue):
            return [self.date(v, vr) for v in value]
        return _shift_date(value, self.days, vr) if value else value

    def clean(self, ds: Dataset) -> None:
        # Elements are decoded only where their value changes: decoding all of a header costs more
        # than the rest of a file's obfuscation, and kept elements are written back as read.
        for raw in list(ds.elements()):
            tag = raw.tag
            group = tag >> 16
            if tag.is_private or 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and group % 2 == 0):
                del ds[tag]  # private data, curves and overlays (graphics can carry text) go whole
                continue
            action, vr = profile_action(tag), raw.VR or _vr(ds, tag)
            if vr == "UN":
                if dictionary_has_tag(tag):
                    vr = ds[tag].VR  # pydicom reads a known tag's UN bytes as the dictionary says
                elif _sequence(ds, raw):
                    vr = "SQ"
                else:
                    del ds[tag]  # nothing says what these bytes hold, so nothing can clean them
                    continue
            if tag in (_PATIENT_NAME, _PATIENT_ID):
                ds[tag].value = self.pseudonym
            elif tag in _BIRTH:
                ds[tag].value = None
            elif vr == "SQ":
                if action == "X":
                    del ds[tag]
                elif action == "Z":
                    ds[tag].value = []
                else:
                    for item in ds[tag].value:
                        self.clean(item)
            elif vr == "UI":
                if action == "X":
                    del ds[tag]
                else:
                    ds[tag].value = self.uid(ds[tag].value)
            elif vr in ("DA", "DT"):
                ds[tag].value = self.date(ds[tag].value, vr)
            elif action == "X" or (action is None and self.clean_descriptors
                                   and (vr in _FREE_TEXT_VRS or tag in _DESCRIPTORS)):
                del ds[tag]
            elif action in ("Z", "U") or (vr == "PN" and action is None):
                ds[tag].value = None
            elif action == "D":
                ds[tag].value = _dummy(vr)


def _vr(ds: Dataset, tag: BaseTag) -> str:
    """Return the VR of an element read with implicit VR: the dictionary's, or what pydicom decodes."""
    return dictionary_VR(tag) if dictionary_has_tag(tag) else ds[tag].VR


def copy_dataset(ds: Dataset) -> Dataset:
    """Return a deep copy of ``ds`` that shares its tags and undecoded elements, at any depth, instead of copying them.

    Both are immutable (an int, a tuple of bytes and numbers), and undecoded elements are most of a
    header as read; ``copy.deepcopy`` would rebuild each of them field by field.
    """
    memo: dict[int, object] = {}

    def share_raw(dataset: Dataset) -> None:
        for element in dataset.values():  # as stored: raw elements stay raw
            memo[id(element.tag)] = element.tag
            if element.is_raw:
                memo[id(element)] = element
            elif element.VR == "SQ":
                for item in cast(Sequence, element.value):
                    share_raw(item)

    share_raw(ds)
    return copy.deepcopy(ds, memo)


def _code_item(key: str) -> Dataset:
    value, meaning = METHOD_CODES[key]
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def deidentify(ds: Dataset, secret: bytes, *, text_masked: bool = False, copy: bool = True,
               clean_descriptors: bool = True) -> Dataset:
    """Return a de-identified copy of ``ds``; ``ds`` itself is not changed unless ``copy`` is False.

    Parameters
    ----------
    ds : pydicom.Dataset
        A dataset as read, with or without file meta.
    secret : bytes
        Key material for UIDs, pseudonyms and date shifts (the same key gives the same values).
    text_masked : bool
        The pixels had their burned-in text masked: records the Clean Pixel Data option and sets
        BurnedInAnnotation to NO.
    copy : bool
        False de-identifies ``ds`` itself and returns it: for a caller that read it and has no other
        use for it (a folder run), which saves a copy of the header per file.
    clean_descriptors : bool
        Remove free text the table does not list (the Clean Descriptors option; see the module).
    """
    if copy:
        ds = copy_dataset(ds)
    patient = str(ds.get("PatientID", "") or ds.get("PatientName", ""))
    _Walker(secret, patient, clean_descriptors).clean(ds)
    file_meta = getattr(ds, "file_meta", None)
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformation", "PrivateInformationCreatorUID"):
        if file_meta is not None and keyword in file_meta:
            delattr(file_meta, keyword)
    options = (["basic", "modified-dates"] + (["clean-pixels"] if text_masked else [])
               + (["clean-descriptors"] if clean_descriptors else []))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ["DICOM PS3.15 E.1 Basic Profile", "Modified Dates Option"] + (
        ["Clean Pixel Data Option"] if text_masked else []) + (
        ["Clean Descriptors Option"] if clean_descriptors else []) + ["pixels obfuscated (medveil)"]
    ds.DeidentificationMethodCodeSequence = pydicom.Sequence([_code_item(o) for o in options])
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    if text_masked:
        ds.BurnedInAnnotation = "NO"
    return ds
