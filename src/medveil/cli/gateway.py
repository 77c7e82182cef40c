"""``medveil gateway``, ``pull`` and ``check-config``: the hospital's DICOM flow through the gate."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from medveil.cli._common import ALLOW_BROKEN_HELP, app, check_broken, clean_errors, fail, load_key

# Options gateway and pull share; each is None unless given, so the config file's value stands.
Config = Annotated[Optional[Path], typer.Option(help="A TOML file with the whole pipeline (see `medveil check-config "
                                                     "--help`); flags win over it.")]
KeyFile = Annotated[Optional[Path], typer.Option("--key", "-k", help="Key file from `medveil keygen`.")]
To = Annotated[Optional[List[str]], typer.Option(help="Where what passes goes, repeatable: dicom://AET@HOST:PORT "
                                                      "(C-STORE), stow:URL (DICOMweb STOW-RS), folder:PATH, "
                                                      "service:URL?dataset=NAME&label=CLASS&size=N (the medveil "
                                                      "service; token in MEDVEIL_TOKEN).")]
Workdir = Annotated[Optional[Path], typer.Option(help="Spool, quarantine, journal and audit log (stays in the "
                                                      "hospital). A restart on the same folder resumes. Default: "
                                                      "medveil-gateway.")]
DeidentifyOnly = Annotated[Optional[bool], typer.Option("--deidentify-only", help="De-identify, do not obfuscate.")]
BurnedInText = Annotated[Optional[str], typer.Option(help="refuse (default: quarantined), mask or off.")]
KeepDescriptors = Annotated[Optional[bool], typer.Option("--keep-descriptors", help="Keep free text the table does "
                                                                                    "not list.")]
AllowBroken = Annotated[Optional[bool], typer.Option("--allow-broken", help=ALLOW_BROKEN_HELP)]
Batch = Annotated[Optional[int], typer.Option(min=1, help="Instances per forwarding association. Default: 32.")]
MaxDecodedMb = Annotated[Optional[int], typer.Option(min=1, help="What one instance may decode to. Default: 2048.")]
LogLevel = Annotated[Optional[str], typer.Option(help="DEBUG, INFO, WARNING (default) or ERROR, to stderr.")]
LogJson = Annotated[Optional[bool], typer.Option("--log-json", help="Log JSON lines.")]


def _config(config: Optional[Path], deidentify_only: Optional[bool], **flags):
    from medveil.gateway.config import PipelineConfig, load

    obfuscate = None if deidentify_only is None else not deidentify_only
    return (load(config) if config else PipelineConfig()).merged(obfuscate=obfuscate, **flags)


def _pipeline(settings):
    from medveil.gateway import Pipeline, destination
    from medveil.io import Gate
    from medveil.io.image import BUDGET_ENV
    from medveil.schemes import from_key

    from medveil import _logs

    _logs.configure(settings.log_level, settings.log_json)
    if settings.key is None:
        fail("no key: give --key or `key = ...` in the config file")
    if not settings.to:
        fail("no destination: give --to (dicom://AET@HOST:PORT, stow:URL, folder:PATH, service:URL?...) or `to = [...]` "
             "in the config")
    key = load_key(settings.key)
    if settings.obfuscate:
        check_broken(key, settings.allow_broken, "gateway")
    os.environ[BUDGET_ENV] = str(settings.max_decoded_mb)
    gate = Gate(from_key(key), settings.burned_in_text, keep_descriptors=settings.keep_descriptors,
                obfuscate=settings.obfuscate)
    return Pipeline(gate, [destination(spec, gate) for spec in settings.to], settings.workdir, batch=settings.batch)


def _counts(pipeline) -> str:
    c = pipeline.counts()
    return f"{c['received']} received, {c['forwarded']} forwarded, {c['quarantined']} quarantined, {c['pending']} pending"


@app.command()
@clean_errors
def gateway(
    config: Config = None,
    key: KeyFile = None,
    to: To = None,
    workdir: Workdir = None,
    ae_title: Optional[str] = typer.Option(None, help="This node's AE title. Default: MEDVEIL."),
    host: Optional[str] = typer.Option(None, help="Address to listen on. Default: 127.0.0.1."),
    port: Optional[int] = typer.Option(None, help="Port to listen on. Default: 11112."),
    calling_ae: Optional[List[str]] = typer.Option(None, help="A calling AE title to accept, repeatable. Default: any."),
    deidentify_only: DeidentifyOnly = None,
    burned_in_text: BurnedInText = None,
    keep_descriptors: KeepDescriptors = None,
    allow_broken: AllowBroken = None,
    batch: Batch = None,
    max_decoded_mb: MaxDecodedMb = None,
    log_level: LogLevel = None,
    log_json: LogJson = None,
):
    """Receive DICOM (C-STORE), pass each instance through the gate, forward it; refused ones go to quarantine.

    Each instance is answered only once it is spooled to disk; a killed gateway restarted on the same
    --workdir forwards what was pending and nothing twice. Stop it with Ctrl-C or SIGTERM.
    """
    from medveil.gateway import Gateway

    settings = _config(config, deidentify_only, key=key, to=to, workdir=workdir, ae_title=ae_title, host=host,
                       port=port, calling_aes=calling_ae, burned_in_text=burned_in_text, keep_descriptors=keep_descriptors, allow_broken=allow_broken,
                       batch=batch, max_decoded_mb=max_decoded_mb, log_level=log_level, log_json=log_json)
    pipeline = _pipeline(settings)
    node = Gateway(pipeline, settings.ae_title, settings.host, settings.port, settings.calling_aes)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        node.start()
    except OSError as exc:
        pipeline.close()
        fail(f"{settings.host}:{settings.port}: cannot listen ({exc.strerror})")
    typer.echo(f"listening as {settings.ae_title} on {settings.host}:{settings.port}; forwarding to "
               f"{', '.join(settings.to)}", err=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    node.stop()
    typer.echo(_counts(pipeline), err=True)


@app.command()
@clean_errors
def pull(
    config: Config = None,
    source: Optional[str] = typer.Option(None, "--from", help="The PACS: dicom://AET@HOST:PORT."),
    study: Optional[List[str]] = typer.Option(None, help="A Study Instance UID, repeatable."),
    patient: Optional[str] = typer.Option(None, help="A Patient ID."),
    dates: Optional[str] = typer.Option(None, help="Study dates, YYYYMMDD-YYYYMMDD (either end may be left open)."),
    accession: Optional[List[str]] = typer.Option(None, help="An accession number, repeatable."),
    key: KeyFile = None,
    to: To = None,
    workdir: Workdir = None,
    deidentify_only: DeidentifyOnly = None,
    burned_in_text: BurnedInText = None,
    keep_descriptors: KeepDescriptors = None,
    allow_broken: AllowBroken = None,
    batch: Batch = None,
    max_decoded_mb: MaxDecodedMb = None,
    log_level: LogLevel = None,
    log_json: LogJson = None,
):
    """Query a PACS (C-FIND), fetch the studies (C-GET), pass them through the gate and deliver them."""
    from medveil.gateway import Query
    from medveil.gateway import pull as pull_studies

    settings = _config(config, deidentify_only, source=source, key=key, to=to, workdir=workdir,
                       burned_in_text=burned_in_text, keep_descriptors=keep_descriptors, allow_broken=allow_broken,
                       batch=batch, max_decoded_mb=max_decoded_mb, log_level=log_level, log_json=log_json)
    if settings.source is None:
        fail("no PACS: give --from dicom://AET@HOST:PORT or `[pull] source = ...` in the config")
    queries = [Query(study=uid) for uid in study or []] + [Query(accession=a) for a in accession or []]
    if patient or dates:
        queries.append(Query(patient=patient, dates=dates))
    pipeline = _pipeline(settings)
    try:
        pull_studies(pipeline, settings.source, queries)
    finally:
        pipeline.close()
    typer.echo(_counts(pipeline))
    if pipeline.counts()["pending"]:
        raise typer.Exit(1)


@app.command("check-config")
@clean_errors
def check_config(config: Path = typer.Argument(..., help="The TOML file.")):
    """Check a pipeline's TOML file: every field known, of its type and in range; the key opens.

    Fields: key, workdir, to; [gate] obfuscate, burned_in_text, keep_descriptors, allow_broken;
    [listen] ae_title, host, port, calling_aes; [pull] source; [limits] max_decoded_mb, batch;
    [log] level, json.
    """
    from medveil.gateway.config import load

    settings = load(config)
    if settings.key is not None:
        hospital_key = load_key(settings.key)
        if settings.obfuscate:
            check_broken(hospital_key, settings.allow_broken, f"{config}")
    typer.echo(f"{config}: ok; {'obfuscate' if settings.obfuscate else 'de-identify only'}, burned-in text "
               f"{settings.burned_in_text}, listen {settings.ae_title}@{settings.host}:{settings.port}, "
               f"to {', '.join(settings.to) or 'nowhere yet'}")
