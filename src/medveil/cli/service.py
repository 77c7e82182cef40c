"""``medveil serve``, ``token`` and ``client``: the service and the hospital's side of it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, cast

import typer

from medveil.cli._common import (
    ALLOW_BROKEN_HELP,
    Device,
    app,
    check_broken,
    clean_errors,
    echo_json,
    fail,
    load_key,
    use_device,
)


@app.command()
@clean_errors
def serve(
    data: Path = typer.Option(..., help="Folder for the service's database, datasets and models (created if missing)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, min=1, max=65535),
    device: Device = "auto",
    request_mb: int = typer.Option(512, min=1, help="What one request's images may take once decoded (MiB)."),
    total_mb: int = typer.Option(512, min=1, help="What every request in flight may take at once, decoded (MiB): "
                                 "the server's working memory for images; requests beyond it wait."),
    quota_mb: int = typer.Option(4096, min=1, help="What one tenant's stored datasets may take, decoded (MiB)."),
    retain_days: Optional[float] = typer.Option(None, min=0, help="Delete datasets, models and finished jobs older "
                                                "than this many days (checked at start and hourly). Default: keep."),
):
    """Run the ML-as-a-service server (FastAPI + uvicorn; API docs at /docs)."""
    import uvicorn

    from medveil.service.server import Limits, create_app

    MiB = 1024**2
    try:
        limits = Limits(max_decoded_bytes=request_mb * MiB, max_total_decoded_bytes=total_mb * MiB,
                        max_tenant_bytes=quota_mb * MiB)
    except ValueError as exc:
        fail(f"--total-mb: {exc}")
    use_device(device)
    uvicorn.run(create_app(data, limits, retain_days), host=host, port=port, log_level="info")


token_app = typer.Typer(no_args_is_help=True, help="Service access tokens.")
app.add_typer(token_app, name="token")


@token_app.command("create")
@clean_errors
def token_create(data: Path = typer.Option(..., help="The server's data folder."),
                 tenant: str = typer.Option(..., help="Who the token is for (letters, digits, '-', '_').")):
    """Create a token for a tenant and print it once (only its hash is stored)."""
    from medveil.service.store import Store

    try:
        typer.echo(Store(data).create_token(tenant))
    except ValueError as exc:
        fail(str(exc))


@token_app.command("list")
@clean_errors
def token_list(data: Path = typer.Option(..., help="The server's data folder.")):
    """Every token: its id (for revoke), tenant and creation time; never the token itself."""
    import time

    from medveil.service.store import Store

    for token in Store(data).tokens():
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(token["created"]))
        typer.echo(f"{token['id']}\t{token['tenant']}\t{created} UTC")


@token_app.command("revoke")
@clean_errors
def token_revoke(token_id: str = typer.Argument(..., help="The token's id, as `medveil token list` shows it."),
                 data: Path = typer.Option(..., help="The server's data folder.")):
    """Revoke a token: the next request that carries it is refused (401)."""
    from medveil.service.store import Store

    if not Store(data).revoke_token(token_id):
        fail(f"no token with id {token_id!r} (see medveil token list)")
    typer.echo(f"revoked {token_id}")


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
    """Set up the hospital's client: it obfuscates locally, then talks to a server."""
    ctx.obj = {"server": server, "token": token, "key": key, "burned_in_text": burned_in_text,
               "allow_broken": allow_broken}


def _client(ctx: typer.Context, sends_images: bool = False):
    """Return the client for these options; one that sends images refuses a key the cards call broken."""
    from medveil.service.client import Client

    key = load_key(ctx.obj["key"])
    if sends_images:
        check_broken(key, ctx.obj["allow_broken"], f"client {ctx.info_name}")
    return Client(ctx.obj["server"], ctx.obj["token"], key, burned_in_text=ctx.obj["burned_in_text"])


@client_app.command("upload")
@clean_errors
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
@clean_errors
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
@clean_errors
def client_status(ctx: typer.Context, job_id: str = typer.Argument(...),
                  as_json: bool = typer.Option(False, "--json", help="The job as one JSON object.")):
    """Show a job's state and progress."""
    with _client(ctx) as client:
        job = client.job(job_id)
    if as_json:
        echo_json(job)
        return
    typer.echo(f"job {job['id']}: {job['status']}, epoch {job['epoch']}/{job['epochs']} {job['message']}".rstrip()
               + (f", model {job['model_id']}" if job["model_id"] else ""))


@client_app.command("delete")
@clean_errors
def client_delete(ctx: typer.Context,
                  kind: str = typer.Argument(..., help="dataset, model or job."),
                  record_id: str = typer.Argument(..., help="Its id.")):
    """Delete one of this tenant's datasets, models or finished jobs on the server."""
    if kind not in ("dataset", "model", "job"):
        fail(f"delete takes dataset, model or job, not {kind!r}")
    with _client(ctx) as client:
        client.delete(kind, record_id)
    typer.echo(f"deleted {kind} {record_id}")


@client_app.command("predict")
@clean_errors
def client_predict(ctx: typer.Context, model_id: str = typer.Argument(...),
                   files: list[Path] = typer.Argument(..., help="Image files (any supported format)."),
                   output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                         help="Segmentation models: folder for the label maps (PNG).")):
    """Obfuscate images with the key and get the model's class (or, for a segmentation model, label map) for each."""
    from PIL import Image

    with _client(ctx, sends_images=True) as client:
        record = client.model(model_id)
        if record["task"] == "segmentation" and output is None:
            fail(f"model {model_id} segments: give -o FOLDER for its label maps")
        for f, p in zip(files, client.predict_files(model_id, files)):  # file names stay here; the server sees numbers
            if "mask" not in p:
                typer.echo(f"{f}: {p['class']} (p={p['probability']:.3f})")
                continue
            folder = cast(Path, output)  # a segmentation model's answers: -o was checked above
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{f.name.split('.')[0]}.mask.png"
            Image.fromarray(p["mask"]).save(target)
            typer.echo(f"{f}: {target} (pixels per class: {', '.join(map(str, p['pixels']))})")
