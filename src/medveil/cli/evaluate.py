"""``medveil evaluate``, ``attack``, ``vae``, ``structural`` and ``bench``: what survives, measured."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional, cast

import typer

from medveil.cli._common import (
    Colour,
    DatasetName,
    Device,
    app,
    clean_errors,
    command_line,
    echo_json,
    fail,
    load_key,
    use_device,
)
from medveil.schemes import from_key, scheme_class

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



def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@evaluate_app.command("utility")
@clean_errors
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
    from medveil.evaluation.utility import evaluate_utility as run
    from medveil.evaluation.utility import settings_for, summarise
    from medveil.evaluation.report import pm
    from medveil.schemes import Setting

    use_device(device)
    if key is not None:
        settings = [Setting("plain"), Setting.for_key(load_key(key))]
    else:
        grid = dict(_parse_sweep(p, scheme) for p in param)
        if levels is not None or (scheme == "intensity" and "levels" not in grid):
            grid["levels"] = _int_list(levels or "256,150,50,45")
        settings = settings_for(scheme, grid)
    data = load_dataset(dataset, size, colour)
    command = command_line()
    rows = run(data, settings, seeds, output, model=model, epochs=epochs, augment=augment, progress=progress,
               command=command)
    for entry in summarise(rows, settings):
        acc, f1 = entry["accuracy"], entry["f1"]
        typer.echo(f"{entry['setting'].label:<24} accuracy {pm(acc, 100):>14} %   F1 {pm(f1, 100):>14} %")
    typer.echo(f"report: {output / 'report.md'}")


@evaluate_app.command("privacynet")
@clean_errors
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
    from medveil.privacynet.evaluate import evaluate_privacynet as run
    from medveil.privacynet.train import PrivacyNetConfig

    use_device(device)
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
    rows = run(triples, lambda_values, seeds, output, keys, config, attack_epochs, command=command_line(),
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

    if as_json:
        echo_json([{"name": spec.name, "capability": spec.capability, "attacker_data": list(spec.attacker_data),
                    "schemes": list(spec.schemes or []), "summary": spec.summary,
                    "parameters": [{"name": p.name, "type": p.type.__name__, "default": p.default, "help": p.help}
                                   for p in spec.parameters]} for spec in available_attacks()])
        return
    for spec in available_attacks():
        schemes = ", ".join(spec.schemes) if spec.schemes else "every scheme"
        options = f" [-p {describe_parameters(spec.parameters)}]" if spec.parameters else ""
        typer.echo(f"{spec.name:24} {spec.capability:16} data {'/'.join(spec.attacker_data):18} {schemes}: "
                   f"{spec.summary}{options}")


@app.command("attack")
@clean_errors
def attack(
    name: str = typer.Argument(..., help="An attack from `medveil attack list`, or 'list' to see them."),
    key: AttackKey = None, output: AttackOutput = None, target: AttackTarget = "br35h",
    attacker_data: AttackerData = None, size: ImageSize = 64, colour: Colour = None, epochs: AttackEpochs = 20,
    progress: Progress = True,
    pairs: int = typer.Option(10, min=1, help="known-pairs attacks: leaked (plain, obfuscated) pairs, from the "
                                              "target's training split."),
    as_json: bool = typer.Option(False, "--json", help="With 'list': one JSON array, an object per attack."),
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
    use_device(device)
    if key is None or output is None:
        fail(f"attack {name} needs --key KEY and -o OUTPUT_FOLDER")
    hospital_key = load_key(key)
    if not spec.applies_to(hospital_key.scheme, hospital_key.params):
        fail(f"{spec.name} does not apply to the '{hospital_key.scheme}' scheme "
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
@clean_errors
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
    from medveil.schemes.vae import VAEObfuscation, create_vae_key
    from medveil.training.vae import train_vae
    from medveil.training.loop import TrainConfig

    use_device(device)
    data = load_dataset(dataset, size, colour)
    split = group_split(data.labels, data.groups)
    model, history = train_vae(data.images[split != "test"], TrainConfig(epochs=epochs, progress=progress), latent)
    key = create_vae_key(model, output, levels, size, data.channels)
    scheme = from_key(key)
    held_out = data.images[split == "test"]
    scores = metrics.mean_pair_scores(held_out, cast(VAEObfuscation, scheme).reconstruct(held_out), with_ms_ssim=False)
    typer.echo(f"wrote {output} and {output}.vae.pt: {scheme.describe()}")
    typer.echo(f"VAE reconstruction of the {len(held_out)} held-out images: SSIM {scores['ssim']:.3f}, "
               f"PSNR {scores['psnr']:.2f} dB (before the intensity mapping)")


structural_app = typer.Typer(no_args_is_help=True, help="Structural de-identification (vectorize, encrypt coordinates, rasterize).")
app.add_typer(structural_app, name="structural")


@structural_app.command("tune")
@clean_errors
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
    report = write_sweep(output, rows, raster, alpha, command_line())
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
            fail(f"bench options are ATTACK.NAME=VALUE, got {assignment!r}")
        by_attack.setdefault(attack, []).append(rest)
    return tuple((attack, tuple(sorted(parse_assignments(values, attack_spec(attack).parameters, f"attack {attack}").items())))
                 for attack, values in sorted(by_attack.items()))


@app.command()
@clean_errors
def bench(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for report.html, report.md, figures and cached cells."),
    dataset: DatasetName = "br35h",
    profile: str = typer.Option("quick", help="'quick' (about 3.5 min on 2 cores) or 'full' (about 1 h 40 min on 2 cores)."),
    progress: bool = typer.Option(True),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON object (the summary) instead of text."),
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
        fail(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    chosen = replace(PROFILES[profile], options=_attack_options(param))
    use_device(device)
    started = time.perf_counter()
    data = load_dataset(dataset, chosen.size)
    records = run_grid(data, chosen, output, progress, scheduler=scheduler, workers=workers, device=device)
    md, page = write_report(output, data, chosen, records, command_line())
    minutes = (time.perf_counter() - started) / 60
    failed = sum(r["status"] == "failed" for r in records)
    if as_json:
        echo_json({"cells": len(records), "cached": sum(r["status"] == "cached" for r in records), "failed": failed,
                   "minutes": round(minutes, 2),
                   "report": str(page), "markdown": str(md), "cards": str(Path(output) / "cards.csv")})
        return
    typer.echo(f"{len(records)} cells ({sum(r['status'] == 'cached' for r in records)} cached, {failed} failed) "
               f"in {minutes:.1f} min")
    typer.echo(f"report: {page} (and {md.name})")
