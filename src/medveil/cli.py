"""The ``medveil`` command: a thin layer over the library."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from medveil.data import copy_samples
from medveil.errors import KeyEncryptedError, MedveilError
from medveil.io import Gate, obfuscate_tree, output_name, read_image
from medveil.keys import PASSPHRASE_ENV, Key
from medveil.schemes import available_schemes, from_key, generate_key, scheme_class

# Commands import the heavy modules (PyTorch, scikit-learn, matplotlib) inside their bodies so
# `medveil --help`, keygen and obfuscate start in a fraction of the time.
COLOUR_HELP = ("Colour: 'rgb' keeps the files' colour; a matplotlib colormap name (e.g. viridis) renders the "
               "grayscale images in colour. Default: grayscale.")
# Options several commands take.
Colour = Annotated[Optional[str], typer.Option(help=COLOUR_HELP)]
DatasetName = Annotated[str, typer.Option(help="'br35h' or a folder with one subfolder per class.")]
Device = Annotated[str, typer.Option(help="Where models train and predict: auto (a CUDA GPU when torch sees one, "
                                          "else the CPU), cpu, cuda or cuda:N. Keys and obfuscation stay on the CPU.")]

app = typer.Typer(add_completion=False, no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from medveil import __version__

        typer.echo(f"medveil {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print medveil's version and exit.")):
    """Obfuscate medical images with a secret key; measure what utility and privacy survive.

    Exit status: 0 done; 1 some files failed (the others were written); 2 usage or input error.
    """


def _echo_json(value) -> None:
    typer.echo(json.dumps(value, default=str))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {message}", err=True)


warnings.showwarning = _one_line_warning  # the CLI's warnings are for people: one line, no source location


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _clean_errors(command):
    """Turn library errors, and the OS refusing a path the user gave, into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MedveilError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))

    return wrapper


def _use_device(name: str) -> None:
    from medveil.device import resolve_device, set_default_device

    set_default_device(name)
    resolve_device()  # a missing GPU is one line now, not a traceback after loading the data


def _load_key(path: Path) -> Key:
    """The key at ``path``; an encrypted one is opened with MEDVEIL_KEY_PASSPHRASE, or a prompt at a terminal."""
    try:
        return Key.load(path)
    except KeyEncryptedError:
        if not sys.stdin.isatty():
            raise
        return Key.load(path, passphrase=typer.prompt(f"passphrase for {path}", hide_input=True))


def _new_passphrase() -> str:
    """A passphrase for encrypting a key: MEDVEIL_KEY_PASSPHRASE, or asked twice at a terminal."""
    given = os.environ.get(PASSPHRASE_ENV)
    if given:
        return given
    if not sys.stdin.isatty():
        _fail(f"no passphrase: set {PASSPHRASE_ENV} or run at a terminal")
    return typer.prompt("new passphrase", hide_input=True, confirmation_prompt=True)


ALLOW_BROKEN_HELP = ("Go on with a setting the shipped privacy cards call broken under ciphertext-only (the service "
                     "itself recovers the images).")


def _check_broken(key: Key, allow_broken: bool, command: str) -> None:
    """Refuse a setting the cards call broken under ciphertext-only, unless the user said --allow-broken."""
    from medveil.evaluation.cards import broken_under_service

    card = broken_under_service(key.scheme, key.params)
    if card and not allow_broken:
        _fail(f"{command}: the privacy cards call {key.scheme} {card.params} broken under ciphertext-only: "
              f"{card.attack} recovers the images from what the service holds (SSIM {card.ssim:.2f}); "
              "run `medveil keygen` for the setting they rate best, or pass --allow-broken")


def _echo_verdicts(scheme: str, params) -> None:
    """The privacy cards' verdict on a setting, one line per threat model (as a DP tool states its epsilon)."""
    from medveil.evaluation.cards import verdict_lines

    for line in verdict_lines(scheme, params):
        typer.echo(f"  {line}")


@app.command()
@_clean_errors
def keygen(
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Key file to create (mode 0600; never overwritten)."),
    scheme: Optional[str] = typer.Option(None, help="A registered scheme (`medveil keygen --list` shows each with its "
                                         "parameters). Default: the setting the shipped privacy cards rate best."),
    levels: Optional[int] = typer.Option(None, help="intensity: N distinct output values (default 2**bits: bijective)."),
    bits: Optional[int] = typer.Option(None, help="intensity: bit depth of the stored values (8 for PNG/JPEG; 12 or 16 for CT/MR)."),
    signed: Optional[bool] = typer.Option(None, "--signed/--unsigned", help="intensity: the stored values are signed (CT)."),
    block: Optional[int] = typer.Option(None, help="tanaka, skk-smooth: block size M."),
    channels: Optional[int] = typer.Option(None, help="tanaka, skk, skk-smooth, structural: 1 (grayscale) or 3 (colour)."),
    size: Optional[int] = typer.Option(None, help="structural: images are resized to size x size before tracing."),
    raster: Optional[int] = typer.Option(None, help="structural: output size (the de-identified raster is raster x raster)."),
    passphrase: bool = typer.Option(False, "--passphrase", help=f"Encrypt the secret with a passphrase (asked twice, "
                                    f"or {PASSPHRASE_ENV}); loading it then needs the passphrase."),
    param: list[str] = typer.Option([], "-p", "--param", help="Any parameter the scheme declares, name=value "
                                    "(every scheme's, plugins' included: medveil keygen --list)."),
    list_parameters: bool = typer.Option(False, "--list", help="List every scheme's parameters and exit."),
    allow_broken: bool = typer.Option(False, "--allow-broken", help=ALLOW_BROKEN_HELP),
):
    """Create a new secret key. Keep it: without it nobody, you included, can map new images the same way.

    Prints what the shipped privacy cards say of its setting, one line per threat model."""
    from medveil.evaluation.cards import best_setting
    from medveil.plugins import describe_parameters, merge, parse_assignments

    if list_parameters:
        for name in available_schemes():
            declared = scheme_class(name).parameters
            typer.echo(f"{name}: {describe_parameters(declared) if declared else 'trained, not drawn (see its command)'}")
        return
    if output is None:
        _fail("keygen needs -o KEY_FILE")
    flags = {"levels": levels, "bits": bits, "signed": signed, "block": block, "channels": channels, "size": size,
             "raster": raster}
    if scheme is None:
        given = [f"--{name}" for name, value in flags.items() if value is not None] + [f"-p {p}" for p in param]
        if given:
            _fail(f"{' '.join(given)} needs --scheme: parameters belong to one scheme (medveil keygen --list)")
        scheme, flags = best_setting()
    params = merge(parse_assignments(param, scheme_class(scheme).parameters, scheme), flags)
    key = generate_key(scheme, **params)
    _check_broken(key, allow_broken, "keygen")
    key.save(output, passphrase=_new_passphrase() if passphrase else None)
    typer.echo(f"wrote {output}{' (encrypted)' if passphrase else ''}: {from_key(key).describe()}")
    _echo_verdicts(key.scheme, key.params)



key_app = typer.Typer(no_args_is_help=True, help="Look at, encrypt, decrypt or replace a key file.")
app.add_typer(key_app, name="key")
KeyPath = Annotated[Path, typer.Argument(help="A key file from `medveil keygen`.")]


@key_app.command("info")
@_clean_errors
def key_info(path: KeyPath, as_json: bool = typer.Option(False, "--json", help="One JSON object.")):
    """Show a key's public part (scheme, parameters, fingerprint, encrypted or not) and what the privacy cards say
    of its setting; needs no passphrase."""
    from medveil.evaluation.cards import verdict_lines
    from medveil.keys import public_part

    doc = public_part(path.read_text(), str(path))
    info = {"file": str(path), "scheme": doc.get("scheme"), "params": doc.get("params"),
            "fingerprint": doc.get("fingerprint"), "version": doc["medveil_key_version"],
            "encrypted": "encrypted_secret" in doc,
            "privacy_cards": verdict_lines(doc.get("scheme"), doc.get("params") or {})}
    if as_json:
        _echo_json(info)
        return
    params = ", ".join(f"{k}={v}" for k, v in (info["params"] or {}).items())
    typer.echo(f"{path}: {info['scheme']} ({params}), fingerprint {info['fingerprint']}, "
               f"{'encrypted' if info['encrypted'] else 'NOT encrypted'}")
    _echo_verdicts(info["scheme"], info["params"] or {})


@key_app.command("encrypt")
@_clean_errors
def key_encrypt(path: KeyPath):
    """Encrypt a key file's secret in place with a passphrase (scrypt + AES-256-GCM)."""
    key = _load_key(path)
    key.save(path, overwrite=True, passphrase=_new_passphrase())
    typer.echo(f"{path}: encrypted (fingerprint {key.fingerprint})")


@key_app.command("decrypt")
@_clean_errors
def key_decrypt(path: KeyPath):
    """Store a key file's secret unencrypted again (mode 0600)."""
    key = _load_key(path)
    key.save(path, overwrite=True)
    typer.echo(f"{path}: decrypted (fingerprint {key.fingerprint}); anyone who can read the file holds the key")


@key_app.command("rotate")
@_clean_errors
def key_rotate(path: KeyPath,
               output: Path = typer.Option(..., "-o", "--output", help="The new key file (never overwritten)."),
               passphrase: bool = typer.Option(False, "--passphrase", help="Encrypt the new key.")):
    """Make a new key of the same scheme and parameters, and say what switching to it means. Nothing is re-obfuscated."""
    old = _load_key(path)
    if scheme_class(old.scheme).trained_key:
        _fail(f"{path}: a {old.scheme} key carries trained weights; train a new one instead")
    new = generate_key(old.scheme, **dict(old.params))
    new.save(output, passphrase=_new_passphrase() if passphrase else None)
    typer.echo(f"wrote {output}: {old.scheme}, fingerprint {new.fingerprint} (was {old.fingerprint})")
    typer.echo("What a new key means: images obfuscated under the old key and the new one are not comparable, so "
               "re-obfuscate and re-upload the data, and retrain every server model on it; models trained under the "
               "old key are of no use to new images. Keep the old key while anything made with it is still in use.")


@app.command()
@_clean_errors
def obfuscate(
    source: str = typer.Argument(..., help="An image file or a folder of them (DICOM, NIfTI, PNG, JPEG, TIFF, NPY); "
                                 "a folder may be an fsspec URL (memory://, s3://, ...)."),
    output: str = typer.Argument(..., help="Output file, or output folder mirroring the source tree (or its URL)."),
    key: Path = typer.Option(..., "--key", "-k", help="Key file from `medveil keygen`."),
    workers: int = typer.Option(1, min=1, help="Worker processes for a folder (with --scheduler local: Dask workers)."),
    scheduler: Optional[str] = typer.Option(None, help="Run a folder on Dask: 'local' (a LocalCluster of --workers "
                                            "processes) or a scheduler's address (tcp://host:8786) whose workers reach "
                                            "both folders. The key is sent to the workers once."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    burned_in_text: str = typer.Option(
        "refuse", help="Text OCR (Tesseract) reads in the pixels, or a DICOM header's BurnedInAnnotation YES: "
                       "'refuse' fails the file, 'mask' blanks the text before obfuscating (DICOM records the "
                       "Clean Pixel Data option), 'off' skips the check."),
    keep_names: bool = typer.Option(False, "--keep-names", help="Folders: write outputs under the sources' own "
                                    "relative paths. Default: keyed pseudonyms (folder and file names can hold "
                                    "PHI); the manifest maps them back."),
    manifest: Optional[Path] = typer.Option(None, help="Folders: the run's record (sources, digests, pseudonyms), "
                                            "kept in the hospital. Default: OUTPUT.manifest.jsonl beside the "
                                            "output folder; needed for a URL output."),
    keep_descriptors: bool = typer.Option(False, "--keep-descriptors", help="DICOM: keep free text that PS3.15 "
                                          "Table E.1-1 does not list (series and study descriptions' kin, "
                                          "ContentSequence text, frame labels). Default: removed, as the Clean "
                                          "Descriptors option does; the text may name the patient."),
    allow_broken: bool = typer.Option(False, "--allow-broken", help=ALLOW_BROKEN_HELP),
):
    """Obfuscate images with a key. Originals are never modified; an interrupted folder run resumes."""
    from medveil.io.remote import local_path

    hospital_key = _load_key(key)
    _check_broken(hospital_key, allow_broken, "obfuscate")
    scheme = from_key(hospital_key)
    source, output = local_path(source), local_path(output)
    if isinstance(source, Path) and source.is_file():
        if not isinstance(output, Path):
            _fail(f"{source}: one file is written to a local path; URLs are for folder runs")
        gate = Gate(scheme, burned_in_text, keep_names, keep_descriptors)
        target = output / gate.name(output_name(source.name, source)) if output.is_dir() else output
        gate.write(source, target)
        typer.echo(f"wrote {target} with {scheme.describe()}")
        _echo_verdicts(hospital_key.scheme, hospital_key.params)
        return
    report = obfuscate_tree(source, output, scheme, workers=workers, progress=progress,
                            burned_in_text=burned_in_text, scheduler=scheduler, keep_names=keep_names,
                            manifest=manifest, keep_descriptors=keep_descriptors)
    hidden = f", {len(report.hidden)} hidden left out" if report.hidden else ""
    typer.echo(f"{len(report.done)} obfuscated, {len(report.skipped)} already done, "
               f"{len(report.failed)} failed{hidden} -> {output} with {scheme.describe()}")
    _echo_verdicts(hospital_key.scheme, hospital_key.params)
    for _, message in report.failed:
        typer.echo(f"failed: {message}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@_clean_errors
def compare(
    originals: Path = typer.Argument(..., help="Original file or folder."),
    others: Path = typer.Argument(..., help="Obfuscated (or reconstructed) file or folder, same relative paths."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the per-image scores here."),
    figure: Optional[Path] = typer.Option(None, help="Also save a PNG grid of the first pairs here."),
    examples: int = typer.Option(4, min=1, help="Pairs shown in --figure."),
    label: str = typer.Option("obfuscated", help="Column title for the second folder in --figure."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image, then one with the means."),
):
    """SSIM and PSNR between originals and their obfuscated versions, per image and on average."""
    from medveil import metrics
    from medveil.figures import image_grid

    if originals.is_file():
        rows = [{"file": originals.name, **metrics.compare_images(read_image(originals), read_image(others))}]
        problems: list[str] = []
        pairs = [(originals, others)]
    else:
        if not originals.is_dir():
            _fail(f"{originals}: no such file or folder")
        rows, problems = metrics.compare_trees(originals, others)
        counterpart = metrics.counterparts(originals, others)
        pairs = [(originals / r["file"], counterpart(r["file"])) for r in rows]
    for row in rows:
        typer.echo(json.dumps(row) if as_json else f"{row['file']}\tSSIM {row['ssim']:.4f}\tPSNR {row['psnr']:.2f} dB")
    if rows:
        finite = [r["psnr"] for r in rows if math.isfinite(r["psnr"])]
        mean = {"images": len(rows), "ssim": sum(r["ssim"] for r in rows) / len(rows),
                "psnr": sum(finite) / len(finite) if finite else math.inf}
        typer.echo(json.dumps({"mean": mean}) if as_json else
                   f"mean over {mean['images']} images\tSSIM {mean['ssim']:.4f}\tPSNR {mean['psnr']:.2f} dB")
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
            _fail(f"{originals}: no supported images to compare")
        raise typer.Exit(1)


evaluate_app = typer.Typer(no_args_is_help=True, help="Measure what obfuscated data is still good for.")
app.add_typer(evaluate_app, name="evaluate")


def _parse_sweep(text: str, scheme: str) -> tuple[str, list]:
    """``block=1,3,4`` -> ``("block", [1, 3, 4])``, each value parsed as ``scheme`` declares the parameter."""
    from medveil.plugins import declared_parameter

    name, sep, values = text.partition("=")
    if not sep or not name:
        raise typer.BadParameter(f"expected NAME=V1,V2,..., got {text!r}")
    parameter = declared_parameter(scheme_class(scheme).parameters, name.strip(), scheme)
    return parameter.name, [parameter.parse(v.strip(), scheme) for v in values.split(",") if v.strip()]


def _command_line() -> str | None:
    """The command as typed, for reports (None when called from Python)."""
    return "medveil " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("medveil") else None


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@evaluate_app.command("utility")
@_clean_errors
def evaluate_utility(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for results.csv, report.md, split.csv and figures."),
    dataset: DatasetName = "br35h",
    size: int = typer.Option(64, min=16, help="Images are resized to size x size before obfuscation."),
    colour: Colour = None,
    scheme: str = typer.Option("intensity", help="Scheme to evaluate against plain images."),
    levels: Optional[str] = typer.Option(None, help="intensity: comma-separated N values (default 256,150,50,45)."),
    param: list[str] = typer.Option([], help="NAME=V1,V2,... key parameter values to sweep, e.g. block=1,3,4,5 (repeatable)."),
    seeds: int = typer.Option(3, min=1, help="Runs per setting (each with a fresh key)."),
    epochs: int = typer.Option(30, min=1),
    model: str = typer.Option("cnn", help="A registered server model: 'cnn' (paper NB's), 'resnet', 'matched' "
                               "(learns the scheme's structure from its public parameters), or a plugin's."),
    augment: bool = typer.Option(False, help="Shift/flip/rotate the obfuscated training images."),
    key: Optional[Path] = typer.Option(None, "--key", "-k", help="Evaluate this key (every seed) instead of fresh keys; "
                                       "--scheme, --levels and --param are then not used."),
    progress: bool = typer.Option(True),
    device: Device = "auto",
):
    """Train a classifier on plain and on obfuscated images; report accuracy, F1, AUC and SSIM/PSNR."""
    from medveil.data import load_dataset
    from medveil.evaluation.utility import evaluate_utility as run, settings_for, summarise
    from medveil.report import pm
    from medveil.schemes import Setting

    _use_device(device)
    if key is not None:
        settings = [Setting("plain"), Setting.for_key(_load_key(key))]
    else:
        grid = dict(_parse_sweep(p, scheme) for p in param)
        if levels is not None or (scheme == "intensity" and "levels" not in grid):
            grid["levels"] = _int_list(levels or "256,150,50,45")
        settings = settings_for(scheme, grid)
    data = load_dataset(dataset, size, colour)
    command = _command_line()
    rows = run(data, settings, seeds, output, model=model, epochs=epochs, augment=augment, progress=progress,
               command=command)
    for entry in summarise(rows, settings):
        acc, f1 = entry["accuracy"], entry["f1"]
        typer.echo(f"{entry['setting'].label:<24} accuracy {pm(acc, 100):>14} %   F1 {pm(f1, 100):>14} %")
    typer.echo(f"report: {output / 'report.md'}")


@evaluate_app.command("privacynet")
@_clean_errors
def evaluate_privacynet(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for results.csv, attacks.csv, report.md and figures."),
    keys: Path = typer.Option(Path("out/privacynet-keys"), help="Folder for the trained encoders' keys (secret; keep "
                              "them out of the report)."),
    data: Optional[Path] = typer.Option(None, help="Your own triples: an .npz of images (n,H,W) or volumes (n,D,H,W) "
                                        "uint8, masks and subjects (n,), or a NIfTI folder (images/, labels/, "
                                        "subjects.csv); default: simulated MNI152 subjects."),
    dims: int = typer.Option(2, min=2, max=3, help="2: axial slices; 3: volumes (paper PN), trained on patches."),
    subjects: int = typer.Option(80, min=4, help="Simulated subjects."),
    scans: int = typer.Option(3, min=2, help="Simulated scans per subject."),
    size: int = typer.Option(64, help="Simulated image or volume side (at least 33, divisible by 4)."),
    identity: str = typer.Option("anatomy,extracerebral", help="Where simulated volumes' identity lives "
                                 "(comma-separated: anatomy, extracerebral); --dims 3 only."),
    patch: int = typer.Option(32, min=8, help="Side of the training patches and sliding windows (--dims 3; paper "
                              "PN: 64 on a GPU)."),
    width: int = typer.Option(16, min=1, help="Channels of the U-Nets' first level."),
    lambdas: str = typer.Option("1,3,10", help="Comma-separated λ values (weight of the adversarial loss)."),
    seeds: int = typer.Option(1, min=1),
    epochs: int = typer.Option(20, min=1, help="Adversarial epochs."),
    lr: float = typer.Option(1e-4, min=1e-6, help="Adam learning rate of the adversarial phase (paper PN: 1e-4)."),
    pretrain_epochs: int = typer.Option(10, min=1, help="Epochs of pre-training, and of training D_new."),
    pretrain_lr: float = typer.Option(1e-3, min=1e-6, help="Adam learning rate of pre-training and D_new."),
    attack_epochs: int = typer.Option(12, min=1, help="Epochs of the reconstruction attacker's U-Net."),
    progress: bool = typer.Option(True),
    device: Device = "auto",
):
    """Train Privacy-Net's encoder, segmenter and discriminator per λ; report Dice, re-identification and attacks."""
    from medveil.data.segmentation import SegmentationData, simulate_subjects
    from medveil.data.volumes import load_nifti_folder, simulate_other_site, simulate_volumes
    from medveil.evaluation.privacynet import evaluate_privacynet as run
    from medveil.privacynet import PrivacyNetConfig

    _use_device(device)
    try:
        lambda_values = [float(v) for v in lambdas.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {lambdas!r}") from None
    transfer = None
    if data is not None:
        triples = load_nifti_folder(data)[0] if data.is_dir() else SegmentationData.load(data)
    elif dims == 3:
        sources = tuple(v.strip() for v in identity.split(",") if v.strip())
        triples = simulate_volumes(subjects, scans, size, sources)
        transfer = simulate_other_site(max(8, subjects // 3), size, sources)
    else:
        triples = simulate_subjects(subjects, scans, size)
    config = PrivacyNetConfig(epochs=epochs, lr=lr, pretrain_epochs=pretrain_epochs, pretrain_lr=pretrain_lr, width=width,
                              patch=patch, progress=progress)
    rows = run(triples, lambda_values, seeds, output, keys, config, attack_epochs, command=_command_line(),
               transfer=transfer)
    for row in rows:
        typer.echo(f"λ={row['lambda']:<6} seed {row['seed']}  Dice {row['dice_overall']:.3f}  re-id: MS-SSIM "
                   f"{row['reid_msssim_acc']:.3f}  D_adv {row['reid_dadv_acc']:.3f}  D_new {row['reid_dnew_acc']:.3f}  "
                   f"mAP {row['reid_map']:.3f}")
    typer.echo(f"report: {output / 'report.md'}")


# Options the attacks take.
AttackKey = Annotated[Optional[Path], typer.Option("--key", "-k", help="The hospital's key: it obfuscates the target "
                                                                    "(and, for oracle attacks, sits in a black box in "
                                                                    "another process).")]
AttackOutput = Annotated[Optional[Path], typer.Option("-o", "--output", help="Folder for results.csv, report.md and figures.")]
AttackTarget = Annotated[str, typer.Option(help="'br35h' or a class-per-subfolder folder; its test split is attacked.")]
AttackerData = Annotated[Optional[str], typer.Option(help="'public': other public medical images; 'prior': the target's "
                                                          "train/val split; 'none': no plain images. Default: the "
                                                          "attack's first in `medveil attack list`.")]
ImageSize = Annotated[int, typer.Option(min=16, help="Images are resized to size x size.")]
AttackEpochs = Annotated[int, typer.Option(min=1, help="Epochs of the attacker's U-Net.")]
Progress = Annotated[bool, typer.Option(help="Show progress bars.")]


def _list_attacks(as_json: bool) -> None:
    from medveil.attacks import available_attacks
    from medveil.plugins import describe_parameters

    for spec in available_attacks():
        schemes = ", ".join(spec.schemes) if spec.schemes else "every scheme"
        if as_json:
            typer.echo(json.dumps({"name": spec.name, "capability": spec.capability,
                                   "attacker_data": list(spec.attacker_data), "schemes": list(spec.schemes or []),
                                   "summary": spec.summary,
                                   "parameters": [{"name": p.name, "type": p.type.__name__, "default": p.default,
                                                   "help": p.help} for p in spec.parameters]}))
        else:
            options = f" [-p {describe_parameters(spec.parameters)}]" if spec.parameters else ""
            typer.echo(f"{spec.name:24} {spec.capability:16} data {'/'.join(spec.attacker_data):18} {schemes}: "
                       f"{spec.summary}{options}")


@app.command("attack")
@_clean_errors
def attack(
    name: str = typer.Argument(..., help="An attack from `medveil attack list`, or 'list' to see them."),
    key: AttackKey = None, output: AttackOutput = None, target: AttackTarget = "br35h",
    attacker_data: AttackerData = None, size: ImageSize = 64, colour: Colour = None, epochs: AttackEpochs = 20,
    progress: Progress = True,
    pairs: int = typer.Option(10, min=1, help="known-pairs attacks: leaked (plain, obfuscated) pairs, from the "
                                              "target's training split."),
    as_json: bool = typer.Option(False, "--json", help="With 'list': one JSON object per attack."),
    param: list[str] = typer.Option([], "-p", "--param", help="An attack's own option, name=value (see attack list)."),
    device: Device = "auto",
):
    """Attack a key under a threat model (ciphertext-only, known-pairs, oracle) and score what it recovers.

    `medveil attack list` shows every registered attack with what it may use.
    """
    if name == "list":
        _list_attacks(as_json)
        return
    from medveil.attacks import attack_spec
    from medveil.data import load_dataset
    from medveil.evaluation.privacy import evaluate_attack

    spec = attack_spec(name)
    _use_device(device)
    if key is None or output is None:
        _fail(f"attack {name} needs --key KEY and -o OUTPUT_FOLDER")
    hospital_key = _load_key(key)
    if not spec.applies_to(hospital_key.scheme, hospital_key.params):
        _fail(f"{spec.name} does not apply to the '{hospital_key.scheme}' scheme "
              f"(it takes {', '.join(spec.schemes or ['any'])}); see medveil attack list")
    from medveil.plugins import parse_assignments

    options = parse_assignments(param, spec.parameters, f"attack {spec.name}")
    data = attacker_data or spec.attacker_data[0]
    attacker = spec.create(hospital_key.scheme, hospital_key.params, epochs, progress, **options)
    row = evaluate_attack(attacker, spec.capability,
                          hospital_key, load_dataset(target, size, colour), data, output, pairs)
    typer.echo(f"{row['attack']} ({spec.capability}, {row['attacker_data']} data) against {row['scheme']} "
               f"{row['params']}: SSIM {row['ssim']:.3f}, PSNR {row['psnr']:.2f} dB, MS-SSIM {row['ms_ssim']:.3f} "
               f"({row['queries']} {'pairs' if spec.capability == 'known-pairs' else 'images fed to the black box'})")
    if row["linkage_top1"] != "":
        typer.echo(f"linkage: top-1 {row['linkage_top1']:.3f}, top-5 {row['linkage_top5']:.3f} "
                   f"(chance {row['linkage_chance']:.3f}), near-duplicate groups as the patient proxy")
    typer.echo(f"report: {output / 'report.md'}")


vae_app = typer.Typer(no_args_is_help=True, help="VAE + intensity mapping: the data owner trains the VAE.")
app.add_typer(vae_app, name="vae")


@vae_app.command("train")
@_clean_errors
def vae_train(
    output: Path = typer.Option(..., "-o", "--output", help="Key file to create; the weights go beside it (KEY.vae.pt)."),
    dataset: DatasetName = "br35h",
    colour: Colour = None,
    size: int = typer.Option(64, min=8, help="Images are resized to size x size (divisible by 8)."),
    levels: int = typer.Option(256, min=2, max=256, help="N distinct output values of the intensity mapping."),
    latent: int = typer.Option(64, min=1, help="Size of the VAE's latent code."),
    epochs: int = typer.Option(30, min=1),
    progress: bool = typer.Option(True),
    device: Device = "auto",
):
    """Train the VAE on your images (training and validation splits; the test split is left out) and make its key."""
    from medveil import metrics
    from medveil.data import group_split, load_dataset
    from medveil.schemes.vae import create_vae_key, train_vae
    from medveil.train import TrainConfig

    _use_device(device)
    data = load_dataset(dataset, size, colour)
    split = group_split(data.labels, data.groups)
    model, history = train_vae(data.images[split != "test"], TrainConfig(epochs=epochs, progress=progress), latent)
    key = create_vae_key(model, output, levels, size, data.channels)
    scheme = from_key(key)
    held_out = data.images[split == "test"]
    scores = metrics.mean_pair_scores(held_out, scheme.reconstruct(held_out), with_ms_ssim=False)
    typer.echo(f"wrote {output} and {output}.vae.pt: {scheme.describe()}")
    typer.echo(f"VAE reconstruction of the {len(held_out)} held-out images: SSIM {scores['ssim']:.3f}, "
               f"PSNR {scores['psnr']:.2f} dB (before the intensity mapping)")


structural_app = typer.Typer(no_args_is_help=True, help="Structural de-identification (vectorize, encrypt coordinates, rasterize).")
app.add_typer(structural_app, name="structural")


@structural_app.command("tune")
@_clean_errors
def structural_tune(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for sdim.csv and report.md."),
    dataset: DatasetName = "br35h",
    colour: Colour = None,
    sizes: str = typer.Option("32,36,42,46,50,54,58,64,75,100", help="Comma-separated input sizes to try."),
    raster: int = typer.Option(64, min=8, help="Output (rasterized) size."),
    images: int = typer.Option(200, min=1, help="Images sampled from the dataset."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="DI trade-off: weight of SSIM against the L2 norm."),
    keys: int = typer.Option(3, min=1, help="Fresh keys per size; the measures are averaged over them."),
    progress: bool = typer.Option(True),
):
    """Recommend the input size that minimises SDIM on your data (paper SD, Table 2); no training."""
    from medveil.data import load_dataset
    from medveil.evaluation.structural import recommended_size, sdim_sweep, write_sweep

    candidates = _int_list(sizes)
    data = load_dataset(dataset, max(candidates), colour)
    rows = sdim_sweep(data, candidates, raster, images, alpha, keys, progress)
    for r in rows:
        typer.echo(f"size {r['size']:>4}: SSIM_Vec {r['ssim_vec']:.4f}  SSIM_Dei {r['ssim_dei']:.4f}  "
                   f"L2 {r['l2_dei']:.4f}  SDIM {r['sdim']:+.4f}")
    report = write_sweep(output, rows, raster, alpha, _command_line())
    typer.echo(f"recommended input size: {recommended_size(rows)} (medveil keygen --scheme structural --size "
               f"{recommended_size(rows)} --raster {raster})")
    typer.echo(f"report: {report}")


def _attack_options(assignments: list[str]) -> tuple:
    """``["kerckhoffs-unet.keys=32"]`` -> ``(("kerckhoffs-unet", (("keys", 32),)),)``, typed as each attack declares."""
    from medveil.attacks import attack_spec
    from medveil.plugins import parse_assignments

    by_attack: dict[str, list[str]] = {}
    for assignment in assignments:
        attack, dot, rest = assignment.partition(".")
        if not dot:
            _fail(f"bench options are ATTACK.NAME=VALUE, got {assignment!r}")
        by_attack.setdefault(attack, []).append(rest)
    return tuple((attack, tuple(sorted(parse_assignments(values, attack_spec(attack).parameters, f"attack {attack}").items())))
                 for attack, values in sorted(by_attack.items()))


@app.command()
@_clean_errors
def bench(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for report.html, report.md, figures and cached cells."),
    dataset: DatasetName = "br35h",
    profile: str = typer.Option("quick", help="'quick' (minutes) or 'full' (about 80 min on 2 cores)."),
    progress: bool = typer.Option(True),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON summary line instead of text."),
    param: list[str] = typer.Option([], "-p", "--param", help="An attack's own option for every cell it runs, "
                                    "ATTACK.NAME=VALUE (see attack list), e.g. kerckhoffs-unet.keys=32."),
    scheduler: Optional[str] = typer.Option(None, help="Run the cells as Dask tasks: 'local' (a LocalCluster of "
                                            "--workers processes) or a scheduler's address, e.g. tcp://host:8786, whose "
                                            "workers see OUTPUT."),
    workers: int = typer.Option(2, min=1, help="With --scheduler local: worker processes (torch threads are shared out)."),
    device: Device = "auto",
):
    """Every scheme: utility, similarity and the strongest attack, in one report (re-runs compute only what is missing)."""
    import time

    from medveil.bench import PROFILES, run_grid, write_report
    from medveil.data import load_dataset

    if profile not in PROFILES:
        _fail(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    chosen = replace(PROFILES[profile], options=_attack_options(param))
    _use_device(device)
    started = time.perf_counter()
    data = load_dataset(dataset, chosen.size)
    records = run_grid(data, chosen, output, progress, scheduler=scheduler, workers=workers, device=device)
    md, page = write_report(output, data, chosen, records, _command_line(), time.perf_counter() - started)
    failed = sum(r["status"] == "failed" for r in records)
    if as_json:
        _echo_json({"cells": len(records), "cached": sum(r["status"] == "cached" for r in records), "failed": failed,
                    "report": str(page), "markdown": str(md), "cards": str(Path(output) / "cards.csv")})
        return
    typer.echo(f"{len(records)} cells ({sum(r['status'] == 'cached' for r in records)} cached, {failed} failed)")
    typer.echo(f"report: {page} (and {md.name})")


@app.command()
@_clean_errors
def serve(
    data: Path = typer.Option(..., help="Folder for the service's database, datasets and models (created if missing)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=1, max=65535),
    device: Device = "auto",
    request_mb: int = typer.Option(512, min=1, help="What one request's images may take once decoded (MiB)."),
    total_mb: int = typer.Option(512, min=1, help="What every request in flight may take at once, decoded (MiB): "
                                 "the server's working memory for images; requests beyond it wait."),
    quota_mb: int = typer.Option(4096, min=1, help="What one tenant's stored datasets may take, decoded (MiB)."),
):
    """Run the ML-as-a-service server (FastAPI + uvicorn; API docs at /docs)."""
    import uvicorn

    from medveil.service.server import Limits, create_app

    MiB = 1024**2
    try:
        limits = Limits(max_decoded_bytes=request_mb * MiB, max_total_decoded_bytes=total_mb * MiB,
                        max_tenant_bytes=quota_mb * MiB)
    except ValueError as exc:
        _fail(f"--total-mb: {exc}")
    _use_device(device)
    uvicorn.run(create_app(data, limits), host=host, port=port, log_level="info")


token_app = typer.Typer(no_args_is_help=True, help="Service access tokens.")
app.add_typer(token_app, name="token")


@token_app.command("create")
@_clean_errors
def token_create(data: Path = typer.Option(..., help="The server's data folder."),
                 tenant: str = typer.Option(..., help="Who the token is for (letters, digits, '-', '_').")):
    """Create a token for a tenant and print it once (only its hash is stored)."""
    from medveil.service.store import Store

    try:
        typer.echo(Store(data).create_token(tenant))
    except ValueError as exc:
        _fail(str(exc))


client_app = typer.Typer(no_args_is_help=True, help="The hospital's client: obfuscates locally, then talks to a server.")
app.add_typer(client_app, name="client")


@client_app.callback()
def client_options(
    ctx: typer.Context,
    server: str = typer.Option(..., help="Server URL, e.g. http://127.0.0.1:8000."),
    token: str = typer.Option(..., envvar="MEDVEIL_TOKEN", help="Access token (or set MEDVEIL_TOKEN)."),
    key: Path = typer.Option(..., "--key", "-k", help="The hospital's key; it never leaves this machine."),
    burned_in_text: str = typer.Option("refuse", help="Text OCR reads in a file's pixels: 'refuse' fails the "
                                       "command, 'mask' blanks it before obfuscating, 'off' skips the check."),
    allow_broken: bool = typer.Option(False, "--allow-broken", help=ALLOW_BROKEN_HELP),
):
    ctx.obj = {"server": server, "token": token, "key": key, "burned_in_text": burned_in_text,
               "allow_broken": allow_broken}


def _client(ctx: typer.Context, sends_images: bool = False):
    """The client for these options; one that sends images refuses a key the cards call broken."""
    from medveil.service.client import Client

    key = _load_key(ctx.obj["key"])
    if sends_images:
        _check_broken(key, ctx.obj["allow_broken"], f"client {ctx.info_name}")
    return Client(ctx.obj["server"], ctx.obj["token"], key, burned_in_text=ctx.obj["burned_in_text"])


@client_app.command("upload")
@_clean_errors
def client_upload(ctx: typer.Context,
                  folder: Path = typer.Argument(..., help="One subfolder per class; with --masks, the images."),
                  masks: Optional[Path] = typer.Option(None, help="Segmentation: label maps at the same relative paths "
                                                       "as the images (class indices, 0 = background; sent unobfuscated)."),
                  size: int = typer.Option(64, min=8, help="Images are resized to size x size before obfuscation."),
                  name: str = typer.Option("", help="A name for the dataset on the server (default: the folder's "
                                           "keyed pseudonym; its own name may hold PHI).")):
    """Obfuscate a labelled folder with the key and upload it (classification, or segmentation with --masks)."""
    with _client(ctx, sends_images=True) as client:
        record = (client.upload_segmentation_folder(folder, masks, size, name) if masks is not None
                  else client.upload_folder(folder, size, name))
    typer.echo(f"dataset {record['id']}: {record['task']}, {record['images']} images {record['size']}x{record['size']} "
               f"({record['bits']}-bit codes), classes {', '.join(record['classes'])}, key {record['fingerprint']}")


@client_app.command("train")
@_clean_errors
def client_train(ctx: typer.Context, dataset_id: str = typer.Argument(...), epochs: int = typer.Option(30, min=1),
                 model: Optional[str] = typer.Option(None, help="Classification: a registered server model ('cnn', the "
                                                     "default, 'resnet', 'matched', or a plugin's); segmentation: 'unet'."),
                 wait: bool = typer.Option(False, help="Wait for the job to finish.")):
    """Start a training job on an uploaded dataset."""
    with _client(ctx) as client:
        job = client.train(dataset_id, epochs, model)
        typer.echo(f"job {job['id']}: {job['status']}")
        if wait:
            job = client.wait(job["id"])
            typer.echo(f"job {job['id']}: {job['status']} {job['message']} model {job['model_id']}")
            if job["status"] != "done":
                raise typer.Exit(1)


@client_app.command("status")
@_clean_errors
def client_status(ctx: typer.Context, job_id: str = typer.Argument(...),
                  as_json: bool = typer.Option(False, "--json", help="The job as one JSON object.")):
    """A job's state and progress."""
    with _client(ctx) as client:
        job = client.job(job_id)
    if as_json:
        _echo_json(job)
        return
    typer.echo(f"job {job['id']}: {job['status']}, epoch {job['epoch']}/{job['epochs']} {job['message']}".rstrip()
               + (f", model {job['model_id']}" if job["model_id"] else ""))


@client_app.command("predict")
@_clean_errors
def client_predict(ctx: typer.Context, model_id: str = typer.Argument(...),
                   files: list[Path] = typer.Argument(..., help="Image files (any supported format)."),
                   output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                         help="Segmentation models: folder for the label maps (PNG).")):
    """Obfuscate images with the key and get the model's class (or, for a segmentation model, label map) for each."""
    from PIL import Image

    with _client(ctx, sends_images=True) as client:
        record = client.model(model_id)
        if record["task"] == "segmentation" and output is None:
            _fail(f"model {model_id} segments: give -o FOLDER for its label maps")
        for f, p in zip(files, client.predict_files(model_id, files)):  # file names stay here; the server sees numbers
            if "mask" not in p:
                typer.echo(f"{f}: {p['class']} (p={p['probability']:.3f})")
                continue
            output.mkdir(parents=True, exist_ok=True)
            target = output / f"{f.name.split('.')[0]}.mask.png"
            Image.fromarray(p["mask"]).save(target)
            typer.echo(f"{f}: {target} (pixels per class: {', '.join(map(str, p['pixels']))})")


@app.command()
@_clean_errors
def samples(dest: Path = typer.Argument(..., help="Folder to fill with example scans.")):
    """Copy a few real example scans bundled with installed packages (Br35H MRI, DICOM CT/MR, NIfTI)."""
    copied = copy_samples(dest)
    for group, files in copied.items():
        typer.echo(f"{dest / group}: {len(files)} files")


@app.command()
@_clean_errors
def inspect(path: Path = typer.Argument(..., help="An image file."),
            as_json: bool = typer.Option(False, "--json", help="One JSON object.")):
    """Show an image's format, shape, stored type and value range, and the key it needs."""
    image = read_image(path)
    pixels = image.pixels
    keyable = pixels.dtype.kind in "iu" and 2 <= image.bits <= 16 and pixels.dtype.itemsize <= 2
    signed = " --signed" if pixels.dtype.kind == "i" else ""
    keygen_command = f"medveil keygen --bits {image.bits}{signed} --levels N -o KEY" if keyable else None
    if as_json:
        _echo_json({"file": str(path), "format": image.format, "shape": list(pixels.shape), "dtype": str(pixels.dtype),
                    "bits": image.bits, "min": pixels.min().item(), "max": pixels.max().item(), "keygen": keygen_command})
        return
    typer.echo(f"{path}: {image.format}, shape {pixels.shape}, {pixels.dtype}, {image.bits} bits stored, "
               f"values [{pixels.min()}, {pixels.max()}]")
    typer.echo(f"key for data like this: {keygen_command}" if keyable
               else "no medveil key maps these samples (keys map integers of 2 to 16 bits)")


if __name__ == "__main__":
    app()
