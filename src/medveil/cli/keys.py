"""``medveil keygen`` and ``medveil key``: make, look at, encrypt, decrypt and replace keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    new_passphrase,
)
from medveil.keys import PASSPHRASE_ENV
from medveil.schemes import available_schemes, from_key, generate_key, scheme_class


@app.command()
@clean_errors
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

    Prints what the shipped privacy cards say of its setting, one line per threat model.
    """
    from medveil.evaluation.cards import best_setting
    from medveil.plugins import describe_parameters, merge, parse_assignments

    if list_parameters:
        for name in available_schemes():
            declared = scheme_class(name).parameters
            typer.echo(f"{name}: {describe_parameters(declared) if declared else 'trained, not drawn (see its command)'}")
        return
    if output is None:
        fail("keygen needs -o KEY_FILE")
    flags = {"levels": levels, "bits": bits, "signed": signed, "block": block, "channels": channels, "size": size,
             "raster": raster}
    if scheme is None:
        given = [f"--{name}" for name, value in flags.items() if value is not None] + [f"-p {p}" for p in param]
        if given:
            fail(f"{' '.join(given)} needs --scheme: parameters belong to one scheme (medveil keygen --list)")
        scheme, flags = best_setting()
    params = merge(parse_assignments(param, scheme_class(scheme).parameters, scheme), flags)
    key = generate_key(scheme, **params)
    check_broken(key, allow_broken, "keygen")
    key.save(output, passphrase=new_passphrase() if passphrase else None)
    typer.echo(f"wrote {output}{' (encrypted)' if passphrase else ''}: {from_key(key).describe()}")
    echo_verdicts(key.scheme, key.params)



key_app = typer.Typer(no_args_is_help=True, help="Look at, encrypt, decrypt or replace a key file.")
app.add_typer(key_app, name="key")
KeyPath = Annotated[Path, typer.Argument(help="A key file from `medveil keygen`.")]


@key_app.command("info")
@clean_errors
def key_info(path: KeyPath, as_json: bool = typer.Option(False, "--json", help="One JSON object.")):
    """Show a key's public part and what the privacy cards say of its setting.

    The public part is the scheme, its parameters, the fingerprint and whether the key is encrypted; no passphrase
    is needed.
    """
    from medveil.evaluation.cards import verdict_lines
    from medveil.keys import public_part, read_key_text

    doc = public_part(read_key_text(path), str(path))
    info = {"file": str(path), "scheme": doc.get("scheme"), "params": doc.get("params"),
            "fingerprint": doc.get("fingerprint"), "version": doc["medveil_key_version"],
            "encrypted": "encrypted_secret" in doc,
            "privacy_cards": verdict_lines(str(doc.get("scheme", "")), doc.get("params") or {})}
    if as_json:
        echo_json(info)
        return
    params = ", ".join(f"{k}={v}" for k, v in (info["params"] or {}).items())
    typer.echo(f"{path}: {info['scheme']} ({params}), fingerprint {info['fingerprint']}, "
               f"{'encrypted' if info['encrypted'] else 'NOT encrypted'}")
    echo_verdicts(info["scheme"], info["params"] or {})


@key_app.command("encrypt")
@clean_errors
def key_encrypt(path: KeyPath):
    """Encrypt a key file's secret in place with a passphrase (scrypt + AES-256-GCM)."""
    key = load_key(path)
    key.save(path, overwrite=True, passphrase=new_passphrase())
    typer.echo(f"{path}: encrypted (fingerprint {key.fingerprint})")


@key_app.command("decrypt")
@clean_errors
def key_decrypt(path: KeyPath):
    """Store a key file's secret unencrypted again (mode 0600)."""
    key = load_key(path)
    key.save(path, overwrite=True)
    typer.echo(f"{path}: decrypted (fingerprint {key.fingerprint}); anyone who can read the file holds the key")


@key_app.command("rotate")
@clean_errors
def key_rotate(path: KeyPath,
               output: Path = typer.Option(..., "-o", "--output", help="The new key file (never overwritten)."),
               passphrase: bool = typer.Option(False, "--passphrase", help="Encrypt the new key.")):
    """Make a new key of the same scheme and parameters, and say what switching to it means. Nothing is re-obfuscated."""
    old = load_key(path)
    if scheme_class(old.scheme).trained_key:
        fail(f"{path}: a {old.scheme} key carries trained weights; train a new one instead")
    new = generate_key(old.scheme, **dict(old.params))
    new.save(output, passphrase=new_passphrase() if passphrase else None)
    typer.echo(f"wrote {output}: {old.scheme}, fingerprint {new.fingerprint} (was {old.fingerprint})")
    typer.echo("What a new key means: images obfuscated under the old key and the new one are not comparable, so "
               "re-obfuscate and re-upload the data, and retrain every server model on it; models trained under the "
               "old key are of no use to new images. Keep the old key while anything made with it is still in use.")
