"""Instances per second through ``medveil gateway`` against a modality sending straight into Orthanc, in one run.

    python benchmarks/bench_gateway.py [--instances 100] [--side 128] [--repeat 3] [--only direct|off|on]

Builds a CT study of ``--instances`` slices (pydicom's CT_small.dcm, tiled up to ``--side`` pixels,
distinct UIDs, no text), then, ``--repeat`` times in turn, each into a fresh Orthanc (Debian's
package) on loopback:

- ``direct``: dcmtk's ``storescu`` sends the study to Orthanc; timed until it returns;
- ``gateway, screen off`` and ``gateway, screen on``: ``storescu`` sends it to a running
  ``medveil gateway`` (``--burned-in-text off`` / ``refuse``), which spools, gates and forwards it to
  Orthanc; timed from the first byte sent until the gateway's journal records every instance as
  sent (the gateway is started, and waits, before the clock starts).

Prints the median of each, in instances per second, and each gateway's speed as a ratio of
direct's (1.0 = as fast as storing straight into the PACS). Needs Orthanc and storescu.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from orthanc import ORTHANC, STORESCU, Orthanc, ct_study, free_port, wait_for_port  # noqa: E402

import medveil  # noqa: E402


def study(folder: Path, instances: int, side: int) -> list[Path]:
    paths = ct_study(folder, Path(get_testdata_file("CT_small.dcm")), instances=instances, series=2)
    if side != 128:
        for path in paths:
            ds = pydicom.dcmread(path)
            reps = -(-side // ds.Rows)
            ds.PixelData = np.tile(ds.pixel_array, (reps, reps))[:side, :side].copy().tobytes()
            ds.Rows = ds.Columns = side
            ds.save_as(path)
    return paths


def direct(work: Path, paths: list[Path]) -> float:
    pacs = Orthanc(work / "orthanc")
    try:
        start = time.perf_counter()
        subprocess.run([STORESCU, "-aec", "ORTHANC", "127.0.0.1", str(pacs.dicom_port)] + [str(p) for p in paths],
                       check=True, capture_output=True)
        seconds = time.perf_counter() - start
        assert len(pacs.instances()) == len(paths)
        return seconds
    finally:
        pacs.stop()


def through_gateway(work: Path, paths: list[Path], key: Path, screen: str) -> float:
    pacs = Orthanc(work / "orthanc")
    port = free_port()
    journal = work / "gateway" / "journal.jsonl"
    gateway = subprocess.Popen([str(Path(sys.executable).with_name("medveil")), "gateway", "-k", str(key),
                                "--to", pacs.node, "--workdir", str(work / "gateway"), "--port", str(port),
                                "--burned-in-text", screen], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        start = time.perf_counter()
        subprocess.run([STORESCU, "-aec", "MEDVEIL", "127.0.0.1", str(port)] + [str(p) for p in paths],
                       check=True, capture_output=True)
        while sum(json.loads(line)["event"] == "sent" for line in journal.read_text().splitlines()) < len(paths):
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        assert len(pacs.instances()) == len(paths)
        return seconds
    finally:
        gateway.terminate()
        gateway.wait()
        pacs.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["direct", "off", "on"],
                        help="Run one method once (for timing whole processes from outside, against each other).")
    args = parser.parse_args()
    if ORTHANC is None or STORESCU is None:
        sys.exit("needs Orthanc and dcmtk's storescu (Debian packages orthanc, dcmtk; make install adds them)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = study(tmp / "study", args.instances, args.side)
        key = tmp / "ct.key"
        medveil.generate_key("intensity", bits=16, signed=True, levels=300).save(key)
        methods = {"direct": lambda w: direct(w, paths),
                   "gateway, screen off": lambda w: through_gateway(w, paths, key, "off"),
                   "gateway, screen on": lambda w: through_gateway(w, paths, key, "refuse")}
        if args.only:
            name = {"direct": "direct", "off": "gateway, screen off", "on": "gateway, screen on"}[args.only]
            print(f"{name}: {methods[name](tmp / 'only'):.2f} s")
            return
        times: dict[str, list[float]] = {name: [] for name in methods}
        for run in range(args.repeat):
            for name, method in methods.items():  # in turn, so a drift in the machine's speed hits each alike
                times[name].append(method(tmp / f"{run}-{len(times[name])}-{name.replace(' ', '').replace(',', '')}"))
        print(f"{args.instances} CT instances of {args.side}x{args.side} int16, {args.repeat} runs each, median:")
        base = statistics.median(times["direct"])
        for name, seconds in times.items():
            median = statistics.median(seconds)
            print(f"  {name:22s} {median:6.2f} s  {args.instances / median:6.1f} instances/s  "
                  f"{base / median:5.2f}x direct's speed")


if __name__ == "__main__":
    main()
