"""A folder run against a plain copy, measured in one run: one process, ``--workers 2``, Dask local.

    python benchmarks/bench_folder.py [--mb 200,2000] [--formats npy,png,dicom] [--repeat 1]

Makes, per format and size, a folder of about that many MB (npy: 2048×2048 uint8 arrays; png: the
same as PNG; dicom: 512×512 16-bit CT slices built on pydicom's CT_small.dcm, 0.5 MB each, many
files as a PACS export has), then times:

- ``copy``: the plain decode→encode copy in this process (np.load/np.save, Pillow, pydicom);
- ``copy, new process``: the same copy in a new Python process, start-up included, as medveil is;
- ``medveil obfuscate`` as a user runs it (a new process each, start-up included), with one
  process, ``--workers 2`` and ``--scheduler local --workers 2`` (a Dask LocalCluster);

and prints each time and its speed as a ratio of each copy's (1.0 = as fast as copying), and Dask's
against ``--workers 2``, with the CPU seconds each took (user and system, all its processes; the
kernel's writing back of the outputs is not in it). Every method starts after ``sync``, so none pays for writing back what
the one before it left in the page cache. Burned-in
text screening is off (``--burned-in-text off``): it runs Tesseract on every plane, which is what
the other benchmark, bench_burned_in.py, measures. Also prints the cold start of ``medveil
obfuscate`` on one small PNG, and the Dask LocalCluster's scheduling overhead per task (no-op
tasks, submitted and gathered as the folder run does).
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

import medveil

MEDVEIL = str(Path(sys.executable).with_name("medveil"))


def make_folder(root: Path, fmt: str, megabytes: int, rng: np.random.Generator) -> int:
    """Fill ``root`` with about ``megabytes`` MB of ``fmt`` files; returns the number of files."""
    root.mkdir(parents=True)
    if fmt == "dicom":
        slice_ = ct_slice(rng)
        count = max(1, megabytes * 2**20 // len(slice_.PixelData))
        for i in range(count):
            slice_.InstanceNumber = i + 1
            slice_.save_as(root / f"ct{i:05d}.dcm")
        return count
    side = 2048
    count = max(1, megabytes * 2**20 // side**2)
    for i in range(count):
        image = rng.integers(0, 256, (side, side), dtype=np.uint8)
        if fmt == "npy":
            np.save(root / f"a{i:04d}.npy", image)
        else:
            Image.fromarray(image).save(root / f"a{i:04d}.png")
    return count


def ct_slice(rng: np.random.Generator) -> pydicom.Dataset:
    """CT_small's header over a 512×512 int16 image (HU-like values in [-1024, 3071])."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = rng.integers(-1024, 3072, (512, 512)).astype(np.int16)
    ds.Rows, ds.Columns, ds.BitsStored, ds.HighBit = 512, 512, 12, 11
    ds.PixelData = pixels.tobytes()
    return ds


def scheduling_overhead(tasks: int = 2000) -> float:
    """Seconds per no-op task on a 2-worker LocalCluster, submitted one by one and gathered as completed."""
    from distributed import as_completed

    from medveil.parallel.cluster import dask_client

    with dask_client("local", 2) as client:
        client.gather(client.map(int, range(10), pure=False))  # workers warm
        started = time.perf_counter()
        for _ in as_completed([client.submit(int, i, pure=False) for i in range(tasks)]):
            pass
        return (time.perf_counter() - started) / tasks


def plain_copy(src: Path, dst: Path, fmt: str) -> None:
    dst.mkdir()
    for path in sorted(src.iterdir()):
        if fmt == "npy":
            np.save(dst / path.name, np.load(path))
        elif fmt == "png":
            Image.open(path).save(dst / path.name)
        else:
            pydicom.dcmread(path).save_as(dst / path.name)


def plain_copy_process(src: Path, dst: Path, fmt: str) -> None:
    """:func:`plain_copy` in a new Python process that imports only what the format needs."""
    imports = {"npy": "import numpy as np", "png": "from PIL import Image", "dicom": "import pydicom"}[fmt]
    body = inspect.getsource(plain_copy)
    script = f"{imports}\nfrom pathlib import Path\n{body}\nplain_copy(Path({str(src)!r}), Path({str(dst)!r}), {fmt!r})"
    subprocess.run([sys.executable, "-c", script], check=True)


def timed(action) -> tuple[float, float]:
    """Wall seconds of ``action``, and the CPU seconds (user and system) it took in this process and its children.

    The kernel's writing back of dirty pages runs in its own threads and is in neither figure.
    """
    os.sync()  # what earlier runs left to write back is not charged to this one
    cpu = cpu_seconds()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started, cpu_seconds() - cpu


def cpu_seconds() -> float:
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in used)


def run_cli(*args: str) -> None:
    subprocess.run([MEDVEIL, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", default="200,2000", help="comma-separated folder sizes in MB, per format")
    parser.add_argument("--formats", default="npy,png,dicom")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs per method")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keys = {8: tmp / "k8.key", 16: tmp / "k16.key"}
        medveil.generate_key("intensity", levels=50).save(keys[8])
        medveil.generate_key("intensity", bits=16, signed=True, levels=300).save(keys[16])
        one = tmp / "one.png"
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(one)
        cold = min(timed(lambda: run_cli("obfuscate", "--key", str(keys[8]), "--burned-in-text", "off", str(one),
                                         str(tmp / f"one-out{i}.png")))[0] for i in range(3))
        print(f"cold start, one 64x64 PNG through `medveil obfuscate`: {cold:.2f} s wall (best of 3; goal <= 0.5)")
        print(f"Dask LocalCluster scheduling overhead: {scheduling_overhead() * 1e3:.2f} ms per task (2 workers)")
        summary = []
        for fmt, megabytes in ((f, int(mb)) for f in args.formats.split(",") for mb in args.mb.split(",")):
            src = tmp / fmt
            count = make_folder(src, fmt, megabytes, rng)
            size = sum(p.stat().st_size for p in src.iterdir()) / 2**20
            key = str(keys[16 if fmt == "dicom" else 8])
            methods = {
                "copy": lambda dst: plain_copy(src, dst, fmt),
                "copy, new process": lambda dst: plain_copy_process(src, dst, fmt),
                "medveil, 1 process": lambda dst: run_cli("obfuscate", "--key", key, "--no-progress",
                                                          "--burned-in-text", "off", str(src), str(dst)),
                "medveil --workers 2": lambda dst: run_cli("obfuscate", "--key", key, "--no-progress", "--workers", "2",
                                                           "--burned-in-text", "off", str(src), str(dst)),
                "medveil Dask local, 2 workers": lambda dst: run_cli(
                    "obfuscate", "--key", key, "--no-progress", "--workers", "2", "--scheduler", "local",
                    "--burned-in-text", "off", str(src), str(dst)),
            }
            print(f"\n{fmt}: {count} files, {size:.0f} MB")
            times = {}
            for name, method in methods.items():
                best, cpu = float("inf"), 0.0
                for r in range(args.repeat):
                    dst = tmp / f"{fmt}-{len(times)}-{r}"
                    best, cpu = min((best, cpu), timed(lambda: method(dst)))
                    shutil.rmtree(dst)
                times[name] = best
                print(f"  {name:32s} {best:7.2f} s  {size / best:7.1f} MB/s  {times['copy'] / best:5.2f}x copy  "
                      f"{times.get('copy, new process', best) / best:5.2f}x copy in a new process  "
                      f"(CPU {cpu:6.2f} s)")
            dask_vs_pool = times["medveil --workers 2"] / times["medveil Dask local, 2 workers"]
            print(f"  Dask local / --workers 2: {dask_vs_pool:.2f}x; Dask overhead over the pool "
                  f"{(times['medveil Dask local, 2 workers'] - times['medveil --workers 2']) / count * 1e3:.2f} ms per file")
            best_medveil = min(t for n, t in times.items() if n.startswith("medveil"))
            summary.append((fmt, size, times["copy"] / best_medveil, times["copy, new process"] / best_medveil,
                            dask_vs_pool))
            shutil.rmtree(src)
        print("\nformat  MB     best medveil / copy   / copy in a new process   Dask / --workers 2   "
              "(goals: >= 0.7x copy at 200 MB, >= 0.9x at 2 GB; Dask >= 0.9x the pool)")
        for fmt, size, ratio, process_ratio, dask in summary:
            print(f"{fmt:6s} {size:6.0f}  {ratio:5.2f}x                {process_ratio:5.2f}x                     {dask:5.2f}x")


if __name__ == "__main__":
    main()
