"""medveil deidentify beside dicognito and deid (its default recipe) on one CT study with planted PHI.

    python -m venv /tmp/others && /tmp/others/bin/pip install dicognito deid
    .venv/bin/python scripts/compare-deidentifiers.py --others /tmp/others/bin/python

dicognito and deid are not medveil's dependencies, so they run from a Python of their own. The study:
20 slices of pydicom's CT_small.dcm in two series, with PHI in the header (tests/orthanc.py's PHI),
inside two sequences (RequestAttributesSequence, OtherPatientIDsSequence), in a private element and
in ImageComments. Prints, per tool, which planted strings and original UIDs are still in the files'
bytes, and what became of the patient, the dates, the grouping and the pixels.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from orthanc import PHI, ct_study  # noqa: E402

import medveil  # noqa: E402
from medveil.io import Gate, gate_tree  # noqa: E402

EXTRA = ["House^Gregory", "Jane Doe", "4711", "Elsewhere"]
OTHERS = """
import sys
from dicognito.__main__ import main
from deid.config import DeidRecipe
from deid.dicom import get_files, replace_identifiers
source, out = sys.argv[1], sys.argv[2]
import os
os.makedirs(out + "/deid")
main(["--output-dir", out + "/dicognito", source])
replace_identifiers(dicom_files=list(get_files(source)), deid=DeidRecipe(), save=True, output_folder=out + "/deid",
                    remove_private=True)
"""


def plant(paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        request = Dataset()
        request.RequestingPhysician, request.RequestedProcedureDescription = "House^Gregory", "CT for Jane Doe"
        other = Dataset()
        other.PatientID, other.IssuerOfPatientID = PHI["PatientID"], PHI["InstitutionName"]
        ds.RequestAttributesSequence, ds.OtherPatientIDsSequence = [request], [other]
        ds.private_block(0x0009, "ACME", create=True).add_new(0x11, "LO", "Jane Doe, MRN-4711-0815")
        ds.ImageComments = "patient Jane Doe, MRN 4711"
        ds.save_as(path)


def describe(name: str, files: list[Path], sources: list[pydicom.Dataset]) -> str:
    raw = [f.read_bytes() for f in files]
    out = [pydicom.dcmread(f) for f in files]
    planted = sorted({p for p in list(PHI.values()) + EXTRA for r in raw if p.encode() in r})
    uids = {u for d in sources for u in (d.SOPInstanceUID, d.SeriesInstanceUID, d.StudyInstanceUID)}
    left = sum(1 for u in uids if any(u.encode() in r for r in raw))
    by_number = {int(d.InstanceNumber): d for d in sources}
    same_pixels = all(np.array_equal(d.pixel_array, by_number[int(d.InstanceNumber)].pixel_array) for d in out
                      if "InstanceNumber" in d)
    first = out[0]
    return (f"| {name} | {len(files)} | {', '.join(planted) or 'none'} | {left} of {len(uids)} | "
            f"{len({d.get('StudyInstanceUID') for d in out if 'StudyInstanceUID' in d})} / "
            f"{len({d.get('SeriesInstanceUID') for d in out if 'SeriesInstanceUID' in d})} | "
            f"{first.get('PatientName', '(removed)')} | {first.get('StudyDate', '(removed)')} | "
            f"{first.get('PatientBirthDate', '(removed)') or '(empty)'} | "
            f"{sum(1 for d in out for e in d.iterall() if e.tag.is_private)} | {same_pixels} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--others", required=True, help="A Python with dicognito and deid installed.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = ct_study(tmp / "study", Path(get_testdata_file("CT_small.dcm")), instances=20, series=2)
        plant(paths)
        sources = [pydicom.dcmread(p) for p in paths]
        key = medveil.generate_key("intensity", bits=16, signed=True, levels=300)
        gate_tree(tmp / "study", tmp / "medveil", Gate(medveil.from_key(key), "off", obfuscate=False), progress=False)
        subprocess.run([args.others, "-c", OTHERS, str(tmp / "study"), str(tmp)], check=True, stdout=subprocess.DEVNULL)
        print(f"source: PatientName {sources[0].PatientName}, StudyDate {sources[0].StudyDate}, "
              f"BirthDate {sources[0].PatientBirthDate}")
        print("| tool | files | planted strings left | original UIDs left | studies / series | PatientName | "
              "StudyDate | BirthDate | private elements | pixels as stored |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in ("medveil", "dicognito", "deid"):
            print(describe(name, sorted((tmp / name).rglob("*.dcm")), sources))


if __name__ == "__main__":
    main()
