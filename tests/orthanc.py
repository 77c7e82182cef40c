"""A real Orthanc (Debian's package) on loopback for the gateway's tests and benchmark, and a CT study to send it.

Each Orthanc gets its own configuration, storage and ports in a temporary folder and is stopped
after. ``ORTHANC`` is None where the package is not installed (the tests then skip, saying so).
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom.uid import generate_uid

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
STORESCU = shutil.which("storescu")
WHY_NO_ORTHANC = "Orthanc is not installed (Debian package orthanc; make install adds it)"
WHY_NO_DCMTK = "dcmtk's storescu is not installed (Debian package dcmtk; make install adds it)"

# PHI planted in every instance of the study: none of it may reach Orthanc, a log or a name.
PHI = {"PatientName": "Doe^Jane^Quincy", "PatientID": "MRN-4711-0815", "PatientBirthDate": "19610203",
       "AccessionNumber": "ACC99887766", "InstitutionName": "Saint Elsewhere Hospital",
       "ReferringPhysicianName": "House^Gregory", "StudyDescription": "CT HEAD for Jane Doe",
       "OperatorsName": "Nurse^Ratched", "StationName": "CT7-WARD-B"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


class Orthanc:
    """An Orthanc started in ``folder``: AE title ORTHANC, DICOM and HTTP ports of its own; knows MEDVEIL."""

    def __init__(self, folder: Path, medveil_port: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port, self.http_port = free_port(), free_port()
        config = {
            "Name": "medveil-test", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"), "DicomAet": "ORTHANC", "DicomPort": self.dicom_port,
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
            "DicomModalities": {"medveil": {"AET": "MEDVEIL", "Host": "127.0.0.1", "Port": medveil_port or 104,
                                            "AllowFind": True, "AllowGet": True, "AllowMove": True,
                                            "AllowStore": True, "AllowEcho": True}},
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(self.folder / "orthanc.log", "wb")
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/system").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"Orthanc did not start; see {self.folder / 'orthanc.log'}")
            time.sleep(0.1)

    has_dicomweb = DICOMWEB_PLUGIN.exists()

    @property
    def node(self) -> str:
        return f"dicom://ORTHANC@127.0.0.1:{self.dicom_port}"

    @property
    def stow(self) -> str:
        return f"stow:http://127.0.0.1:{self.http_port}/dicom-web"

    def instances(self) -> list[str]:
        return self.http.get("/instances").json()

    def file(self, instance: str) -> bytes:
        return self.http.get(f"/instances/{instance}/file").content

    def upload(self, path: Path) -> None:
        self.http.post("/instances", content=path.read_bytes()).raise_for_status()

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def ct_study(folder: Path, source: Path, instances: int = 50, series: int = 2, text_at: int | None = None) -> list[Path]:
    """``instances`` CT slices of one study in ``series`` series, built from pydicom's ``CT_small.dcm`` with
    distinct UIDs, positions and :data:`PHI`; the slice ``text_at`` carries a name burned into its pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(source)
    study = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    paths = []
    for i in range(instances):
        ds = copy.deepcopy(base)  # Dataset.copy shares the elements: PixelData set here would reach base
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uids[i % series]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.SeriesNumber = i % series + 1
        ds.ImagePositionPatient = [-158.1, -179.0, -75.7 + 2.5 * i]
        pixels = np.roll(base.pixel_array, i, axis=1)
        if i == text_at:
            from test_deid import draw_text

            pixels = draw_text(pixels, [(4, 4, "DOE^JANE"), (4, 108, "MRN 4711")])
        ds.PixelData = pixels.astype(base.pixel_array.dtype).tobytes()
        path = folder / f"slice{i:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths
