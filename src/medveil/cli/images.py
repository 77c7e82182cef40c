"""``medveil obfuscate``, ``compare``, ``samples`` and ``inspect``: files in, files out."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from medveil.cli._common import (
    ALLOW_BROKEN_HELP,
    app,
    check_broken,
    clean_errors,
    echo_json,
    echo_verdicts,
    fail,
    load_key,
)
from medveil.data import copy_samples
from medveil.io import Gate, gate_tree, output_name, read_image
from medveil.io.gate import key_command
from medveil.io.image import suffix_of
from medveil.schemes import from_key


# Options obfuscate and deidentify share.
Source = Annotated[str, typer.Argument(help="An image file or a folder of them (DICOM, NIfTI, PNG, JPEG, TIFF, NPY); "
                                       "a folder may be an fsspec URL (memory://, s3://, ...).")]
Output = Annotated[str, typer.Argument(help="Output file, or output folder mirroring the source tree (or its URL).")]
Workers = Annotated[int, typer.Option(min=1, help="Worker processes for a folder (with --scheduler local: Dask "
                                                  "workers).")]
Scheduler = Annotated[Optional[str], typer.Option(
    help="Run a folder on Dask: 'local' (a LocalCluster of --workers processes) or a scheduler's address "
         "(tcp://host:8786) whose workers reach both folders. The key is sent to the workers once.")]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
BurnedInText = Annotated[str, typer.Option(
    help="Text OCR (Tesseract) reads in the pixels, or a DICOM header's BurnedInAnnotation YES: 'refuse' fails the "
         "file, 'mask' blanks the text first (DICOM records the Clean Pixel Data option), 'off' skips the check.")]
KeepNames = Annotated[bool, typer.Option("--keep-names", help=(
    "Folders: write outputs under the sources' own relative paths. Default: keyed pseudonyms (folder and file names "
    "can hold PHI); the manifest maps them back."))]
ManifestPath = Annotated[Optional[Path], typer.Option(help=(
    "Folders: the run's record (sources, digests, pseudonyms), kept in the hospital. Default: "
    "OUTPUT.manifest.jsonl beside the output folder; needed for a URL output."))]
Include = Annotated[Optional[list[str]], typer.Option(help=(
    "Folders: take only files whose relative path matches this glob, repeatable ('*' crosses folders: '*.dcm').")
)]
Exclude = Annotated[Optional[list[str]], typer.Option(help="Folders: leave out files whose relative path matches "
                                                           "this glob, repeatable.")]
KeepDescriptors = Annotated[bool, typer.Option("--keep-descriptors", help=(
    "DICOM: keep free text that PS3.15 Table E.1-1 does not list (series and study descriptions' kin, "
    "ContentSequence text, frame labels). Default: removed, as the Clean Descriptors option does; the text may "
    "name the patient."))]


@app.command()
@clean_errors
def obfuscate(
    source: Source,
    output: Output,
    key: Path = typer.Option(..., "--key", "-k", help="Key file from `medveil keygen`."),
    workers: Workers = 1,
    scheduler: Scheduler = None,
    progress: Progress = True,
    burned_in_text: BurnedInText = "refuse",
    keep_names: KeepNames = False,
    manifest: ManifestPath = None,
    keep_descriptors: KeepDescriptors = False,
    include: Include = None,
    exclude: Exclude = None,
    allow_broken: bool = typer.Option(False, "--allow-broken", help=ALLOW_BROKEN_HELP),
):
    """Obfuscate images with a key. Originals are never modified; an interrupted folder run resumes."""
    hospital_key = load_key(key)
    check_broken(hospital_key, allow_broken, "obfuscate")
    gate = Gate(from_key(hospital_key), burned_in_text, keep_names, keep_descriptors)
    ok = _through_gate(gate, source, output, workers, scheduler, progress, manifest, include, exclude)
    echo_verdicts(hospital_key.scheme, hospital_key.params)
    if not ok:
        raise typer.Exit(1)


@app.command()
@clean_errors
def deidentify(
    source: Source,
    output: Output,
    key: Path = typer.Option(..., "--key", "-k", help="Key file from `medveil keygen`: it keys the UIDs, patient "
                             "pseudonyms, date shifts and file names (the same as `obfuscate` gives), not the pixels."),
    workers: Workers = 1,
    scheduler: Scheduler = None,
    progress: Progress = True,
    burned_in_text: BurnedInText = "refuse",
    keep_names: KeepNames = False,
    manifest: ManifestPath = None,
    keep_descriptors: KeepDescriptors = False,
    include: Include = None,
    exclude: Exclude = None,
):
    """De-identify without obfuscating.

    Headers, names and the burned-in text screen as `obfuscate` does them, pixels as stored. For a destination
    trusted with images but not with identities.
    """
    gate = Gate(from_key(load_key(key)), burned_in_text, keep_names, keep_descriptors, obfuscate=False)
    if not _through_gate(gate, source, output, workers, scheduler, progress, manifest, include, exclude):
        raise typer.Exit(1)


def _through_gate(gate: Gate, source: str, output: str, workers: int, scheduler: Optional[str], progress: bool,
                  manifest: Optional[Path], include: Optional[list[str]] = None,
                  exclude: Optional[list[str]] = None) -> bool:
    """One file or a folder tree through ``gate``, and what was done (obfuscate and deidentify alike).

    False where some files of a folder failed (the others were written).
    """
    from medveil.io.remote import local_path

    done = f"with {gate.scheme.describe()}" if gate.obfuscate else "de-identified, pixels as stored"
    source_at, output_at = local_path(source), local_path(output)
    if isinstance(source_at, Path) and source_at.is_file():
        if not isinstance(output_at, Path):
            fail(f"{source_at}: one file is written to a local path; URLs are for folder runs")
        written_as = output_name(source_at.name, source_at)
        if output_at.is_dir():
            target = output_at / gate.name(written_as)
        elif suffix_of(output_at) != suffix_of(written_as):  # out.jpg would hold PNG bytes: readers go by the suffix
            fail(f"{output_at}: {source_at.name} is written as {suffix_of(written_as) or 'DICOM without a suffix'} "
                 f"(the codes must survive exactly); name the output {output_at.stem}{suffix_of(written_as)}")
        else:
            target = output_at
        gate.write(source_at, target)
        typer.echo(f"wrote {target} {done}")
        return True
    report = gate_tree(source_at, output_at, gate, workers=workers, progress=progress, scheduler=scheduler,
                       manifest=manifest, include=include or (), exclude=exclude or ())
    hidden = f", {len(report.hidden)} hidden left out" if report.hidden else ""
    hidden += f", {len(report.filtered)} left out by --include/--exclude" if report.filtered else ""
    verb = "obfuscated" if gate.obfuscate else "de-identified"
    typer.echo(f"{len(report.done)} {verb}, {len(report.skipped)} already done, "
               f"{len(report.failed)} failed{hidden} -> {output} {done}")
    for _, message in report.failed:
        typer.echo(f"failed: {message}", err=True)
    for command, files in report.need_key.items():
        pattern = _common_pattern(files)
        typer.echo(f"{len(files)} file(s) need another key: {command} -o KEY, then run them with it"
                   + (f" (--include '{pattern}')" if pattern else ""), err=True)
    return report.ok


def _common_pattern(files: list[str]) -> str | None:
    """``*.dcm`` where every file has that suffix (the usual split of a mixed folder), else None."""
    suffixes = {suffix_of(f) for f in files}
    return f"*{suffixes.pop()}" if len(suffixes) == 1 and "" not in suffixes else None


# At or above this SSIM to its original, an obfuscated image shows more of it than a guess does: the mean
# image of a collection scores about 0.23 against each of its images on Br35H brain MRI (the benchmark's guess).
SHOWS_SSIM = 0.3


@app.command()
@clean_errors
def compare(
    originals: Path = typer.Argument(..., help="Original file or folder."),
    others: Path = typer.Argument(..., help="Obfuscated (or reconstructed) file or folder, same relative paths."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the per-image scores here."),
    figure: Optional[Path] = typer.Option(None, help="Also save a PNG grid of the first pairs here."),
    examples: int = typer.Option(4, min=1, help="Pairs shown in --figure."),
    label: str = typer.Option("obfuscated", help="Column title for the second folder in --figure."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: each image's scores, their means, the files that failed."),
):
    """SSIM and PSNR between originals and their obfuscated versions, per image and on average."""
    from medveil import metrics
    from medveil.evaluation.figures import image_grid

    for folder in (originals, others):
        if not folder.exists():
            fail(f"{folder}: no such file or folder")
    if originals.is_file():
        rows: list[dict[str, Any]] = [{"file": originals.name,
                                       **metrics.compare_images(read_image(originals), read_image(others))}]
        problems: list[str] = []
        pairs = [(originals, others)]
    else:
        if not originals.is_dir():
            fail(f"{originals}: no such file or folder")
        rows, problems = metrics.compare_trees(originals, others)
        counterpart = metrics.counterparts(originals, others)
        pairs = [(originals / r["file"], counterpart(r["file"])) for r in rows]
    mean = None
    if rows:
        finite = [r["psnr"] for r in rows if math.isfinite(r["psnr"])]
        mean = {"images": len(rows), "ssim": sum(r["ssim"] for r in rows) / len(rows),
                "psnr": sum(finite) / len(finite) if finite else math.inf}
    shows = [row["file"] for row in rows if row["ssim"] >= SHOWS_SSIM]
    if as_json:
        echo_json({"images": rows, "mean": mean, "failed": problems, "structure_shows": shows})
    else:
        for row in rows:
            flag = "\t<- structure shows" if row["ssim"] >= SHOWS_SSIM else ""
            typer.echo(f"{row['file']}\tSSIM {row['ssim']:.4f}\tPSNR {row['psnr']:.2f} dB{flag}")
        if mean:
            typer.echo(f"mean over {mean['images']} images\tSSIM {mean['ssim']:.4f}\tPSNR {mean['psnr']:.2f} dB")
        if shows:
            typer.echo(f"{len(shows)} of {len(rows)} images at SSIM >= {SHOWS_SSIM}: more of each original shows than "
                       "a mean image gives (about 0.23 on brain MRI); look at them (--figure) before they leave")
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["file", "ssim", "psnr"])
            writer.writeheader()
            writer.writerows(rows)
    if figure and rows:
        shown = pairs[:examples]
        grid = [[read_image(a).middle_plane(), read_image(b).middle_plane()] for a, b in shown]
        labels = [f"{Path(a).name}\nSSIM {r['ssim']:.3f}" for (a, _), r in zip(shown, rows)]
        image_grid(grid, ["original", label], labels, figure)
        typer.echo(f"figure: {figure}")
    for message in problems:
        typer.echo(f"failed: {message}", err=True)
    if problems or not rows:
        if not rows and not problems:
            fail(f"{originals}: no supported images to compare")
        raise typer.Exit(1)



@app.command()
@clean_errors
def samples(dest: Path = typer.Argument(..., help="Folder to fill with example scans.")):
    """Copy a few real example scans bundled with installed packages (Br35H MRI, DICOM CT/MR, NIfTI)."""
    copied = copy_samples(dest)
    for group, files in copied.items():
        typer.echo(f"{dest / group}: {len(files)} files")


@app.command()
@clean_errors
def inspect(path: Path = typer.Argument(..., help="An image file."),
            as_json: bool = typer.Option(False, "--json", help="One JSON object.")):
    """Show an image's format, shape, stored type and value range, and the key it needs."""
    if path.is_dir():
        fail(f"{path}: a folder; inspect looks at one image file (medveil inspect {path}/FILE)")
    image = read_image(path)
    pixels = image.pixels
    command = key_command(image)
    keygen_command = f"{command} -o KEY" if command else None
    if as_json:
        echo_json({"file": str(path), "format": image.format, "shape": list(pixels.shape), "dtype": str(pixels.dtype),
                    "bits": image.bits, "min": pixels.min().item(), "max": pixels.max().item(), "keygen": keygen_command})
        return
    typer.echo(f"{path}: {image.format}, shape {pixels.shape}, {pixels.dtype}, {image.bits} bits stored, "
               f"values [{pixels.min()}, {pixels.max()}]")
    typer.echo(f"key for data like this: {keygen_command}" if keygen_command
               else "no medveil key maps these samples (keys map integers of 2 to 16 bits)")
